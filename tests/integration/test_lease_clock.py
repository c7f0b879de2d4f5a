"""Leases on PostgreSQL follow the database's clock, not each host's.

A worker whose clock runs a minute ahead must take over no live run of
another worker; one whose clock runs a minute behind must still hold its
own. The injectable clock (``AsyncEngine(clock=...)``) plays the skewed host.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from sagakit import AsyncEngine, RunStatus, Saga, StepContext
from sagakit.errors import StoreError
from sagakit.store import Lease
from sagakit.store.postgresql import PostgresStore

SKEW = 60.0


def skewed(seconds: float) -> Callable[[], float]:
    return lambda: time.time() + seconds


def _saga(calls: list[str], gate: asyncio.Event) -> Saga[Any]:
    saga: Saga[Any] = Saga("live")

    @saga.step
    async def long_call(state: dict[str, Any], ctx: StepContext) -> None:
        calls.append(ctx.idempotency_key)
        await gate.wait()

    return saga


@pytest.mark.parametrize(("holder_skew", "taker_skew"), [(0.0, SKEW), (-SKEW, 0.0)])
def test_a_skewed_clock_takes_over_nothing_alive(
    postgres_url: str, holder_skew: float, taker_skew: float
) -> None:
    """The holder drives a run whose call lasts longer than its lease (its
    heartbeat keeps it); the taker, a minute ahead of it, tries to take it by
    every path a worker or an operator has: a claim of due runs, `recover`,
    and a claim by id. Nothing is taken, and the call is made once."""
    calls: list[str] = []

    async def body() -> tuple[list[Any], Any, Any, RunStatus]:
        gate = asyncio.Event()
        saga = _saga(calls, gate)
        async with (
            AsyncEngine(postgres_url, lease_seconds=1.0, clock=skewed(holder_skew)) as holder,
            AsyncEngine(postgres_url, lease_seconds=1.0, clock=skewed(taker_skew)) as taker,
        ):
            taker.register(saga)
            running = asyncio.ensure_future(holder.run(saga, run_id="r1"))
            while not calls:
                await asyncio.sleep(0.01)
            await asyncio.sleep(1.5)  # past the first lease: only renewals keep it
            now = taker.clock()
            due = await taker.store.claim_due(owner="taker", now=now, lease_until=now + 1, limit=10)
            recovered = await taker.recover()
            by_id = await taker.drives.claim("r1")
            gate.set()
            run = await asyncio.wait_for(running, timeout=30)
            return due, recovered, by_id, run.status

    due, recovered, by_id, status = asyncio.run(body())
    assert due == []
    assert recovered == []
    assert by_id is None
    assert status is RunStatus.COMPLETED
    assert calls == ["r1/long_call"]


def test_on_local_clocks_a_clock_ahead_takes_a_live_run(postgres_url: str) -> None:
    """The same scene with ``lease_clock=local``: the clock ahead takes the
    live run (what the database's clock prevents)."""
    url = f"{postgres_url}&lease_clock=local"

    async def body() -> Any:
        gate = asyncio.Event()
        calls: list[str] = []
        saga = _saga(calls, gate)
        async with (
            AsyncEngine(url, lease_seconds=30.0) as holder,
            AsyncEngine(url, lease_seconds=30.0, clock=skewed(SKEW)) as taker,
        ):
            running = asyncio.ensure_future(holder.run(saga, run_id="r1"))
            while not calls:
                await asyncio.sleep(0.01)
            taken = await taker.drives.claim("r1")
            gate.set()
            await asyncio.gather(running, return_exceptions=True)
            return taken

    taken = asyncio.run(body())
    assert taken is not None
    assert taken.owner != "holder"


def test_a_lease_on_the_database_clock_lasts_as_long_as_asked(postgres_url: str) -> None:
    """Whatever the caller's clock says, the lease runs ``lease_until - now``
    seconds from the server's now; and a lapsed one is taken at once."""

    async def body() -> tuple[float, float, bool]:
        async with AsyncEngine(postgres_url) as engine:
            store = engine.store
            await engine.start(_saga([], asyncio.Event()), run_id="r1")
            far_past = 1_000.0  # 1970: a clock far behind
            claimed = await store.claim("r1", owner="a", now=far_past, lease_until=far_past + 30)
            assert claimed is not None
            assert claimed.lease_until is not None
            first = claimed.lease_until - time.time()
            lease = {"r1": Lease("a", claimed.lease_epoch)}
            lost = await store.renew(lease, lease_until=far_past + 0.2, now=far_past)
            assert lost == set()
            record = await store.get_run("r1")
            assert record is not None
            assert record.lease_until is not None
            renewed = record.lease_until - time.time()
            await asyncio.sleep(0.4)
            retaken = await store.claim("r1", owner="b", now=far_past, lease_until=far_past + 30)
            return first, renewed, retaken is not None

    first, renewed, retaken = asyncio.run(body())
    assert 25 < first <= 30.5  # thirty seconds from now, not in 1970
    assert renewed <= 0.5
    assert retaken  # lapsed on the server's clock: taken, whatever the caller's says


@pytest.mark.parametrize("value", ["Database", "utc", "", "ntp"])
def test_a_bad_lease_clock_is_refused_in_one_line(value: str) -> None:
    with pytest.raises(StoreError, match=r"^lease_clock must be database or local, got "):
        PostgresStore(f"postgresql://u@localhost/db?lease_clock={value}")
    assert PostgresStore("postgresql://u@localhost/db").lease_clock == "database"
    assert PostgresStore("postgresql://u@localhost/db?lease_clock=local").lease_clock == "local"
