"""The commands about runs: demo, list, show, history, reservations, migrate.

The group that holds them and every other command is `sagakit.cli.main`.
"""

from __future__ import annotations

import asyncio
import shlex
import time
from datetime import datetime
from pathlib import Path

import click
from rich.text import Text

from sagakit.cli.common import (
    console,
    open_engine,
    pending_marker,
    pending_requests,
    print_run,
    sensitive_names,
    status_text,
)
from sagakit.cli.jsonout import (
    emit,
    history_document,
    json_option,
    list_document,
    migration_document,
    pending_json,
    reservations_document,
    shown_run_document,
)
from sagakit.cli.options import (
    DEFAULT_DB,
    app_option,
    db_option,
    shown_path,
    shown_url,
    use_db,
)
from sagakit.cli.purge import load_archived
from sagakit.journal import RunStatus
from sagakit.redaction import Redactor
from sagakit.store import open_store, redact_url
from sagakit.timeline import (
    Cell,
    Line,
    aligned,
    format_duration,
    printable,
    render_history,
    short_error,
)

__all__ = ["demo", "history", "list_runs", "migrate", "reservations", "show"]


# -- options and helpers ------------------------------------------------------------


# More runs than a terminal can show; and a bound the stores can take (SQLite
# cannot bind an integer beyond 2**63).
MAX_LIMIT = 1_000_000


def _when(at: float) -> str:
    # Minutes are precise enough to tell runs apart in a list (and fit 80 columns).
    return datetime.fromtimestamp(at).strftime("%Y-%m-%d %H:%M")


@click.command()
@db_option
def demo(db: str) -> None:
    """Book two trips: one completes, one is rolled back when a hotel is full.

    The travel itinerary of Azure's Compensating Transaction pattern: three
    flights and two hotels. Each run of the demo adds two new runs to --db.
    """
    from sagakit.cli.demo import run_demo

    url, path = use_db(db)
    console.print(
        Text.assemble(
            ("sagakit demo", "bold"),
            ": book Seattle -> New York -> London -> Paris with hotels in London and Paris.\n",
            "Trip 1 books everything (the New York -> London gateway times out once). ",
            "Trip 2 asks for a Paris hotel with no rooms: the flights and the London hotel ",
            "are cancelled, last booked first.",
        )
    )
    with open_engine(db, create=True) as engine:
        trips = run_demo(engine)
        for trip in trips:
            console.print()
            print_run(engine, trip.run)
    console.print()
    console.print(Text("what the travel provider still holds", style="bold"))
    for trip in trips:
        line = Text.assemble("  ", trip.run.id, " (", status_text(trip.run.status), "): ")
        line.append(f"{len(trip.held)} bookings" if trip.held else "nothing", style="bold")
        console.print(line, soft_wrap=True)
        for booking in trip.held:
            console.print(f"    {booking.confirmation}  {booking.what}", soft_wrap=True)
    where = shown_path(path) if path is not None else shown_url(url)
    # The commands to try next name --db with its password masked: the user
    # puts it back, it is never printed.
    option = "" if db == DEFAULT_DB else f" --db {printable(shlex.quote(redact_url(db)))}"
    ok, rolled_back = trips[0].run.id, trips[-1].run.id
    console.print(f"\nruns are stored in {where}", soft_wrap=True)
    console.print("try next:", style="bold")
    for command in (
        f"sagakit list{option}",
        f"sagakit show {rolled_back}{option}",
        f"sagakit history {ok}{option}",
    ):
        console.print(f"  {command}", soft_wrap=True)


