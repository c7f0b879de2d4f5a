"""The order saga the service starts and its workers drive.

reserve_stock -> charge_card -> ship_order (the pivot) -> send_confirmation.
A card ending in 0002 is declined for good: the saga rolls back and the
stock reserved is released. The card number is marked sensitive: the run
view, the dashboard and the logs show it as ``***``.

Workers serve it with ``sagakit worker --app order_saga`` (run from this
folder); the web service imports it to start runs and to register it with
the dashboard it mounts.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field

from sagakit import PermanentError, Saga, Sensitive, StepContext

DECLINED_SUFFIX = "0002"


class Order(BaseModel):
    """What POST /orders takes, and what the saga keeps as it goes."""

    order_id: str = Field(min_length=1, max_length=100)
    item: str = Field(min_length=1, max_length=100)
    quantity: int = Field(ge=1, le=1000)
    card: Annotated[str, Sensitive()] = Field(min_length=4, max_length=30)
    reserved: bool = False
    charged: bool = False
    shipped: bool = False


order: Saga[Order] = Saga("order", state=Order)


@order.step
def reserve_stock(state: Order, ctx: StepContext) -> dict[str, bool]:
    # A real service calls its inventory here, keyed on the run id so a
    # retried attempt reserves once.
    return {"reserved": True}


@reserve_stock.compensate
def release_stock(state: Order, ctx: StepContext) -> dict[str, bool]:
    return {"reserved": False}


@order.step
def charge_card(state: Order, ctx: StepContext) -> dict[str, bool]:
    if state.card.endswith(DECLINED_SUFFIX):
        raise PermanentError(f"card {state.card} declined")
    return {"charged": True}


@charge_card.compensate
def refund_card(state: Order, ctx: StepContext) -> dict[str, bool]:
    return {"charged": False}


@order.step(kind="pivot")
def ship_order(state: Order, ctx: StepContext) -> dict[str, bool]:
    return {"shipped": True}


@order.step(kind="retriable")
def send_confirmation(state: Order, ctx: StepContext) -> None:
    return None
