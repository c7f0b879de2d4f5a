"""Faults in the user's functions: a patched copy of the saga, and a log of every call.

The user's saga is never changed: `Injector.patch` builds a copy whose
actions and compensations are wrapped. A wrapper passes every call of
another run straight through; for the scenario's run it logs the call and
does what the scenario's faults say: fail without calling, call and then
time out, call twice with the same idempotency key, or post a cancel while
the step runs.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import copy
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sagakit.definition import Saga, Step
from sagakit.errors import PermanentError
from sagakit.journal import Phase
from sagakit.store import Store
from sagakit.testing.explore.plan import Fault, FaultKind, Scenario, When

CANCEL_REASON = "explore: a cancel injected by the fault plan"


class InjectedFault(Exception):
    """A passing failure that `explore` raised in place of a call (retried as any other)."""


@dataclass(frozen=True, slots=True)
class Call:
    """One call of a user's function in the scenario's run.

    Attributes:
        step: The step.
        phase: Its action or its compensation.
        attempt: The attempt, as sagakit numbered it.
        effect: Whether the user's function returned (it took effect); False
            when it raised, or when the fault plan failed the call instead.
        note: What the fault plan did to the call, if anything.
    """

    step: str
    phase: Phase
    attempt: int
    effect: bool
    note: str = ""


# Which fault wins when a scenario puts two on one function (a pair whose
# trigger hits a step that the other fault hits too): the one that fails.
_PRECEDENCE = (
    FaultKind.FAIL,
    FaultKind.COMPENSATION_FAILS,
    FaultKind.TIMEOUT,
    FaultKind.COMPENSATION_FAILS_ONCE,
    FaultKind.TWICE,
)


class Injector:
    """The faults of one scenario, applied to the calls of its run.

    Args:
        scenario: The scenario.
        run_id: The id of its run; calls of other runs are left alone.

    Attributes:
        calls: Every call of the run's functions, in order.
        fired: The faults that did happen (a fault whose step never ran did not).
        store: The store of the engine driving the run now (for cancels).
        loop: The event loop of that engine.
        clock: The scenario's clock.
    """

    def __init__(self, scenario: Scenario, run_id: str, clock: Callable[[], float]) -> None:
        self.run_id = run_id
        self.calls: list[Call] = []
        self.fired: set[Fault] = set()
        self.clock = clock
        self.store: Store | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._by_function: dict[tuple[Phase, str], Fault] = {}
        self._cancel_during: dict[str, Fault] = {}
        for fault in scenario.injected:
            if fault.kind is FaultKind.CANCEL and fault.when is When.DURING:
                assert fault.step is not None
                self._cancel_during[fault.step] = fault
            elif fault.kind in _PRECEDENCE and fault.step is not None:
                key = (fault.phase, fault.step)
                held = self._by_function.get(key)
                if held is None or _PRECEDENCE.index(fault.kind) < _PRECEDENCE.index(held.kind):
                    self._by_function[key] = fault
        self._failed_once: set[tuple[Phase, str]] = set()
        self._local: dict[str, bool] = {}
        self.posts: list[concurrent.futures.Future[None]] = []

    # -- the patched saga ---------------------------------------------------------------

    def patch(self, saga: Saga[Any]) -> Saga[Any]:
        """A copy of ``saga`` whose functions go through this injector."""
        patched: Saga[Any] = Saga(
            saga.name,
            state=saga.state_type,
            version=saga.version,
            continue_on_compensation_error=saga.continue_on_compensation_error,
            deadline=saga.deadline,
            sensitive=saga.sensitive,
        )
        for step in saga.steps:
            self._local[step.name] = step.local_transaction
            compensation = step.compensation
            added = patched.add_step(
                self._wrap(step.action, step, Phase.ACTION),
                name=step.name,
                kind=step.declared_kind,
                retry=step.retry,
                timeout=step.timeout,
                compensate_on_failure=step.compensate_on_failure,
                compensation=(
                    None
                    if compensation is None
                    else self._wrap(compensation, step, Phase.COMPENSATION)
                ),
                compensation_retry=step.compensation_retry,
                compensation_timeout=step.compensation_timeout,
                wait_for=step.wait_for,
                local_transaction=step.local_transaction,
                reserve=step.reserve,
            )
            added.failure_handler = step.failure_handler
            added.signal_handler = step.signal_handler
        plan = saga.plan()
        for stage in plan.stages:
            if len(stage) > 1:
                patched.parallel(*stage)
        if plan.compensation_order is not None:
            patched.compensation_order(*[list(group) for group in plan.compensation_order])
        return patched

    def _wrap(self, fn: Callable[..., Any], step: Step, phase: Phase) -> Callable[..., Any]:
        name = step.name
        if inspect.iscoroutinefunction(fn):

            async def call_async(state: Any, ctx: Any) -> Any:
                if ctx.run_id != self.run_id:
                    return await fn(state, ctx)
                fault = self._before(name, phase, ctx.attempt)
                if name in self._cancel_during and phase is Phase.ACTION:
                    await self._post_cancel(name)
                if fault is not None and fault.kind is FaultKind.TWICE:
                    self.fired.add(fault)
                    try:
                        await fn(copy.deepcopy(state), ctx)
                    except Exception:
                        self._log(name, phase, ctx.attempt, False, "first delivery")
                    else:
                        self._log(name, phase, ctx.attempt, True, "first delivery")
                try:
                    value = await fn(state, ctx)
                except BaseException:
                    self._log(name, phase, ctx.attempt, False)
                    raise
                return self._after(name, phase, ctx.attempt, fault, value)

            return call_async

        def call(state: Any, ctx: Any) -> Any:
            if ctx.run_id != self.run_id:
                return fn(state, ctx)
            fault = self._before(name, phase, ctx.attempt)
            if name in self._cancel_during and phase is Phase.ACTION:
                self._post_cancel_from_thread(name)
            if fault is not None and fault.kind is FaultKind.TWICE:
                self.fired.add(fault)
                try:
                    fn(copy.deepcopy(state), ctx)
                except Exception:
                    self._log(name, phase, ctx.attempt, False, "first delivery")
                else:
                    self._log(name, phase, ctx.attempt, True, "first delivery")
            try:
                value = fn(state, ctx)
            except BaseException:
                self._log(name, phase, ctx.attempt, False)
                raise
            return self._after(name, phase, ctx.attempt, fault, value)

        return call

    # -- what a call does ---------------------------------------------------------------

    def _before(self, step: str, phase: Phase, attempt: int) -> Fault | None:
        """The fault for this call; raises in place of the call if it fails it."""
        fault = self._by_function.get((phase, step))
        if fault is None:
            return None
        if fault.kind in (FaultKind.FAIL, FaultKind.COMPENSATION_FAILS):
            self.fired.add(fault)
            self._log(step, phase, attempt, False, "failed for good by explore")
            raise PermanentError(f"explore: {fault.describe()}")
        if fault.kind is FaultKind.COMPENSATION_FAILS_ONCE and (phase, step) not in (
            self._failed_once
        ):
            self._failed_once.add((phase, step))
            self.fired.add(fault)
            self._log(step, phase, attempt, False, "failed once by explore")
            raise InjectedFault(f"explore: {fault.describe()}")
        return fault

    def _after(self, step: str, phase: Phase, attempt: int, fault: Fault | None, value: Any) -> Any:
        if fault is not None and fault.kind is FaultKind.TIMEOUT:
            self.fired.add(fault)
            self._log(step, phase, attempt, True, "took effect, then timed out")
            raise TimeoutError(f"explore: {fault.describe()}")
        self._log(step, phase, attempt, True)
        return value

    def _log(self, step: str, phase: Phase, attempt: int, effect: bool, note: str = "") -> None:
        self.calls.append(Call(step, phase, attempt, effect, note))

    # -- cancels ------------------------------------------------------------------------

    async def post_cancel(self) -> None:
        """Leave a cancel for the run, as another process (`sagakit cancel`) would."""
        store = self.store
        assert store is not None, "the injector is bound to an engine's store first"
        await store.post(
            self.run_id, "cancel", {"reason": CANCEL_REASON, "force": False}, at=self.clock()
        )

    async def _post_cancel(self, step: str) -> None:
        fault = self._cancel_during.pop(step, None)
        if fault is not None:
            self.fired.add(fault)
            await self.post_cancel()

    def _post_cancel_from_thread(self, step: str) -> None:
        fault = self._cancel_during.pop(step, None)
        if fault is None:
            return
        self.fired.add(fault)
        loop = self.loop
        assert loop is not None, "the injector is bound to an engine's loop first"
        posted = asyncio.run_coroutine_threadsafe(self.post_cancel(), loop)
        if self._local.get(step, False):
            # The step's transaction holds the database's write lock until its
            # success commits: the cancel lands then (`settle_posts` awaits it).
            self.posts.append(posted)
        else:
            posted.result(timeout=60)

    async def settle_posts(self) -> None:
        """Wait for the cancels posted from inside a local transaction to land."""
        while self.posts:
            await asyncio.wrap_future(self.posts.pop())
