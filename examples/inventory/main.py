"""The inventory example: many concurrent orders against one stock level.

Run it::

    .venv/bin/python examples/inventory/main.py
    .venv/bin/python examples/inventory/main.py --orders 40 --stock 15 --db inventory.db
    .venv/bin/python examples/inventory/main.py --db 'postgresql://app@localhost/shop?schema=shop'

It exits with status 0 when every check passed, 1 otherwise. See README.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the `warehouse` package beside us

from warehouse.demo import run_demo


def _store_url(db: str) -> str:
    """A store URL from ``--db``: a URL as it is, or a SQLite file path."""
    return db if "://" in db or db.startswith("sqlite:") else f"sqlite:///{db}"


def _at_least(minimum: int) -> type[int]:
    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse  # type: ignore[return-value]


def main(argv: list[str] | None = None) -> int:
    """Run the demo; 0 if every check passed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--db",
        default="inventory-demo.db",
        help="a SQLite file or a store URL (sqlite:///..., postgresql://...?schema=...)",
    )
    parser.add_argument("--orders", type=_at_least(2), default=25, help="orders on day 1")
    parser.add_argument("--stock", type=_at_least(1), default=10, help="units on the shelf")
    parser.add_argument("--workers", type=_at_least(1), default=3, help="worker engines")
    parser.add_argument("--concurrency", type=_at_least(1), default=8, help="runs per worker")
    args = parser.parse_args(argv)
    url = _store_url(args.db)
    result = run_demo(
        url,
        orders=args.orders,
        stock=args.stock,
        workers=args.workers,
        concurrency=args.concurrency,
    )
    print()
    for problem in result.problems:
        print(f"CHECK FAILED: {problem}")
    if result.problems:
        return 1
    print(f"all checks passed; the runs are in {url}")
    print(f"look at them: sagakit list --db {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
