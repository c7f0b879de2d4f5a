"""The story `main.py` tells: a day of concurrent orders, and a return the next day.

Day 1. The shelf holds ``stock`` units of one SKU and ``orders`` customers
order one unit each, all at once, driven by several workers. The first
customer's card is declined, slowly: her order holds the SKU while her bank
thinks, and the others queue behind the hold; the decline frees it. Exactly
``stock`` orders complete (fewer if fewer others ordered), the rest are
undone, no refused order is charged, and the level never drops below zero.

Day 2. The clock jumps 24 hours. A delivery arrives, new orders come in,
and at the same moment the customer of day 1's first sale cancels. Her
undo adds her unit back to whatever the level is by then, so the final
level is the same whatever order those changes land in.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from rich.console import Console

from sagakit import Engine, Run, RunStatus
from warehouse.models import Order
from warehouse.payments import PaymentGateway, SlowBank
from warehouse.report import outcome_table, print_timeline, stock_line
from warehouse.runtime import ShiftedClock, WorkerPool, settle, start_orders, wait_for_undo
from warehouse.saga import OrderFlow
from warehouse.stock import Move, Warehouse

DAY = 24 * 3600.0
DECLINED = "mallory"
"""The customer whose bank declines her card."""
DELIVERY = 3
"""Units delivered on day 2, and one-unit orders placed on day 2."""


@dataclass
class DemoResult:
    """What the demo did, and what its checks found (no ``problems``: all passed)."""

    sku: str
    day_one: dict[str, Run]
    day_two: dict[str, Run]
    cancelled: Run | None
    final_level: int
    expected_level: int
    lowest_level: int
    charged: list[str]
    """The customers charged, in order (refunds aside)."""
    problems: list[str] = field(default_factory=list)


@dataclass
class _Shop:
    """What both days share."""

    tag: str
    sku: str
    engine: Engine
    flow: OrderFlow
    clock: ShiftedClock
    out: Console

    @property
    def warehouse(self) -> Warehouse:
        return self.flow.warehouse

    def order(self, suffix: str, customer: str) -> tuple[str, Order]:
        """A one-unit order and its id (which is also its run id)."""
        return f"{self.tag}-{suffix}", Order(sku=self.sku, quantity=1, customer=customer)


def run_demo(
    url: str,
    *,
    orders: int,
    stock: int,
    workers: int = 3,
    concurrency: int = 8,
    console: Console | None = None,
) -> DemoResult:
    """Run both days on the store at ``url``, print what happened, and check it.

    Order ids and the SKU carry a fresh tag, so runs of the demo can share
    one database.

    Args:
        url: A SQLite or PostgreSQL store URL.
        orders: Orders on day 1 (one unit each), at least 2.
        stock: Units on the shelf when day 1 opens, at least 1.
        workers: Worker engines driving the orders.
        concurrency: Orders each worker drives at once.
        console: Where to print (stdout by default).
    """
    out = console or Console()
    tag = uuid.uuid4().hex[:4]
    clock = ShiftedClock()
    bank = SlowBank(DECLINED)
    payments = PaymentGateway(declined={DECLINED}, before_answer=bank)
    with Warehouse(url) as warehouse, Engine(url, clock=clock) as engine:
        flow = OrderFlow(warehouse, payments)
        engine.register(flow.saga)  # so that cancel() runs the undo right here
        shop = _Shop(tag, f"mug-{tag}", engine, flow, clock, out)
        warehouse.create_tables()
        warehouse.count_stock(shop.sku, stock)
        out.print(
            f"[bold]{orders} orders for {stock} units of {shop.sku}[/], one unit each, "
            f"by {workers} workers x {concurrency} at once"
        )
        with WorkerPool(url, [flow.saga], workers=workers, concurrency=concurrency, clock=clock):
            day_one = _day_one(shop, orders, bank)
            out.print(stock_line(shop.sku, stock, warehouse.moves(shop.sku)))
            out.print(_payments_line(day_one, payments))
            cancelled, day_two, expected = _day_two(shop)
        moves = warehouse.moves(shop.sku)
        out.print(stock_line(shop.sku, stock, moves))
        declined = f"{tag}-order-01"
        print_timeline(
            out, engine, declined, f"{declined}: {DECLINED}'s order, declined while it held the SKU"
        )
        if cancelled is not None:
            print_timeline(out, engine, cancelled.id, f"{cancelled.id}: cancelled a day later")
        result = DemoResult(
            sku=shop.sku,
            day_one=day_one,
            day_two=day_two,
            cancelled=cancelled,
            final_level=warehouse.level(shop.sku),
            expected_level=expected,
            lowest_level=min([stock, *(m.qty_after for m in moves)]),
            charged=[c.customer for c in payments.charges()],
        )
    result.problems = _check(result, stock=stock, orders=orders)
    return result


def _day_one(shop: _Shop, orders: int, bank: SlowBank) -> dict[str, Run]:
    """Every order at once; the declined one holds the SKU while its bank thinks."""
    saga = shop.flow.saga
    first = shop.order("order-01", DECLINED)
    start_orders(shop.engine, saga, [first])
    if not bank.asked.wait(60):  # her order now holds the SKU
        raise RuntimeError(f"{first[0]} never reached its payment")
    others = [shop.order(f"order-{n:02d}", f"customer-{n:02d}") for n in range(2, orders + 1)]
    ids = [first[0], *start_orders(shop.engine, saga, others)]
    bank.answer()  # declined: the undo frees her hold, and the queue moves
    runs = settle(shop.engine, ids)
    sold = {m.order_id: -m.delta for m in shop.warehouse.moves(shop.sku) if m.order_id}
    shop.out.print()
    shop.out.print(f"[bold]Day 1[/]: {DECLINED}'s card is declined while she holds the SKU")
    shop.out.print(outcome_table(runs, sold))
    return runs


def _payments_line(runs: dict[str, Run], payments: PaymentGateway) -> str:
    buyers = {r.state.customer for r in runs.values() if r.status is RunStatus.COMPLETED}
    charged = [c.customer for c in payments.charges()]
    wrongly = sum(1 for customer in charged if customer not in buyers)
    return f"payments: {len(charged)} charged, " + (
        "not one for a refused order" if not wrongly else f"{wrongly} for refused orders"
    )


def _day_two(shop: _Shop) -> tuple[Run | None, dict[str, Run], int]:
    """A delivery, new orders and the cancel of day 1's first sale, all at once.

    Returns:
        The cancelled run, the new orders' runs, and the level to expect.
    """
    moves = shop.warehouse.moves(shop.sku)
    first_sale = next((m for m in moves if m.delta < 0 and m.order_id), None)
    shop.clock.advance(DAY)
    before = shop.warehouse.level(shop.sku)
    shop.warehouse.receive(shop.sku, DELIVERY, key=f"{shop.tag}-delivery", at=shop.clock())
    new = [shop.order(f"day2-{n}", f"late-{n}") for n in range(1, DELIVERY + 1)]
    new_ids = start_orders(shop.engine, shop.flow.saga, new)
    cancelled: Run | None = None
    if first_sale is not None and first_sale.order_id is not None:
        # The undo runs on this engine while the workers take the new orders.
        shop.engine.cancel(first_sale.order_id, reason="returned the next day")
        cancelled = wait_for_undo(shop.engine, first_sale.order_id)
    runs = settle(shop.engine, new_ids)
    sold = sum(1 for r in runs.values() if r.status is RunStatus.COMPLETED)
    returned = cancelled.state.quantity if cancelled is not None else 0
    shop.out.print()
    shop.out.print(
        f"[bold]Day 2[/], 24h later: a delivery of {DELIVERY}, {DELIVERY} new orders "
        "and a cancel, all at once"
    )
    shown = dict(runs) if cancelled is None else {**runs, cancelled.id: cancelled}
    taken = {i: 1 for i, r in runs.items() if r.status is RunStatus.COMPLETED}
    shop.out.print(outcome_table(shown, taken))
    expected = before + DELIVERY - sold + returned
    if cancelled is not None and first_sale is not None:
        _explain_return(shop, cancelled, moves, first_sale, expected)
    return cancelled, runs, expected


def _explain_return(
    shop: _Shop, cancelled: Run, moves: list[Move], first_sale: Move, expected: int
) -> None:
    after = sum(1 for m in moves if m.delta < 0 and m.seq > first_sale.seq)
    seen = cancelled.state.stock_seen
    level = shop.warehouse.level(shop.sku)
    shop.out.print(
        f"{cancelled.id} took 1 unit when the shelf held {seen}; {after} more sold after it."
    )
    shop.out.print(f"its undo added 1 to the level as it stood: {level} now, {expected} expected.")
    shop.out.print(
        f"restoring the {seen} it saw would have put the {after} sold since back on sale."
    )


def _check(result: DemoResult, *, stock: int, orders: int) -> list[str]:
    """The demo's promises, checked: what went wrong, if anything."""
    problems: list[str] = []
    completed = [r for r in result.day_one.values() if r.status is RunStatus.COMPLETED]
    undone = [r for r in result.day_one.values() if r.status is RunStatus.ROLLED_BACK]
    want = min(stock, orders - 1)  # every customer but the declined one may buy
    if len(completed) != want:
        problems.append(f"day 1: {len(completed)} orders completed, expected {want}")
    if len(undone) != orders - want:
        problems.append(f"day 1: {len(undone)} orders rolled back, expected {orders - want}")
    runs = [*result.day_one.values(), *result.day_two.values()]
    buyers = {r.state.customer for r in runs if r.status is RunStatus.COMPLETED}
    if result.cancelled is not None:
        buyers.add(result.cancelled.state.customer)
    if not set(result.charged) <= buyers:
        problems.append(f"charged customers who got nothing: {set(result.charged) - buyers}")
    if result.lowest_level < 0:
        problems.append(f"the stock went down to {result.lowest_level}")
    if result.final_level != result.expected_level:
        problems.append(f"final stock {result.final_level}, expected {result.expected_level}")
    if result.cancelled is not None and result.cancelled.status is not RunStatus.CANCELLED:
        problems.append(f"{result.cancelled.id} is {result.cancelled.status}, not cancelled")
    return problems
