"""``sagakit test``: explore a saga's faults from the command line.

Runs `sagakit.testing.explore` on a saga of a YAML file (``sagakit test
FILE.yaml --input JSON``) or of a Python module (``sagakit test --app
MODULE[:SAGA]``), prints the report (one row per scenario, then each
failure's smallest scenario with its timeline) and exits 1 if any scenario
failed. Only sagakit's invariants are checked: a check of your own needs
`explore` in a test. Nothing is written to any database of yours: the runs
live in memory, or in a temporary SQLite file (``--store sqlite``).
"""

from __future__ import annotations

from typing import Any

import click

from sagakit.cli.apps import load_apps
from sagakit.cli.common import console, input_option, json_object
from sagakit.cli.jsonout import emit, json_option
from sagakit.cli.options import app_option
from sagakit.cli.start import check_input
from sagakit.definition import Saga
from sagakit.testing import explore
from sagakit.timeline import printable


@click.command("test")
@click.argument("file", required=False, metavar="[FILE.yaml]")
@app_option
@click.option(
    "--saga",
    "saga_name",
    metavar="NAME",
    help="The saga to explore, by name, when --app defines several.",
)
@input_option("The input of every run, a JSON object; @FILE reads it from FILE, - from stdin.")
@click.option(
    "--store",
    type=click.Choice(["memory", "sqlite"]),
    default="memory",
    show_default=True,
    help="Where the scenarios' runs are kept: in memory, or a temporary SQLite file.",
)
@click.option(
    "--pairs",
    type=click.IntRange(min=0),
    default=100,
    show_default=True,
    help="How many pairs of faults to run besides every single fault (a seeded sample).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Chooses the pairs.")
@click.option(
    "--failed-only", is_flag=True, help="List only the scenarios that failed in the table."
)
@json_option
def explore_command(  # click passes every option by name
    *,
    file: str | None,
    apps: tuple[str, ...],
    saga_name: str | None,
    input_json: str,
    store: str,
    pairs: int,
    seed: int,
    failed_only: bool,
    as_json: bool,
) -> None:
    """Run a saga once per fault and check sagakit's invariants; exit 1 on a failure.

    The saga is FILE's (a YAML definition; --app names the modules its
    functions may come from), or the one --app defines (MODULE:ATTR, or
    --saga NAME among several). Each scenario crashes the process around a
    record, fails or times out an action, fails a compensation once or for
    good, cancels, or delivers a call twice (and pairs of these); the table
    shows how each run ended, then the smallest scenario of each failure
    with its timeline. See docs/testing.md.
    """
    state = json_object(input_json, "--input")
    saga = _chosen(file, apps, saga_name)
    check_input(saga, state)
    report = explore(saga, state, store=store, seed=seed, pairs=pairs or False)
    if as_json:
        emit({"schema": "sagakit/test/v1", **report.to_json()})
    else:
        console.print(report.renderable(every=not failed_only))
    if not report.ok:
        raise SystemExit(1)


def _chosen(file: str | None, apps: tuple[str, ...], name: str | None) -> Saga[Any]:
    """The saga to explore: FILE's, or the one --app (and --saga) names."""
    if file is not None:
        if not file.lower().endswith((".yaml", ".yml")):
            raise click.BadParameter(
                f"{printable(file)} is not a YAML file; for a Python module use --app MODULE",
                param_hint="FILE",
            )
        return load_apps([*apps, file])[-1]  # a file's saga comes after the modules'
    if not apps:
        raise click.UsageError("give a YAML file, or --app MODULE[:SAGA] for a Python saga")
    sagas = load_apps(apps)
    if name is not None:
        chosen = [saga for saga in sagas if saga.name == name]
        if not chosen:
            known = ", ".join(sorted({saga.name for saga in sagas}))
            raise click.BadParameter(
                f"no saga named {printable(name)!r} in --app (it defines: {printable(known)})",
                param_hint="--saga",
            )
        return chosen[-1]
    names = sorted({saga.name for saga in sagas})
    if len(sagas) > 1:
        raise click.UsageError(
            f"--app defines {len(sagas)} sagas ({printable(', '.join(names))}); "
            "choose one with --saga NAME or --app MODULE:ATTR"
        )
    return sagas[0]
