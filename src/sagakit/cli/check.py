"""``sagakit check``: would the definitions about to be deployed fit the runs in flight?

Loads the application's sagas (``--app``, as ``sagakit worker`` does: the
demo's are not added) and holds the journal of every run that is not settled
against them (`Engine.check`): a table (or ``--json``) of the runs that
would not fit, each with what a worker would do with it and why. Exit 0 when
every run fits, 1 when some do not, so that CI can stop a deploy before it
strands runs; 2 for bad usage. Reads only: the store is never created,
migrated or written.
"""

from __future__ import annotations

import time

import click
from rich.table import Table
from rich.text import Text

from sagakit.cli.apps import load_apps
from sagakit.cli.common import console, open_engine, status_text
from sagakit.cli.jsonout import check_document, emit, json_option
from sagakit.cli.options import app_option, db_option, shown_url
from sagakit.engine import CheckReport, MisfitKind
from sagakit.timeline import printable

__all__ = ["check"]

_KIND_STYLE = {
    MisfitKind.NO_DEFINITION: "yellow",
    MisfitKind.REFUSED: "bold red",
    MisfitKind.CHANGED: "red",
}


def _summary(report: CheckReport) -> str:
    runs = "run" if report.checked == 1 else "runs"
    if report.ok:
        return f"every run fits ({report.checked} {runs} checked)"
    return (
        f"{len(report.misfits)} of {report.checked} {runs} would not fit these definitions; "
        "register the versions they started with, or give changed definitions a new version"
    )


def _print(report: CheckReport, db: str, loaded: list[str]) -> None:
    of = f" of saga {printable(report.saga)}" if report.saga else ""
    console.print(
        f"checking the runs in flight{of} in {shown_url(db)} against "
        f"{', '.join(printable(x) for x in loaded)}",
        soft_wrap=True,
        style="bold",
    )
    if report.misfits:
        table = Table(show_edge=False, pad_edge=False, box=None, header_style="bold")
        for column in ("run id", "saga", "status", "misfit", "reason"):
            table.add_column(column, overflow="fold")
        for m in report.misfits:
            table.add_row(
                printable(m.run_id),
                printable(f"{m.saga} v{m.version}"),
                status_text(m.status),
                Text(m.kind.value, style=_KIND_STYLE[m.kind]),
                printable(m.reason),
            )
        console.print(table)
    console.print(_summary(report), soft_wrap=True)


@click.command()
@app_option
@db_option
@click.option("--saga", "saga", metavar="NAME", help="Only the runs of this saga.")
@json_option
def check(*, apps: tuple[str, ...], db: str, saga: str | None, as_json: bool) -> None:
    """Check that the sagas of --app fit every run in flight, before a deploy.

    Every pending, running, compensating, paused or needs-attention run is
    replayed against the definition of its saga and version as --app
    defines them, as a worker would on claiming it. Listed: runs with no
    definition for their version (a worker leaves them untouched), runs
    whose journal names a step the definition lacks (renamed or removed: a
    worker holds them back), and runs whose journal the definition
    contradicts (a step added or moved before steps done, a compensation
    removed, a kind changed). Settled runs are not checked. Reads only.
    Exit 1 if any run does not fit.
    """
    if not apps:
        raise click.UsageError("name the definitions to check with --app MODULE[:ATTR]|FILE.yaml")
    sagas = load_apps(apps)  # what `sagakit worker --app` registers: nothing else
    with open_engine(db, read_only=True, sagas=sagas) as engine:
        report = engine.check(saga=saga)
    loaded = [f"{s.name} v{s.version}" for s in sagas]
    if as_json:
        emit(check_document(shown_url(db), report, sagas, at=time.time()))
    else:
        _print(report, db, loaded)
    if not report.ok:
        raise SystemExit(1)
