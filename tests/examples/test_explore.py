"""Every example saga explored: each crash, failure, timeout, cancel and repeated call.

`sagakit.testing.explore` runs each example's saga once per fault of its
plan and checks sagakit's invariants and the example's own: what stands at
the outside systems is what the run's status says should stand.
"""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path
from typing import Any

from sagakit import Run, RunStatus, load_yaml
from sagakit.testing import explore

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
UNDONE = (RunStatus.ROLLED_BACK, RunStatus.CANCELLED, RunStatus.FAILED)


def _example(name: str) -> None:
    path = str(EXAMPLES / name)
    if path not in sys.path:
        sys.path.insert(0, path)


# -- payment ---------------------------------------------------------------------------------


def test_the_payment_saga_survives_every_fault() -> None:
    _example("payment")
    from payment_processor import services

    saga = load_yaml(EXAMPLES / "payment" / "payment.yaml", allowed_modules=["payment_processor"])
    ledgers = {
        "order": services.ORDERS,
        "payment": services.PAYMENTS,
        "reservation": services.WAREHOUSE,
        "shipment": services.SHIPMENTS,
    }

    def setup() -> dict[str, Any]:
        for ledger in ledgers.values():
            ledger.records.clear()
            ledger.undone.clear()
        return ledgers

    def check(run: Run, world: dict[str, Any]) -> None:
        # Only this run's records: a next-day cancel lets another run complete first.
        standing = {
            name: [
                ref
                for key, ref in ledger.records.items()
                if key.startswith(f"{run.id}/") and ref not in ledger.undone
            ]
            for name, ledger in world.items()
        }
        if standing["payment"]:
            assert standing["order"], f"a charge without an order: {standing}"
        if run.status is RunStatus.COMPLETED:
            assert all(len(refs) == 1 for refs in standing.values()), standing
        if run.status in UNDONE:
            assert not any(standing.values()), f"left standing after {run.status}: {standing}"

    order = {"order_id": "ORD-1", "customer_id": "CUST-1", "amount": 299.99}
    report = explore(saga, order, check=check, setup=setup)
    report.assert_ok()
    assert len(report.results) > 100  # the baseline, every single fault, 100 pairs
    assert {r.status for r in report.results} >= {"completed", "rolled_back", "cancelled"}


# -- inventory -------------------------------------------------------------------------------


def _shop(url: str, flow_type: Any) -> tuple[Any, Any]:
    """The inventory example's flow on ``url`` (a SQLite file: its steps use local
    transactions), with a setup that puts 10 mugs on the shelf and a check that the
    shelf and the payments agree with the confirmed orders."""
    _example("inventory")
    from warehouse import PaymentGateway, Warehouse

    from sagakit import Engine

    Engine(url).close()  # the store's schema, beside which the shop's tables live
    warehouse = Warehouse(url)
    warehouse.create_tables()
    flow = flow_type(warehouse, PaymentGateway())

    def setup() -> Any:
        with warehouse.transaction() as conn:
            conn.execute("DELETE FROM orders")
            conn.execute("DELETE FROM stock_moves")
        warehouse.count_stock("mug", 10)
        flow.payments = PaymentGateway()
        return warehouse

    def check(run: Run, world: Any) -> None:
        if run.status is RunStatus.NEEDS_ATTENTION:
            return  # an operator finishes the undo; until then the books may differ
        confirmed = [o for o in world.orders("mug").values() if o.status == "confirmed"]
        sold = sum(o.quantity for o in confirmed)
        level = world.level("mug")
        assert level == 10 - sold, f"the shelf holds {level} mugs, yet {sold} of 10 were sold"
        assert flow.payments.net() == sum(o.quantity * 1200 for o in confirmed)

    return flow, (setup, check, warehouse)


def _restore_old_value() -> Any:
    _example("inventory")
    from warehouse import Order, OrderFlow

    from sagakit import StepContext

    class RestoreOldValue(OrderFlow):
        """The wrong undo: write back the level the order saw, as if nobody else sold."""

        name = "inventory-order-restore-old-value"

        def return_stock(self, state: Order, ctx: StepContext) -> dict[str, Any]:
            assert state.stock_seen is not None
            self.warehouse.count_stock(state.sku, state.stock_seen)
            return {"restored": state.stock_seen}

    return RestoreOldValue


