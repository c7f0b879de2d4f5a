"""``sagakit reconcile``: find the external resources no run owns, and remove them if asked.

The application's sagas (``--app``) declare reconcilers (`sagakit.Reconciler`):
how to list one kind of resource with the idempotency keys they were created
under, and how to remove one. This command runs one pass of
`Engine.reconcile`: a table (or ``--json``) of every resource listed, its
verdict and why; with ``--apply``, the orphans are removed, each removal
journaled on its run. Exit 1 if a listing or a removal failed.
"""

from __future__ import annotations

import asyncio
import logging
import time

import click
from rich.table import Table
from rich.text import Text

from sagakit.cli.common import console, open_engine
from sagakit.cli.jsonout import emit, json_option, reconcile_document
from sagakit.cli.options import (
    Grace,
    app_option,
    db_option,
    shown_url,
    using_default_db,
)
from sagakit.engine.async_engine import DEFAULT_RECONCILE_GRACE, AsyncEngine
from sagakit.reconcile import Outcome, ReconcileReport, Verdict
from sagakit.timeline import format_duration, printable

__all__ = ["Grace", "reconcile", "reconcile_periodically", "summary"]

_VERDICT_STYLE = {Verdict.ORPHAN: "bold red", Verdict.LIVE: "green", Verdict.IGNORED: "dim"}
_OUTCOME_STYLE = {
    Outcome.REMOVED: "bold green",
    Outcome.FAILED: "bold red",
    Outcome.SKIPPED: "yellow",
    Outcome.FOUND: "red",
    Outcome.KEPT: "dim",
}


def summary(report: ReconcileReport) -> str:
    """One line: how many orphans, removed, failed, live and ignored."""
    count = dict.fromkeys(Verdict, 0)
    for finding in report.findings:
        count[finding.verdict] += 1
    parts = [f"{count[Verdict.ORPHAN]} orphaned"]
    if report.applied:
        parts.append(f"{len(report.removed)} removed")
        if report.failed:
            parts.append(f"{len(report.failed)} failed to remove")
        skipped = sum(1 for f in report.findings if f.outcome is Outcome.SKIPPED)
        if skipped:
            parts.append(f"{skipped} left for the next pass")
    parts.append(f"{count[Verdict.LIVE]} live")
    parts.append(f"{count[Verdict.IGNORED]} not made by a saga step")
    if report.listing_failures:
        parts.append(f"{len(report.listing_failures)} listings failed")
    return ", ".join(parts)


def _table(report: ReconcileReport) -> Table:
    sagas = {f.saga for f in report.findings}
    table = Table(show_edge=False, pad_edge=False, box=None, header_style="bold")
    columns = ["kind", "resource", "idempotency key", "verdict", "reason", "done"]
    if len(sagas) > 1:  # one saga: the header line names it
        columns.insert(0, "saga")
    for column in columns:
        table.add_column(column, overflow="fold")
    for f in report.findings:
        shown = f.resource.id if not f.resource.name else f"{f.resource.id} ({f.resource.name})"
        done = Text(f.outcome.value, style=_OUTCOME_STYLE[f.outcome])
        if f.error is not None and f.outcome in (Outcome.FAILED, Outcome.SKIPPED):
            done.append(f": {printable(f.error.message)}")
        cells: list[str | Text] = [
            printable(f.kind),
            printable(shown),
            printable(f.resource.idempotency_key or "-"),
            Text(f.verdict.value, style=_VERDICT_STYLE[f.verdict]),
            f.reason.value,
            done,
        ]
        if len(sagas) > 1:
            cells.insert(0, printable(f.saga))
        table.add_row(*cells)
    return table


def _print(report: ReconcileReport, db: str) -> None:
    mode = "removing orphans" if report.applied else "dry run: nothing removed"
    grace = format_duration(report.grace) if report.grace else "0s"
    sagas = sorted({f.saga for f in report.findings} | {x.saga for x in report.listing_failures})
    of = f" of saga {printable(sagas[0])}" if len(sagas) == 1 else ""
    console.print(
        f"reconciling {shown_url(db)}{of} ({mode}; grace {grace})", soft_wrap=True, style="bold"
    )
    for failure in report.listing_failures:
        console.print(
            Text.assemble(
                ("listing failed ", "bold red"),
                f"{printable(failure.saga)} / {printable(failure.kind)}: ",
                printable(f"{failure.error.type}: {failure.error.message}"),
            ),
            soft_wrap=True,
        )
    if report.findings:
        console.print(_table(report))
    else:
        console.print("no resource listed")
    console.print(summary(report), soft_wrap=True)
    if report.orphans and not report.applied:
        console.print("pass --apply to remove the orphans", soft_wrap=True)


@click.command()
@app_option
@db_option
@click.option("--saga", "saga", metavar="NAME", help="Only this saga's reconcilers.")
@click.option(
    "--grace",
    type=Grace(),
    default=f"{DEFAULT_RECONCILE_GRACE / 60:g}m",
    show_default=True,
    help="Leave resources created less than this long ago alone (10m, 1h, 0): "
    "their step may still be in flight.",
)
@click.option("--apply", is_flag=True, help="Remove the orphans (default: only report them).")
@json_option
def reconcile(
    *, apps: tuple[str, ...], db: str, saga: str | None, grace: float, apply: bool, as_json: bool
) -> None:
    """Find external resources no run owns any more; remove them with --apply.

    Each saga of --app that declares reconcilers lists its resources with the
    idempotency key each was created under. A resource is an orphan if its
    step was compensated, if its run ended without that step succeeding, or
    if no run of its key is stored (purged, or never started here). Live
    runs' resources, and any younger than --grace, are never touched. Each
    removal is journaled on its run (orphan_removed). Exit 1 if a listing or
    a removal failed.
    """
    if not apps:
        raise click.UsageError("name the application's sagas with --app MODULE[:ATTR]")
    if apply and using_default_db():
        # Against the wrong store every resource looks orphaned: removing
        # needs the store named, not the file that happens to be here.
        raise click.UsageError(
            "--apply removes resources: name the store the runs are in with --db or SAGAKIT_DB"
        )
    with open_engine(db, apps, read_only=not apply) as engine:
        report = engine.reconcile(apply=apply, grace=grace, saga=saga)
    if as_json:
        emit(reconcile_document(shown_url(db), report))
    else:
        _print(report, db)
    if not report.ok:
        raise SystemExit(1)


async def reconcile_periodically(
    engine: AsyncEngine, every: float, *, grace: float, apply: bool
) -> None:
    """Reconcile now and every ``every`` seconds: for ``sagakit worker --reconcile-every``.

    Runs until cancelled. What a pass finds is logged (orphans as warnings);
    a pass that fails is logged and tried again at the next turn, never
    stopping the worker.
    """
    log = logging.getLogger("sagakit")
    while True:
        started = time.monotonic()
        try:
            report = await engine.reconcile(apply=apply, grace=grace)
            level = logging.WARNING if report.orphans or not report.ok else logging.INFO
            log.log(level, "reconciliation: %s", summary(report))
            if not apply:
                for finding in report.orphans:
                    log.warning(
                        "orphaned %s %s (key %s): %s",
                        finding.kind,
                        finding.resource.id,
                        finding.resource.idempotency_key,
                        finding.reason,
                    )
        except Exception as exc:  # the worker goes on; the next turn retries
            log.warning("reconciliation failed (retried in %gs): %s", every, exc)
        await asyncio.sleep(max(0.0, every - (time.monotonic() - started)))
