"""The inventory example (examples/inventory), end to end, on SQLite and PostgreSQL.

Many orders race for one stock level: exactly the stock is sold, the other
orders end ``rolled_back`` (their order record is undone: marked rejected;
nothing was charged), the level never drops below zero, and a cancel the
next day adds exactly the order's quantity back, however many orders ran
in between. A deliberately wrong "restore the old value" undo shows what
the relative one prevents.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sagakit import Engine, EventKind, Run, RunStatus, StepContext
from sagakit.store import open_store
from sagakit.store.postgresql import parse_url

from .helpers import run_example

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples" / "inventory"))

from warehouse import (
    Order,
    OrderFlow,
    PaymentGateway,
    ShiftedClock,
    SlowBank,
    Warehouse,
    WorkerPool,
    hold_name,
    place_orders,
    settle,
    start_orders,
    wait_for_undo,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "inventory"
DAY = 24 * 3600.0
PRICE = 1200  # cents, the Order model's default unit price


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh store on each database (PostgreSQL: a schema of its own)."""
    if request.param == "postgresql":
        postgres: str = request.getfixturevalue("postgres_url")
        return postgres
    return f"sqlite:///{tmp_path / 'shop.db'}"


@dataclass
class Shop:
    """The example's pieces on one store, as `main.py` puts them together."""

    url: str
    warehouse: Warehouse
    payments: PaymentGateway
    flow: OrderFlow
    engine: Engine
    clock: ShiftedClock

    def orders(
        self, sku: str, prefix: str, count: int, quantity: int = 1
    ) -> list[tuple[str, Order]]:
        """``count`` orders for ``sku``, by customers ``<prefix>-1``..., with their ids."""
        return [
            (f"{prefix}-{n}", Order(sku=sku, quantity=quantity, customer=f"{prefix}-{n}"))
            for n in range(1, count + 1)
        ]

    def workers(self, workers: int = 3, concurrency: int = 4) -> WorkerPool:
        """Workers on this shop's store and clock, to use as a context manager."""
        return WorkerPool(
            self.url, [self.flow.saga], workers=workers, concurrency=concurrency, clock=self.clock
        )


@contextmanager
def open_shop(url: str, flow_type: type[OrderFlow] = OrderFlow) -> Iterator[Shop]:
    """The shop on ``url``, its tables created, closed when the block ends."""
    clock = ShiftedClock()
    payments = PaymentGateway(declined={"mallory"})
    with Warehouse(url) as warehouse, Engine(url, clock=clock) as engine:
        flow = flow_type(warehouse, payments)
        engine.register(flow.saga)
        warehouse.create_tables()
        yield Shop(url, warehouse, payments, flow, engine, clock)


@pytest.fixture
def shop(url: str) -> Iterator[Shop]:
    with open_shop(url) as shop:
        yield shop


