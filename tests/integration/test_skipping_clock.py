"""The skipping clock (`sagakit.testing.SkippingClock`) under a real engine.

Every timer wait of the engine goes through its clock: retry backoff, a
run's deadline, a reservation waited for. Under the skipping clock each
completes at once when nothing else runs, with the clock moved by exactly
the wait; a call that runs holds time still. The engines come from the
pytest plugin's fixtures (``saga_engine``, ``saga_engine_sqlite``), which
installing sagakit turns on. Nothing here asserts how long a test took: a
broken skip would wait for real hours, and the timeout stops it.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest

from sagakit import (
    AsyncEngine,
    Engine,
    Event,
    EventKind,
    Pause,
    PermanentError,
    RetryPolicy,
    RunStatus,
    Saga,
    SagaError,
    StepContext,
)
from sagakit.clock import HandClock, SystemClock, as_clock
from sagakit.definition.retry import DEFAULT_COMPENSATION_RETRY
from sagakit.testing import SkippingClock, adrive, drive

pytestmark = pytest.mark.timeout(60)

State = dict[str, Any]
HOUR = 3600.0


@pytest.fixture(params=["memory", "sqlite"])
def engine(request: pytest.FixtureRequest) -> Engine:
    """The plugin's engine on the memory store, then on a SQLite file."""
    fixture = "saga_engine" if request.param == "memory" else "saga_engine_sqlite"
    found: Engine = request.getfixturevalue(fixture)
    return found


def of(events: list[Event], kind: EventKind, step: str | None = None) -> list[Event]:
    return [e for e in events if e.kind is kind and (step is None or e.step == step)]


# -- retry backoff ------------------------------------------------------------------------


def test_retries_hours_apart_complete_with_the_clock_moved_by_their_schedule(
    engine: Engine, saga_clock: SkippingClock
) -> None:
    calls: Counter[str] = Counter()
    saga: Saga[Any] = Saga("hourly")
    hourly = RetryPolicy(
        max_attempts=5, initial_delay=HOUR, backoff=2.0, max_delay=8 * HOUR, jitter=0
    )

    @saga.step(retry=hourly)
    def charge(state: State, ctx: StepContext) -> State:
        calls["charge"] += 1
        if calls["charge"] < 5:
            raise ConnectionError("gateway down")
        return {"charged_at": ctx.now()}

    start = saga_clock()
    run = engine.run(saga, {}, run_id="hourly")

    assert run.status is RunStatus.COMPLETED
    assert calls["charge"] == 5
    schedule = HOUR + 2 * HOUR + 4 * HOUR + 8 * HOUR  # 15 hours of backoff
    assert saga_clock.elapsed == pytest.approx(schedule)
    assert run.state["charged_at"] == pytest.approx(start + schedule)
    started = [e.at for e in of(engine.history("hourly"), EventKind.STEP_STARTED, "charge")]
    gaps = [later - earlier for earlier, later in itertools.pairwise(started)]
    assert gaps == pytest.approx([HOUR, 2 * HOUR, 4 * HOUR, 8 * HOUR])


def test_a_compensation_failing_for_good_on_the_default_schedule_needs_attention(
    engine: Engine, saga_clock: SkippingClock
) -> None:
    calls: Counter[str] = Counter()
    saga: Saga[Any] = Saga("stuck-refund")

    @saga.step
    def charge(state: State, ctx: StepContext) -> None:
        calls["charge"] += 1

    @charge.compensate
    def refund(state: State, ctx: StepContext) -> None:
        calls["refund"] += 1
        raise ConnectionError("the card processor is down")

    @saga.step
    def ship(state: State, ctx: StepContext) -> None:
        raise PermanentError("no courier")

    run = engine.run(saga, {}, run_id="stuck")

    attempts = DEFAULT_COMPENSATION_RETRY.max_attempts
    assert attempts == 20
    assert run.status is RunStatus.NEEDS_ATTENTION
    assert calls == Counter(charge=1, refund=attempts)
    # The default schedule: 0.5 s doubling to a 60 s cap, ±10 %, over 19 waits.
    base = [min(0.5 * 2**n, 60.0) for n in range(attempts - 1)]
    assert sum(base) == pytest.approx(783.5)
    assert 0.9 * sum(base) <= saga_clock.elapsed <= 1.1 * sum(base)
    failed = of(engine.history("stuck"), EventKind.COMPENSATION_FAILED, "charge")
    assert len(failed) == attempts
    assert failed[-1].at - failed[0].at == pytest.approx(saga_clock.elapsed, abs=1e-6)


# -- deadlines ---------------------------------------------------------------------------------


