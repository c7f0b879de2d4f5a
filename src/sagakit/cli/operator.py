"""The operator's commands on a stored run: retry, resolve, cancel, signal, recover.

Each acts through the engine and prints the run as it is afterwards; a run
that needs attention again exits with 1. Without the run's saga registered
here (``--app``), a cancel or a signal is only recorded, for a worker to act on.
With ``--json`` each prints one document instead (`sagakit.cli.jsonout`):
``sagakit/action/v1`` for the four actions on a run, ``sagakit/recovery/v1``
for ``recover``; a run that needs attention afterwards still exits with 1.
"""

from __future__ import annotations

import click
from rich.text import Text

from sagakit.cli.common import console, json_object, open_engine, print_run, status_text
from sagakit.cli.jsonout import action_document, emit, json_option, recovery_document
from sagakit.cli.options import app_option, db_option, shown_url
from sagakit.engine import Engine
from sagakit.errors import InvalidRunState
from sagakit.journal import RunStatus
from sagakit.run import Run
from sagakit.timeline import printable

# retry and resolve both take it: an operator acting on what they saw a minute ago.
_step_option = click.option(
    "--step",
    metavar="STEP",
    help="Act only if the run is still halted on this step (guards against a stale view).",
)


@click.command()
@click.argument("run_id")
@click.option("--note", help="Why it is retried (kept in the journal).")
@_step_option
@db_option
@app_option
@json_option
def retry(  # click passes every option by name
    *, run_id: str, note: str | None, step: str | None, db: str, apps: tuple[str], as_json: bool
) -> None:
    """Resume a run that needs attention exactly where it stopped.

    The step or compensation it halted on gets a fresh set of attempts. Exits
    with 1 if the run needs attention again afterwards.
    """
    with open_engine(db, apps) as engine:
        run = engine.get(run_id)
        if run.status is not RunStatus.NEEDS_ATTENTION:
            if as_json:
                emit(action_document(engine, "retry", run, outcome="nothing_to_do"))
                return
            console.print(
                Text.assemble(
                    f"nothing to retry: run {printable(run_id)} is ",
                    status_text(run.status),
                    "; only a run that needs attention can be retried",
                ),
                soft_wrap=True,
            )
            return
        run = engine.retry(run_id, note=note, step=step)
        _show(engine, "retry", run, as_json=as_json)
    _finish(run, "retried", as_json=as_json)


@click.command()
@click.argument("run_id")
@click.option("--note", required=True, help="What was done by hand (kept in the journal).")
@_step_option
@db_option
@app_option
@json_option
def resolve(  # click passes every option by name
    *, run_id: str, note: str, step: str | None, db: str, apps: tuple[str], as_json: bool
) -> None:
    """Record that what a run halted on was done by hand, and continue it.

    The halted step or compensation counts as done and the rest of the run
    goes on. Exits with 1 if the run needs attention again afterwards.
    """
    if not note.strip():
        raise click.BadParameter("say what was done", param_hint="--note")
    with open_engine(db, apps) as engine:
        run = engine.resolve(run_id, note=note, step=step)
        _show(engine, "resolve", run, as_json=as_json)
    _finish(run, "resolved", as_json=as_json)


@click.command()
@click.argument("run_id")
@click.option("--reason", help="Why (kept in the journal, handed to compensations).")
@click.option(
    "--force",
    is_flag=True,
    help="Cancel even after the pivot: compensate the steps before it anyway.",
)
@db_option
@app_option
@json_option
def cancel(  # click passes every option by name
    *, run_id: str, reason: str | None, force: bool, db: str, apps: tuple[str], as_json: bool
) -> None:
    """Cancel a run: stop it and compensate what it did.

    Works on a pending, running, paused or completed run (the "cancel my
    order the next day" case); refused after the pivot unless --force. With
    --app the compensations run here; without it, or while a worker holds
    the run, the request is recorded and the worker does the undo.
    """
    with open_engine(db, apps) as engine:
        try:
            run = engine.cancel(run_id, reason=reason, force=force)
        except InvalidRunState as exc:
            # The engine words its refusal after the pivot for its Python API.
            raise click.ClickException(str(exc).replace("force=True", "--force")) from exc
        _report_delivery(engine, run, "cancel", as_json=as_json)


