"""Stores keep runs and their journals: in memory, in SQLite or in PostgreSQL.

`open_store` picks the backend from a URL's scheme. Every backend honours the
contract of `sagakit.store.base.Store` and passes the same contract tests
(`sagakit.store.testing`, which a third-party backend can run too).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

from sagakit.errors import StoreError
from sagakit.store.base import (
    ACTIVE_STATUSES,
    FINISHED_STATUSES,
    Commit,
    Lease,
    LocalTransaction,
    Mail,
    Reservation,
    RunRecord,
    Store,
)

__all__ = [
    "ACTIVE_STATUSES",
    "FINISHED_STATUSES",
    "Commit",
    "Lease",
    "LocalTransaction",
    "Mail",
    "Reservation",
    "RunRecord",
    "Store",
    "open_store",
    "redact_url",
]

_SUPPORTED = (
    "memory://, memory://NAME, sqlite:///relative/path.db, sqlite:////absolute/path.db, "
    "postgresql://user@host/database"
)


def open_store(url: str, **options: Any) -> Store:
    """Make the store a URL names. No I/O happens until ``await store.open()``.

    Args:
        url: ``memory://`` (private), ``memory://NAME`` (shared by name in this
            process), ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db``
            or ``postgresql://user:password@host:port/database``.
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
        try:
            from sagakit.store.postgresql import PostgresStore
        except ImportError as exc:
            raise StoreError(
                f"PostgreSQL stores need psycopg 3 and psycopg-pool ({exc}); "
                "install them with: pip install 'sagakit[postgresql]'"
            ) from exc
        try:
            return PostgresStore(url, **options)
        except TypeError as exc:
            raise StoreError(f"unknown option for the PostgreSQL store: {exc}") from exc
    raise StoreError(f"unsupported store URL {url!r}; supported forms: {_SUPPORTED}")


def redact_url(url: str) -> str:
    """The URL with its password masked, fit for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))
