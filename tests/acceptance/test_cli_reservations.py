"""``sagakit reservations``: who holds what until when, read from a real store."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from sagakit.store import open_store

from .helpers import ok, sagakit


def held_store(path: Path) -> None:
    """A SQLite store: run ``order-1`` holds two seats, ``order-2`` held one that expired."""

    async def fill() -> None:
        store = open_store(f"sqlite:///{path}")
        await store.open()
        try:
            now = time.time()
            await store.reserve_all(
                ["seat:F1", "seat:F2"], run_id="order-1", now=now, expires_at=now + 3600
            )
            await store.reserve("seat:G7", run_id="order-2", now=now - 120, expires_at=now - 60)
        finally:
            await store.close()

    asyncio.run(fill())


def test_reservations_lists_the_live_holders_and_not_the_expired(tmp_path: Path) -> None:
    db = tmp_path / "saga.db"
    held_store(db)
    before = db.read_bytes()
    out = ok(sagakit(tmp_path, "reservations", "--db", str(db)))
    lines = [line.split() for line in out.splitlines()]
    assert lines[1][:4] == ["name", "held", "by", "run"]
    assert [line[:2] for line in lines[2:]] == [["seat:F1", "order-1"], ["seat:F2", "order-1"]]
    assert "seat:G7" not in out  # expired: anyone may take it
    assert all(line[-1].endswith(("m", "s")) for line in lines[2:])  # the time left
    assert db.read_bytes() == before


def test_reservations_of_one_run_and_of_none(tmp_path: Path) -> None:
    db = tmp_path / "saga.db"
    held_store(db)
    mine = ok(sagakit(tmp_path, "reservations", "--run", "order-1", "--db", str(db)))
    assert "seat:F1" in mine
    assert "seat:F2" in mine
    none = ok(sagakit(tmp_path, "reservations", "--run", "order-2", "--db", str(db)))
    assert none.startswith("no reservations held by run order-2 in ")
