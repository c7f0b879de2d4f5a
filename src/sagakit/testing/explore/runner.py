"""Running one scenario: its engines, its clock, and the drive until the run settles.

Time never waits here. Each scenario has a clock of its own that moves only
when told: a run that would wait on a timer (a retry's backoff, a paused
run's deadline) is handed back with the timer kept in the store
(``park_after=0``), the clock is moved to the timer, and the run is driven
again, until it settles. Hours of retries cost a few drives.

A crash fault kills the engine driving the run (`CrashingStore`); the runner
lets the dead engine's threads finish, moves the clock past its lease, and
resumes the run with a fresh engine on the same data, as a worker on another
host would.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sagakit.definition import Saga
from sagakit.engine import AsyncEngine
from sagakit.errors import SagaError
from sagakit.journal import Event, RunStatus
from sagakit.run import Run
from sagakit.store import RunRecord, Store, open_store
from sagakit.testing.explore.crash import Crashes, CrashingStore, ProcessCrashed, crashing
from sagakit.testing.explore.faults import Call, Injector
from sagakit.testing.explore.plan import Fault, FaultKind, Scenario, When

DAY = 24 * 3600.0

# A run that needs more drives than this to settle is reported as not settling
# (a default compensation retry takes 20; unlimited retries of a retriable
# step that always fails would never end).
MAX_DRIVES = 500


class FakeClock:
    """Seconds since the epoch that move only when the runner moves them."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        """The time now."""
        return self.now

    def advance_to(self, when: float) -> None:
        """Move to ``when`` (never back)."""
        self.now = max(self.now, when)


@dataclass
class Outcome:
    """What became of a scenario's run.

    Attributes:
        run: The run as it ended (None if it could not be read).
        events: Its journal.
        calls: Every call of its functions, in order (`Call`).
        fired: The faults that did happen.
        crashes: How many engines died driving it.
        problem: Why the run did not settle, if it did not.
        world: What ``setup`` returned for the scenario.
        ended_at: The scenario's clock at its end.
    """

    run: Run | None = None
    events: list[Event] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)
    fired: set[Fault] = field(default_factory=set)
    crashes: int = 0
    problem: str | None = None
    world: Any = None
    ended_at: float = 0.0


class DidNotSettle(Exception):
    """The run was still active after `MAX_DRIVES` drives."""


@dataclass
class Runner:
    """Runs scenarios of one saga on one store.

    Attributes:
        saga: The user's saga (never changed: each scenario patches a copy).
        input: The run's input.
        url: The store every engine of every scenario opens.
        setup: Makes the scenario's world before its run starts.
        on_pause: ``"cancel"``: a paused run is cancelled (the answer a
            person can always give); ``"leave"``: it stays paused.
        lease_seconds: The engines' lease; a crash costs the clock this much.
    """

    saga: Saga[Any]
    input: Any
    url: str
    setup: Callable[[], Any] | None = None
    on_pause: str = "cancel"
    lease_seconds: float = 30.0
    _engines: int = 0
    _store: Store | None = None

    async def close(self) -> None:
        """Close the store the scenarios ran on."""
        if self._store is not None:
            await self._store.close()
            self._store = None

    async def run(self, scenario: Scenario, run_id: str, start: float) -> Outcome:
        """Run ``scenario`` as run ``run_id``, its clock starting at ``start``."""
        clock = FakeClock(start)
        injector = Injector(scenario, run_id, clock)
        crashes = Crashes(run_id, scenario.injected)
        saga = injector.patch(self.saga)
        outcome = Outcome(world=self.setup() if self.setup is not None else None)
        faults = scenario.injected
        cancel_at_start = _cancel(faults, When.START)
        cancel_next_day = _cancel(faults, When.NEXT_DAY)
        paused_cancelled = False
        engine, store = await self._engine(saga, clock, crashes, injector)
        try:
            started = await engine.start(saga, self.input, run_id=run_id)
            if not started.created:
                # The run ids are the plan's, so a store used before holds the
                # last exploration's runs: judging those would report nothing true.
                raise SagaError(
                    f"the store already holds run {run_id!r} from an earlier "
                    "exploration: explore needs a fresh store"
                )
            if cancel_at_start is not None:
                outcome.fired.add(cancel_at_start)
                await injector.post_cancel()
            while True:
                try:
                    record = await _settle(engine, run_id, clock, injector)
                    if record.status is RunStatus.COMPLETED and cancel_next_day is not None:
                        outcome.fired.add(cancel_next_day)
                        cancel_next_day = None
                        # Another customer's run completes in between: an undo that
                        # writes back an old value instead of undoing its own change
                        # erases that run's effect.
                        other = f"{run_id}-other"
                        await engine.start(saga, self.input, run_id=other)
                        await _settle(engine, other, clock, injector)
                        clock.now += DAY
                        await injector.post_cancel()
                        continue
                    if (
                        record.status is RunStatus.PAUSED
                        and self.on_pause == "cancel"
                        and not paused_cancelled
                    ):
                        paused_cancelled = True
                        await injector.post_cancel()
                        continue
                    break
                except ProcessCrashed:
                    if not store.died:
                        raise
                    outcome.crashes += 1
                    await _bury(engine)
                    # The dead engine's lease lapses before anyone takes the run over.
                    clock.now += self.lease_seconds + 1
                    engine, store = await self._engine(saga, clock, crashes, injector)
            outcome.run = await engine.get(run_id)
            outcome.events = await engine.history(run_id)
        except DidNotSettle as exc:
            outcome.problem = str(exc)
            outcome.run = await engine.get(run_id)
            outcome.events = await engine.history(run_id)
        finally:
            await _bury(engine)
        outcome.calls = injector.calls
        outcome.fired |= injector.fired | set(crashes.fired)
        outcome.ended_at = clock.now
        return outcome

    async def _engine(
        self, saga: Saga[Any], clock: FakeClock, crashes: Crashes, injector: Injector
    ) -> tuple[AsyncEngine, CrashingStore]:
        """A fresh engine (a process of its own) on the scenario's store."""
        self._engines += 1
        if self._store is None:
            # One store for every engine: opening one per engine (a SQLite
            # file's connection and checks) would cost more than the scenario.
            self._store = open_store(self.url)
            await self._store.open()
        store = crashing(self._store, crashes)
        engine = AsyncEngine(
            store=store,
            clock=clock,
            lease_seconds=self.lease_seconds,
            owner=f"explore-process-{self._engines}",
        )
        engine.register(saga)
        await engine.open()
        injector.store = store
        injector.loop = asyncio.get_running_loop()
        return engine, store


