"""``sagakit start``: record a run of a registered saga and return at once.

The command-line twin of `sagakit.Engine.start`: the run is stored
``pending`` and owned by nobody, and a worker serving its saga (``sagakit
worker --app ...``) drives it; nothing of the saga runs here. Everything
that can be checked without the store is checked before it is opened (the
saga exists, the input fits its state model, the run id is well formed), so
a refused start records nothing and creates no database.
"""

from __future__ import annotations

from typing import Any

import click
from pydantic import ValidationError
from rich.text import Text

from sagakit.cli.common import (
    console,
    input_option,
    json_object,
    open_engine,
    registered_sagas,
    status_text,
)
from sagakit.cli.jsonout import emit, json_option, start_document
from sagakit.cli.options import app_option, db_option, shown_url
from sagakit.definition import Saga
from sagakit.engine.registry import SagaRegistry
from sagakit.errors import StateError
from sagakit.run import check_run_id
from sagakit.timeline import printable


@click.command()
@click.argument("saga_name", metavar="SAGA")
@input_option("The run's initial state, a JSON object; @FILE reads it from FILE, - from stdin.")
@click.option(
    "--run-id",
    help="The run's id (default: a random one). Starting again with the same id and "
    "the same input changes nothing; with another input it is refused.",
)
@click.option(
    "--saga-version",
    metavar="VERSION",
    help="Start this version of SAGA (default: the newest registered).",
)
@db_option
@app_option
@json_option
def start(  # click passes every option by name
    *,
    saga_name: str,
    input_json: str,
    run_id: str | None,
    saga_version: str | None,
    db: str,
    apps: tuple[str],
    as_json: bool,
) -> None:
    """Record a run of SAGA for a worker to drive, and print its id at once.

    SAGA is the name of a saga that --app defines (a Python module or a YAML
    file). The run is stored pending; `sagakit worker --app ...` on the same
    --db drives it, and `sagakit show RUN_ID` follows it. Nothing is recorded
    if the saga is unknown, the input does not fit its state, or the run id
    belongs to another run.
    """
    state = json_object(input_json, "--input")
    sagas = registered_sagas(apps)
    # Checked before the store is opened (and perhaps created): a refused
    # start leaves no trace. The engine checks all of it again when starting.
    registry = SagaRegistry()
    registry.register(*sagas)
    saga = registry.saga(saga_name, saga_version)
    check_input(saga, state)
    if run_id is not None:
        check_run_id(run_id)
    with open_engine(db, create=True, sagas=sagas) as engine:
        run = engine.start(saga, state, run_id=run_id)
        if as_json:
            emit(start_document(engine, shown_url(db), run))
            return
    verb = "recorded" if run.created else "already recorded with this input; it is"
    console.print(
        Text.assemble(
            f"run {printable(run.id)} of saga {printable(run.saga)} v{printable(run.version)} "
            f"{verb} ",
            status_text(run.status),
            f" in {shown_url(db)}; a worker serving the saga drives it "
            f"(sagakit worker --app ...), `sagakit show {printable(run.id)}` follows it",
        ),
        soft_wrap=True,
    )


def check_input(saga: Saga[Any], state: dict[str, Any]) -> None:
    """Refuse, in one line, an input that does not fit ``saga``'s state model.

    pydantic's own report spans several lines and quotes the values it
    refused; this names each field and what is wrong with it, never a value
    (one may be sensitive).
    """
    try:
        saga.dump_state(state)
    except StateError as exc:
        cause = exc.__cause__
        if not isinstance(cause, ValidationError):
            raise
        problems = "; ".join(
            f"{'.'.join(map(str, error['loc'])) or 'state'}: {error['msg']}"
            for error in cause.errors(include_url=False, include_input=False, include_context=False)
        )
        raise click.ClickException(
            printable(f"--input does not fit the state of saga {saga.name!r}: {problems}")
        ) from None
