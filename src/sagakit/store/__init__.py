"""Stores keep runs and their journals: in memory, in SQLite, later in PostgreSQL.

`open_store` picks the backend from a URL's scheme. Every backend honours the
contract of `sagakit.store.base.Store` and passes the same contract tests.
"""

from __future__ import annotations

from typing import Any

from sagakit.errors import StoreError
from sagakit.store.base import ACTIVE_STATUSES, Commit, Lease, RunRecord, Store

__all__ = ["ACTIVE_STATUSES", "Commit", "Lease", "RunRecord", "Store", "open_store"]

_SUPPORTED = "memory://, memory://NAME, sqlite:///relative/path.db, sqlite:////absolute/path.db"


def open_store(url: str, **options: Any) -> Store:
    """Make the store a URL names. No I/O happens until ``await store.open()``.

    Args:
        url: ``memory://`` (private), ``memory://NAME`` (shared by name in this
            process), ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db``.
        options: Backend options, such as ``synchronous="normal"`` for SQLite.

    Raises:
        StoreError: the scheme is not supported, or an option is unknown.
    """
    scheme = url.partition(":")[0].lower()
    if scheme == "memory":
        if options:
            raise StoreError(f"the memory store takes no options, got: {', '.join(options)}")
        from sagakit.store.memory import MemoryStore

        return MemoryStore(url)
    if scheme == "sqlite":
        from sagakit.store.sqlite import SQLiteStore

        try:
            return SQLiteStore(url, **options)
        except TypeError as exc:
            raise StoreError(f"unknown option for the SQLite store: {exc}") from exc
    if scheme in ("postgresql", "postgres"):
        raise StoreError(
            f"cannot open {scheme}:// stores: PostgreSQL support is not available yet in this "
            "version of sagakit; use a sqlite:/// URL"
        )
    raise StoreError(f"unsupported store URL {url!r}; supported forms: {_SUPPORTED}")
