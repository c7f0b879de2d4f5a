"""The stores the ``--json`` tests run the command line on: SQLite and PostgreSQL.

`sql_store_url` is a fresh store per test; `module_store` makes one that a
whole module shares (its PostgreSQL schema dropped afterwards), for tests
that only read what a fixture recorded.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from conftest import require_postgres  # the shared PostgreSQL test server

SQL_STORES = ["sqlite", "postgresql"]


@pytest.fixture(params=SQL_STORES)
def sql_store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty store: a SQLite file, or a PostgreSQL schema of its own."""
    if request.param == "postgresql":
        url: str = request.getfixturevalue("postgres_url")
        return url
    return f"sqlite:///{tmp_path / 'runs.db'}"


@contextmanager
def module_store(kind: str, where: Path) -> Iterator[str]:
    """A fresh store of ``kind`` for a module's fixture; a PostgreSQL schema is dropped after.

    Skipped (failed under CI=true) when PostgreSQL is down, as `postgres_url` is.
    """
    if kind == "sqlite":
        yield f"sqlite:///{where / 'runs.db'}"
        return
    import psycopg

    base = require_postgres()
    schema = f"t_json_{uuid.uuid4().hex[:12]}"
    yield f"{base}{'&' if '?' in base else '?'}schema={schema}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
