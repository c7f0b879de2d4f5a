"""The steps and their compensations, with Ruvon's signature ``(state, context, **kwargs)``.

These functions would run unchanged under Ruvon: they take the state model
and a context, return the keys to merge into the state, and the
compensations change ``state.compensations_run`` in place.

A compensation reads the reference its action recorded; when the action
timed out, its outcome is unknown and nothing was recorded, so the
compensation asks the outside system what the action's call did under its
idempotency key (``context.action_key``) and undoes that, if anything.
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
    reference = state.order_reference or services.ORDERS.made_for(context.action_key)
    if reference is not None:  # None: the order was never created
        services.ORDERS.undo(reference)
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
    transaction = state.transaction_id or services.PAYMENTS.made_for(context.action_key)
    if transaction is not None:
        services.PAYMENTS.undo(transaction)
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
    reservation = state.reservation_id or services.WAREHOUSE.made_for(context.action_key)
    if reservation is not None:
        services.WAREHOUSE.undo(reservation)
    state.compensations_run.append("release_inventory")
    return {"inventory_reserved": False, "workflow_status": "inventory_released"}


def create_shipment(state: PaymentState, context: StepContext, **kwargs: Any) -> dict[str, Any]:
    """Book the shipment with the carrier (which may be down)."""
    tracking = services.ship(state.carrier, context.idempotency_key)
    return {"shipment_created": True, "tracking_number": tracking, "workflow_status": "completed"}


def cancel_shipment(state: PaymentState, context: StepContext, **kwargs: Any) -> dict[str, Any]:
    """Compensation: cancel the shipment (runs only if the run is cancelled later)."""
    tracking = state.tracking_number or services.SHIPMENTS.made_for(context.action_key)
    if tracking is not None:
        services.SHIPMENTS.undo(tracking)
    state.compensations_run.append("cancel_shipment")
    return {"shipment_created": False, "workflow_status": "shipment_canceled"}
