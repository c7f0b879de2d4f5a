"""The commands on a YAML definition file: ``validate``, ``run`` and ``schema``.

``validate`` checks a file and prints every problem with its line; ``run``
runs the saga a file defines, here, recording it in ``--db``; ``schema``
prints the JSON Schema of sagakit's format.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.text import Text

from sagakit.cli.common import console, db_option, json_object, open_engine, print_run
from sagakit.definition import Saga
from sagakit.journal import RunStatus
from sagakit.timeline import printable
from sagakit.yamlfile import schema_text, validate_yaml


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
        console.print(Text(printable(f"note: {note}"), style="yellow"), soft_wrap=True)
    if report.saga is None or report.errors:
        err = Console(stderr=True, highlight=False, markup=False, emoji=False)
        for problem in report.errors:
            err.print(Text(printable(str(problem)), style="red"), soft_wrap=True)
        count = len(report.errors)
        raise click.ClickException(
            f"{printable(str(file))}: {count} problem{'s' if count != 1 else ''}"
            + ("; nothing was run" if running else "")
        )
    return report.saga


@click.command()
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
    console.print(
        Text.assemble(
            (f"{printable(str(file))}: ok", "green"),
            printable(
                f" - saga {saga.name} version {saga.version}, {steps} step"
                f"{'s' if steps != 1 else ''}: {_stages_text(saga)}"
            ),
        ),
        soft_wrap=True,
    )


@click.command("run")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--input",
    "input_json",
    default="{}",
    show_default=True,
    metavar="JSON|@FILE|-",
    help="The run's initial state, a JSON object; @FILE reads it from FILE, - from stdin.",
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
    state = json_object(input_json, "--input")
    saga = _check_file(file, apps, running=True)
    with open_engine(db, create=True) as engine:
        run = engine.run(saga, state, run_id=run_id)
        print_run(engine, run)
    console.print(Text("state:", style="bold"), json.dumps(run.data, indent=2), soft_wrap=True)
    if run.status is RunStatus.NEEDS_ATTENTION:
        raise click.ClickException(f"run {printable(run.id)} needs attention")


@click.command()
def schema() -> None:
    """Print the JSON Schema of sagakit's YAML format (for editors and CI)."""
    click.echo(schema_text(), nl=False)
