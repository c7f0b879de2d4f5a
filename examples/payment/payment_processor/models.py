"""The saga's state: the order, and what each step has done so far."""

from __future__ import annotations

from pydantic import BaseModel


class PaymentState(BaseModel):
    """State of one payment: the order's details and every step's result.

    Each step sets its flag and reference; each compensation clears the flag
    and appends its name to ``compensations_run`` (changing the state in
    place, as Ruvon's tutorial does: sagakit records that too).
    """

    order_id: str
    customer_id: str
    amount: float
    currency: str = "USD"
    carrier: str = "acme-post"

    order_created: bool = False
    order_reference: str | None = None

    payment_charged: bool = False
    transaction_id: str | None = None

    inventory_reserved: bool = False
    reservation_id: str | None = None

    shipment_created: bool = False
    tracking_number: str | None = None

    compensations_run: list[str] = []
    workflow_status: str = "pending"
