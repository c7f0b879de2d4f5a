"""What steps and compensations do to the state is recorded, however they do it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pydantic import BaseModel

from sagakit import Engine, EventKind, PermanentError, RunStatus, Saga, StepContext


class Order(BaseModel):
    paid: int = 0
    log: list[str] = []
    order_created: bool = False


def test_compensation_results_and_in_place_changes_reach_the_state(engine: Engine) -> None:
    saga: Saga[Any] = Saga("order", state=Order)
    seen: dict[str, Any] = {}

    @saga.step
    def create(state: Order, context: StepContext, **kwargs: Any) -> dict[str, Any]:
        state.log.append("create")
        return {"order_created": True, "paid": 30, "receipt": "R-1"}

    @create.compensate
    def cancel(state: Order, context: StepContext, **kwargs: Any) -> dict[str, Any]:
        seen["step_result"] = context.step_result
        state.log.append("cancel")
        return {"order_created": False, "refunded": 30}

    @saga.step
    def ship(state: Order, ctx: StepContext) -> None:
        state.log.append("ship")  # dropped: the attempt failed
        raise PermanentError("carrier API unavailable")

    run = engine.run(saga, Order())
    assert run.status is RunStatus.ROLLED_BACK
    assert run.state == Order(paid=30, log=["create", "cancel"], order_created=False)
    # The whole result is journaled, though the model has no field for a key of it.
    assert seen["step_result"] == {
        "order_created": True,
        "paid": 30,
        "receipt": "R-1",
        "log": ["create"],
    }
    undone = [e for e in engine.history(run.id) if e.kind is EventKind.COMPENSATION_SUCCEEDED]
    assert undone[0].data["result"] == {
        "order_created": False,
        "refunded": 30,
        "log": [
            "create",
            "cancel",
        ],
    }


def test_a_dict_state_changed_in_place_is_recorded_and_never_leaks(engine: Engine) -> None:
    saga: Saga[Any] = Saga("dicts")
    handed: list[dict[str, Any]] = []

    @saga.step
    def first(state: dict[str, Any], ctx: StepContext) -> None:
        handed.append(state)
        state["items"].append("a")
        state["count"] = 1

    @saga.step
    def second(state: dict[str, Any], ctx: StepContext) -> None:
        handed.append(state)
        state["items"].append("b")

    run = engine.run(saga, {"items": []})
    assert run.data == {"items": ["a", "b"], "count": 1}
    assert handed[0] is not handed[1]
    assert handed[0]["items"] is not handed[1]["items"]  # a deep copy for each call
    started = engine.history(run.id)[0]
    assert started.data["state"] == {"items": []}


def test_the_context_speaks_ruvons_names_too(engine: Engine) -> None:
    saga: Saga[Any] = Saga("ruvon")
    seen: list[tuple[str, str, Any]] = []

    @saga.step
    def one(state: dict[str, Any], context: StepContext, **kwargs: Any) -> dict[str, Any]:
        seen.append((context.workflow_id, context.step_name, context.previous_step_result))
        return {"a": 1}

    @saga.step
    def two(state: dict[str, Any], context: StepContext, **kwargs: Any) -> dict[str, Any]:
        seen.append((context.workflow_id, context.step_name, context.previous_step_result))
        return {"b": 2}

    @saga.step
    def three(state: dict[str, Any], context: StepContext, **kwargs: Any) -> None:
        seen.append((context.workflow_id, context.step_name, context.previous_step_result))

    saga.parallel(one, two)
    run = engine.run(saga, {}, run_id="r-1")
    assert run.status is RunStatus.COMPLETED
    assert sorted(seen) == [
        ("r-1", "one", None),
        ("r-1", "three", {"a": 1, "b": 2}),
        (
            "r-1",
            "two",
            None,
        ),
    ]


class Legs(BaseModel):
    outbound: str | None = None
    inbound: str | None = None


@pytest.mark.parametrize("model", [None, Legs])
def test_parallel_members_do_not_undo_each_others_results(
    engine: Engine, model: type[BaseModel] | None
) -> None:
    # Both members get the state as it was when the stage began; the slower
    # one must not report the faster one's key as "changed back" to None.
    saga: Saga[Any] = Saga(f"legs-{model is not None}", state=model)

    @saga.step
    async def outbound(state: Any, ctx: StepContext) -> dict[str, Any]:
        return {"outbound": "F1"}

    @saga.step
    async def inbound(state: Any, ctx: StepContext) -> dict[str, Any]:
        await asyncio.sleep(0.05)
        return {"inbound": "F2"}

    saga.parallel(outbound, inbound)
    run = engine.run(saga, {"outbound": None, "inbound": None})
    assert run.data == {"outbound": "F1", "inbound": "F2"}
