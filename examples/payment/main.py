"""Run the payment saga twice: once it completes, once the carrier fails and it rolls back.

The saga is Ruvon's tutorial workflow, read from ``workflow.yaml`` as it is;
``payment.yaml`` is the same saga in sagakit's own format. Usage::

    python examples/payment/main.py [--db FILE] [--format sagakit|ruvon]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from rich.console import Console

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # so that payment_processor imports from any directory

from payment_processor import services  # noqa: E402

from sagakit import Engine, RunStatus, load_yaml  # noqa: E402
from sagakit.timeline import build_timeline, render_timeline  # noqa: E402

ORDER = {"order_id": "ORD-12345", "customer_id": "CUST-789", "amount": 299.99}


def main(argv: list[str] | None = None) -> int:
    """Run both orders and print their timelines; exit 1 if anything is left standing."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, help="SQLite file (default: a new temporary one)")
    parser.add_argument("--format", choices=["ruvon", "sagakit"], default="ruvon")
    args = parser.parse_args(argv)
    db = args.db or Path(tempfile.mkdtemp(prefix="sagakit-payment-")) / "payment.db"
    file = HERE / ("workflow.yaml" if args.format == "ruvon" else "payment.yaml")
    saga = load_yaml(file, allowed_modules=["payment_processor"])
    console = Console(highlight=False)
    console.print(f"saga {saga.name} version {saga.version}, from {file.name}", style="bold")
    with Engine(f"sqlite:///{db}") as engine:
        shipped = engine.run(saga, ORDER)
        failed = engine.run(
            saga, {**ORDER, "order_id": "ORD-12346", "carrier": services.DOWN_CARRIER}
        )
        for run in (shipped, failed):
            console.rule(f"order {run.data['order_id']}: {run.status}")
            console.print(render_timeline(build_timeline(engine.history(run.id), run)))
            flags = ("order_created", "payment_charged", "inventory_reserved", "shipment_created")
            console.print("  " + ", ".join(f"{flag}={run.data[flag]}" for flag in flags))
            console.print(f"  compensations_run={run.data['compensations_run']}")
    standing = services.standing()
    console.rule("still in effect at the outside systems")
    for system, records in standing.items():
        console.print(f"  {system}: {', '.join(records) or '-'}")
    console.print(f"runs are stored in {db}; try: sagakit show {failed.id} --db {db}")
    ok = shipped.status is RunStatus.COMPLETED and failed.status is RunStatus.ROLLED_BACK
    # Only the completed order's records stand: the failed one left nothing behind.
    return 0 if ok and all(len(records) == 1 for records in standing.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