def test_a_deadline_passes_while_the_run_waits_on_a_retry(
    engine: Engine, saga_clock: SkippingClock
) -> None:
    undone: list[str] = []
    saga: Saga[Any] = Saga("late")

    @saga.step
    def book(state: State, ctx: StepContext) -> None:
        pass

    @book.compensate
    def unbook(state: State, ctx: StepContext) -> None:
        undone.append(str(ctx.reason))

    @saga.step(
        retry=RetryPolicy(max_attempts=3, initial_delay=2 * HOUR, max_delay=2 * HOUR, jitter=0)
    )
    def confirm(state: State, ctx: StepContext) -> None:
        raise ConnectionError("supplier down")

    run = engine.run(saga, {}, run_id="late", deadline=timedelta(minutes=30))

    assert run.status is RunStatus.ROLLED_BACK
    assert undone == ["deadline"]
    assert saga_clock.elapsed == pytest.approx(30 * 60)  # the deadline, not the 2 h retry
    assert len(of(engine.history("late"), EventKind.STEP_STARTED, "confirm")) == 1


def test_a_paused_runs_deadline_passes_once_the_clock_is_moved_past_it(
    engine: Engine, saga_clock: SkippingClock
) -> None:
    undone: list[str] = []
    saga: Saga[Any] = Saga("approval")

    @saga.step
    def hold(state: State, ctx: StepContext) -> None:
        pass

    @hold.compensate
    def release(state: State, ctx: StepContext) -> None:
        undone.append(str(ctx.reason))

    @saga.step
    def approve(state: State, ctx: StepContext) -> None:
        if not state.get("approved"):
            raise Pause("approve the order?", options=["approve"])

    run = engine.run(saga, {}, run_id="ask", deadline=timedelta(hours=2))
    assert run.status is RunStatus.PAUSED

    assert drive(engine, "ask").status is RunStatus.PAUSED  # nothing but time moves it on
    assert saga_clock.elapsed == 0

    saga_clock.advance(timedelta(hours=3))
    run = drive(engine, "ask")

    assert run.status is RunStatus.ROLLED_BACK
    assert undone == ["deadline"]


# -- reservations ------------------------------------------------------------------------------


def test_a_reservation_wait_ends_when_the_holders_reservation_expires(
    engine: Engine, saga_clock: SkippingClock
) -> None:
    start = saga_clock()
    holder: Saga[Any] = Saga("holder")

    @holder.step
    def take(state: State, ctx: StepContext) -> None:
        ctx.reserve("seat:1A", ttl=120)

    seen: Counter[str] = Counter()

    @holder.step(
        retry=RetryPolicy(max_attempts=2, initial_delay=2 * HOUR, max_delay=2 * HOUR, jitter=0)
    )
    def pay(state: State, ctx: StepContext) -> None:
        seen["pay"] += 1
        if seen["pay"] == 1:
            raise ConnectionError("bank down")  # waits two hours, still holding the seat

    waiter: Saga[Any] = Saga("waiter")
    wait_a_minute = RetryPolicy(max_attempts=2, initial_delay=60, jitter=0)

    @waiter.step(retry=wait_a_minute)
    def arrive(state: State, ctx: StepContext) -> None:
        seen["arrive"] += 1
        if seen["arrive"] == 1:
            raise ConnectionError("late")  # so that the holder takes the seat first

    @waiter.step
    def sit(state: State, ctx: StepContext) -> State:
        held = ctx.reserve("seat:1A", ttl=60, wait=HOUR)
        return {"sat_at": ctx.now(), "holder": held.run_id}

    engine.register(holder, waiter)
    engine.start(holder, {}, run_id="holder")
    engine.start(waiter, {}, run_id="waiter")

    run = drive(engine, "waiter")

    assert run.status is RunStatus.COMPLETED
    assert run.state["holder"] == "waiter"
    # It sat once the holder's seat expired (120 s), long before the holder's retry (2 h).
    assert start + 120 <= run.state["sat_at"] < start + 130
    assert drive(engine, "holder").status is RunStatus.COMPLETED
    assert saga_clock.elapsed == pytest.approx(2 * HOUR)


# -- a call holds time still -----------------------------------------------------------------


def test_a_sync_step_running_under_its_timeout_is_not_skipped_over(
    engine: Engine, saga_clock: SkippingClock
) -> None:
    saga: Saga[Any] = Saga("beside")
    tries: Counter[str] = Counter()

    @saga.step(timeout=30)
    def slow(state: State, ctx: StepContext) -> State:
        began = ctx.now()
        time.sleep(0.3)  # real work, on a thread, beside a timer an hour long
        return {"slow_took": ctx.now() - began}

    @saga.step(retry=RetryPolicy(max_attempts=2, initial_delay=HOUR, max_delay=HOUR, jitter=0))
    def flaky(state: State, ctx: StepContext) -> None:
        tries["flaky"] += 1
        if tries["flaky"] == 1:
            raise ConnectionError("blip")

    saga.parallel(slow, flaky)

    run = engine.run(saga, {}, run_id="beside")

    assert run.status is RunStatus.COMPLETED
    assert run.state["slow_took"] == 0  # no time skipped while it ran
    assert tries["flaky"] == 2
    assert saga_clock.elapsed == pytest.approx(HOUR)  # then the retry timer skipped
    failed = of(engine.history("beside"), EventKind.STEP_FAILED, "slow")
    assert failed == []  # its 30 s timeout is real time, and it took 0.3 s


