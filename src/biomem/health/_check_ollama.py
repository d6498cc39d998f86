"""The Ollama check (optional): ``/api/tags``, the models, the breaker, the fallback share.

Import it from :mod:`biomem.health.checks`.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from biomem.clients.http11 import ollama_http_client
from biomem.clients.ollama import OllamaModels
from biomem.health._check_base import BaseCheck, _breaker_details, _ms, _refusing, error_text
from biomem.health.model import ComponentHealth, Measurement, Status
from biomem.resilience.breaker import BreakerState
from biomem.resilience.errors import BiomemError, CircuitOpenError
from biomem.resilience.redact import mask_url

if TYPE_CHECKING:
    from biomem.app import App

__all__ = ["OllamaCheck"]

_FALLBACK_STAGES = ("short_term", "long_term")
_SHARE_SQL = (
    "SELECT coalesce(sum(TRY_CAST(counts->>'fallback' AS BIGINT)), 0),"
    " coalesce(sum(TRY_CAST(counts->>'llm' AS BIGINT)), 0)"
    " FROM runs WHERE stage IN (?, ?) AND finished_at >= ?"
)


class OllamaCheck(BaseCheck):
    """Ollama (optional): ``/api/tags``, the configured models, the breaker, the fallback share."""

    name = "ollama"
    component_type = "component"
    required = False
    timeout_s = 3.0

    def __init__(self, app: App, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.app = app

    def _fallback_counts(self, since: datetime) -> tuple[int, int]:
        row = self.app.store.fetchone(_SHARE_SQL, [*_FALLBACK_STAGES, since])
        return (int(row[0]), int(row[1])) if row else (0, 0)

    async def _share(self, now: datetime) -> Measurement:
        try:
            fallback, llm = await self._in_thread(
                lambda: self._fallback_counts(now - timedelta(hours=1))
            )
        except (BiomemError, TimeoutError) as exc:
            why = "store busy" if isinstance(exc, TimeoutError) else error_text(exc)
            return Measurement(
                name="fallbackShare",
                value=None,
                unit="ratio",
                status=Status.UNKNOWN,
                output=f"runs unreadable: {why}",
            )
        if fallback + llm == 0:
            return Measurement(name="fallbackShare", value=None, unit="ratio")
        share = round(fallback / (fallback + llm), 4)
        return Measurement(
            name="fallbackShare",
            value=share,
            unit="ratio",
            status=Status.DEGRADED if fallback else Status.HEALTHY,
            output=f"{fallback} of {fallback + llm} items in the last hour by fallback heuristics"
            if fallback
            else None,
        )

    async def _probe(self) -> OllamaModels:
        # A transport of our own, in this event loop: an AsyncClient cannot outlive its loop.
        async with ollama_http_client() as http:
            return await self.app.ollama_factory()(http).models(retry=False)

    async def run(self) -> ComponentHealth:
        started = time.perf_counter()
        cfg = self.app.settings.ollama
        breaker = self.app.guards.ollama.breaker
        details: dict[str, Any] = {
            "url": mask_url(cfg.url),
            "chat_model": cfg.model,
            "embedding_model": cfg.embedding_model,
        }
        measurements: list[Measurement] = []
        # A TaskGroup: if the monitor's timeout cancels this run, the query goes too.
        async with asyncio.TaskGroup() as group:
            share = group.create_task(self._share(self._wall_clock()))
            if _refusing(breaker):
                status = Status.UNHEALTHY
                output: str | None = (
                    f"ollama breaker {breaker.state.value} (next trial in "
                    f"{breaker.retry_after():.0f} s): fallback heuristics in use"
                )
            else:
                status, output = await self._reachable(details, measurements)
        measurements.append(share.result())
        details["breaker"] = _breaker_details(breaker)
        return self._result(
            status, started, output=output, measurements=measurements, details=details
        )

    async def _reachable(
        self, details: dict[str, Any], measurements: list[Measurement]
    ) -> tuple[Status, str | None]:
        call_started = time.perf_counter()
        try:
            async with asyncio.timeout(self.budget_s):
                models = await self._probe()
        except TimeoutError:
            return (
                Status.UNHEALTHY,
                f"ollama timed out: no answer to /api/tags within {self.budget_s:g} s;"
                " fallback heuristics in use",
            )
        except CircuitOpenError:
            # Opened meanwhile, or half-open with every trial slot taken by the stages:
            # still down until a trial gets through (reporting it degraded here made the
            # status alternate through an outage, and recovery never saw it in a row).
            if self.app.guards.ollama.breaker.state is BreakerState.HALF_OPEN:
                return (
                    Status.UNHEALTHY,
                    "ollama breaker half-open: trial calls in progress, none through yet;"
                    " fallback heuristics in use",
                )
            return Status.UNHEALTHY, "ollama breaker open: fallback heuristics in use"
        except BiomemError as exc:
            return (
                Status.UNHEALTHY,
                f"ollama unreachable: fallback heuristics in use ({error_text(exc)})",
            )
        cfg = self.app.settings.ollama
        missing = [
            name
            for name, present in (
                (cfg.model, models.chat_present),
                (cfg.embedding_model, models.embedding_present),
            )
            if not present
        ]
        details["available_models"] = list(models.available)
        details["missing_models"] = missing
        measurements.append(Measurement(name="responseTime", value=_ms(call_started), unit="ms"))
        measurements.append(
            Measurement(
                name="modelsPresent",
                value=not missing,
                status=Status.DEGRADED if missing else Status.HEALTHY,
                output=f"missing: {', '.join(missing)}" if missing else None,
            )
        )
        if missing:
            return (
                Status.DEGRADED,
                f"ollama reachable but model(s) {', '.join(missing)} missing"
                " (ollama pull them): fallback heuristics in use",
            )
        if self.app.guards.ollama.breaker.state is BreakerState.HALF_OPEN:
            return Status.DEGRADED, "ollama breaker half-open: trial calls in progress"
        return Status.HEALTHY, None
