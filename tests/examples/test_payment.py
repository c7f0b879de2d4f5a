"""The payment example end to end: Ruvon's tutorial saga, in YAML, rolled back."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sagakit import Engine, EventKind, RunStatus, Saga, load_yaml

from .helpers import run_example

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "payment"
ORDER = {"order_id": "ORD-1", "customer_id": "CUST-1", "amount": 299.99}


@pytest.fixture(scope="module")
def services() -> Iterator[Any]:
    sys.path.insert(0, str(EXAMPLE))
    try:
        from payment_processor import services

        yield services
    finally:
        sys.path.remove(str(EXAMPLE))


def load(name: str) -> Saga[Any]:
    return load_yaml(EXAMPLE / name, allowed_modules=["payment_processor"])


def undone_for(ledger: Any, run_id: str) -> list[bool]:
    """For each record this run made at ``ledger``: whether it was undone."""
    return [ref in ledger.undone for key, ref in ledger.records.items() if run_id in key]


@pytest.mark.parametrize("file", ["workflow.yaml", "payment.yaml"])
def test_the_carrier_fails_and_everything_is_undone_in_reverse(
    store_url: str, services: Any, file: str
) -> None:
    saga = load(file)
    with Engine(store_url) as engine:
        run = engine.run(saga, {**ORDER, "carrier": services.DOWN_CARRIER})
        history = engine.history(run.id)
    assert run.status is RunStatus.ROLLED_BACK
    undone = [e.step for e in history if e.kind is EventKind.COMPENSATION_SUCCEEDED]
    names = [step.name for step in saga.steps]
    assert undone == [names[2], names[1], names[0]]  # release, refund, cancel
    # What each compensation returned is in the state, as after Ruvon's tutorial.
    assert run.data["order_created"] is False
    assert run.data["payment_charged"] is False
    assert run.data["inventory_reserved"] is False
    assert run.data["compensations_run"] == ["release_inventory", "refund_payment", "cancel_order"]
    for ledger in (services.ORDERS, services.PAYMENTS, services.WAREHOUSE):
        assert undone_for(ledger, run.id) == [True]
    assert undone_for(services.SHIPMENTS, run.id) == []  # the carrier booked nothing


def test_a_good_carrier_completes_and_a_cancel_the_next_day_undoes_it_all(
    store_url: str, services: Any
) -> None:
    with Engine(store_url) as engine:
        run = engine.run(load("payment.yaml"), ORDER)
        assert run.status is RunStatus.COMPLETED
        assert run.data["shipment_created"] is True
        cancelled = engine.cancel(run.id, reason="customer changed their mind")
    assert cancelled.status is RunStatus.CANCELLED
    assert cancelled.data["compensations_run"] == [
        "cancel_shipment",
        "release_inventory",
        "refund_payment",
        "cancel_order",
    ]
    for ledger in (services.ORDERS, services.PAYMENTS, services.WAREHOUSE, services.SHIPMENTS):
        assert undone_for(ledger, run.id) == [True]


def test_old_runs_finish_on_their_version_while_new_runs_take_the_newest(
    store_url: str, services: Any
) -> None:
    ruvon, native = load("workflow.yaml"), load("payment.yaml")
    assert (ruvon.version, native.version) == ("1.0.0", "1.1.0")
    with Engine(store_url) as engine:
        old = engine.start(ruvon, ORDER, run_id="old-order")
        engine.register(native)
        new = engine.start("PaymentProcessing", ORDER, run_id="new-order")
        assert (old.version, new.version) == ("1.0.0", "1.1.0")
        finished = engine.recover()
    by_id = {run.id: run for run in finished}
    assert by_id["old-order"].status is by_id["new-order"].status is RunStatus.COMPLETED
    with Engine(store_url) as engine:
        old_steps = {e.step for e in engine.history("old-order") if e.step}
        new_steps = {e.step for e in engine.history("new-order") if e.step}
    # Each ran its own version's steps (the versions even name them differently).
    assert old_steps == {"Create_Order", "Charge_Payment", "Reserve_Inventory", "Create_Shipment"}
    assert new_steps == {"create_order", "charge_payment", "reserve_inventory", "create_shipment"}


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["ruvon", "sagakit"])
def test_the_example_script_runs(tmp_path: Path, fmt: str) -> None:
    result = run_example("payment", "--db", str(tmp_path / "p.db"), "--format", fmt)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "order ORD-12345: completed" in result.stdout
    assert "order ORD-12346: rolled_back" in result.stdout
    assert "compensations_run=['release_inventory', 'refund_payment', 'cancel_order']" in (
        result.stdout
    )
