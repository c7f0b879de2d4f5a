"""The SQLite store: one file in WAL mode, many writers committed in groups."""

from __future__ import annotations

from sagakit.store.sqlite.store import SQLiteStore, parse_url
from sagakit.store.sqlite.writes import write_one

__all__ = ["SQLiteStore", "parse_url", "write_one"]
