"""warehouse: the sagakit inventory example's application package.

Orders against one stock level, as a saga: `OrderFlow` (the saga), the
shop's tables in the store's own database (`Warehouse`), a fake payment
gateway, and the plumbing that runs many orders at once (`WorkerPool`).
"""

from __future__ import annotations

from warehouse.models import Order, OutOfStock, PaymentDeclined
from warehouse.payments import Charge, PaymentGateway, SlowBank
from warehouse.runtime import (
    ShiftedClock,
    WorkerPool,
    place_orders,
    settle,
    start_orders,
    wait_for_undo,
)
from warehouse.saga import OrderFlow, hold_name
from warehouse.stock import Move, OrderRow, Warehouse

__all__ = [
    "Charge",
    "Move",
    "Order",
    "OrderFlow",
    "OrderRow",
    "OutOfStock",
    "PaymentDeclined",
    "PaymentGateway",
    "ShiftedClock",
    "SlowBank",
    "Warehouse",
    "WorkerPool",
    "hold_name",
    "place_orders",
    "settle",
    "start_orders",
    "wait_for_undo",
]
