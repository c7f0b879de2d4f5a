"""Reservations (semantic locks) on every store: `StepContext.reserve` and its
async twin, contention between runs, refresh, early release, freeing when a
run finishes, and expiry by ttl under a fake clock.

The crash case (a holder whose process died) is in
``tests/acceptance/test_reservation_expiry.py``.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import pytest

from sagakit import (
    AsyncEngine,
    Engine,
    EventKind,
    Pause,
    PermanentError,
    Reservation,
    RetryPolicy,
    Run,
    RunStatus,
    Saga,
    StepContext,
)

State = dict[str, Any]
BUSY = "sagakit.errors.ReservationBusy"


class FakeClock:
    """A clock the test moves by hand (the engine's ``clock=``)."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def run_async(body: Coroutine[Any, Any, None]) -> None:
    asyncio.run(body)


async def until(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 10.0) -> None:
    give_up = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < give_up, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


def contender_saga(name: str, seat: str, *, wait: float = 0.0, undone: list[str]) -> Saga[Any]:
    """book (compensatable) → take the seat (sync ``ctx.reserve``)."""
    saga: Saga[Any] = Saga(name)

    @saga.step
    def book(state: State, ctx: StepContext) -> State:
        return {"booked": True}

    @book.compensate
    def unbook(state: State, ctx: StepContext) -> None:
        undone.append(ctx.run_id)

    # Tried once: what is tested is the reservation's own wait, not the step's retries.
    @saga.step(retry=RetryPolicy(max_attempts=1))
    def take_seat(state: State, ctx: StepContext) -> State:
        held = ctx.reserve(seat, ttl=60, wait=wait)
        return {"holder": held.run_id, "until": held.expires_at, "got_at": time.time()}

    return saga


def failure_of(events: list[Any], step: str) -> Any:
    failed = [e for e in events if e.kind is EventKind.STEP_FAILED and e.step == step]
    assert len(failed) == 1, failed
    return failed[0].error


# -- contention -------------------------------------------------------------------------


def test_a_contender_that_will_not_wait_fails_at_once_and_rolls_back(engine: Engine) -> None:
    holding = threading.Event()
    gate = threading.Event()
    holder: Saga[Any] = Saga("seat-holder")

    @holder.step
    def take(state: State, ctx: StepContext) -> State:
        held = ctx.reserve("seat:1", ttl=60)
        holding.set()
        assert gate.wait(15), "the test never let the holder go"
        return {"until": held.expires_at}

    undone: list[str] = []
    contender = contender_saga("seat-contender", "seat:1", undone=undone)
    finished: list[Run] = []
    thread = threading.Thread(
        target=lambda: finished.append(engine.run(holder, {}, run_id="holder"))
    )
    thread.start()
    try:
        assert holding.wait(10)
        started = time.monotonic()
        run = engine.run(contender, {}, run_id="contender")
        elapsed = time.monotonic() - started

        assert run.status is RunStatus.ROLLED_BACK
        assert elapsed < 3.0  # wait=0: no polling
        assert run.error is not None
        assert run.error.type == BUSY
        assert "reservation 'seat:1' is held by run 'holder'" in run.error.message
        error = failure_of(engine.history("contender"), "take_seat")
        assert error.type == BUSY
        assert "'holder'" in error.message
        assert undone == ["contender"]  # the step before it was compensated
        assert "holder" not in run.state
        # The holder is untouched: still in its step, still holding the name.
        assert engine.get("holder").status is RunStatus.RUNNING
    finally:
        gate.set()
        thread.join(15)
    assert [r.status for r in finished] == [RunStatus.COMPLETED]


def test_a_waiting_contender_gets_the_name_when_the_holder_finishes_and_not_before(
    store_url: str,
) -> None:
    async def body() -> None:
        async with AsyncEngine(store_url, lease_seconds=5.0) as engine:
            store = engine.store
            gate = asyncio.Event()
            holder: Saga[Any] = Saga("room-holder")

            @holder.step
            async def take(state: State, ctx: StepContext) -> None:
                await ctx.areserve("room:7", ttl=60)
                await gate.wait()

            undone: list[str] = []
            contender = contender_saga("room-contender", "room:7", wait=10.0, undone=undone)

            holding = asyncio.ensure_future(engine.run(holder, {}, run_id="h"))

            async def held() -> bool:
                return [r.run_id for r in await store.reservations()] == ["h"]

            await until(held, "the holder's reservation")
            waiting = asyncio.ensure_future(engine.run(contender, {}, run_id="c"))

            async def asking() -> bool:
                return any(
                    e.kind is EventKind.STEP_STARTED and e.step == "take_seat"
                    for e in await store.journal("c")  # [] until the run exists
                )

            await until(asking, "the contender's step")
            await asyncio.sleep(0.6)  # several polls of the contender
            assert not waiting.done()
            assert await held()  # it has not taken the name from a live holder
            released_at = time.time()
            gate.set()
            first = await asyncio.wait_for(holding, 10)
            second = await asyncio.wait_for(waiting, 15)

            assert first.status is RunStatus.COMPLETED
            assert second.status is RunStatus.COMPLETED
            assert second.state["holder"] == "c"
            got_at = second.state["got_at"]
            holder_done = next(
                e.at for e in await engine.history("h") if e.kind is EventKind.RUN_FINISHED
            )
            asked_at = next(
                e.at
                for e in await engine.history("c")
                if e.kind is EventKind.STEP_STARTED and e.step == "take_seat"
            )
            # Asked while the holder ran; obtained only after the commit that
            # finished the holder (which also freed the name), and soon after.
            assert asked_at < released_at <= holder_done <= got_at
            assert got_at - holder_done < 2.0
            assert undone == []
            assert await store.reservations() == []  # the contender finished too

    run_async(body())


# -- refresh, early release, listing, freeing at the end --------------------------------------


def test_refresh_early_release_and_what_the_store_lists(store_url: str) -> None:
    clock = FakeClock()
    t0 = clock.now
    seen: dict[str, Any] = {}
    holder: Saga[Any] = Saga("pauser")

    @holder.step
    def hold(state: State, ctx: StepContext) -> None:
        seen["first"] = ctx.reserve("seat:A", ttl=30)
        ctx.reserve("seat:B", ttl=30)
        clock.now += 5
        seen["again"] = ctx.reserve("seat:A", ttl=30)  # the same run: a refresh
        seen["released"] = ctx.release("seat:B")
        seen["not_held"] = ctx.release("seat:Z")

    @holder.step
    def approve(state: State, ctx: StepContext) -> None:
        raise Pause("waiting for a manager")

    undone: list[str] = []

    async def body() -> None:
        async with AsyncEngine(store_url, clock=clock) as engine:
            store = engine.store
            paused = await engine.run(holder, {}, run_id="h")
            assert paused.status is RunStatus.PAUSED
            assert seen["first"] == Reservation("seat:A", "h", t0 + 30)
            assert seen["again"] == Reservation("seat:A", "h", t0 + 35)
            assert seen["released"] == 1
            assert seen["not_held"] == 0
            # A paused run keeps what it holds; what it released is free.
            assert await store.reservations() == [Reservation("seat:A", "h", t0 + 35)]
            assert await store.reservations(run_id="h", now=clock()) == [
                Reservation("seat:A", "h", t0 + 35)
            ]

            free = await engine.run(contender_saga("b", "seat:B", undone=undone), {}, run_id="b")
            assert free.status is RunStatus.COMPLETED
            assert free.state["holder"] == "b"
            taken = await engine.run(contender_saga("a", "seat:A", undone=undone), {}, run_id="a")
            assert taken.status is RunStatus.ROLLED_BACK
            assert taken.error is not None
            assert taken.error.type == BUSY
            assert "held by run 'h'" in taken.error.message
            assert undone == ["a"]
            assert await store.reservations() == [Reservation("seat:A", "h", t0 + 35)]

            cancelled = await engine.cancel("h", reason="no approval")
            assert cancelled.status is RunStatus.CANCELLED
            assert await store.reservations() == []  # cancelling frees it too

    run_async(body())


@pytest.mark.parametrize("outcome", [RunStatus.COMPLETED, RunStatus.ROLLED_BACK])
def test_a_finished_run_frees_every_reservation_it_holds(
    store_url: str, outcome: RunStatus
) -> None:
    during: list[list[str]] = []

    async def body() -> None:
        async with AsyncEngine(store_url) as engine:
            store = engine.store
            saga: Saga[Any] = Saga(f"frees-{outcome}")

            @saga.step
            def sync_part(state: State, ctx: StepContext) -> None:
                ctx.reserve("sku:1", ttl=60)
                ctx.reserve("sku:2", ttl=60)

            @sync_part.compensate
            def undo_sync(state: State, ctx: StepContext) -> None:
                return None

            @saga.step
            async def async_part(state: State, ctx: StepContext) -> None:
                await ctx.areserve("sku:3", ttl=60)
                during.append([r.name for r in await store.reservations(run_id=ctx.run_id)])

            @saga.step
            def last(state: State, ctx: StepContext) -> None:
                if state["fail"]:
                    raise PermanentError("payment declined")

            other = await engine.run(contender_saga("keeps", "sku:9", undone=[]), {}, run_id="o")
            assert other.status is RunStatus.COMPLETED
            run = await engine.run(saga, {"fail": outcome is RunStatus.ROLLED_BACK}, run_id="frees")
            assert run.status is outcome
            assert during == [["sku:1", "sku:2", "sku:3"]]
            assert await store.reservations(run_id="frees") == []
            assert await store.reservations() == []

    run_async(body())


# -- async steps --------------------------------------------------------------------------


def test_async_steps_use_areserve_and_arelease(store_url: str) -> None:
    async def body() -> None:
        async with AsyncEngine(store_url) as engine:
            store = engine.store
            saga: Saga[Any] = Saga("async-seat")

            @saga.step
            async def take(state: State, ctx: StepContext) -> State:
                first = await ctx.areserve("seat:X", ttl=30)
                await ctx.areserve("seat:Y", ttl=30)
                names = [r.name for r in await store.reservations(run_id=ctx.run_id)]
                freed = await ctx.arelease()  # no names: everything the run holds
                left = await store.reservations(run_id=ctx.run_id)
                return {"holder": first.run_id, "names": names, "freed": freed, "left": len(left)}

            run = await engine.run(saga, {}, run_id="ax")
            assert run.status is RunStatus.COMPLETED
            assert run.state == {
                "holder": "ax",
                "names": ["seat:X", "seat:Y"],
                "freed": 2,
                "left": 0,
            }

    run_async(body())


@pytest.mark.parametrize("call", ["reserve", "release"])
def test_the_blocking_calls_inside_an_async_step_fail_with_a_clear_error(
    engine: Engine, call: str
) -> None:
    undone: list[str] = []
    saga: Saga[Any] = Saga(f"wrong-{call}")

    @saga.step
    def book(state: State, ctx: StepContext) -> None:
        return None

    @book.compensate
    def unbook(state: State, ctx: StepContext) -> None:
        undone.append(ctx.run_id)

    @saga.step(retry=RetryPolicy(max_attempts=1))  # a misuse: fails the same at every attempt
    async def take(state: State, ctx: StepContext) -> None:
        if call == "reserve":
            ctx.reserve("seat:1", ttl=30)
        else:
            ctx.release()

    run = engine.run(saga, {}, run_id="wrong")
    assert run.status is RunStatus.ROLLED_BACK
    assert run.error is not None
    assert run.error.type == "sagakit.errors.SagaError"
    assert "an async step must use `await ctx.areserve()`" in run.error.message
    assert undone == ["wrong"]
    # Nothing was reserved: the call was refused before reaching the store.
    other = engine.run(contender_saga("after-wrong", "seat:1", undone=undone), {}, run_id="next")
    assert other.status is RunStatus.COMPLETED


def test_a_reservation_needs_a_positive_ttl(engine: Engine) -> None:
    saga: Saga[Any] = Saga("bad-ttl")

    @saga.step(retry=RetryPolicy(max_attempts=1))  # a misuse: fails the same at every attempt
    def take(state: State, ctx: StepContext) -> None:
        ctx.reserve("seat:1", ttl=0)

    run = engine.run(saga, {}, run_id="bad")
    assert run.status is RunStatus.FAILED  # nothing before it to compensate
    assert run.error is not None
    assert "ttl must be positive" in run.error.message


# -- expiry ---------------------------------------------------------------------------------


def test_an_expired_reservation_is_taken_over_by_another_run(store_url: str) -> None:
    clock = FakeClock()
    t0 = clock.now
    holder: Saga[Any] = Saga("forgetful")

    @holder.step
    def take(state: State, ctx: StepContext) -> None:
        ctx.reserve("seat:9", ttl=10)

    @holder.step
    def approve(state: State, ctx: StepContext) -> None:
        raise Pause("waiting for someone who never comes")

    undone: list[str] = []
    contender = contender_saga("taker", "seat:9", undone=undone)

    async def body() -> None:
        async with AsyncEngine(store_url, clock=clock) as engine:
            store = engine.store
            assert (await engine.run(holder, {}, run_id="h")).status is RunStatus.PAUSED

            clock.now = t0 + 9.5  # not yet expired
            early = await engine.run(contender, {}, run_id="early")
            assert early.status is RunStatus.ROLLED_BACK
            assert early.error is not None
            assert early.error.type == BUSY
            assert "held by run 'h'" in early.error.message

            clock.now = t0 + 10  # expires_at <= now: expired
            # Listed as long as nobody took it; not among the live ones.
            assert await store.reservations() == [Reservation("seat:9", "h", t0 + 10)]
            assert await store.reservations(now=clock()) == []

            late = await engine.run(contender, {}, run_id="late")
            assert late.status is RunStatus.COMPLETED
            assert late.state["holder"] == "late"
            assert late.state["until"] == t0 + 10 + 60
            assert undone == ["early"]
            # The paused holder lost it; the taker freed it when it finished.
            assert await store.reservations(run_id="h") == []
            assert await store.reservations() == []
            assert (await engine.get("h")).status is RunStatus.PAUSED

    run_async(body())


# -- a reservation that lapses under a running step ----------------------------------------

LAPSED = "sagakit.errors.ReservationLapsed"


def lapsing_saga(
    name: str, seat: str, *, ttl: float, undone: list[str], inside: Callable[[], None]
) -> Saga[Any]:
    """One compensatable step that reserves ``seat`` for ``ttl`` s, then runs ``inside``."""
    saga: Saga[Any] = Saga(name)

    @saga.step(retry=RetryPolicy(max_attempts=1))
    def book(state: State, ctx: StepContext) -> State:
        ctx.reserve(seat, ttl=ttl)
        inside()
        return {"booked": True}

    @book.compensate
    def unbook(state: State, ctx: StepContext) -> None:
        undone.append(ctx.run_id)

    return saga


def test_a_step_that_outlives_its_reservation_while_another_run_takes_it_is_not_a_success(
    engine: Engine,
) -> None:
    # Real time: the step holds the seat for 0.3 s, and runs on until another
    # run has taken the seat over once it expired.
    reserved = threading.Event()
    taken = threading.Event()

    def inside() -> None:
        reserved.set()
        assert taken.wait(15), "the other run never took the seat"

    undone: list[str] = []
    slow = lapsing_saga("slow-booker", "seat:9", ttl=0.3, undone=undone, inside=inside)
    other: Saga[Any] = Saga("seat-taker")

    @other.step
    def grab(state: State, ctx: StepContext) -> State:
        held = ctx.reserve("seat:9", ttl=60, wait=10)  # waits for the slow run's to expire
        taken.set()
        thread.join(15)  # holds the seat until the slow run is over
        return {"holder": held.run_id}

    finished: list[Run] = []
    thread = threading.Thread(target=lambda: finished.append(engine.run(slow, {}, run_id="slow")))
    thread.start()
    try:
        assert reserved.wait(10)
        taker = engine.run(other, {}, run_id="taker")
    finally:
        taken.set()
        thread.join(15)
    assert taker.status is RunStatus.COMPLETED
    (run,) = finished
    # Its outcome is unknown, as after a timeout: its own compensation ran.
    assert run.status is RunStatus.ROLLED_BACK
    assert undone == ["slow"]
    assert "booked" not in run.state
    history = engine.history("slow")
    error = failure_of(history, "book")
    assert error.type == LAPSED
    assert "reservation 'seat:9' of run 'slow' lapsed after 0.3 s and is held by run 'taker'" in (
        error.message
    )
    failed = [e for e in history if e.kind is EventKind.STEP_FAILED]
    assert failed[0].data["unknown"] is True
    assert not [e for e in history if e.kind is EventKind.STEP_SUCCEEDED]


def test_a_reservation_that_expired_with_nobody_taking_it_fails_the_step_too(
    store_url: str,
) -> None:
    clock = FakeClock()
    undone: list[str] = []

    def outlive() -> None:
        clock.now += 61  # the step runs past its 60 s ttl

    saga = lapsing_saga("late-booker", "room:3", ttl=60, undone=undone, inside=outlive)
    with Engine(store_url, clock=clock) as engine:
        run = engine.run(saga, {}, run_id="late")
        assert run.status is RunStatus.ROLLED_BACK
        assert undone == ["late"]
        error = failure_of(engine.history("late"), "book")
        assert error.type == LAPSED
        assert "lapsed after 60 s and is held by nobody" in error.message


def test_a_step_that_keeps_its_reservations_or_frees_them_early_succeeds(
    store_url: str,
) -> None:
    clock = FakeClock()
    saga: Saga[Any] = Saga("careful")

    @saga.step(retry=RetryPolicy(max_attempts=1))
    def refresh(state: State, ctx: StepContext) -> State:
        ctx.reserve("a", ttl=60)
        clock.now += 50
        ctx.reserve("a", ttl=60)  # refreshed before it lapsed
        clock.now += 50
        return {"a": True}

    @saga.step(retry=RetryPolicy(max_attempts=1))
    def free(state: State, ctx: StepContext) -> State:
        ctx.reserve("b", ttl=10)
        ctx.release("b")  # no longer needed, so no longer required
        clock.now += 50
        return {"b": True}

    with Engine(store_url, clock=clock) as engine:
        run = engine.run(saga, {}, run_id="careful")
        assert run.status is RunStatus.COMPLETED
        assert run.state == {"a": True, "b": True}


# -- several names at once -------------------------------------------------------------


def test_two_runs_reserving_overlapping_sets_in_opposite_orders_never_deadlock(
    store_url: str,
) -> None:
    # Each run takes both seats in one go, in its own order, and holds them
    # a while; the other waits holding neither, then gets both.
    async def body() -> None:
        async with AsyncEngine(store_url) as engine:
            holding: list[tuple[str, float, float]] = []

            def pair_saga(name: str, seats: list[str]) -> Saga[Any]:
                saga: Saga[Any] = Saga(name)

                @saga.step
                async def take(state: State, ctx: StepContext) -> State:
                    held = await ctx.areserve_all(seats, ttl=60, wait=20)
                    assert [r.name for r in held] == seats
                    assert {r.run_id for r in held} == {ctx.run_id}
                    start = time.monotonic()
                    await asyncio.sleep(0.2)
                    mine = await engine.store.reservations(run_id=ctx.run_id)
                    assert sorted(r.name for r in mine) == sorted(seats)
                    holding.append((ctx.run_id, start, time.monotonic()))
                    await ctx.arelease(*seats)
                    return {"seats": seats}

                return saga

            forward = pair_saga("pair-forward", ["seat:A", "seat:B"])
            backward = pair_saga("pair-backward", ["seat:B", "seat:A"])
            runs = await asyncio.wait_for(
                asyncio.gather(
                    *(
                        engine.run(forward if i % 2 else backward, {}, run_id=f"pair-{i}")
                        for i in range(4)
                    )
                ),
                timeout=60,
            )
            assert [r.status for r in runs] == [RunStatus.COMPLETED] * 4
            # Never two runs at once inside: each held both seats alone.
            spans = sorted(holding, key=lambda h: h[1])
            assert len(spans) == 4
            for (_, _, end), (_, start, _) in itertools.pairwise(spans):
                assert end <= start

    run_async(body())


def test_reserve_all_that_cannot_have_one_name_takes_none_and_fails(engine: Engine) -> None:
    holder: Saga[Any] = Saga("one-seat-holder")
    gate = threading.Event()
    holding = threading.Event()

    @holder.step
    def take(state: State, ctx: StepContext) -> None:
        ctx.reserve("seat:2", ttl=60)
        holding.set()
        assert gate.wait(15)

    greedy: Saga[Any] = Saga("greedy")

    @greedy.step(retry=RetryPolicy(max_attempts=1))
    def take_three(state: State, ctx: StepContext) -> None:
        ctx.reserve_all(["seat:1", "seat:2", "seat:3"], ttl=60)

    thread = threading.Thread(target=lambda: engine.run(holder, {}, run_id="one"))
    thread.start()
    try:
        assert holding.wait(10)
        run = engine.run(greedy, {}, run_id="greedy")
        assert run.status is RunStatus.FAILED
        assert run.error is not None
        assert run.error.type == BUSY
        assert "reservation 'seat:2' is held by run 'one'" in run.error.message
        assert [(r.name, r.run_id) for r in engine.reservations()] == [("seat:2", "one")]
    finally:
        gate.set()
        thread.join(15)


@pytest.mark.parametrize("names", [[], "seat:1", [1, 2]])
def test_reserve_all_refuses_what_is_not_a_list_of_names(engine: Engine, names: Any) -> None:
    saga: Saga[Any] = Saga("odd-names")

    @saga.step(retry=RetryPolicy(max_attempts=1))
    def take(state: State, ctx: StepContext) -> None:
        ctx.reserve_all(names, ttl=60)

    run = engine.run(saga, {}, run_id="odd")
    assert run.status is RunStatus.FAILED
    assert run.error is not None
    assert "give a list of one or more names" in run.error.message
