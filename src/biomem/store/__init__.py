"""The embedded DuckDB store: connection, error translation, migrations."""

from __future__ import annotations

from biomem.store.connection import DuckDBStore, classify_duckdb_error, translate_errors
from biomem.store.migrations import Migration, applied_versions, available_migrations, migrate

__all__ = [
    "DuckDBStore",
    "Migration",
    "applied_versions",
    "available_migrations",
    "classify_duckdb_error",
    "migrate",
    "translate_errors",
]