def _cancel(faults: tuple[Fault, ...], when: When) -> Fault | None:
    return next((f for f in faults if f.kind is FaultKind.CANCEL and f.when is when), None)


async def _settle(
    engine: AsyncEngine, run_id: str, clock: FakeClock, injector: Injector
) -> RunRecord:
    """Drive the run until it settles; its timers are skipped, not waited for.

    Raises:
        ProcessCrashed: the engine died (a crash fault fired).
        DidNotSettle: the run was still active after `MAX_DRIVES` drives.
    """
    drives = engine.drives
    for _ in range(MAX_DRIVES):
        await injector.settle_posts()
        record = await engine.store.get_run(run_id)
        assert record is not None, f"run {run_id} vanished from the store"
        if RunStatus(record.status).settled and record.mail == 0:
            return record
        if record.owner is not None and (record.lease_until or 0) >= clock.now:
            clock.advance_to((record.lease_until or 0) + 0.001)  # a dead owner's lease
        if record.wake_at is not None and record.mail == 0:
            clock.advance_to(record.wake_at)
        taken = await drives.claim(run_id)
        if taken is None:
            continue
        driver = await drives.claimed(taken, park_after=0.0)
        await drives.drive(driver)
    record = await engine.store.get_run(run_id)
    status = "gone" if record is None else record.status
    raise DidNotSettle(f"the run did not settle after {MAX_DRIVES} drives; it is still {status}")


async def _bury(engine: AsyncEngine) -> None:
    """Close an engine, first letting the calls its threads still make finish."""
    executor = engine.drives.executor
    if executor is not None:
        await asyncio.to_thread(executor.shutdown, wait=True)
    engine.drives.heartbeat.stop()
    await engine.close()
