"""Numbered schema migrations, recorded in the store itself.

Each ``sql/NNNN_name.sql`` runs once, in its own transaction together
with the row that records it, so a crash mid-migration leaves the file at the
previous version and the next start applies it again. A file written by a
newer biomem (a version this program does not know) is refused rather than
used with a schema we cannot read.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources

from biomem.logging import get_logger
from biomem.resilience.errors import DatabaseUnavailable
from biomem.store.connection import DuckDBStore

__all__ = ["Migration", "applied_versions", "available_migrations", "migrate"]

log = get_logger(__name__)

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True, slots=True, kw_only=True)
class Migration:
    """One numbered SQL script."""

    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def available_migrations() -> list[Migration]:
    """Return the migrations shipped with this program, in version order."""
    found: list[Migration] = []
    for entry in resources.files("biomem.store").joinpath("sql").iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(
                Migration(
                    version=int(match.group(1)),
                    name=match.group(2),
                    sql=entry.read_text(encoding="utf-8"),
                )
            )
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise RuntimeError(f"migration versions must run 1..N without gaps, got {versions}")
    return found


def applied_versions(store: DuckDBStore) -> dict[int, str]:
    """Return {version: checksum} of the migrations recorded in the store."""
    store.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version INTEGER PRIMARY KEY, name VARCHAR NOT NULL,"
        " checksum VARCHAR NOT NULL, applied_at TIMESTAMPTZ NOT NULL)"
    )
    rows = store.execute("SELECT version, checksum FROM schema_migrations ORDER BY version")
    return {int(version): str(checksum) for version, checksum in rows}


def migrate(store: DuckDBStore, *, target: int | None = None) -> list[int]:
    """Apply pending migrations up to ``target`` (all by default); return those applied.

    Raises:
        DatabaseUnavailable: the store was written by a newer biomem.
    """
    migrations = available_migrations()
    known = migrations[-1].version if migrations else 0
    applied = applied_versions(store)
    newest = max(applied, default=0)
    if newest > known:
        raise DatabaseUnavailable(
            "duckdb",
            f"the store {store.path} has schema version {newest} but this biomem knows up to "
            f"{known}; upgrade biomem or point DUCKDB_PATH at another file",
        )
    done: list[int] = []
    for migration in migrations:
        if target is not None and migration.version > target:
            break
        recorded = applied.get(migration.version)
        if recorded is not None:
            if recorded != migration.checksum:
                log.warning(
                    "migration_checksum_changed",
                    version=migration.version,
                    name=migration.name,
                )
            continue
        # The script and its record commit together: a crash between the two
        # would otherwise re-run a half-applied script on the next start.
        with store.transaction() as con:
            con.execute(migration.sql)
            con.execute(
                "INSERT INTO schema_migrations VALUES (?, ?, ?, ?)",
                [migration.version, migration.name, migration.checksum, datetime.now(UTC)],
            )
        log.info("migration_applied", version=migration.version, name=migration.name)
        done.append(migration.version)
    return done
