"""What the ``sagakit`` commands share: the engine, a run's printout, JSON options.

``--db`` is a store URL or a SQLite file path (`sagakit.cli.options.resolve_db`,
with the other options the worker needs too); `open_engine`
opens it with the demo's and the application's sagas registered, and never
creates a database unless asked to; for the commands that only read, it
never creates, migrates or writes anything (``read_only``). `print_run` prints a run's timeline and
what to do next with it; `json_object` reads a JSON option (inline, ``@FILE``
or ``-``). Whatever came from outside (run ids, step names, URLs) is printed
through `printable` and `sagakit.cli.options.shown_url`.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.text import Text

from sagakit.cli.apps import load_apps
from sagakit.cli.options import (
    shown_path,
    use_db,
)
from sagakit.definition import Saga
from sagakit.engine import Engine
from sagakit.journal import RunStatus
from sagakit.redaction import Redactor
from sagakit.run import Run
from sagakit.store import FINISHED_STATUSES as FINISHED
from sagakit.store import open_store
from sagakit.store.encrypted import EncryptedStore, keys_from_environment
from sagakit.timeline import build_timeline, printable, render_timeline, status_style

# No markup and no emoji codes: a run id like "[bold]x" or ":fire:" prints as it is.
console = Console(highlight=False, markup=False, emoji=False)

MAX_JSON_DEPTH = 100
"""How deeply a JSON option may nest: far beyond any state, far below Python's recursion limit."""

MAX_JSON_BYTES = 16 * 1024 * 1024
"""How much a JSON option may read from ``@FILE`` or stdin (``@/dev/zero`` never ends)."""


@contextmanager
def open_engine(
    db: str,
    apps: Sequence[str] = (),
    *,
    create: bool = False,
    read_only: bool = False,
    sagas: Sequence[Saga[Any]] | None = None,
) -> Iterator[Engine]:
    """An engine on ``--db`` with the demo's and the application's sagas registered.

    Args:
        db: The ``--db`` value.
        apps: The ``--app`` values.
        create: Create the database if it is missing (``demo``, ``run``).
        read_only: For the commands that only read: the store is opened read
            only, so a database that holds no sagakit store (another
            application's, an empty file, a missing schema) or one of an
            older schema is refused in one line, not created or migrated.
        sagas: The sagas to register, if already loaded (`registered_sagas`):
            ``apps`` is then not read again.

    The encryption keys are read from ``SAGAKIT_ENCRYPTION_KEYS``; without
    them, the commands that only read show encrypted values as
    ``<encrypted>``, and the others refuse a run whose data is encrypted.
    """
    url, path = use_db(db)
    if path is not None and not create and not path.is_file():
        raise click.ClickException(
            f"no sagakit database at {shown_path(path)}; run `sagakit demo` first or pass --db"
        )
    if sagas is None:
        sagas = registered_sagas(apps)
    keys = keys_from_environment()
    store = open_store(url, read_only=True) if read_only else None
    if store is not None and keys is None:  # reading without keys: encrypted values masked
        store = EncryptedStore.masked(store)
    with Engine(url, store=store, encryption_keys=keys) as engine:
        engine.register(*sagas)
        yield engine


def registered_sagas(apps: Sequence[str]) -> list[Saga[Any]]:
    """The sagas a command registers: the demo's, then those the ``--app`` values name."""
    from sagakit.cli.demo import SAGAS

    # The application's sagas come last so that they win over a demo saga of
    # the same name and version.
    return [*SAGAS, *load_apps(apps)]


class _Refused(ValueError):
    """A JSON value the parser read but sagakit will not take, and why."""