def test_a_step_that_runs_past_its_timeout_times_out_in_real_time(
    saga_engine: Engine, saga_clock: SkippingClock
) -> None:
    release = threading.Event()
    saga: Saga[Any] = Saga("hang")

    @saga.step(timeout=0.2, retry=RetryPolicy(max_attempts=1))
    def hang(state: State, ctx: StepContext) -> None:
        release.wait(10)

    try:
        run = saga_engine.run(saga, {}, run_id="hang")
    finally:
        release.set()
    assert run.status is RunStatus.FAILED
    assert run.error is not None
    assert run.error.timed_out
    assert saga_clock.elapsed == 0


# -- moving the clock by hand ----------------------------------------------------------------


def test_advance_moves_the_clock_and_what_steps_read(
    saga_engine: Engine, saga_clock: SkippingClock
) -> None:
    saga: Saga[Any] = Saga("next-day")

    @saga.step
    def order(state: State, ctx: StepContext) -> None:
        pass

    @order.compensate
    def cancel(state: State, ctx: StepContext) -> State:
        return {"since": ctx.since_step_finished}

    assert saga_engine.run(saga, {}, run_id="o").status is RunStatus.COMPLETED
    moved = saga_clock.advance(timedelta(days=1))
    assert moved == saga_clock() == saga_clock.start + 86_400
    run = saga_engine.cancel("o", reason="changed my mind")
    assert run.status is RunStatus.CANCELLED
    assert run.state["since"] == pytest.approx(86_400)


@pytest.mark.parametrize("by", [-1, float("nan"), float("inf"), "1h", True])
def test_advance_refuses_what_is_not_a_step_forward(by: Any) -> None:
    clock = SkippingClock(start=1_000.0)
    with pytest.raises(SagaError, match="advance"):
        clock.advance(by)
    assert clock() == 1_000.0


@pytest.mark.parametrize("start", [float("nan"), "now", True])
def test_a_skipping_clock_refuses_a_start_that_is_not_a_time(start: Any) -> None:
    with pytest.raises(SagaError, match="start"):
        SkippingClock(start=start)


# -- the clock on its own ----------------------------------------------------------------------


def test_concurrent_waits_wake_in_order_each_at_its_own_time() -> None:

    clock = SkippingClock(start=0.0)
    woke: list[tuple[str, float]] = []

    async def sleeper(name: str, when: float) -> None:
        await clock.sleep_until(when)
        woke.append((name, clock()))

    async def main() -> None:
        await asyncio.gather(sleeper("c", 300), sleeper("a", 10), sleeper("b", 60))

    asyncio.run(main())
    assert woke == [("a", 10), ("b", 60), ("c", 300)]
    assert clock.skips == 3


def test_time_does_not_skip_while_the_clock_is_held_busy() -> None:

    clock = SkippingClock(start=0.0)

    async def main() -> float:
        async def work() -> float:
            with clock.busy():
                await asyncio.sleep(0.05)  # real work under way
                return clock()

        sleeping = asyncio.ensure_future(clock.sleep_until(100))
        read = await work()
        await sleeping
        return read

    assert asyncio.run(main()) == 0.0  # read while busy: time had not moved
    assert clock() == 100


def test_a_wait_woken_by_a_future_leaves_the_clock_where_it_was() -> None:

    clock = SkippingClock(start=0.0)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        woken: asyncio.Future[None] = loop.create_future()
        with clock.busy():  # nothing skips while the wake-up is on its way
            loop.call_soon(woken.set_result, None)
            await clock.sleep_until(1_000, (woken,))

    asyncio.run(main())
    assert clock() == 0.0


def test_async_engine_runs_and_adrive_under_the_skipping_clock() -> None:

    clock = SkippingClock()
    saga: Saga[Any] = Saga("async-backoff")
    tries: Counter[str] = Counter()

    @saga.step(retry=RetryPolicy(max_attempts=3, initial_delay=600, max_delay=3600, jitter=0))
    async def ping(state: State, ctx: StepContext) -> None:
        tries["ping"] += 1
        if tries["ping"] < 3:
            raise ConnectionError("no answer")

    async def main() -> RunStatus:
        async with AsyncEngine("memory://async-skip", clock=clock) as engine:
            await engine.start(saga, {}, run_id="p")
            return (await adrive(engine, "p")).status

    assert asyncio.run(main()) is RunStatus.COMPLETED
    assert clock.elapsed == pytest.approx(600 + 1200)


def test_the_engine_takes_a_plain_function_as_its_clock_and_keeps_waits_real() -> None:
    def read() -> float:
        return 5.0

    assert isinstance(as_clock(time.time), SystemClock)
    wrapped = as_clock(read)
    assert isinstance(wrapped, HandClock)
    assert wrapped() == 5.0
    skipping = SkippingClock()
    assert as_clock(skipping) is skipping
    with Engine("memory://plain-clock", clock=read) as engine:
        assert engine.clock() == 5.0
    with pytest.raises(TypeError, match="clock must be"):
        as_clock(42)  # type: ignore[arg-type]