@click.command("list")
@click.option(
    "--status",
    type=click.Choice([s.value for s in RunStatus], case_sensitive=False),
    help="Only runs in this status.",
)
@click.option("--saga", help="Only runs of this saga.")
@click.option(
    "--limit",
    type=click.IntRange(min=1, max=MAX_LIMIT),
    default=50,
    show_default=True,
    help="At most this many.",
)
@db_option
@app_option
@json_option
def list_runs(  # click passes every option by name
    *, status: str | None, saga: str | None, limit: int, db: str, apps: tuple[str], as_json: bool
) -> None:
    """List runs, newest first."""
    with open_engine(db, apps, read_only=True) as engine:
        if as_json:
            # Every run is masked here: the document holds more than errors.
            shown = [
                run.redacted(
                    Redactor.for_run(
                        engine.history(run.id), sensitive_names(engine, run.saga), run.data
                    )
                )
                for run in engine.runs(status=status, saga=saga, limit=limit)
            ]
            document = list_document(
                shown_url(db), [(run, pending_json(engine, run)) for run in shown], limit=limit
            )
            emit(document)
            return
        # Only errors are shown of a run here: those are read with its journal,
        # which names the run's sensitive fields, to mask what they quote.
        runs = [
            run.redacted(
                Redactor.for_run(
                    engine.history(run.id), sensitive_names(engine, run.saga), run.data
                )
            )
            if run.error or run.compensation_errors
            else run
            for run in engine.runs(status=status, saga=saga, limit=limit)
        ]
        # A cancel or signal not yet acted on leaves the status as it was.
        waiting = {run.id: pending_marker(engine, run) for run in runs if run.pending}
    if not runs:
        which = f"{status} runs" if status else "runs"
        of = f" of saga {saga!r}" if saga else ""
        console.print(f"no {which}{of} in {shown_url(db)}", soft_wrap=True)
        return
    lines: list[Line] = []
    for run in runs:
        error = Text(short_error(run.error), style="red")
        if run.compensation_errors:
            error.append(f" (and {len(run.compensation_errors)} compensation errors)")
        shown_status = status_text(run.status)
        if run.id in waiting:
            shown_status.append(waiting[run.id], style="yellow")
        cells: list[Cell] = [
            run.id,
            shown_status,
            f"{run.saga} v{run.version}",
            _when(run.created_at),
            format_duration(run.updated_at - run.created_at),
        ]
        lines.append((cells, error))
    console.print(Text(f"runs in {shown_url(db)}, newest first", style="bold"), soft_wrap=True)
    console.print(
        aligned(["run id", "status", "saga", "created", "took"], lines, right=(4,), under=1)
    )
    if len(runs) == limit:
        console.print(f"showing the newest {limit}; pass --limit for more", style="dim")


# show and history both read a purged run back from its archive.
_archive_option = click.option(
    "--archive",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Read the run from this archive (written by `sagakit purge --archive`), not --db.",
)


@click.command()
@click.argument("run_id")
@_archive_option
@db_option
@app_option
@json_option
def show(run_id: str, archive: Path | None, db: str, apps: tuple[str], as_json: bool) -> None:
    """Show a run's timeline: its steps, compensations, attempts and errors."""
    if archive is not None:
        db = load_archived(archive, run_id)
    with open_engine(db, apps, read_only=True) as engine:
        if as_json:
            emit(shown_run_document(engine, engine.get(run_id)))
        else:
            print_run(engine, engine.get(run_id))


@click.command()
@click.argument("run_id")
@_archive_option
@db_option
@app_option
@json_option
def history(run_id: str, archive: Path | None, db: str, apps: tuple[str], as_json: bool) -> None:
    """Show a run's journal, one line per event."""
    if archive is not None:
        db = load_archived(archive, run_id)
    with open_engine(db, apps, read_only=True) as engine:
        events = engine.history(run_id)
        run = engine.get(run_id)
        redactor = Redactor.for_run(events, sensitive_names(engine, run.saga), run.data)
        if as_json:
            document = history_document(run.id, redactor.events(events), pending_json(engine, run))
        pending = pending_requests(engine, run)
    if as_json:
        emit(document)
        return
    console.print(render_history(redactor.events(events)))
    for line in pending:
        console.print(line, soft_wrap=True)


@click.command()
@click.option("--run", "run_id", metavar="RUN_ID", help="Only the reservations of this run.")
@db_option
@json_option
def reservations(run_id: str | None, db: str, as_json: bool) -> None:
    """List the reservations held now: which run holds what, until when.

    Reservations that expired are not shown (any run may take them). Reads
    only: the database is never created or changed.
    """
    with open_engine(db, read_only=True) as engine:
        held = engine.reservations(run_id=run_id)
        now = time.time()
    if as_json:
        emit(reservations_document(shown_url(db), run_id, held, at=now))
        return
    if not held:
        of = f" by run {printable(run_id)}" if run_id is not None else ""
        console.print(f"no reservations held{of} in {shown_url(db)}", soft_wrap=True)
        return
    lines: list[Line] = [
        (
            [
                r.name,
                r.run_id,
                datetime.fromtimestamp(r.expires_at).strftime("%Y-%m-%d %H:%M:%S"),
                format_duration(r.expires_at - now),
            ],
            None,
        )
        for r in held
    ]
    console.print(Text(f"reservations held in {shown_url(db)}", style="bold"), soft_wrap=True)
    console.print(aligned(["name", "held by run", "until", "left"], lines, right=(3,)))


@click.command()
@db_option
@json_option
def migrate(db: str, as_json: bool) -> None:
    """Create the database's schema, or bring it up to date.

    Workers and engines do this by themselves when they open a database;
    run it first to upgrade a shared database at a time of your choosing.
    """
    url, _ = use_db(db)
    store = open_store(url)

    async def run() -> tuple[int, int]:
        try:
            return await store.migrate()
        finally:
            await store.close()

    before, after = asyncio.run(run())
    if as_json:
        emit(migration_document(shown_url(db), before, after))
    elif before == after:
        console.print(f"schema is up to date (version {after})")
    else:
        console.print(f"schema version {before} -> {after}")
