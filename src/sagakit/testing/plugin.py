"""sagakit's pytest plugin: fixtures for testing sagas, on by installing sagakit.

Registered under the ``pytest11`` entry point ``sagakit``; ``-p no:sagakit``
turns it off. It defines fixtures only (no hooks, no options), all named
``saga_*``:

- ``saga_clock``: a `SkippingClock`, fresh for each test.
- ``saga_engine``: a sync `Engine` on a fresh in-memory store, on
  ``saga_clock``; closed after the test.
- ``saga_engine_sqlite``: the same on a SQLite file in the test's
  ``tmp_path``.
- ``saga_drive``: `sagakit.testing.drive`, which drives a run until it
  settles or pauses.

See docs/testing.md.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

# sagakit itself is imported by the fixtures, when a test asks for one.
if TYPE_CHECKING:
    from sagakit.engine import Engine
    from sagakit.run import Run
    from sagakit.testing.clock import SkippingClock


@pytest.fixture
def saga_clock() -> SkippingClock:
    """A clock that skips time: the engine's waits complete at once when nothing else runs."""
    from sagakit.testing.clock import SkippingClock

    return SkippingClock()


@pytest.fixture
def saga_engine(saga_clock: SkippingClock) -> Iterator[Engine]:
    """An `Engine` on a fresh in-memory store, with ``saga_clock`` as its clock."""
    from sagakit.engine import Engine

    with Engine(f"memory://saga-test-{uuid.uuid4().hex}", clock=saga_clock) as engine:
        yield engine


@pytest.fixture
def saga_engine_sqlite(saga_clock: SkippingClock, tmp_path: Path) -> Iterator[Engine]:
    """An `Engine` on a new SQLite file in ``tmp_path``, with ``saga_clock`` as its clock."""
    from sagakit.engine import Engine

    with Engine(f"sqlite:///{tmp_path / 'sagas.db'}", clock=saga_clock) as engine:
        yield engine


@pytest.fixture
def saga_drive() -> Callable[[Engine, str], Run]:
    """`sagakit.testing.drive`: ``saga_drive(engine, run_id)`` drives a run until it rests."""
    from sagakit.testing.driving import drive

    return drive