def held(url: str) -> dict[str, str]:
    """The reservations in the store now: name -> the run holding it."""

    async def read() -> dict[str, str]:
        store = open_store(url)
        await store.open()
        try:
            return {r.name: r.run_id for r in await store.reservations()}
        finally:
            await store.close()

    return asyncio.run(read())


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Return once ``condition()`` holds; fail the test after ``timeout`` seconds."""
    give_up = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > give_up:
            pytest.fail(f"timed out waiting until {what}")
        time.sleep(0.01)


def statuses(runs: dict[str, Run]) -> Counter[str]:
    return Counter(run.status.value for run in runs.values())


# -- many orders, one stock ----------------------------------------------------------------


@pytest.mark.slow
def test_concurrent_orders_sell_exactly_the_stock_and_undo_the_rest(shop: Shop) -> None:
    """5 units, 12 one-unit orders driven by 3 workers: 5 sold, 7 rolled back.

    A refused order ends ``rolled_back``, not ``failed``: its first step
    recorded the order, and the undo marks that record rejected.
    """
    shop.warehouse.count_stock("mug", 5)
    with shop.workers():
        runs = place_orders(shop.engine, shop.flow.saga, shop.orders("mug", "buyer", 12))

    assert statuses(runs) == {"completed": 5, "rolled_back": 7}
    completed = [r for r in runs.values() if r.status is RunStatus.COMPLETED]
    refused = [r for r in runs.values() if r.status is RunStatus.ROLLED_BACK]
    assert all(r.error is not None and r.error.type.endswith("OutOfStock") for r in refused)
    assert sum(r.state.quantity for r in completed) == 5
    assert shop.warehouse.level("mug") == 0

    # The ledger: five moves of -1, committed one after another down to 0.
    moves = shop.warehouse.moves("mug")
    assert [(m.delta, m.qty_after) for m in moves] == [(-1, 4), (-1, 3), (-1, 2), (-1, 1), (-1, 0)]
    assert {m.order_id for m in moves} == {r.id for r in completed}
    assert sorted(r.state.stock_after for r in completed) == [0, 1, 2, 3, 4]

    # What the customers see: 5 confirmed, 7 rejected saying why.
    rows = shop.warehouse.orders("mug")
    assert Counter(row.status for row in rows.values()) == {"confirmed": 5, "rejected": 7}
    assert all(rows[r.id].note == "mug: 1 wanted, 0 on the shelf" for r in refused)

    # The hold is why no refused order was charged and later refunded.
    charges = shop.payments.charges()
    assert sorted(c.customer for c in charges) == sorted(r.state.customer for r in completed)
    assert shop.payments.net() == 5 * PRICE
    assert held(shop.url) == {}


def test_a_declined_card_frees_the_hold_for_the_next_order(shop: Shop) -> None:
    """One unit left: mallory holds it while her bank thinks, bob waits; the
    decline frees the hold and bob buys the unit."""
    shop.warehouse.count_stock("mug", 1)
    bank = SlowBank("mallory", patience=30)
    shop.payments.before_answer = bank
    mallory = ("order-mallory", Order(sku="mug", quantity=1, customer="mallory"))
    bob = ("order-bob", Order(sku="mug", quantity=1, customer="bob"))
    with shop.workers(workers=2, concurrency=2):
        start_orders(shop.engine, shop.flow.saga, [mallory])
        assert bank.asked.wait(30), "mallory's order never reached its payment"
        assert held(shop.url) == {hold_name("mug"): "order-mallory"}

        start_orders(shop.engine, shop.flow.saga, [bob])
        wait_until(
            lambda: any(
                e.kind is EventKind.STEP_STARTED and e.step == "hold_stock"
                for e in shop.engine.history("order-bob")
            ),
            "bob's order asks for the hold",
        )
        assert shop.payments.log == []  # bob cannot be charged while mallory holds the SKU
        bank.answer()
        runs = settle(shop.engine, ["order-mallory", "order-bob"])

    assert runs["order-mallory"].status is RunStatus.ROLLED_BACK
    error = runs["order-mallory"].error
    assert error is not None
    assert error.type.endswith("PaymentDeclined")
    assert runs["order-bob"].status is RunStatus.COMPLETED
    assert runs["order-bob"].state.stock_seen == 1  # the unit mallory held was still there
    assert shop.payments.log == ["declined mallory", "charged bob"]
    assert shop.warehouse.level("mug") == 0
    rows = shop.warehouse.orders("mug")
    assert (rows["order-mallory"].status, rows["order-mallory"].note) == (
        "rejected",
        "mallory's card was declined",
    )
    assert rows["order-bob"].status == "confirmed"
    assert held(shop.url) == {}


# -- the cancel a day later ------------------------------------------------------------------


@pytest.mark.slow
def test_a_cancel_a_day_later_adds_back_exactly_its_quantity(shop: Shop) -> None:
    """Alice takes 3 of 10, four others buy one each; the next day, while a
    delivery lands and two more orders run, alice cancels: the level gains
    her 3 units on top of everything else, and never returns to the 10 she saw."""
    shop.warehouse.count_stock("mug", 10)
    alice = shop.engine.run(
        shop.flow.saga, Order(sku="mug", quantity=3, customer="alice"), run_id="order-alice"
    )
    assert alice.status is RunStatus.COMPLETED
    assert (alice.state.stock_seen, alice.state.stock_after) == (10, 7)

    with shop.workers():
        day_one = place_orders(shop.engine, shop.flow.saga, shop.orders("mug", "day1", 4))
        assert statuses(day_one) == {"completed": 4}
        assert shop.warehouse.level("mug") == 3

        shop.clock.advance(DAY)
        shop.warehouse.receive("mug", 2, key="delivery-day2", at=shop.clock())
        day_two = start_orders(shop.engine, shop.flow.saga, shop.orders("mug", "day2", 2))
        # The undo runs here while the workers take the day-2 orders.
        shop.engine.cancel("order-alice", reason="changed her mind")
        cancelled = wait_for_undo(shop.engine, "order-alice", timeout=60)
        assert statuses(settle(shop.engine, day_two)) == {"completed": 2}

    assert cancelled.status is RunStatus.CANCELLED
    # 3 left + 2 delivered - 2 sold + alice's 3: in whatever order they landed.
    assert shop.warehouse.level("mug") == 6
    moves = shop.warehouse.moves("mug")
    assert 10 + sum(m.delta for m in moves) == 6
    assert min(m.qty_after for m in moves) >= 0
    returned = [m for m in moves if m.key == "order-alice/take_stock/compensate"]
    assert [(m.delta, m.order_id) for m in returned] == [(3, "order-alice")]
    taken = next(m for m in moves if m.key == "order-alice/take_stock")
    assert returned[0].at - taken.at >= DAY
    assert shop.warehouse.orders("mug")["order-alice"].status == "cancelled"
    assert shop.warehouse.orders("mug")["order-alice"].note == "changed her mind"
    alice_charge = next(c for c in shop.payments.charges() if c.customer == "alice")
    assert alice_charge.refunded == alice_charge.amount == 3 * PRICE
    assert shop.payments.net() == 6 * PRICE  # the six one-unit orders


class RestoreOldValue(OrderFlow):
    """The wrong undo: write back the level the order saw, as if nobody else sold."""

    name = "inventory-order-restore-old-value"

    def return_stock(self, state: Order, ctx: StepContext) -> dict[str, Any]:
        assert state.stock_seen is not None
        self.warehouse.count_stock(state.sku, state.stock_seen)
        return {"restored": state.stock_seen}


@pytest.mark.parametrize(
    ("flow_type", "after_cancel", "sold_after"),
    [(OrderFlow, 6, 6), (RestoreOldValue, 10, 10)],
    ids=["add-back", "restore-old-value"],
)
def test_restoring_the_old_value_would_resell_what_others_bought(
    url: str, flow_type: type[OrderFlow], after_cancel: int, sold_after: int
) -> None:
    """10 on the shelf; alice takes 3, four others take one each (3 left);
    alice cancels. Adding back leaves 6, the units that are really there.
    Restoring the 10 alice saw erases the four sales: the shop then sells
    10 more units from a shelf of 6, 14 in all from an opening stock of 10."""
    with open_shop(url, flow_type) as shop:
        shop.warehouse.count_stock("mug", 10)
        engine, saga = shop.engine, shop.flow.saga
        alice = engine.run(saga, Order(sku="mug", quantity=3, customer="alice"), run_id="alice")
        assert (alice.status, alice.state.stock_seen) == (RunStatus.COMPLETED, 10)
        for order_id, order in shop.orders("mug", "before", 4):
            assert engine.run(saga, order, run_id=order_id).status is RunStatus.COMPLETED
        assert shop.warehouse.level("mug") == 3

        shop.clock.advance(DAY)
        assert engine.cancel("alice", reason="returned").status is RunStatus.CANCELLED
        assert shop.warehouse.level("mug") == after_cancel

        later = [engine.run(saga, o, run_id=i) for i, o in shop.orders("mug", "after", 12)]
        sold = 4 + sum(1 for run in later if run.status is RunStatus.COMPLETED)
        assert sold - 4 == sold_after
        assert (sold <= 10) is (flow_type is OrderFlow)  # only the wrong undo oversells


# -- the warehouse's own guarantees ------------------------------------------------------


def test_the_ledger_applies_each_key_once_and_never_goes_negative(url: str) -> None:
    with Warehouse(url) as warehouse, Engine(url):  # the engine creates the schema
        warehouse.create_tables()
        warehouse.count_stock("mug", 2)
        assert warehouse.receive("mug", 5, key="return-1", at=0.0) == 7
        assert warehouse.receive("mug", 5, key="return-1", at=1.0) is None  # a repeated attempt
        with warehouse.transaction() as conn:
            assert warehouse.take(conn, "mug", 8, key="big", order_id="o1", at=2.0) is None
            assert warehouse.take(conn, "mug", 7, key="all", order_id="o2", at=3.0) == 0
        assert warehouse.level("mug") == 0
        assert [(m.key, m.delta, m.qty_after) for m in warehouse.moves("mug")] == [
            ("return-1", 5, 7),
            ("all", -7, 0),
        ]
        # The table's CHECK refuses a negative level, whatever the SQL.
        with (
            warehouse.connection() as conn,
            pytest.raises(integrity_errors(url), match=r"(?i)check"),
        ):
            conn.execute(f"UPDATE {stock_table(url)} SET qty = -1 WHERE sku = 'mug'")
        assert warehouse.level("mug") == 0


def stock_table(url: str) -> str:
    """The stock table's name as SQL on ``url``'s database sees it."""
    if url.startswith("sqlite:"):
        return "stock"
    return f"{parse_url(url)[1]['schema']}.stock"


def integrity_errors(url: str) -> type[Exception]:
    """What a violated CHECK constraint raises on ``url``'s database."""
    if url.startswith("sqlite:"):
        return sqlite3.IntegrityError
    import psycopg

    return psycopg.errors.CheckViolation


