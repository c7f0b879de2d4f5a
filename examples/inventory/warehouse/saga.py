"""The order saga: record the order, hold the SKU, charge, take the stock.

::

    record_order   local transaction: INSERT the order      undo: mark it rejected/cancelled
    hold_stock     reserve "sku:<sku>", check the shelf      undo: free the hold at once
    charge_payment the payment gateway                       undo: refund
    take_stock     local transaction: qty = qty - n          undo: qty = qty + n (once per key)

Why a hold. The shop must not charge a customer for a unit it then cannot
ship. Checking the shelf and taking the unit are two steps with a payment
between them, so without a hold two orders could both see the last unit,
both be charged, and one be refunded a moment later. ``hold_stock`` takes a
sagakit reservation on the SKU (a semantic lock: held by one run at a time,
freed in the transaction that ends the run, expiring on its own if the
process dies) and checks the level under it; since every order takes
stock only while holding it, the units it saw are still there when
``take_stock`` runs. Returns and deliveries only *add* stock, so they need
no hold. The decrement's own ``qty >= n`` condition and the table's CHECK
remain as the last line of defence.

Why relative undo. A cancellation a day later must add the order's
quantity back (``qty = qty + n``), not write back the level the order saw
(``qty = stock_seen``): every order sold in between would be erased, and
the shelf would claim units that were shipped. Relative changes commute,
so the undo is right whatever ran before, after or beside it.
"""

from __future__ import annotations

import time
from typing import Any

from sagakit import ReservationBusy, RetryPolicy, Saga, StepContext
from warehouse.models import Order, OutOfStock
from warehouse.payments import PaymentGateway
from warehouse.stock import Warehouse

# Transient gateway errors are worth two more tries; a decline is permanent.
CHARGE_RETRY = RetryPolicy(max_attempts=3, initial_delay=0.05, max_delay=1.0)
# Seconds between two looks at the shelf while an order waits for the hold.
HOLD_RECHECK = 0.25


def hold_name(sku: str) -> str:
    """The reservation an order holds on a SKU while it checks, pays and takes."""
    return f"sku:{sku}"


