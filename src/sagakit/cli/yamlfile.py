"""The commands on a YAML definition file: ``validate``, ``run`` and ``schema``.

``validate`` checks a file and prints every problem with its line (with
``--no-import``, importing nothing); ``run`` runs the saga a file defines,
here, recording it in ``--db``; ``schema`` prints the JSON Schema of
sagakit's format.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import click
from rich.console import Console
from rich.text import Text

from sagakit.cli.common import console, input_option, json_object, open_engine, print_run
from sagakit.cli.jsonout import emit, json_option, shown_run_document, validation_document
from sagakit.cli.options import db_option
from sagakit.journal import RunStatus
from sagakit.timeline import printable
from sagakit.yamlfile import Outline, YamlReport, schema_text, validate_yaml


def _stages_text(outline: Outline) -> str:
    return " -> ".join(
        stage[0] if len(stage) == 1 else "[" + " | ".join(stage) + "]" for stage in outline.stages
    )


def _check_file(
    file: Path,
    apps: Sequence[str],
    *,
    running: bool,
    resolve: bool = True,
    as_json: bool = False,
) -> YamlReport:
    """Check a YAML definition file, printing its notes; exit 1 on any error.

    With ``as_json`` (``validate --json``) the report is printed as one JSON
    document on stdout, and only the error's summary line on stderr. For
    ``run --json`` (``running``) the notes and problems go to stderr, so
    that stdout holds the run's document alone.
    """
    modules = [spec.partition(":")[0] for spec in apps]
    report = validate_yaml(file, allowed_modules=modules or None, resolve=resolve)
    err = Console(stderr=True, highlight=False, markup=False, emoji=False)
    if as_json and not running:
        emit(validation_document(report, imported=resolve))
    else:
        out = err if as_json else console
        for note in report.notes:
            out.print(Text(printable(f"note: {note}"), style="yellow"), soft_wrap=True)
    if not report.ok:
        if not as_json or running:
            for problem in report.errors:
                err.print(Text(printable(str(problem)), style="red"), soft_wrap=True)
        count = len(report.errors)
        raise click.ClickException(
            f"{printable(str(file))}: {count} problem{'s' if count != 1 else ''}"
            + ("; nothing was run" if running else "")
        )
    return report


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
@click.option(
    "--no-import",
    is_flag=True,
    help="Import nothing: check the YAML, the schema, the step rules and the form of "
    "every path, but not that the functions exist. For a file you do not trust.",
)
@json_option
def validate(file: Path, apps: tuple[str, ...], no_import: bool, as_json: bool) -> None:
    """Check a YAML saga definition without running it.

    Checks the YAML, the schema (sagakit's format or Ruvon's workflow.yaml),
    the rules between step kinds, and that every function and class it names
    can be imported from an allowed module. Importing a module runs its
    top-level code: with --no-import nothing is imported, and each path is
    only checked to be a public dotted path inside an allowed module. Every
    problem is printed with its file, line and step; the exit code is 1 if
    there is any.
    """
    report = _check_file(file, apps, running=False, resolve=not no_import, as_json=as_json)
    if as_json:
        return
    outline = report.outline
    assert outline is not None  # _check_file exits unless the report is ok
    steps = outline.steps
    unchecked = " (nothing imported: the paths were checked for form only)" if no_import else ""
    console.print(
        Text.assemble(
            (f"{printable(str(file))}: ok", "green"),
            printable(
                f" - saga {outline.name} version {outline.version}, {steps} step"
                f"{'s' if steps != 1 else ''}: {_stages_text(outline)}"
            ),
            unchecked,
        ),
        soft_wrap=True,
    )


@click.command("run")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@input_option("The run's initial state, a JSON object; @FILE reads it from FILE, - from stdin.")
@click.option("--run-id", help="The run's id (a start with an existing id changes nothing).")
@db_option
@click.option(
    "--app",
    "apps",
    multiple=True,
    metavar="MODULE",
    help="Allow functions from MODULE (repeatable); as for validate.",
)
@json_option
def run_file(  # click passes every option by name
    *,
    file: Path,
    input_json: str,
    run_id: str | None,
    db: str,
    apps: tuple[str, ...],
    as_json: bool,
) -> None:
    """Run the saga a YAML file defines, here, and print its timeline.

    The run is recorded in --db (created if need be), so `sagakit show`,
    `retry` and `cancel` work on it afterwards (pass the file as --app).
    Exits with 1 if the run needs attention.
    """
    state = json_object(input_json, "--input")
    saga = _check_file(file, apps, running=True, as_json=as_json).saga
    assert saga is not None  # resolved, and _check_file exits unless the report is ok
    with open_engine(db, create=True) as engine:
        if as_json:
            run = engine.run(saga, state, run_id=run_id)
            document = shown_run_document(engine, run)
        else:
            run = print_run(engine, engine.run(saga, state, run_id=run_id))
    if as_json:
        # The document's run.state is the final state, masked.
        emit(document)
        if run.status is RunStatus.NEEDS_ATTENTION:
            raise click.ClickException(f"run {printable(run.id)} needs attention")
        return
    console.print(Text("state:", style="bold"), json.dumps(run.data, indent=2), soft_wrap=True)
    if run.status is RunStatus.NEEDS_ATTENTION:
        raise click.ClickException(f"run {printable(run.id)} needs attention")


@click.command()
def schema() -> None:
    """Print the JSON Schema of sagakit's YAML format (for editors and CI)."""
    click.echo(schema_text(), nl=False)