def test_the_inventory_saga_survives_every_fault(tmp_path: Path) -> None:
    _example("inventory")
    from warehouse import Order, OrderFlow

    flow, (setup, check, warehouse) = _shop(f"sqlite:///{tmp_path / 'shop.db'}", OrderFlow)
    order = Order(sku="mug", quantity=3, customer="alice")
    try:
        report = explore(
            flow.saga, order, check=check, setup=setup, store=f"sqlite:///{tmp_path / 'shop.db'}"
        )
    finally:
        warehouse.close()
    report.assert_ok()
    assert {r.status for r in report.results} >= {"completed", "rolled_back", "cancelled"}


def test_explore_catches_an_undo_that_restores_the_old_stock_level(tmp_path: Path) -> None:
    """Writing back the level the order saw erases the sale another order made meanwhile."""
    _example("inventory")
    from warehouse import Order

    url = f"sqlite:///{tmp_path / 'shop.db'}"
    flow, (setup, check, warehouse) = _shop(url, _restore_old_value())
    try:
        report = explore(
            flow.saga,
            Order(sku="mug", quantity=3, customer="alice"),
            check=check,
            setup=setup,
            store=url,
            pairs=False,
        )
    finally:
        warehouse.close()
    assert not report.ok
    (failure,) = report.failures()
    assert failure.finding == "check failed: the shelf holds 10 mugs, yet 3 of 10 were sold"
    assert failure.smallest.scenario.describe() == (
        "cancel the next day, after another run completed"
    )
    text = report.render()
    assert "FAILED: check failed: the shelf holds 10 mugs, yet 3 of 10 were sold" in text
    assert "smallest scenario #" in text
    assert "undo take_stock" in text


# -- travel ----------------------------------------------------------------------------------


def test_the_travel_saga_survives_every_fault() -> None:
    """Three flights in parallel, two hotels; a room everywhere, so nothing pauses but
    what the faults pause. Every booking of an undone trip is cancelled."""
    _example("travel")
    from travel_agency import HOTELS, TravelAgency, Trip, build_trip_saga

    agency = TravelAgency.open(rooms={hotel.name: 100_000 for hotel in HOTELS})

    def check(run: Run) -> None:
        # Bookings are told apart by run id: no reset between scenarios is needed.
        held = agency.held(run.id)
        if run.status is RunStatus.COMPLETED:
            assert len(held) == 5, f"a completed trip holds {len(held)} bookings, not 5"
        if run.status in UNDONE:
            assert held == [], f"still booked after the trip was {run.status}: {held}"
        assert agency.payments.refunded(run.id) <= agency.payments.charged(run.id)

    report = explore(build_trip_saga(agency), Trip(traveller="Ada"), check=check)
    report.assert_ok()
    assert {r.status for r in report.results} >= {"completed", "rolled_back", "cancelled"}


# -- org onboarding --------------------------------------------------------------------------


def test_the_org_onboarding_saga_survives_every_fault(tmp_path: Path) -> None:
    """Over real HTTP to the example's LLM proxy, the Org rows committed as a local
    transaction: an undone onboarding leaves no team or key at the proxy."""
    _example("org_onboarding")
    from onboarding import LLMProxy, LLMProxyClient, Onboarding, create_tables, onboarding_saga

    from sagakit import Engine, RetryPolicy

    url = f"sqlite:///{tmp_path / 'app.db'}"
    Engine(url).close()
    create_tables(url)
    with LLMProxy() as proxy:
        client = LLMProxyClient(proxy.url)
        quick = RetryPolicy(max_attempts=3, initial_delay=0.01, max_delay=0.02)
        saga = onboarding_saga(client, deletion_retry=quick)

        def check(run: Run) -> None:
            mine = [t for t in client.teams() if (t.idempotency_key or "").startswith(run.id + "/")]
            if run.status is RunStatus.COMPLETED:
                assert len(mine) == 1, f"a completed onboarding left {len(mine)} teams"
                assert len(mine[0].keys) == 1
            if run.status in UNDONE:
                assert mine == [], f"teams left at the proxy after {run.status}: {mine}"

        def setup() -> None:
            # Org names are unique: the previous scenario's Acme would refuse this one's.
            with sqlite3.connect(tmp_path / "app.db") as db:
                db.execute("DELETE FROM org_members")
                db.execute("DELETE FROM orgs")
            db.close()

        request = Onboarding(org_name="Acme", owner_email="ada@example.com")
        report = explore(saga, request, check=check, setup=setup, store=url, pairs=40)
    report.assert_ok()
    assert {r.status for r in report.results} >= {"completed", "rolled_back"}
