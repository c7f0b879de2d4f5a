"""The steps and their compensations, with Ruvon's signature ``(state, context, **kwargs)``.

These functions would run unchanged under Ruvon: they take the state model
and a context, return the keys to merge into the state, and the
compensations change ``state.compensations_run`` in place.
"""

from __future__ import annotations

from typing import Any

from payment_processor import services
from payment_processor.models import PaymentState
from sagakit import StepContext


def create_order(state: PaymentState, context: StepContext, **kwargs: Any) -> dict[str, Any]:
    """Create the order in the order system."""
    reference = services.ORDERS.do(context.idempotency_key)
    return {"order_created": True, "order_reference": reference, "workflow_status": "order_created"}


def cancel_order(state: PaymentState, context: StepContext, **kwargs: Any) -> dict[str, Any]:
    """Compensation: cancel the order."""
    assert state.order_reference is not None  # set by create_order, which succeeded
    services.ORDERS.undo(state.order_reference)
    state.compensations_run.append("cancel_order")
    return {"order_created": False, "workflow_status": "order_canceled"}


def charge_payment(state: PaymentState, context: StepContext, **kwargs: Any) -> dict[str, Any]:
    """Charge the customer; the gateway keys the charge by the idempotency key."""
    transaction = services.PAYMENTS.do(context.idempotency_key)
    return {
        "payment_charged": True,
        "transaction_id": transaction,
        "workflow_status": "payment_charged",
    }


def refund_payment(state: PaymentState, context: StepContext, **kwargs: Any) -> dict[str, Any]:
    """Compensation: refund the charge."""
    assert state.transaction_id is not None
    services.PAYMENTS.undo(state.transaction_id)
    state.compensations_run.append("refund_payment")
    return {"payment_charged": False, "workflow_status": "payment_refunded"}


def reserve_inventory(state: PaymentState, context: StepContext, **kwargs: Any) -> dict[str, Any]:
    """Reserve the goods in the warehouse."""
    reservation = services.WAREHOUSE.do(context.idempotency_key)
    return {
        "inventory_reserved": True,
        "reservation_id": reservation,
        "workflow_status": "inventory_reserved",
    }


def release_inventory(state: PaymentState, context: StepContext, **kwargs: Any) -> dict[str, Any]:
    """Compensation: release the reservation."""
    assert state.reservation_id is not None
    services.WAREHOUSE.undo(state.reservation_id)
    state.compensations_run.append("release_inventory")
    return {"inventory_reserved": False, "workflow_status": "inventory_released"}


def create_shipment(state: PaymentState, context: StepContext, **kwargs: Any) -> dict[str, Any]:
    """Book the shipment with the carrier (which may be down)."""
    tracking = services.ship(state.carrier, context.idempotency_key)
    return {"shipment_created": True, "tracking_number": tracking, "workflow_status": "completed"}


def cancel_shipment(state: PaymentState, context: StepContext, **kwargs: Any) -> dict[str, Any]:
    """Compensation: cancel the shipment (runs only if the run is cancelled later)."""
    assert state.tracking_number is not None
    services.SHIPMENTS.undo(state.tracking_number)
    state.compensations_run.append("cancel_shipment")
    return {"shipment_created": False, "workflow_status": "shipment_canceled"}
