"""The ``sagakit`` command line: run the demo, list runs, show and repair them.

Every command takes ``--db``: a store URL (``sqlite:///runs.db``) or a plain
path to a SQLite file; the default is the demo's ``sagakit-demo.db`` in the
current directory. Commands that read or repair runs never create a
database: a missing file is an error, so a typo in ``--db`` cannot hide
behind an empty listing.

``--app module[:attr]`` imports the application's module (or reads a YAML
file, see `sagakit.cli_apps`) and registers its sagas, which ``retry`` and
``resolve`` need in order to call its functions.

``sagakit worker`` drives the runs that ``engine.start()`` records, until
SIGTERM or Ctrl-C; ``sagakit migrate`` creates or upgrades a store's schema.
Both may create the database.

Exit codes: 0 success, 1 an error (no such database or run, a saga that is
not registered, a run that still needs attention afterwards), 2 bad usage.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import json
import logging
import os
import shlex
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import click
from rich.console import Console
from rich.text import Text

from sagakit import __version__
from sagakit.cli_apps import load_apps, load_sagas
from sagakit.definition import Saga
from sagakit.engine import AsyncEngine, AttentionHook
from sagakit.errors import InvalidRunState, SagaError
from sagakit.journal import RunStatus
from sagakit.render import (
    Cell,
    Line,
    aligned,
    format_duration,
    render_history,
    render_timeline,
    short_error,
    status_style,
)
from sagakit.run import Run
from sagakit.store import FINISHED_STATUSES as FINISHED
from sagakit.store import open_store, redact_url
from sagakit.sync_engine import Engine
from sagakit.timeline import (
    build_timeline,
)
from sagakit.worker import Worker
from sagakit.yamlfile import schema_text, validate_yaml

__all__ = ["DEFAULT_DB", "cli", "load_apps", "load_sagas", "main", "resolve_db"]

DEFAULT_DB = "sqlite:///sagakit-demo.db"
"""Where the demo writes, and where every command looks unless given ``--db``."""

_console = Console(highlight=False)


# -- options and helpers ------------------------------------------------------------


def resolve_db(value: str) -> tuple[str, Path | None]:
    """Turn a ``--db`` value into a store URL and, for SQLite, its file path.

    A URL (``sqlite:///runs.db``, ``sqlite:runs.db``, ``memory://``) is used
    as given; anything else is the path of a SQLite file.

    Returns:
        ``(url, path)``; ``path`` is ``None`` for stores that are not files.

    Raises:
        StoreError: a malformed SQLite URL.
    """
    from sagakit.store.sqlite import parse_url

    scheme = value.partition(":")[0].lower()
    if "://" in value or scheme in ("sqlite", "memory"):
        url = value
    else:
        # The store unquotes the URL's path, so quote a file name that holds % or ?.
        url = "sqlite:///" + quote(value, safe="/\\:~")
    if not url.lower().startswith("sqlite:"):
        return url, None
    path, _ = parse_url(url)
    return url, None if path == ":memory:" else Path(path)


def _shown(path: Path) -> str:
    return str(path.resolve())


@contextmanager
def _engine(db: str, apps: Sequence[str] = (), *, create: bool = False) -> Iterator[Engine]:
    """An engine on ``--db`` with the demo's and the application's sagas registered."""
    url, path = resolve_db(db)
    if path is not None and not create and not path.is_file():
        raise click.ClickException(
            f"no sagakit database at {_shown(path)}; run `sagakit demo` first or pass --db"
        )
    sagas = _registered(apps)
    with Engine(url) as engine:
        engine.register(*sagas)
        yield engine


def _registered(apps: Sequence[str]) -> list[Saga[Any]]:
    from sagakit.demo import SAGAS

    # The application's sagas come last so that they win over a demo saga of
    # the same name and version.
    return [*SAGAS, *load_apps(apps)]


def _json_object(text: str, option: str) -> dict[str, Any]:
    """An option's value parsed as a JSON object, or a usage error that says why not."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint=option) from None
    if not isinstance(value, dict):
        raise click.BadParameter("must be a JSON object", param_hint=option)
    return value


def _when(at: float) -> str:
    # Minutes are precise enough to tell runs apart in a list (and fit 80 columns).
    return datetime.fromtimestamp(at).strftime("%Y-%m-%d %H:%M")


def _status(status: RunStatus | str) -> Text:
    return Text(str(status), style=status_style(status))


def _print_run(engine: Engine, run: Run) -> None:
    _console.print(render_timeline(build_timeline(engine.history(run.id), run)))
    loaded = engine.versions(run.saga)
    if loaded and run.version not in loaded and run.status not in FINISHED:
        _console.print(
            Text(
                f"version {run.version} of saga {run.saga} is not loaded here (loaded: "
                f"{', '.join(loaded)}); only a worker or --app with version {run.version} "
                "acts on this run",
                style="yellow",
            ),
            soft_wrap=True,
        )
    if run.compensation_errors:
        _console.print(Text("compensation errors, every failed attempt:", style="bold"))
        for error in run.compensation_errors:
            _console.print(Text(f"  {error}", style="red"), soft_wrap=True)
    if run.status is RunStatus.NEEDS_ATTENTION:
        _console.print(
            Text.assemble(
                "next: fix the cause, then ",
                (f"sagakit retry {run.id}", "bold"),
                ", or undo it by hand and ",
                (f'sagakit resolve {run.id} --note "what you did"', "bold"),
            ),
            soft_wrap=True,
        )
    if run.status is RunStatus.PAUSED:
        _console.print(
            Text.assemble(
                "next: answer it with ",
                (f"sagakit signal {run.id} NAME --payload '{{...}}'", "bold"),
                ", or ",
                (f'sagakit cancel {run.id} --reason "why"', "bold"),
            ),
            soft_wrap=True,
        )


db_option = click.option(
    "--db",
    default=DEFAULT_DB,
    show_default=True,
    metavar="URL|PATH",
    help="The store: a URL (sqlite:///file.db, memory://) or a SQLite file path.",
)
app_option = click.option(
    "--app",
    "apps",
    multiple=True,
    metavar="MODULE[:ATTR]|FILE.yaml",
    help="Import MODULE and register its sagas, or load a YAML definition file "
    "(repeatable). ATTR: a Saga or a list of them.",
)


class _Group(click.Group):
    """Turns every `SagaError` into a one-line message and exit code 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SagaError as exc:
            raise click.ClickException(str(exc)) from exc


# -- commands -----------------------------------------------------------------------


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", "-V", prog_name="sagakit")
@click.option("-v", "--verbose", is_flag=True, help="Log what the engine does, on stderr.")
@click.pass_context
def cli(ctx: click.Context, verbose: bool) -> None:
    """sagakit: durable sagas (compensating transactions).

    Start with `sagakit demo`, then `sagakit list` and `sagakit show RUN_ID`.
    """
    logger = logging.getLogger("sagakit")
    if ctx.invoked_subcommand == "worker":
        return  # a worker always logs, as its --log-level says
    if verbose:
        logger.setLevel(logging.INFO)
        # A plain stream handler: the engine logs from its own threads, where
        # rich's handler would turn a closed pipe into SystemExit.
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logger.addHandler(handler)
    else:
        # The commands print outcomes themselves; without a handler, Python's
        # last-resort handler would repeat the engine's warnings on stderr.
        logger.addHandler(logging.NullHandler())


@cli.command()
@db_option
def demo(db: str) -> None:
    """Book two trips: one completes, one is rolled back when a hotel is full.

    The travel itinerary of Azure's Compensating Transaction pattern: three
    flights and two hotels. Each run of the demo adds two new runs to --db.
    """
    from sagakit.demo import run_demo

    url, path = resolve_db(db)
    _console.print(
        Text.assemble(
            ("sagakit demo", "bold"),
            ": book Seattle -> New York -> London -> Paris with hotels in London and Paris.\n",
            "Trip 1 books everything (the New York -> London gateway times out once). ",
            "Trip 2 asks for a Paris hotel with no rooms: the flights and the London hotel ",
            "are cancelled, last booked first.",
        )
    )
    with _engine(db, create=True) as engine:
        trips = run_demo(engine)
        for trip in trips:
            _console.print()
            _print_run(engine, trip.run)
    _console.print()
    _console.print(Text("what the travel provider still holds", style="bold"))
    for trip in trips:
        line = Text.assemble("  ", trip.run.id, " (", _status(trip.run.status), "): ")
        line.append(f"{len(trip.held)} bookings" if trip.held else "nothing", style="bold")
        _console.print(line, soft_wrap=True)
        for booking in trip.held:
            _console.print(f"    {booking.confirmation}  {booking.what}", soft_wrap=True)
    where = _shown(path) if path is not None else url
    option = "" if db == DEFAULT_DB else f" --db {shlex.quote(db)}"
    ok, rolled_back = trips[0].run.id, trips[-1].run.id
    _console.print(f"\nruns are stored in {where}", soft_wrap=True)
    _console.print("try next:", style="bold")
    for command in (
        f"sagakit list{option}",
        f"sagakit show {rolled_back}{option}",
        f"sagakit history {ok}{option}",
    ):
        _console.print(f"  {command}", soft_wrap=True)


@cli.command("list")
@click.option(
    "--status",
    type=click.Choice([s.value for s in RunStatus], case_sensitive=False),
    help="Only runs in this status.",
)
@click.option("--saga", help="Only runs of this saga.")
@click.option(
    "--limit", type=click.IntRange(min=1), default=50, show_default=True, help="At most this many."
)
@db_option
@app_option
def list_runs(status: str | None, saga: str | None, limit: int, db: str, apps: tuple[str]) -> None:
    """List runs, newest first."""
    with _engine(db, apps) as engine:
        runs = engine.runs(status=status, saga=saga, limit=limit)
    if not runs:
        which = f"{status} runs" if status else "runs"
        of = f" of saga {saga!r}" if saga else ""
        _console.print(f"no {which}{of} in {db}", soft_wrap=True)
        return
    lines: list[Line] = []
    for run in runs:
        error = Text(short_error(run.error), style="red")
        if run.compensation_errors:
            error.append(f" (and {len(run.compensation_errors)} compensation errors)")
        cells: list[Cell] = [
            run.id,
            _status(run.status),
            f"{run.saga} v{run.version}",
            _when(run.created_at),
            format_duration(run.updated_at - run.created_at),
        ]
        lines.append((cells, error))
    _console.print(Text(f"runs in {db}, newest first", style="bold"), soft_wrap=True)
    _console.print(
        aligned(["run id", "status", "saga", "created", "took"], lines, right=(4,), under=1)
    )
    if len(runs) == limit:
        _console.print(f"showing the newest {limit}; pass --limit for more", style="dim")


@cli.command()
@click.argument("run_id")
@db_option
@app_option
def show(run_id: str, db: str, apps: tuple[str]) -> None:
    """Show a run's timeline: its steps, compensations, attempts and errors."""
    with _engine(db, apps) as engine:
        _print_run(engine, engine.get(run_id))


@cli.command()
@click.argument("run_id")
@db_option
@app_option
def history(run_id: str, db: str, apps: tuple[str]) -> None:
    """Show a run's journal, one line per event."""
    with _engine(db, apps) as engine:
        events = engine.history(run_id)
    _console.print(render_history(events))


@cli.command()
@click.argument("run_id")
@click.option("--note", help="Why it is retried (kept in the journal).")
@click.option(
    "--step",
    metavar="STEP",
    help="Act only if the run is still halted on this step (guards against a stale view).",
)
@db_option
@app_option
def retry(run_id: str, note: str | None, step: str | None, db: str, apps: tuple[str]) -> None:
    """Resume a run that needs attention exactly where it stopped.

    The step or compensation it halted on gets a fresh set of attempts. Exits
    with 1 if the run needs attention again afterwards.
    """
    with _engine(db, apps) as engine:
        run = engine.get(run_id)
        if run.status is not RunStatus.NEEDS_ATTENTION:
            _console.print(
                Text.assemble(
                    f"nothing to retry: run {run_id} is ",
                    _status(run.status),
                    "; only a run that needs attention can be retried",
                ),
                soft_wrap=True,
            )
            return
        run = engine.retry(run_id, note=note, step=step)
        _print_run(engine, run)
    _finish(run, "retried")


@cli.command()
@click.argument("run_id")
@click.option("--note", required=True, help="What was done by hand (kept in the journal).")
@click.option(
    "--step",
    metavar="STEP",
    help="Act only if the run is still halted on this step (guards against a stale view).",
)
@db_option
@app_option
def resolve(run_id: str, note: str, step: str | None, db: str, apps: tuple[str]) -> None:
    """Record that what a run halted on was done by hand, and continue it.

    The halted step or compensation counts as done and the rest of the run
    goes on. Exits with 1 if the run needs attention again afterwards.
    """
    if not note.strip():
        raise click.BadParameter("say what was done", param_hint="--note")
    with _engine(db, apps) as engine:
        run = engine.resolve(run_id, note=note, step=step)
        _print_run(engine, run)
    _finish(run, "resolved")


@cli.command()
@click.argument("run_id")
@click.option("--reason", help="Why (kept in the journal, handed to compensations).")
@click.option(
    "--force",
    is_flag=True,
    help="Cancel even after the pivot: compensate the steps before it anyway.",
)
@db_option
@app_option
def cancel(run_id: str, reason: str | None, force: bool, db: str, apps: tuple[str]) -> None:
    """Cancel a run: stop it and compensate what it did.

    Works on a pending, running, paused or completed run (the "cancel my
    order the next day" case); refused after the pivot unless --force. With
    --app the compensations run here; without it, or while a worker holds
    the run, the request is recorded and the worker does the undo.
    """
    with _engine(db, apps) as engine:
        try:
            run = engine.cancel(run_id, reason=reason, force=force)
        except InvalidRunState as exc:
            # The engine words its refusal after the pivot for its Python API.
            raise click.ClickException(str(exc).replace("force=True", "--force")) from exc
        _report_delivery(engine, run, "cancel")


@cli.command("signal")
@click.argument("run_id")
@click.argument("name")
@click.option(
    "--payload",
    default="{}",
    show_default=True,
    metavar="JSON",
    help="A JSON object merged into the run's state.",
)
@db_option
@app_option
def signal_run(run_id: str, name: str, payload: str, db: str, apps: tuple[str]) -> None:
    """Send the signal NAME to a run: an answer to its pause, an approval.

    The payload is merged into the run's state; a run paused on a step goes
    on as the step says (by default it runs the step again with the new
    state). With --app the run continues here; otherwise a worker carries on.
    """
    body = _json_object(payload, "--payload")
    with _engine(db, apps) as engine:
        run = engine.signal(run_id, name, body)
        _report_delivery(engine, run, f"signal {name}")


def _report_delivery(engine: Engine, run: Run, what: str) -> None:
    # Without its saga registered here the engine only posts the request: the
    # run is as it was (paused, completed...) and a worker will act on it.
    known = any((saga.name, saga.version) == (run.saga, run.version) for saga in engine.sagas)
    if not known or run.status in (RunStatus.PENDING, RunStatus.RUNNING, RunStatus.COMPENSATING):
        if run.owner:
            holder = f"by {run.owner}"
        elif known:
            holder = "by a worker serving its saga"
        else:
            holder = (
                f"by a worker serving saga {run.saga} "
                "(sagakit worker --app MODULE or --app FILE.yaml)"
            )
        _console.print(
            Text.assemble(
                f"{what} recorded for run {run.id}; it is ",
                _status(run.status),
                f" and will be acted on {holder}",
            ),
            soft_wrap=True,
        )
        return
    _print_run(engine, run)
    if run.status is RunStatus.NEEDS_ATTENTION:
        raise click.ClickException(f"run {run.id} needs attention after the {what}")


@cli.command()
@db_option
@app_option
def recover(db: str, apps: tuple[str]) -> None:
    """Resume the runs whose process died, and drive them until they settle.

    Takes every unsettled run whose lease lapsed and whose saga is registered
    (pass --app); a crash resumes forward, an interrupted undo resumes undoing.
    Runs of sagas not registered are left untouched and reported.
    """
    with _engine(db, apps) as engine:
        known = {(saga.name, saga.version) for saga in engine.sagas}
        runs = engine.recover()
        for run in runs:
            _console.print(Text.assemble(f"run {run.id} recovered: now ", _status(run.status)))
        stranded = [
            run
            for status in (RunStatus.PENDING, RunStatus.RUNNING, RunStatus.COMPENSATING)
            for run in engine.runs(status=status, limit=1000)
            if (run.saga, run.version) not in known
        ]
    for run in stranded:
        _console.print(
            f"run {run.id} of saga {run.saga} version {run.version} was not touched: "
            "pass --app with the module or YAML file that defines that version",
            soft_wrap=True,
        )
    if not runs and not stranded:
        _console.print("nothing to recover: no unsettled run has a lapsed lease")


@cli.command()
@db_option
@click.option(
    "--app",
    "apps",
    multiple=True,
    required=True,
    metavar="MODULE[:ATTR]|FILE.yaml",
    help="Import MODULE and serve its sagas, or serve the saga a YAML file defines "
    "(repeatable). ATTR: a Saga or a list of them.",
)
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="At most this many runs driven at once.",
)
@click.option(
    "--lease",
    type=click.FloatRange(min=0, min_open=True),
    default=30.0,
    show_default=True,
    metavar="SECONDS",
    help="How long a run stays this worker's without a heartbeat (after a crash, "
    "other workers wait this long before taking its runs).",
)
@click.option(
    "--poll",
    type=click.FloatRange(min=0, min_open=True),
    default=1.0,
    show_default=True,
    metavar="SECONDS",
    help="With nothing to do, look for new work this often.",
)
@click.option(
    "--grace",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    metavar="SECONDS",
    help="On SIGTERM or Ctrl-C, let the calls in flight finish for this long.",
)
@click.option(
    "--on-attention",
    "on_attention",
    metavar="MODULE:FUNCTION",
    help="Call FUNCTION(report) when a run needs attention (an AttentionReport: run, "
    "step, attempts, every error, the state), e.g. to page someone.",
)
@click.option(
    "--log-level",
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    default="INFO",
    show_default=True,
    help="Log on stderr from this level up.",
)
def worker(
    *,
    db: str,
    apps: tuple[str],
    concurrency: int,
    lease: float,
    poll: float,
    grace: float,
    on_attention: str | None,
    log_level: str,
) -> None:
    """Drive the runs of the app's sagas, until SIGTERM or Ctrl-C.

    Takes every run that is due (started with engine.start(), its retry timer
    due, or its last owner gone) and drives it. Any number of workers may
    share a database. On SIGTERM or Ctrl-C the worker starts no new call,
    lets those in flight finish (up to --grace seconds) and hands its runs
    back, then exits 0; a second signal stops it at once.
    """
    url, _ = resolve_db(db)  # the worker may create the database: it migrates it
    sagas = load_apps(apps)
    hook = _import_hook(on_attention) if on_attention else None
    _log_to_stderr(log_level)
    served = ", ".join(f"{saga.name} v{saga.version}" for saga in sagas)
    where = redact_url(url)
    click.echo(f"sagakit worker: serving {served} from {where} (up to {concurrency} runs at once)")
    sys.stdout.flush()  # a supervisor reading a pipe sees it now, not at exit
    _tune_garbage_collector()
    asyncio.run(
        _serve(
            url,
            sagas,
            concurrency=concurrency,
            lease=lease,
            poll=poll,
            grace=grace,
            on_attention=hook,
        )
    )
    _abandon_stuck_threads()