# -- main.py as a user runs it ---------------------------------------------------------------


@pytest.mark.slow
def test_main_runs_both_days_end_to_end(tmp_path: Path) -> None:
    db = tmp_path / "demo.db"
    done = run_example("inventory", "--db", str(db), "--orders", "12", "--stock", "5")
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert "all checks passed" in out
    assert re.search(r"completed\s+5\s+5\s", out), out
    assert re.search(r"rolled_back\s+6\s+0\s+OutOfStock: mug-\w+: 1 wanted, 0 on the shelf", out)
    assert re.search(r"rolled_back\s+1\s+0\s+PaymentDeclined: mallory's card was declined", out)
    assert re.search(r"cancelled\s+1\s+0", out), out
    assert "status cancelled after 24h 00m" in out  # the cancel's timeline
    assert "undo hold_stock" in out  # the declined order's timeline: its hold freed

    # What the script left in the database: 0 + 3 delivered - 3 sold + 1 returned.
    sku = re.search(r"units of (mug-\w+)", out)
    assert sku is not None
    with Warehouse(f"sqlite:///{db}") as warehouse:
        assert warehouse.level(sku.group(1)) == 1
        moves = warehouse.moves(sku.group(1))
        assert min(m.qty_after for m in moves) >= 0
        assert 5 + sum(m.delta for m in moves) == 1
        rows = warehouse.orders(sku.group(1))
        assert Counter(r.status for r in rows.values()) == {
            "confirmed": 7,  # 5 on day 1, one of them cancelled, 3 on day 2
            "rejected": 7,
            "cancelled": 1,
        }


@pytest.mark.slow
def test_main_refuses_an_empty_shelf(tmp_path: Path) -> None:
    done = run_example("inventory", "--db", str(tmp_path / "x.db"), "--stock", "0")
    assert done.returncode == 2
    assert "--stock: must be at least 1, got 0" in done.stderr
    assert not (tmp_path / "x.db").exists()
