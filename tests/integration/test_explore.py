"""`sagakit.testing.explore`: the plan, the faults it injects, and what its report says."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest

from sagakit import PermanentError, Run, RunStatus, Saga, SagaError, StepContext
from sagakit.testing import explore, explore_async
from sagakit.testing.explore import FaultKind, build_plan

UNDONE = (RunStatus.ROLLED_BACK, RunStatus.CANCELLED)


class Bank:
    """Charges keyed by idempotency key (a repeated charge charges once); refunds add up."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.charges: dict[str, int] = {}
        self.refunded: dict[str, int] = {}  # charge key -> total refunded
        self.refunds: set[str] = set()

    def charge(self, key: str, amount: int) -> str:
        with self.lock:
            self.charges.setdefault(key, amount)
            return key

    def net(self, run_id: str) -> tuple[int, int]:
        """What one run charged, and what was refunded of it."""
        mine = [key for key in self.charges if key.startswith(f"{run_id}/")]
        return sum(self.charges[k] for k in mine), sum(self.refunded.get(k, 0) for k in mine)


def checkout(bank: Bank, *, idempotent_refund: bool) -> Saga[Any]:
    """reserve, charge (refunded on undo), ship."""
    saga: Saga[Any] = Saga("checkout")

    @saga.step
    def reserve(state: dict[str, Any], ctx: StepContext) -> None:
        return None

    @reserve.compensate
    def release(state: dict[str, Any], ctx: StepContext) -> None:
        return None

    @saga.step
    def charge(state: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        return {"charge": bank.charge(ctx.idempotency_key, state["amount"])}

    @charge.compensate
    def refund(state: dict[str, Any], ctx: StepContext) -> None:
        charge_key = state.get("charge") or ctx.action_key
        with bank.lock:
            if charge_key not in bank.charges:
                return
            if idempotent_refund and ctx.idempotency_key in bank.refunds:
                return
            bank.refunds.add(ctx.idempotency_key)
            # Without the check above, a second call refunds a second time.
            bank.refunded[charge_key] = bank.refunded.get(charge_key, 0) + bank.charges[charge_key]

    @saga.step
    def ship(state: dict[str, Any], ctx: StepContext) -> None:
        return None

    return saga


def explore_checkout(*, idempotent_refund: bool, **options: Any) -> Any:
    bank = Bank()
    saga = checkout(bank, idempotent_refund=idempotent_refund)

    def setup() -> Bank:
        bank.charges, bank.refunded, bank.refunds = {}, {}, set()
        return bank

    def check(run: Run, world: Bank) -> None:
        # This run's money only: a next-day cancel lets another run complete first.
        charged, refunded = world.net(run.id)
        if run.status is RunStatus.COMPLETED:
            assert (charged, refunded) == (30, 0), f"charged {charged}, refunded {refunded}"
        if run.status in UNDONE:
            assert refunded == charged, f"the customer got {refunded} back of {charged}"

    return explore(saga, {"amount": 30}, check=check, setup=setup, **options)


def test_an_idempotent_saga_passes_every_scenario() -> None:
    report = explore_checkout(idempotent_refund=True)
    assert report.ok, report.render(every=False)
    assert report.checked
    statuses = {r.status for r in report.results}
    assert statuses >= {"completed", "rolled_back", "cancelled", "needs_attention"}
    assert "all passed" in report.summary()


def test_a_refund_that_refunds_twice_when_called_twice_is_caught() -> None:
    report = explore_checkout(idempotent_refund=False, pairs=False)
    assert not report.ok
    findings = {f.finding: f for f in report.failures()}
    assert set(findings) == {"check failed: the customer got 60 back of 30"}
    failure = findings["check failed: the customer got 60 back of 30"]
    failing = {r.scenario.describe() for r in report.failed}
    # A crash between the refund and its record, and a refund delivered twice.
    assert (
        "crash before the success of the undo of charge is recorded "
        "(rolled back by: ship fails for good)"
    ) in failing
    assert "the undo of charge is delivered twice (rolled back by: ship fails for good)" in failing
    assert failure.smallest.scenario.size == 2
    text = report.render()
    assert "FAILED: check failed: the customer got 60 back of 30" in text
    # The smallest: the refund ran, the process died before its success was
    # recorded, and the engine that took the run over refunded again.
    smallest = failure.smallest
    assert smallest.scenario.describe().startswith("crash before the success of the undo of charge")
    assert smallest.crashes == 1
    refunds = [c for c in smallest.calls if c.step == "charge" and c.phase == "compensation"]
    assert [(c.attempt, c.effect) for c in refunds] == [(1, True), (2, True)]
    assert f"smallest scenario #{smallest.scenario.number} " in text
    with pytest.raises(AssertionError, match="the customer got 60 back of 30"):
        report.assert_ok()


def test_the_plan_covers_every_fault_and_is_seeded() -> None:
    saga = checkout(Bank(), idempotent_refund=True)
    plan = build_plan(saga, pairs=10, seed=7)
    kinds = [s.faults[0].kind for s in plan.scenarios if s.size >= 1 and len(s.faults) == 1]
    # Three steps: 4 crashes, a failure, a timeout, a double delivery and a cancel
    # each; two compensations: 4 crashes, fails once, fails for good, delivered twice.
    assert kinds.count(FaultKind.CRASH) == 3 * 4 + 2 * 4
    assert kinds.count(FaultKind.FAIL) == 3
    assert kinds.count(FaultKind.TIMEOUT) == 3
    assert kinds.count(FaultKind.TWICE) == 3 + 2
    assert kinds.count(FaultKind.COMPENSATION_FAILS) == 2
    assert kinds.count(FaultKind.COMPENSATION_FAILS_ONCE) == 2
    assert kinds.count(FaultKind.CANCEL) == 3 + 2  # during each step, at the start, next day
    assert plan.pairs_chosen == 10 < plan.pairs_possible
    assert build_plan(saga, pairs=10, seed=7) == plan
    assert build_plan(saga, pairs=10, seed=8) != plan
    assert build_plan(saga, pairs=False).pairs_chosen == 0


def test_a_compensation_retried_for_13_minutes_is_driven_on_the_scenarios_clock() -> None:
    """The default compensation retry: 20 attempts, backing off to a minute apart."""
    saga: Saga[Any] = Saga("slow-undo")

    @saga.step
    def book(state: dict[str, Any], ctx: StepContext) -> None:
        return None

    @book.compensate
    def unbook(state: dict[str, Any], ctx: StepContext) -> None:
        if ctx.attempt < 20:
            raise ConnectionError("the provider is down")

    @saga.step
    def pay(state: dict[str, Any], ctx: StepContext) -> None:
        raise PermanentError("card declined")

    report = explore(saga, {}, pairs=False)
    baseline = report.results[0]
    assert baseline.status == "rolled_back"
    undos = [e for e in baseline.events if e.kind == "compensation_started"]
    assert len(undos) == 20
    assert undos[-1].at - undos[0].at > 10 * 60  # minutes on the scenario's clock
    # A crash in the middle of those retries is not a failure either.
    crashed = [r for r in report.results if r.crashes]
    assert crashed
    assert report.ok, report.render(every=False)


def test_explore_runs_inside_an_event_loop_and_on_sqlite() -> None:
    async def main() -> tuple[Any, Any]:
        saga = checkout(Bank(), idempotent_refund=True)
        inside = explore(saga, {"amount": 1}, pairs=False)  # from a coroutine: on a thread
        awaited = await explore_async(saga, {"amount": 1}, pairs=False, store="sqlite")
        return inside, awaited

    inside, awaited = asyncio.run(main())
    assert inside.ok
    assert awaited.ok
    assert awaited.store == "sqlite"
    assert not inside.checked
    assert "sagakit's invariants only (no check was given)" in inside.summary()
    assert [r.status for r in inside.results] == [r.status for r in awaited.results]


def test_a_store_used_by_an_earlier_exploration_is_refused(tmp_path: Path) -> None:
    saga = checkout(Bank(), idempotent_refund=True)
    url = f"sqlite:///{tmp_path / 'explore.db'}"
    assert explore(saga, {"amount": 1}, pairs=False, store=url).ok
    with pytest.raises(SagaError, match="explore needs a fresh store"):
        explore(saga, {"amount": 1}, pairs=False, store=url)


def test_bad_arguments_are_refused_before_anything_runs() -> None:
    saga = checkout(Bank(), idempotent_refund=True)
    with pytest.raises(ValueError, match="store must be"):
        explore(saga, {"amount": 1}, store="mysql")
    with pytest.raises(ValueError, match="on_pause"):
        explore(saga, {"amount": 1}, on_pause="ignore")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="pairs"):
        explore(saga, {"amount": 1}, pairs=-1)


def test_the_report_masks_the_fields_a_saga_marks_sensitive() -> None:
    card = "4111111111111111"
    saga: Saga[Any] = Saga("card-pay", sensitive=["card"])

    @saga.step
    def charge(state: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        return {"charged": True}

    @charge.compensate
    def refund(state: dict[str, Any], ctx: StepContext) -> None:
        raise PermanentError(f"the gateway refused card {state['card']}")

    def check(run: Run) -> str:
        return "shown for its timeline"  # every scenario fails: the report draws one

    report = explore(saga, {"card": card}, check=check, pairs=False)
    text = report.render()
    assert "shown for its timeline" in text
    assert "the gateway refused card ***" in text
    assert card not in text