class OrderFlow:
    """The order saga, bound to one warehouse and one payment gateway.

    Each step is a method, so a variant can override one (the tests build a
    deliberately wrong "restore the old value" undo this way).

    Args:
        warehouse: The shop's tables, in the store's database.
        payments: The payment gateway.
        hold_ttl: Seconds a hold lasts if its run dies before freeing it.
        hold_wait: Seconds an order waits for another order's hold.

    Attributes:
        saga: The saga definition, to register with engines and workers.
    """

    name = "inventory-order"

    def __init__(
        self,
        warehouse: Warehouse,
        payments: PaymentGateway,
        *,
        hold_ttl: float = 300.0,
        hold_wait: float = 60.0,
    ) -> None:
        self.warehouse = warehouse
        self.payments = payments
        self.hold_ttl = hold_ttl
        self.hold_wait = hold_wait
        self.saga = self._define()

    def _define(self) -> Saga[Order]:
        saga: Saga[Order] = Saga(self.name, state=Order)
        saga.add_step(self.record_order, local_transaction=True, compensation=self.close_order)
        saga.add_step(self.hold_stock, compensation=self.release_hold)
        saga.add_step(self.charge_payment, retry=CHARGE_RETRY, compensation=self.refund_payment)
        saga.add_step(self.take_stock, local_transaction=True, compensation=self.return_stock)
        return saga

    # -- record_order -------------------------------------------------------------------

    def record_order(self, state: Order, ctx: StepContext) -> None:
        """Insert the order as ``placed``, exactly once, with the step's success."""
        self.warehouse.insert_order(ctx.connection, ctx.run_id, state)

    def close_order(self, state: Order, ctx: StepContext) -> dict[str, Any]:
        """Tell the customer why the order did not go through (or was cancelled)."""
        if ctx.reason == "cancel":
            status, note = "cancelled", ctx.cancel_reason
        else:
            status, note = "rejected", ctx.error.message if ctx.error else ctx.reason
        with self.warehouse.transaction() as conn:
            self.warehouse.set_order_status(conn, ctx.run_id, status, note)
        return {"order": status}

    # -- hold_stock ---------------------------------------------------------------------

    def hold_stock(self, state: Order, ctx: StepContext) -> dict[str, Any]:
        """Hold the SKU and check the shelf under the hold.

        Raises:
            OutOfStock: fewer units on the shelf than ordered.
            ReservationBusy: another order held the SKU for ``hold_wait`` seconds.
        """
        hold = hold_name(state.sku)
        give_up = time.monotonic() + self.hold_wait
        while True:
            # Look at the shelf between waits: once it is empty the order is
            # refused at once, instead of queueing for the hold only to learn it.
            self._check_shelf(state)
            try:
                wait = max(0.0, min(HOLD_RECHECK, give_up - time.monotonic()))
                ctx.reserve(hold, ttl=self.hold_ttl, wait=wait)
                break
            except ReservationBusy:
                if time.monotonic() >= give_up:
                    raise
        try:
            level = self._check_shelf(state)
        except OutOfStock:
            ctx.release(hold)  # at once: the next order in line need not wait for our undo
            raise
        return {"stock_seen": level}

    def _check_shelf(self, state: Order) -> int:
        level = self.warehouse.level(state.sku)
        if level < state.quantity:
            raise OutOfStock(f"{state.sku}: {state.quantity} wanted, {level} on the shelf")
        return level

    def release_hold(self, state: Order, ctx: StepContext) -> dict[str, Any]:
        """Free the hold as soon as the undo starts.

        The run's end frees it too, but the refund before it may take long
        (a gateway that is down is retried for minutes): every other order
        for the SKU would wait that long. After a completed run (a cancel
        the next day) nothing is held any more and this frees nothing.
        """
        return {"holds_freed": ctx.release(hold_name(state.sku))}

    # -- charge_payment -----------------------------------------------------------------

    def charge_payment(self, state: Order, ctx: StepContext) -> dict[str, Any]:
        """Charge the customer; the idempotency key makes a retried charge charge once.

        Raises:
            PaymentDeclined: the bank refused.
        """
        payment_id = self.payments.charge(state.customer, state.amount, key=ctx.idempotency_key)
        return {"payment_id": payment_id}

    def refund_payment(self, state: Order, ctx: StepContext) -> dict[str, Any]:
        """Refund the charge in full (a refund rule could use ``ctx.since_step_finished``).

        When the charge timed out its outcome is unknown and no payment id
        was recorded: the gateway is asked what the charge's key paid, if
        anything.
        """
        payment_id = state.payment_id or self.payments.payment_for(ctx.action_key)
        if payment_id is None:
            return {"refunded": 0}  # the charge never went through
        refunded = self.payments.refund(payment_id, key=ctx.idempotency_key)
        return {"refunded": refunded}

    # -- take_stock ---------------------------------------------------------------------

    def take_stock(self, state: Order, ctx: StepContext) -> dict[str, Any]:
        """Take the units and confirm the order, in the transaction that records
        the step's success: both happen exactly once, or not at all.

        Raises:
            OutOfStock: the units are gone, which the hold rules out unless
                something took stock without holding the SKU.
        """
        left = self.warehouse.take(
            ctx.connection,
            state.sku,
            state.quantity,
            key=ctx.idempotency_key,
            order_id=ctx.run_id,
            at=ctx.now(),
        )
        if left is None:
            raise OutOfStock(f"{state.sku}: the units held for {ctx.run_id} are gone")
        self.warehouse.set_order_status(ctx.connection, ctx.run_id, "confirmed")
        return {"stock_after": left}

    def return_stock(self, state: Order, ctx: StepContext) -> dict[str, Any]:
        """Put the order's units back: ``qty = qty + n``, whatever the level is now.

        Not in a local transaction (compensations never are), so the ledger's
        unique key, the compensation's own idempotency key, is what makes a
        repeated attempt add nothing twice.
        """
        with self.warehouse.transaction() as conn:
            level = self.warehouse.put_back(
                conn,
                state.sku,
                state.quantity,
                key=ctx.idempotency_key,
                order_id=ctx.run_id,
                at=ctx.now(),
            )
        return {"returned": state.quantity, "stock_after": level}
