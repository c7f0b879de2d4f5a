"""The PostgreSQL store: many workers on many hosts, leases, LISTEN/NOTIFY."""

from __future__ import annotations

from sagakit.store.postgresql.local import PostgresLocalTransaction
from sagakit.store.postgresql.store import PostgresStore, parse_url

__all__ = ["PostgresLocalTransaction", "PostgresStore", "parse_url"]
