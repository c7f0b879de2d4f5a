"""Fixtures shared by every test tier.

PostgreSQL tests use the server named by ``SAGAKIT_TEST_POSTGRES`` (default
``postgresql://postgres@127.0.0.1:5432/test``), each test in a schema of its
own that is dropped afterwards. Where no server answers they are skipped,
except under ``CI=true``, where a missing server fails them.
"""

from __future__ import annotations

import functools
import itertools
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from sagakit import Engine

STORES = ["memory", "sqlite", "postgresql"]
POSTGRES_URL = os.environ.get("SAGAKIT_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
_names = itertools.count()


@functools.cache
def _postgres_problem() -> str | None:
    """Why PostgreSQL cannot be used, or None when it answers."""
    try:
        import psycopg
    except ImportError as exc:
        return f"psycopg is not installed: {exc}"
    try:
        psycopg.connect(POSTGRES_URL, connect_timeout=3).close()
    except psycopg.Error as exc:
        return f"no PostgreSQL server answers at {POSTGRES_URL}: {exc}"
    return None


def require_postgres() -> str:
    """The test server's URL; skips the test (fails it under CI=true) if it is down."""
    problem = _postgres_problem()
    if problem is not None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"CI needs PostgreSQL: {problem}")
        pytest.skip(problem)
    return POSTGRES_URL


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A URL naming a fresh schema on the test PostgreSQL server, dropped afterwards."""
    import psycopg

    base = require_postgres()
    schema = f"t_{uuid.uuid4().hex[:12]}"
    joiner = "&" if "?" in base else "?"
    yield f"{base}{joiner}schema={schema}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


@pytest.fixture(params=STORES)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL naming fresh, empty storage of each kind; tests using it run once
    per store, and two stores or engines opened on it share it."""
    if request.param == "memory":
        return f"memory://test-{next(_names)}"
    if request.param == "postgresql":
        url: str = request.getfixturevalue("postgres_url")
        return url
    return f"sqlite:///{tmp_path / 'runs.db'}"


@pytest.fixture
def engine(store_url: str) -> Iterator[Engine]:
    """An engine on a fresh store, closed after the test."""
    with Engine(store_url, lease_seconds=5.0) as eng:
        yield eng