def _finite(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise _Refused(f"the number {text[:40]} is too large for a float")
    return number


def _integer(text: str) -> int:
    # Python refuses to convert longer integers (a guard against quadratic time).
    digits = len(text.lstrip("-"))
    if digits > sys.get_int_max_str_digits() > 0:
        raise _Refused(f"an integer of {digits} digits is too long")
    return int(text)


def _no_constant(name: str) -> float:
    raise _Refused(f"{name} is not a JSON number")


def _depth(value: object) -> int:
    """How deeply ``value`` nests arrays and objects, counted without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            stack.extend(
                (child, depth + 1) for child in (item.values() if isinstance(item, dict) else item)
            )
    return deepest


def _read_source(text: str, option: str) -> tuple[str, str]:
    """The JSON text an option names (``@FILE``, ``-`` for stdin, or inline), and its source."""
    if text != "-" and not text.startswith("@"):
        return text, ""
    if text == "@":
        raise click.BadParameter("@ must be followed by a file name", param_hint=option)
    where = "stdin" if text == "-" else printable(text[1:])
    if text == "-" and getattr(sys.stdin, "buffer", None) is None:  # started without one
        raise click.BadParameter("cannot read stdin: the command has none", param_hint=option)
    try:
        if text == "-":
            data = sys.stdin.buffer.read(MAX_JSON_BYTES + 1)
        else:
            with Path(text[1:]).open("rb") as stream:
                data = stream.read(MAX_JSON_BYTES + 1)
    except OSError as exc:
        raise click.BadParameter(
            f"cannot read {where}: {exc.strerror or exc}", param_hint=option
        ) from None
    if len(data) > MAX_JSON_BYTES:
        raise click.BadParameter(
            f"{where} holds more than {MAX_JSON_BYTES // 2**20} MiB", param_hint=option
        )
    try:
        return data.decode("utf-8-sig"), f" ({where})"
    except UnicodeDecodeError as exc:
        raise click.BadParameter(
            f"{where} is not UTF-8 text (byte {exc.start})", param_hint=option
        ) from None


def json_object(text: str, option: str) -> dict[str, Any]:
    """An option's value parsed as a JSON object, or a usage error that says why not.

    The value is the JSON itself, ``@FILE`` to read it from a file, or ``-``
    to read it from standard input. JSON that Python could parse but sagakit
    could not keep is refused here too, each with one line: NaN and Infinity,
    numbers too large for a float, integers longer than Python converts, and
    nesting deeper than `MAX_JSON_DEPTH`.

    Raises:
        click.BadParameter: the value cannot be read, is not JSON, is refused
            as above, or is not an object.
    """
    source, where = _read_source(text, option)
    try:
        value = json.loads(
            source, parse_float=_finite, parse_int=_integer, parse_constant=_no_constant
        )
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON{where}: {exc}", param_hint=option) from None
    except _Refused as exc:
        raise click.BadParameter(f"not usable JSON{where}: {exc}", param_hint=option) from None
    except RecursionError:
        value = None  # nested too deeply for the parser: the same refusal as below
        depth = MAX_JSON_DEPTH + 1
    else:
        depth = _depth(value)
    if depth > MAX_JSON_DEPTH:
        raise click.BadParameter(
            f"not usable JSON{where}: nested more than {MAX_JSON_DEPTH} levels deep",
            param_hint=option,
        )
    if not isinstance(value, dict):
        raise click.BadParameter(f"must be a JSON object{where}", param_hint=option)
    return value


def status_text(status: RunStatus | str) -> Text:
    """A status as coloured text."""
    return Text(str(status), style=status_style(status))


def sensitive_names(engine: Engine, saga: str) -> frozenset[str]:
    """The fields every loaded version of ``saga`` marks sensitive (``--app``).

    A run's journal lists its own; these add what a saga marks today, for runs
    started before it marked them.
    """
    return frozenset().union(*(s.sensitive for s in engine.sagas if s.name == saga))


def pending_requests(engine: Engine, run: Run) -> list[Text]:
    """One line per request recorded for ``run`` and not yet acted on, oldest first.

    A cancel or signal posted for a run that no process here drives waits
    as mail; until a worker reads it the run's status is unchanged, so
    `show`, `history` and `list` say it is there. Reads only; no query at
    all for a run without mail (``run.pending`` is 0).
    """
    if not run.pending:
        return []
    lines = []
    for mail in engine.pending(run.id):
        data = mail.data if isinstance(mail.data, dict) else {}
        when = datetime.fromtimestamp(mail.at).strftime("%Y-%m-%d %H:%M:%S")
        if mail.kind == "cancel":
            what = f"cancel requested at {when}"
            reason = data.get("reason")
            details = [f"reason {printable(json.dumps(reason))}"] if reason else []
            if data.get("force"):
                details.append("forced")
            if details:
                what += f" ({', '.join(details)})"
        else:
            # The payload is not shown: it may hold fields the saga marks
            # sensitive, and only `history` after delivery masks them.
            what = f"signal {printable(json.dumps(data.get('name')))} received at {when}"
        lines.append(
            Text.assemble(
                ("pending: ", "bold yellow"),
                what,
                "; not acted on yet (a worker serving the saga does at the run's next step)",
            )
        )
    return lines


def pending_marker(engine: Engine, run: Run) -> str:
    """What `list` appends to a run's status when requests wait for it, else ``""``."""
    if not run.pending:
        return ""
    kinds = sorted({mail.kind for mail in engine.pending(run.id)})
    return f" ({' + '.join(kinds) or 'request'} pending)"


def print_run(engine: Engine, run: Run) -> Run:
    """Print a run's timeline, and a warning if its version is not loaded.

    Fields marked sensitive show as ``***`` (`sagakit.redaction`).

    Returns:
        The run as shown: its sensitive fields masked.
    """
    events = engine.history(run.id)
    redactor = Redactor.for_run(events, sensitive_names(engine, run.saga), run.data)
    run = run.redacted(redactor)
    console.print(render_timeline(build_timeline(redactor.events(events), run)))
    for line in pending_requests(engine, run):
        console.print(line, soft_wrap=True)
    loaded = engine.versions(run.saga)
    if loaded and run.version not in loaded and run.status not in FINISHED:
        version, saga = printable(run.version), printable(run.saga)
        console.print(
            Text(
                f"version {version} of saga {saga} is not loaded here (loaded: "
                f"{printable(', '.join(loaded))}); only a worker or --app with version "
                f"{version} acts on this run",
                style="yellow",
            ),
            soft_wrap=True,
        )
    if run.compensation_errors:
        console.print(Text("compensation errors, every failed attempt:", style="bold"))
        for error in run.compensation_errors:
            console.print(Text(f"  {printable(str(error))}", style="red"), soft_wrap=True)
    run_id = printable(run.id)
    if run.status is RunStatus.NEEDS_ATTENTION:
        console.print(
            Text.assemble(
                "next: fix the cause, then ",
                (f"sagakit retry {run_id}", "bold"),
                ", or undo it by hand and ",
                (f'sagakit resolve {run_id} --note "what you did"', "bold"),
            ),
            soft_wrap=True,
        )
    if run.status is RunStatus.PAUSED:
        console.print(
            Text.assemble(
                "next: answer it with ",
                (f"sagakit signal {run_id} NAME --payload '{{...}}'", "bold"),
                ", or ",
                (f'sagakit cancel {run_id} --reason "why"', "bold"),
            ),
            soft_wrap=True,
        )
    return run


_Decorated = TypeVar("_Decorated", bound=Callable[..., Any])


def input_option(help: str) -> Callable[[_Decorated], _Decorated]:
    """``--input JSON|@FILE|-`` (into ``input_json``, default ``{}``), read by `json_object`."""
    return click.option(
        "--input",
        "input_json",
        default="{}",
        show_default=True,
        metavar="JSON|@FILE|-",
        help=help,
    )
