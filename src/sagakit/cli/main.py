"""The ``sagakit`` command line: run the demo, list runs, show and repair them.

Every command takes ``--db``: a store URL (``sqlite:///runs.db``) or a plain
path to a SQLite file; without it, ``SAGAKIT_DB``; without either,
``sagakit.db`` in the current directory, which the command names in one line
on stderr. Commands that read or repair runs never create a
database: a missing file is an error, so a typo in ``--db`` cannot hide
behind an empty listing. The commands that only read (``list``, ``show``,
``history``) never create, migrate or write anything either: a database that
holds no sagakit store, or one of an older schema, is refused in one line.

``--app module[:attr]`` imports the application's module (or reads a YAML
file, see `sagakit.cli.main.apps`) and registers its sagas, which ``retry`` and
``resolve`` need in order to call its functions.

``sagakit worker`` drives the runs that ``engine.start()`` or ``sagakit
start`` records, until SIGTERM or Ctrl-C; ``sagakit migrate`` creates or upgrades a store's schema.
Both may create the database.

The group, ``demo``, the commands that read runs and ``migrate`` are here;
what the commands share (``--db``, ``--app``, the engine) is in
`sagakit.cli.main.common`, the operator's commands in `sagakit.cli.main.operator`, the
worker in `sagakit.cli.main.worker` and the YAML-file commands in `sagakit.cli.main.yamlfile`.

Exit codes: 0 success, 1 an error (no such database or run, a saga that is
not registered, a run that still needs attention afterwards), 2 bad usage.
"""

from __future__ import annotations

import asyncio
import logging
import shlex
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import click
from rich.text import Text

from sagakit import __version__
from sagakit.cli.apps import load_apps, load_sagas
from sagakit.cli.check import check
from sagakit.cli.common import (
    DEFAULT_DB,
    app_option,
    console,
    db_option,
    open_engine,
    pending_marker,
    pending_requests,
    print_run,
    resolve_db,
    sensitive_names,
    shown_path,
    shown_url,
    status_text,
    use_db,
)
from sagakit.cli.dashboard import dashboard
from sagakit.cli.explore import explore_command
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
from sagakit.cli.keys import keys
from sagakit.cli.logsetup import LOG_FORMAT_KEY, log_format_option, stderr_handler
from sagakit.cli.operator import cancel, recover, resolve, retry, signal_run
from sagakit.cli.purge import load_archived, purge
from sagakit.cli.reconcile import reconcile
from sagakit.cli.start import start
from sagakit.cli.worker import worker
from sagakit.cli.yamlfile import run_file, schema, validate
from sagakit.errors import SagaError
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

__all__ = ["DEFAULT_DB", "cli", "load_apps", "load_sagas", "main", "resolve_db"]


# -- options and helpers ------------------------------------------------------------


# More runs than a terminal can show; and a bound the stores can take (SQLite
# cannot bind an integer beyond 2**63).
MAX_LIMIT = 1_000_000


def _when(at: float) -> str:
    # Minutes are precise enough to tell runs apart in a list (and fit 80 columns).
    return datetime.fromtimestamp(at).strftime("%Y-%m-%d %H:%M")


class _Group(click.Group):
    """Turns every `SagaError` into a one-line message and exit code 1.

    Every error message, click's own included ("No such option: ...", "Got
    unexpected extra argument ..."), reaches the terminal with its control
    characters escaped and any password masked, since it may quote what was
    typed.
    """

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        # Bytes that are not UTF-8 reach Python's argv as lone surrogates,
        # which no store, URL or terminal can encode: refuse them here, once.
        for arg in args:
            try:
                arg.encode("utf-8")
            except UnicodeEncodeError:
                try:  # the bytes as given
                    shown = repr(arg.encode("utf-8", "surrogateescape"))
                except UnicodeEncodeError:
                    shown = repr(arg)
                raise click.UsageError(
                    f"an argument is not UTF-8 text: {_printable_lines(shown, usage=True)}", ctx
                ) from None
        try:
            return super().parse_args(ctx, args)
        except click.ClickException as exc:
            # click types `message` as Final, yet formats the error from it
            # only when showing it: set here, it is what the user sees.
            exc.message = _printable_lines(exc.message, usage=True)  # type: ignore[misc]
            raise

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SagaError as exc:
            # Messages quote what came from outside with repr; this keeps any
            # other control character (from an application's error, a driver's
            # message) off the terminal too, line by line.
            raise click.ClickException(_printable_lines(str(exc))) from exc
        except click.ClickException as exc:
            usage = isinstance(exc, click.UsageError)
            exc.message = _printable_lines(exc.message, usage=usage)  # type: ignore[misc]
            raise


def _printable_lines(message: str, *, usage: bool = False) -> str:
    # A store URL typed where a command or a value was expected is quoted back
    # in a usage error ("No such command 'postgresql://u:pw@...'"): mask its
    # password. Other messages name URLs through redact_url already.
    lines = message.split("\n")
    return "\n".join(printable(redact_url(line) if usage else line) for line in lines)


# -- commands -----------------------------------------------------------------------


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", "-V", prog_name="sagakit")
@click.option("-v", "--verbose", is_flag=True, help="Log what the engine does, on stderr.")
@log_format_option(default="text")
@click.pass_context
def cli(ctx: click.Context, verbose: bool, log_format: str) -> None:
    """sagakit: durable sagas (compensating transactions).

    Start with `sagakit demo`, then `sagakit list` and `sagakit show RUN_ID`.
    """
    logger = logging.getLogger("sagakit")
    ctx.meta[LOG_FORMAT_KEY] = log_format  # the worker's default
    if ctx.invoked_subcommand == "worker":
        return  # a worker always logs, as its --log-level says
    if verbose:
        logger.setLevel(logging.INFO)
        logger.addHandler(stderr_handler(log_format, "%(asctime)s %(levelname)s %(message)s"))
    else:
        # The commands print outcomes themselves; without a handler, Python's
        # last-resort handler would repeat the engine's warnings on stderr.
        logger.addHandler(logging.NullHandler())


# The commands that have modules of their own.
cli.add_command(retry)
cli.add_command(resolve)
cli.add_command(cancel)
cli.add_command(signal_run)
cli.add_command(recover)
cli.add_command(worker)
cli.add_command(validate)
cli.add_command(run_file)
cli.add_command(schema)
cli.add_command(keys)
cli.add_command(purge)
cli.add_command(reconcile)
cli.add_command(check)
cli.add_command(start)
cli.add_command(explore_command)
cli.add_command(dashboard)


@cli.command()
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


@cli.command("list")
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


@cli.command()
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


@cli.command()
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


@cli.command()
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


@cli.command()
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


def main(argv: Sequence[str] | None = None) -> None:
    """The console script: ``sagakit``."""
    cli.main(args=list(argv) if argv is not None else None, prog_name="sagakit")
