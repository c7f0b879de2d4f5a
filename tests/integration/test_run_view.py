"""The public run view (`sagakit.run_view`): status, current step, pending requests, timeline.

On every store. Its JSON has the shapes of ``sagakit show --json``: the
``run`` and ``timeline`` parts validate against the shipped JSON Schema.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import jsonschema
import pytest
from pydantic import BaseModel

from sagakit import (
    Engine,
    Pause,
    PermanentError,
    RunNotFound,
    RunStatus,
    RunView,
    Saga,
    Sensitive,
    StepContext,
    run_view,
)
from sagakit.cli.jsonout import output_schema

CARD = "4111111111111111"


class Order(BaseModel):
    order_id: str
    card: Annotated[str, Sensitive()]


shop: Saga[Order] = Saga("view-shop", state=Order)


@shop.step
def reserve(state: Order, ctx: StepContext) -> None:
    return None


@reserve.compensate
def release(state: Order, ctx: StepContext) -> None:
    return None


@shop.step
def confirm(state: Order, ctx: StepContext) -> None:
    if state.order_id == "ask":
        raise Pause("ship it?", options=["yes", "no"])


@shop.step
def charge(state: Order, ctx: StepContext) -> None:
    if state.order_id == "bad":
        raise PermanentError(f"card {state.card} declined")


def part(name: str) -> dict[str, Any]:
    """The schema of one part of a ``--json`` document, with the shared definitions."""
    schema = output_schema()
    return {"$defs": schema["$defs"], "$ref": f"#/$defs/{name}"}


def test_a_completed_run(engine: Engine) -> None:
    engine.register(shop)
    engine.run(shop, {"order_id": "ok", "card": CARD}, run_id="ok")
    view = run_view(engine, "ok")
    assert isinstance(view, RunView)
    assert view.status is RunStatus.COMPLETED
    assert view.finished
    assert view.current_step is None
    document = view.to_json()
    assert [row["step"] for row in document["timeline"]["rows"]] == ["reserve", "confirm", "charge"]
    assert "state" not in document["run"]
    jsonschema.validate(document["run"], part("run"))
    jsonschema.validate(document["timeline"], part("timeline"))
    assert CARD not in json.dumps(view.to_json(state=True))


def test_a_rolled_back_run_masks_its_errors(engine: Engine) -> None:
    engine.register(shop)
    engine.run(shop, {"order_id": "bad", "card": CARD}, run_id="bad")
    document = run_view(engine, "bad").to_json(state=True)
    assert document["run"]["status"] == "rolled_back"
    assert document["finished"] is True
    text = json.dumps(document)
    assert CARD not in text
    assert "***" in text
    outcomes = [(r["step"], r["phase"], r["outcome"]) for r in document["timeline"]["rows"]]
    assert ("reserve", "compensation", "compensated") in outcomes


def test_a_paused_run_is_on_its_step_with_a_pending_cancel(store_url: str) -> None:
    with Engine(store_url) as engine:
        engine.register(shop)
        run = engine.run(shop, {"order_id": "ask", "card": CARD}, run_id="ask")
        assert run.status is RunStatus.PAUSED
    with Engine(store_url) as bystander:  # knows no saga: the cancel is only recorded
        bystander.cancel("ask", reason="changed my mind")
        view = run_view(bystander, "ask")
    assert not view.finished
    assert (view.current_step, view.current_phase) == ("confirm", "action")
    assert [{k: v for k, v in p.items() if k != "at"} for p in view.pending] == [
        {"kind": "cancel", "reason": "changed my mind", "force": False}
    ]
    assert view.to_json()["current_step"] == "confirm"


def test_an_unknown_run(engine: Engine) -> None:
    with pytest.raises(RunNotFound):
        run_view(engine, "nope")
