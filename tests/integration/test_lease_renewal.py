"""Leases when the store cannot be reached to renew them.

A renewal never waits longer than a third of a lease, and a drive that cannot
renew its lease in time starts no call for its run before the lease lapses:
another process that takes the run over is then the only one calling its step.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from sagakit import AsyncEngine, EventKind, RunStatus, Saga, SagaError, StepContext, StoreError
from sagakit.store import Lease
from sagakit.store.postgresql import PostgresStore


def test_a_renewal_that_gets_no_answer_is_given_up_and_tried_again(
    store_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A pool waiting for a connection, or a server gone silent, must not hold
    the renewal past the lease: it is given up (cancelled) and tried again."""
    saga: Saga[Any] = Saga("renewed")

    @saga.step
    async def slow(state: dict[str, Any], ctx: StepContext) -> None:
        await asyncio.sleep(1.2)

    async def body() -> tuple[list[str], RunStatus]:
        async with AsyncEngine(store_url, lease_seconds=1.5) as engine:
            renew = engine.store.renew
            seen: list[str] = []

            async def silent_once(
                leases: dict[str, Lease], *, lease_until: float, now: float | None = None
            ) -> set[str]:
                if not seen:
                    seen.append("waiting")
                    try:
                        await asyncio.sleep(3600)  # no answer
                    except asyncio.CancelledError:
                        seen.append("given up")
                        raise
                seen.append("renewed")
                return await renew(leases, lease_until=lease_until, now=now)

            engine.store.renew = silent_once  # type: ignore[method-assign]
            run = await asyncio.wait_for(engine.run(saga, run_id="r1"), timeout=30)
            return seen, run.status

    with caplog.at_level(logging.WARNING, logger="sagakit"):
        seen, status = asyncio.run(body())
    assert status == RunStatus.COMPLETED
    assert seen[:3] == ["waiting", "given up", "renewed"]
    assert "could not reach the store to renew the leases of 1 runs" in caplog.text
    assert "no answer within 0.50s" in caplog.text


def test_a_drive_that_cannot_renew_its_lease_calls_nothing_more_and_lets_the_run_go(
    store_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """With less than half a lease left and no renewal landing, the next call
    is journaled but not made; the run is taken over and finished elsewhere,
    where that call is made once."""
    calls: list[str] = []
    saga: Saga[Any] = Saga("cut")

    @saga.step
    async def first(state: dict[str, Any], ctx: StepContext) -> None:
        calls.append(ctx.idempotency_key)
        await asyncio.sleep(0.5)  # past half of the 0.6 s lease

    @saga.step
    async def second(state: dict[str, Any], ctx: StepContext) -> None:
        calls.append(ctx.idempotency_key)

    async def body() -> tuple[list[EventKind], RunStatus, RunStatus]:
        async with AsyncEngine(store_url, lease_seconds=0.6) as engine:

            async def unreachable(leases: dict[str, Lease], **_: float | None) -> set[str]:
                raise StoreError("could not renew leases in the store: connection refused")

            real = engine.store.renew
            engine.store.renew = unreachable  # type: ignore[method-assign]
            run = await asyncio.wait_for(engine.run(saga, run_id="r1"), timeout=30)
            journal = [e.kind for e in await engine.store.journal("r1")]
            engine.store.renew = real  # type: ignore[method-assign]
        await asyncio.sleep(0.7)  # the lease lapses in the store too
        async with AsyncEngine(store_url, lease_seconds=5) as other:
            other.register(saga)
            (recovered,) = await asyncio.wait_for(other.recover(), timeout=30)
        return journal, run.status, recovered.status

    with caplog.at_level(logging.WARNING, logger="sagakit"):
        journal, status, recovered = asyncio.run(body())
    assert journal[-1] is EventKind.STEP_STARTED  # second: journaled, not called
    assert status is RunStatus.RUNNING
    assert recovered is RunStatus.COMPLETED
    assert calls == ["r1/first", "r1/second"]  # each once: second only after the takeover
    assert (
        "run r1: the store could not be reached to renew it before the lease lapsed; "
        "not calling 'second' here" in caplog.text
    )
    assert "lease lost to another process" not in caplog.text


def test_commit_patience_is_an_option(store_url: str) -> None:
    async def body() -> tuple[float, float]:
        async with AsyncEngine(store_url, lease_seconds=4) as default:
            pass
        async with AsyncEngine(store_url, lease_seconds=4, commit_patience=0.5) as set_:
            pass
        return default.drives.commit_patience, set_.drives.commit_patience

    assert asyncio.run(body()) == (2.0, 0.5)
    with pytest.raises(SagaError, match="commit_patience must not be negative"):
        AsyncEngine(store_url, commit_patience=-1)


def test_a_failing_commit_is_given_up_after_the_commit_patience(
    store_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    saga: Saga[Any] = Saga("patient")

    @saga.step
    async def only(state: dict[str, Any], ctx: StepContext) -> None:
        return None

    async def body() -> list[EventKind]:
        async with AsyncEngine(store_url, lease_seconds=60, commit_patience=0.1) as engine:
            commit = engine.store.commit
            failing = False

            async def flaky(change: Any) -> bool:
                if failing:
                    raise StoreError("could not commit to the store: connection refused")
                return await commit(change)

            engine.store.commit = flaky  # type: ignore[method-assign,assignment]
            engine.register(saga)
            await engine.start(saga, run_id="r1")
            failing = True
            # With the default patience (half the lease: 30 s) this would time out.
            await asyncio.wait_for(engine.recover(), timeout=10)
            return [e.kind for e in await engine.store.journal("r1")]

    with caplog.at_level(logging.WARNING, logger="sagakit"):
        journal = asyncio.run(body())
    assert journal == [EventKind.RUN_STARTED]  # nothing was lost, nothing half-written
    assert "run r1 could not be recovered: run 'r1' stopped: could not commit" in caplog.text


@pytest.mark.parametrize(
    ("value", "expected"), [("2.5", 2.5), ("10", 10.0), ("0.1", 0.1), ("3600", 3600.0)]
)
def test_the_pool_timeout_is_a_url_option(value: str, expected: float) -> None:
    store = PostgresStore(f"postgresql://u@localhost/db?pool_timeout={value}")
    assert store.pool_timeout == expected
    assert PostgresStore("postgresql://u@localhost/db").pool_timeout == 10.0
    assert PostgresStore("postgresql://u@localhost/db", pool_timeout=3).pool_timeout == 3.0


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "3601", "soon", ""])
def test_a_bad_pool_timeout_is_refused_in_one_line(value: str) -> None:
    with pytest.raises(StoreError) as raised:
        PostgresStore(f"postgresql://u:secret@localhost/db?pool_timeout={value}")
    message = str(raised.value)
    assert message.startswith("pool_timeout must be a number of seconds")
    assert "\n" not in message
    assert "secret" not in message