def _tune_garbage_collector() -> None:
    """Set the worker process's garbage collector for many runs in flight.

    The worker owns its process, so it may do what a library must leave to
    its host. The objects made by imports and start-up live as long as the
    process: frozen, full collections no longer walk them. And a run in
    flight keeps what it allocates alive across awaits, so with thousands of
    runs most young objects survive a young collection anyway: collecting
    every 10,000 allocations instead of every 700 does the same work in far
    fewer passes (see docs/benchmarks.md).
    """
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(10_000, older, oldest)


def _import_hook(spec: str) -> AttentionHook:
    """The ``module:function`` an ``--on-attention`` names, imported."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise click.BadParameter(f"{spec!r} is not MODULE:FUNCTION", param_hint="--on-attention")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        value: object = importlib.import_module(module_name)
        for part in attr.split("."):
            value = getattr(value, part)
    except (ImportError, AttributeError) as exc:
        raise click.BadParameter(
            f"cannot load {spec!r}: {exc}", param_hint="--on-attention"
        ) from exc
    if not callable(value):
        raise click.BadParameter(f"{spec!r} is not callable", param_hint="--on-attention")
    hook: AttentionHook = value
    return hook


def _abandon_stuck_threads() -> None:
    """Exit now if synchronous step calls cut short by a stop still run on threads.

    Their runs were handed back already; but Python waits for every thread
    of an executor before it exits, so one call stuck for an hour would keep
    a stopped worker alive for an hour.
    """
    deadline = time.monotonic() + 1.0
    stuck = 0
    for thread in threading.enumerate():
        if thread.name.startswith("sagakit-step"):
            # Idle threads of the pool end as soon as they see its shutdown.
            thread.join(max(0.0, deadline - time.monotonic()))
            stuck += thread.is_alive()
    if stuck:
        logging.getLogger("sagakit").warning(
            "%d step call(s) cut short are still running on threads; exiting without them",
            stuck,
        )
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def _log_to_stderr(level: str) -> None:
    # On the root logger, so that the application's own logs show as well.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level.upper())


async def _serve(
    url: str,
    sagas: Sequence[Saga[Any]],
    *,
    concurrency: int,
    lease: float,
    poll: float,
    grace: float,
    on_attention: AttentionHook | None = None,
) -> None:
    log = logging.getLogger("sagakit")
    async with AsyncEngine(url, lease_seconds=lease, on_attention=on_attention) as engine:
        engine.register(*sagas)
        runner = Worker(engine, concurrency=concurrency, poll_interval=poll)
        signals = 0

        def on_signal(received: signal.Signals) -> None:
            nonlocal signals
            signals += 1
            if signals == 1:
                log.info(
                    "%s: stopping; calls in flight may finish for %gs (send it again to stop "
                    "at once)",
                    received.name,
                    grace,
                )
                runner.stop(grace)
            else:
                log.info("%s again: stopping at once", received.name)
                runner.stop(0)

        loop = asyncio.get_running_loop()
        handled: list[signal.Signals] = []
        for which in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(which, on_signal, which)
                handled.append(which)
            except (NotImplementedError, RuntimeError):  # not on this platform or thread
                pass
        try:
            await runner.run()
        finally:
            for which in handled:
                loop.remove_signal_handler(which)


@cli.command()
@db_option
def migrate(db: str) -> None:
    """Create the database's schema, or bring it up to date.

    Workers and engines do this by themselves when they open a database;
    run it first to upgrade a shared database at a time of your choosing.
    """
    url, _ = resolve_db(db)
    store = open_store(url)

    async def run() -> tuple[int, int]:
        try:
            return await store.migrate()
        finally:
            await store.close()

    before, after = asyncio.run(run())
    if before == after:
        _console.print(f"schema is up to date (version {after})")
    else:
        _console.print(f"schema version {before} -> {after}")


def _stages_text(saga: Saga[Any]) -> str:
    return " -> ".join(
        stage[0] if len(stage) == 1 else "[" + " | ".join(stage) + "]"
        for stage in saga.plan().stages
    )


def _check_file(file: Path, apps: Sequence[str], *, running: bool) -> Saga[Any]:
    """Load a YAML definition file, printing its notes; exit 1 on any error."""
    modules = [spec.partition(":")[0] for spec in apps]
    report = validate_yaml(file, allowed_modules=modules or None)
    for note in report.notes:
        _console.print(Text(f"note: {note}", style="yellow"), soft_wrap=True)
    if report.saga is None or report.errors:
        err = Console(stderr=True, highlight=False)
        for problem in report.errors:
            err.print(Text(str(problem), style="red"), soft_wrap=True)
        count = len(report.errors)
        raise click.ClickException(
            f"{file}: {count} problem{'s' if count != 1 else ''}"
            + ("; nothing was run" if running else "")
        )
    return report.saga


@cli.command()
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--app",
    "apps",
    multiple=True,
    metavar="MODULE",
    help="Allow functions from MODULE and its submodules (repeatable). Default: "
    "the modules beside FILE or in the current directory.",
)
def validate(file: Path, apps: tuple[str, ...]) -> None:
    """Check a YAML saga definition without running it.

    Checks the YAML, the schema (sagakit's format or Ruvon's workflow.yaml),
    the rules between step kinds, and that every function and class it names
    can be imported from an allowed module. Every problem is printed with its
    file, line and step; the exit code is 1 if there is any.
    """
    saga = _check_file(file, apps, running=False)
    steps = len(saga.steps)
    _console.print(
        Text.assemble(
            (f"{file}: ok", "green"),
            f" - saga {saga.name} version {saga.version}, {steps} step"
            f"{'s' if steps != 1 else ''}: {_stages_text(saga)}",
        ),
        soft_wrap=True,
    )


@cli.command("run")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--input",
    "input_json",
    default="{}",
    show_default=True,
    metavar="JSON",
    help="The run's initial state, a JSON object.",
)
@click.option("--run-id", help="The run's id (a start with an existing id changes nothing).")
@db_option
@click.option(
    "--app",
    "apps",
    multiple=True,
    metavar="MODULE",
    help="Allow functions from MODULE (repeatable); as for validate.",
)
def run_file(
    file: Path, input_json: str, run_id: str | None, db: str, apps: tuple[str, ...]
) -> None:
    """Run the saga a YAML file defines, here, and print its timeline.

    The run is recorded in --db (created if need be), so `sagakit show`,
    `retry` and `cancel` work on it afterwards (pass the file as --app).
    Exits with 1 if the run needs attention.
    """
    state = _json_object(input_json, "--input")
    saga = _check_file(file, apps, running=True)
    with _engine(db, create=True) as engine:
        run = engine.run(saga, state, run_id=run_id)
        _print_run(engine, run)
    _console.print(Text("state:", style="bold"), json.dumps(run.data, indent=2), soft_wrap=True)
    if run.status is RunStatus.NEEDS_ATTENTION:
        raise click.ClickException(f"run {run.id} needs attention")


@cli.command()
def schema() -> None:
    """Print the JSON Schema of sagakit's YAML format (for editors and CI)."""
    click.echo(schema_text(), nl=False)


def _finish(run: Run, action: str) -> None:
    if run.status is RunStatus.NEEDS_ATTENTION:
        raise click.ClickException(f"run {run.id} was {action} but needs attention again")
    _console.print(Text.assemble(f"run {run.id} {action}; now ", _status(run.status)))


def main(argv: Sequence[str] | None = None) -> None:
    """The console script: ``sagakit``."""
    cli.main(args=list(argv) if argv is not None else None, prog_name="sagakit")
