"""Sagas for the dashboard's tests: a refund whose undo fails until fixed, and an approval.

``refund``: reserve -> charge (fails for order "bad"). Its ``release``
compensation fails for good while ``BROKEN`` holds the order, so a bad
order needs attention; once removed from ``BROKEN`` a retry rolls it back.
The state's ``card`` is marked sensitive.

``approval``: draft -> approve (pauses on a question answered by the
signals ``approve`` or ``reject``) -> publish.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel

from sagakit import Next, Pause, PermanentError, Saga, Sensitive, Signal, StepContext

CARD = "5500005555555559"
QUESTION = "publish this draft?"
BROKEN: set[str] = set()


class Order(BaseModel):
    order_id: str
    card: Annotated[str, Sensitive()]
    reserved: bool = False


refund: Saga[Order] = Saga("dash-refund", state=Order)


@refund.step
def reserve(state: Order, ctx: StepContext) -> dict[str, Any]:
    return {"reserved": True}


@reserve.compensate
def release(state: Order, ctx: StepContext) -> dict[str, Any]:
    if state.order_id in BROKEN:
        raise PermanentError(f"stock service refused release for card {state.card}")
    return {"reserved": False}


@refund.step
def charge(state: Order, ctx: StepContext) -> None:
    if state.order_id.startswith("bad"):
        raise PermanentError(f"card {state.card} declined")


approval: Saga[Any] = Saga("dash-approval")


@approval.step
def draft(state: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    return {"draft": "v1"}


@draft.compensate
def discard(state: dict[str, Any], ctx: StepContext) -> None:
    return None


@approval.step
def approve(state: dict[str, Any], ctx: StepContext) -> None:
    raise Pause(QUESTION, options=["approve", "reject"])


@approve.on_signal
def answered(state: dict[str, Any], ctx: StepContext, signal: Signal) -> Next:
    return Next.CONTINUE if signal.name == "approve" else Next.COMPENSATE


@approval.step
def publish(state: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    return {"published": True}


SAGAS = [refund, approval]
