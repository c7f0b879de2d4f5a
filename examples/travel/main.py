"""Book trips Seattle -> New York -> London -> Paris, with a full London hotel.

Run it from the repository root::

    .venv/bin/python examples/travel/main.py                 # every scenario
    .venv/bin/python examples/travel/main.py --scenario fee  # just one
    .venv/bin/python examples/travel/main.py --db travel.db  # keep the runs

Each scenario prints the run's timeline (as ``sagakit show`` draws it) at
the moments that matter, then what the airline and the hotels still hold and
what the card was charged and refunded. Exits 1 if a run ends in another
status than its scenario expects.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import uuid
from collections.abc import Sequence
from pathlib import Path

# The package lives beside this script; make it importable however the script is started.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from rich.console import Console
from rich.text import Text
from travel_agency import (
    SCENARIOS,
    Agent,
    TravelAgency,
    TravelClock,
    build_trip_saga,
    money,
)

from sagakit import Engine, Run
from sagakit.timeline import build_timeline, render_timeline

console = Console(highlight=False)


def store(db: str | None) -> tuple[str, str]:
    """The store URL for ``--db`` and how to name it to ``sagakit --db``.

    A URL is used as given, a path as a SQLite file; without ``--db``, a new
    file in a temporary directory, so every invocation starts empty.
    """
    if db is None:
        db = str(Path(tempfile.mkdtemp(prefix="sagakit-travel-")) / "travel.db")
    if "://" in db:
        return db, db
    return f"sqlite:///{Path(db).resolve()}", db


def show(engine: Engine, caption: str, run: Run) -> None:
    """Print a caption and the run's timeline as it stands now."""
    console.print()
    console.print(Text(caption, style="bold"))
    console.print(render_timeline(build_timeline(engine.history(run.id), run)))


def show_accounts(agency: TravelAgency, run: Run) -> None:
    """Print what the providers hold for the run and how the customer's card stands."""
    console.print(Text(f"at the airline and the hotels, for {run.id}:", style="dim"))
    console.print(f"  {'code':<8}  {'booking':<31} {'status':<10}{'paid':>10} {'refunded':>10}")
    for booking in agency.airline.bookings(run.id) + agency.hotels.bookings(run.id):
        paid, back = money(booking.price_cents), money(booking.refunded_cents)
        console.print(
            f"  {booking.code:<8}  {booking.what:<31} {booking.status:<10}{paid:>10} {back:>10}"
        )
    charged = agency.payments.charged(run.id)
    refunded = agency.payments.refunded(run.id)
    console.print(
        f"  card: charged {money(charged)}, refunded {money(refunded)}, "
        f"kept {money(charged - refunded)}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Play the scenarios; 0 when every run ended as its scenario expects."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--db",
        metavar="PATH|URL",
        help="a SQLite file or store URL (default: a new file in a temp directory)",
    )
    parser.add_argument(
        "--scenario",
        choices=[s.name for s in SCENARIOS],
        action="append",
        help="play only this scenario (repeatable; default: all of them)",
    )
    args = parser.parse_args(argv)
    chosen = [s for s in SCENARIOS if args.scenario is None or s.name in args.scenario]

    url, shown = store(args.db)
    agency = TravelAgency.open()
    saga = build_trip_saga(agency)
    clock = TravelClock()
    unexpected: list[str] = []
    with Engine(url, clock=clock) as engine:
        engine.register(saga)
        agent = Agent(engine, saga, agency, clock, tag=uuid.uuid4().hex[:6])
        agent.show = lambda caption, run: show(engine, caption, run)
        for scenario in chosen:
            console.rule(f"{scenario.name}: {scenario.title}")
            run = scenario.play(agent)
            show_accounts(agency, run)
            if run.status is not scenario.ends:
                unexpected.append(f"{run.id} ended {run.status}, expected {scenario.ends}")

    console.print()
    console.print(f"the runs are kept in {shown}; look at one again with", soft_wrap=True)
    command = f"sagakit show {agent.run_id(chosen[0].name)} --db {shlex.quote(shown)}"
    console.print(f"  {command}", soft_wrap=True)
    for problem in unexpected:
        console.print(Text(f"unexpected: {problem}", style="bold red"), soft_wrap=True)
    return 1 if unexpected else 0


if __name__ == "__main__":
    sys.exit(main())