@click.command("signal")
@click.argument("run_id")
@click.argument("name")
@click.option(
    "--payload",
    default="{}",
    show_default=True,
    metavar="JSON|@FILE|-",
    help="A JSON object merged into the run's state; @FILE reads it from FILE, - from stdin.",
)
@db_option
@app_option
@json_option
def signal_run(  # click passes every option by name
    *, run_id: str, name: str, payload: str, db: str, apps: tuple[str], as_json: bool
) -> None:
    """Send the signal NAME to a run: an answer to its pause, an approval.

    The payload is merged into the run's state; a run paused on a step goes
    on as the step says (by default it runs the step again with the new
    state). With --app the run continues here; otherwise a worker carries on.
    """
    body = json_object(payload, "--payload")
    with open_engine(db, apps) as engine:
        run = engine.signal(run_id, name, body)
        _report_delivery(engine, run, f"signal {name}", signal=name, as_json=as_json)


def _report_delivery(
    engine: Engine, run: Run, what: str, *, signal: str | None = None, as_json: bool = False
) -> None:
    # Without its saga registered here the engine only posts the request: the
    # run is as it was (paused, completed...) and a worker will act on it.
    known = any((saga.name, saga.version) == (run.saga, run.version) for saga in engine.sagas)
    recorded = not known or run.status in (
        RunStatus.PENDING,
        RunStatus.RUNNING,
        RunStatus.COMPENSATING,
    )
    if as_json:
        action = "cancel" if signal is None else "signal"
        outcome = "recorded" if recorded else "applied"
        emit(action_document(engine, action, run, outcome=outcome, signal=signal))
    elif recorded:
        if run.owner:
            holder = f"by {printable(run.owner)}"
        elif known:
            holder = "by a worker serving its saga"
        else:
            holder = (
                f"by a worker serving saga {printable(run.saga)} "
                "(sagakit worker --app MODULE or --app FILE.yaml)"
            )
            if what.startswith("signal"):
                # Only the saga's state model can check the payload, and it is
                # not loaded here: say so rather than imply the signal was taken.
                holder += (
                    "; its payload is not checked here (--app checks it now): a payload "
                    "that does not fit the state is journaled as ignored"
                )
        console.print(
            Text.assemble(
                f"{printable(what)} recorded for run {printable(run.id)}; it is ",
                status_text(run.status),
                f" and will be acted on {holder}",
            ),
            soft_wrap=True,
        )
    else:
        print_run(engine, run)
    if not recorded and run.status is RunStatus.NEEDS_ATTENTION:
        raise click.ClickException(
            f"run {printable(run.id)} needs attention after the {printable(what)}"
        )


@click.command()
@db_option
@app_option
@json_option
def recover(db: str, apps: tuple[str], as_json: bool) -> None:
    """Do once what a worker does: drive the runs that are due now.

    Takes every run of the registered sagas (pass --app) that nobody holds, or
    whose process died, and that is due: active with no timer, its retry
    timer or deadline due, or a cancel or signal waiting. A crash resumes
    forward, an interrupted undo resumes undoing. A run that then waits on a
    retry timer is handed back with it, for a worker or the next recover.
    Runs of sagas not registered are left untouched and reported.
    """
    with open_engine(db, apps) as engine:
        known = {(saga.name, saga.version) for saga in engine.sagas}
        runs = engine.recover()
        stranded = [
            run
            for status in (RunStatus.PENDING, RunStatus.RUNNING, RunStatus.COMPENSATING)
            for run in engine.runs(status=status, limit=1000)
            if (run.saga, run.version) not in known
        ]
        if as_json:
            emit(recovery_document(engine, shown_url(db), runs, stranded))
            return
        for run in runs:
            text = Text.assemble(
                f"run {printable(run.id)} recovered: now ", status_text(run.status)
            )
            if run.status in (RunStatus.PENDING, RunStatus.RUNNING, RunStatus.COMPENSATING):
                text.append("; handed back to wait for its next retry (a worker or the next")
                text.append(" recover takes it up when due)")
            console.print(text, soft_wrap=True)
    for run in stranded:
        console.print(
            Text(
                printable(f"run {run.id} of saga {run.saga} version {run.version}")
                + " was not touched: pass --app with the module or YAML file that defines "
                "that version"
            ),
            soft_wrap=True,
        )
    if not runs and not stranded:
        console.print("nothing to recover: no run of these sagas is due now")


def _show(engine: Engine, action: str, run: Run, *, as_json: bool) -> None:
    """The run after a retry or a resolve: its timeline, or with ``as_json`` its document."""
    if as_json:
        emit(action_document(engine, action, run, outcome="applied"))
    else:
        print_run(engine, run)


def _finish(run: Run, action: str, *, as_json: bool) -> None:
    # With --json the document is printed already: only a failure adds a line (on stderr).
    if run.status is RunStatus.NEEDS_ATTENTION:
        raise click.ClickException(
            f"run {printable(run.id)} was {action} but needs attention again"
        )
    if as_json:
        return
    console.print(
        Text.assemble(f"run {printable(run.id)} {action}; now ", status_text(run.status)),
        soft_wrap=True,
    )
