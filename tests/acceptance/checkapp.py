"""An order saga and the changed definitions a deploy might bring, for ``sagakit check``.

``v1`` is the definition the runs were recorded with. ``record`` leaves one
run in each state the check reads (parked on a retry, paused, needing
attention) and one completed. The other attributes are what a deploy might
register instead, each one ``--app checkapp:ATTR`` away:

- ``same``: v1 again, unchanged: every run fits;
- ``with_v2``: v1 and a reworked version 2 beside it: every run fits;
- ``only_v2``: version 2 alone, v1 dropped: no run has its definition;
- ``renamed``: version 1 with ``charge`` renamed ``take_payment``;
- ``inserted``: version 1 with a ``validate`` step put before ``charge``;
- ``uncompensated``: version 1 whose ``reserve`` has lost its compensation.
"""

from __future__ import annotations

from typing import Any

from sagakit import Engine, Pause, PermanentError, RetryPolicy, Saga, StepContext

ONCE = RetryPolicy(max_attempts=1)
HOUR_LATER = RetryPolicy(max_attempts=3, initial_delay=3600.0, backoff=1.0, jitter=0.0)


def _reserve(state: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    return {"reserved": True}


def _unreserve(state: dict[str, Any], ctx: StepContext) -> None:
    if state.get("unreserve_breaks"):
        raise RuntimeError("the stock service refuses the release")


def _charge(state: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    if state.get("decline"):
        raise PermanentError("card declined")
    if state.get("flaky") and ctx.attempt == 1:
        raise ConnectionError("gateway busy")
    return {"charged": True}


def _refund(state: dict[str, Any], ctx: StepContext) -> None:
    return None


def _approve(state: dict[str, Any], ctx: StepContext) -> None:
    if state.get("wait") and not state.get("approved"):
        raise Pause("approve the order?", options=["approve"])


def _validate(state: dict[str, Any], ctx: StepContext) -> None:
    return None


def order(
    version: str = "1",
    *,
    charge: str = "charge",
    insert_validate: bool = False,
    reserve_compensated: bool = True,
) -> Saga[Any]:
    """The order saga as a deploy might define it."""
    saga: Saga[Any] = Saga("order", version=version)
    saga.add_step(
        _reserve,
        name="reserve",
        compensation=_unreserve if reserve_compensated else None,
        compensation_retry=ONCE if reserve_compensated else None,
    )
    if insert_validate:
        saga.add_step(_validate, name="validate")
    saga.add_step(_charge, name=charge, compensation=_refund, retry=HOUR_LATER)
    saga.add_step(_approve, name="approve")
    return saga


v1 = order()
same = [order()]
with_v2 = [order(), order("2", charge="take_payment", insert_validate=True)]
only_v2 = [order("2", charge="take_payment", insert_validate=True)]
renamed = [order(charge="take_payment")]
inserted = [order(insert_validate=True)]
uncompensated = [order(reserve_compensated=False)]

IN_FLIGHT = ("parked", "paused", "attention")
"""The runs `record` leaves unsettled, with the status each is in."""


def record(url: str) -> None:
    """Record, with ``v1``, a run in each status the check reads, and one completed."""
    with Engine(url) as engine:
        engine.register(v1)
        assert engine.run("order", {"wait": True}, run_id="paused").status.value == "paused"
        held = engine.run("order", {"decline": True, "unreserve_breaks": True}, run_id="attention")
        assert held.status.value == "needs_attention"
        assert engine.run("order", {}, run_id="done").status.value == "completed"
        engine.start("order", {"flaky": True}, run_id="parked")
        engine.recover()  # charge fails once and its retry is an hour away: parked
        assert engine.get("parked").status.value == "running"
