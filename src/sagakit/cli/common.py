"""What the ``sagakit`` commands share: ``--db`` and ``--app``, the engine, a run's printout.

``--db`` is a store URL or a SQLite file path (`resolve_db`); `open_engine`
opens it with the demo's and the application's sagas registered, and never
creates a database unless asked to. `print_run` prints a run's timeline and
what to do next with it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import click
from rich.console import Console
from rich.text import Text

from sagakit.cli.apps import load_apps
from sagakit.definition import Saga
from sagakit.engine import Engine
from sagakit.journal import RunStatus
from sagakit.run import Run
from sagakit.store import FINISHED_STATUSES as FINISHED
from sagakit.timeline import build_timeline, render_timeline, status_style

DEFAULT_DB = "sqlite:///sagakit-demo.db"
"""Where the demo writes, and where every command looks unless given ``--db``."""

console = Console(highlight=False)


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


def shown_path(path: Path) -> str:
    """A path as the commands print it: absolute, so the user can find the file."""
    return str(path.resolve())


@contextmanager
def open_engine(db: str, apps: Sequence[str] = (), *, create: bool = False) -> Iterator[Engine]:
    """An engine on ``--db`` with the demo's and the application's sagas registered."""
    url, path = resolve_db(db)
    if path is not None and not create and not path.is_file():
        raise click.ClickException(
            f"no sagakit database at {shown_path(path)}; run `sagakit demo` first or pass --db"
        )
    sagas = _registered(apps)
    with Engine(url) as engine:
        engine.register(*sagas)
        yield engine


def _registered(apps: Sequence[str]) -> list[Saga[Any]]:
    from sagakit.cli.demo import SAGAS

    # The application's sagas come last so that they win over a demo saga of
    # the same name and version.
    return [*SAGAS, *load_apps(apps)]


def json_object(text: str, option: str) -> dict[str, Any]:
    """An option's value parsed as a JSON object, or a usage error that says why not."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint=option) from None
    if not isinstance(value, dict):
        raise click.BadParameter("must be a JSON object", param_hint=option)
    return value


def status_text(status: RunStatus | str) -> Text:
    """A status as coloured text."""
    return Text(str(status), style=status_style(status))


def print_run(engine: Engine, run: Run) -> None:
    """Print a run's timeline, and a warning if its version is not loaded."""
    console.print(render_timeline(build_timeline(engine.history(run.id), run)))
    loaded = engine.versions(run.saga)
    if loaded and run.version not in loaded and run.status not in FINISHED:
        console.print(
            Text(
                f"version {run.version} of saga {run.saga} is not loaded here (loaded: "
                f"{', '.join(loaded)}); only a worker or --app with version {run.version} "
                "acts on this run",
                style="yellow",
            ),
            soft_wrap=True,
        )
    if run.compensation_errors:
        console.print(Text("compensation errors, every failed attempt:", style="bold"))
        for error in run.compensation_errors:
            console.print(Text(f"  {error}", style="red"), soft_wrap=True)
    if run.status is RunStatus.NEEDS_ATTENTION:
        console.print(
            Text.assemble(
                "next: fix the cause, then ",
                (f"sagakit retry {run.id}", "bold"),
                ", or undo it by hand and ",
                (f'sagakit resolve {run.id} --note "what you did"', "bold"),
            ),
            soft_wrap=True,
        )
    if run.status is RunStatus.PAUSED:
        console.print(
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
