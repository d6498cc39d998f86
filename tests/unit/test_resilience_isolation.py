"""biomem.resilience could ship alone: it imports nothing else from biomem."""

from __future__ import annotations

import ast
from pathlib import Path

import biomem.resilience

PACKAGE = Path(biomem.resilience.__file__).parent


def test_resilience_imports_nothing_else_from_biomem() -> None:
    """No module of biomem.resilience imports a biomem module outside the package."""
    offenders: list[str] = []
    for path in sorted(PACKAGE.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            offenders += [
                f"{path.name}: {name}"
                for name in names
                if name.startswith("biomem") and not name.startswith("biomem.resilience")
            ]
    assert offenders == []


def test_public_names_are_exported_sorted() -> None:
    """The package re-exports its public names, each once (ruff's RUF022 keeps them sorted)."""
    exported = biomem.resilience.__all__
    assert len(set(exported)) == len(exported)
    for name in ("CircuitBreaker", "Retrier", "Policy", "DeadLetterQueue", "FakeClock"):
        assert name in exported and hasattr(biomem.resilience, name)
