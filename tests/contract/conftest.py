"""Fixtures of the store contract tests: every test runs on every store."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

BACKENDS = ["memory", "sqlite"]
_names = itertools.count()


@pytest.fixture(params=BACKENDS)
def backend_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL naming fresh, empty storage; two stores opened on it share it."""
    if request.param == "memory":
        return f"memory://contract-{next(_names)}"
    return f"sqlite:///{tmp_path / 'runs.db'}"
