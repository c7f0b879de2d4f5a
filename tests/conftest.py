"""Fixtures shared by every test tier."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from sagakit import Engine

STORES = ["memory", "sqlite"]
_names = itertools.count()


@pytest.fixture(params=STORES)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL naming fresh, empty storage of each kind; tests using it run once
    per store, and two stores or engines opened on it share it."""
    if request.param == "memory":
        return f"memory://test-{next(_names)}"
    return f"sqlite:///{tmp_path / 'runs.db'}"


@pytest.fixture
def engine(store_url: str) -> Iterator[Engine]:
    """An engine on a fresh store, closed after the test."""
    with Engine(store_url, lease_seconds=5.0) as eng:
        yield eng
