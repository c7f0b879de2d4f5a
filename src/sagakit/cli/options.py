"""The options of the commands that a worker's start needs: ``--db``, ``--app``, durations.

Apart from `sagakit.cli.common` (the engine, a run's printout, rich) so that
``sagakit worker`` starts without importing what only the commands that
print runs use: a worker restarted to take back its runs is waiting on it.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

import click

from sagakit.store import redact_url
from sagakit.timeline.text import printable

DEFAULT_DB = "sqlite:///sagakit.db"
"""The store every command uses unless given ``--db`` or `DB_ENVVAR`: ``sagakit.db`` here."""

LEGACY_DB_FILE = "sagakit-demo.db"
"""The default store's file name in earlier versions (named after the demo, though every
command used it); `default_store_note` points to a file of that name left in the directory."""

DB_ENVVAR = "SAGAKIT_DB"
"""The environment variable every command reads its store from when ``--db`` is not given."""


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


def _legacy_hint() -> str:
    """A hint when the directory holds `LEGACY_DB_FILE` and no default store file, else ""."""
    _, path = resolve_db(DEFAULT_DB)
    if path is None or path.exists() or not Path(LEGACY_DB_FILE).is_file():
        return ""
    return (
        f"; {LEGACY_DB_FILE} here is the default store of earlier versions: "
        f"pass --db {LEGACY_DB_FILE}, or rename it to {path.name}"
    )


def _is_default(ctx: click.Context | None) -> bool:
    """Whether the command's ``--db`` came from neither the option nor `DB_ENVVAR`."""
    return ctx is not None and ctx.get_parameter_source("db") in (
        click.core.ParameterSource.DEFAULT,
        None,
    )


def using_default_db() -> bool:
    """Whether the running command's ``--db`` fell back to `DEFAULT_DB` (no option, no env)."""
    return _is_default(click.get_current_context(silent=True))


def default_store_note() -> str | None:
    """What to say about the store when the command falls back to `DEFAULT_DB`, else None.

    The line names the store and why it is that one; if the directory holds
    the file earlier versions used by default (`LEGACY_DB_FILE`) and no
    ``sagakit.db``, it says so, so that a user upgrading does not split
    their runs over two files without noticing.
    """
    if not _is_default(click.get_current_context(silent=True)):
        return None
    return f"using {DEFAULT_DB} (no --db or {DB_ENVVAR}){_legacy_hint()}"


def use_db(db: str) -> tuple[str, Path | None]:
    """`resolve_db` for a command about to use the store ``db``; says so if it is the default.

    When neither ``--db`` nor `DB_ENVVAR` was given, one line on stderr names
    the store (`default_store_note`): stdout, which ``--json`` fills, is left
    as it was. Said once per command.
    """
    resolved = resolve_db(db)
    ctx = click.get_current_context(silent=True)
    if db == DEFAULT_DB and ctx is not None and not ctx.meta.get("sagakit.db_noted"):
        note = default_store_note()
        if note is not None:
            ctx.meta["sagakit.db_noted"] = True
            click.echo(note, err=True)
    return resolved


def shown_path(path: Path) -> str:
    """A path as the commands print it: absolute, so the user can find the file.

    A password is masked in it too: a connection string given to ``--db``
    without a scheme (``host=db password=...``) is taken for a file name.
    """
    return printable(redact_url(str(path.resolve())))


def shown_url(db: str) -> str:
    """A ``--db`` value as the commands print it: its password masked, nothing raw."""
    return printable(redact_url(db))


class Seconds(click.FloatRange):
    """A duration option in seconds: a finite number in a range (never NaN or infinity).

    `click.FloatRange` lets NaN through (it compares false with every bound)
    and infinity through a range without a maximum.
    """

    name = "seconds"

    def __init__(self, *, minimum: float, maximum: float, min_open: bool = False) -> None:
        """A duration from ``minimum`` (excluded if ``min_open``) to ``maximum`` seconds."""
        super().__init__(min=minimum, max=maximum, min_open=min_open)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        """The value as a float, or a usage error for NaN, infinity or a value out of range."""
        number = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{printable(str(value))!r} is not a finite number of seconds.", param, ctx)
        return super().convert(number, param, ctx)


db_option = click.option(
    "--db",
    default=DEFAULT_DB,
    # One setting for every command: `export SAGAKIT_DB=...` once, and
    # `--db` still wins for a single command.
    envvar=DB_ENVVAR,
    show_default=True,
    show_envvar=True,
    metavar="URL|PATH",
    help="The store: a URL (sqlite:///file.db, memory://) or a SQLite file path.",
)


def db_source() -> str:
    """Where the current command's ``--db`` came from, as its start-up line says it.

    Returns:
        ``""`` when given as ``--db``; `` (from SAGAKIT_DB)`` or `` (the
        default; set --db or SAGAKIT_DB)`` otherwise, so that an operator
        who forgot the setting sees it at once.
    """
    ctx = click.get_current_context()
    if ctx.get_parameter_source("db") is click.core.ParameterSource.ENVIRONMENT:
        return f" (from {DB_ENVVAR})"
    if _is_default(ctx):
        return f" (the default; set --db or {DB_ENVVAR}{_legacy_hint()})"
    return ""


app_option = click.option(
    "--app",
    "apps",
    multiple=True,
    metavar="MODULE[:ATTR]|FILE.yaml",
    help="Import MODULE and register its sagas, or load a YAML definition file "
    "(repeatable). ATTR: a Saga or a list of them.",
)


_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 7 * 86_400}
_AGE: Final = re.compile(r"(\d{1,9}(?:\.\d{1,6})?)([smhdw])")
# A century: beyond it, the cutoff would precede every timestamp a store holds.
_MOST_AGE: Final = 100 * 365 * 86_400


def parse_age(text: str) -> float:
    """An age such as ``30d``, ``12h``, ``90m``, ``45s`` or ``2w``, in seconds.

    Raises:
        ValueError: it is not a positive number followed by one unit, or it
            exceeds a century.
    """
    match = _AGE.fullmatch(text.strip())
    if match is None:
        raise ValueError(
            f"not an age: {text[:40]!r}; use a number and a unit, such as 30d, 12h, 90m or 45s"
        )
    seconds = float(match[1]) * _UNITS[match[2]]
    if not (0 < seconds <= _MOST_AGE and math.isfinite(seconds)):
        raise ValueError(f"an age must be more than 0 and at most 100 years, got {text!r}")
    return seconds


class Age(click.ParamType):  # type: ignore[type-arg]
    """A click type for ages (`parse_age`): ``30d``, ``12h``, ``90m``, ``45s``, ``2w``."""

    name = "AGE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        """The age in seconds, or a usage error in one line."""
        try:
            return parse_age(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class Grace(Age):
    """A click type for the grace period: an age (``10m``, ``1h``), or ``0``."""

    name = "AGE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        """The grace in seconds (0 allowed), or a usage error in one line."""
        if isinstance(value, int | float):
            return float(value)
        if str(value).strip() in ("0", "0s", "0m", "0h"):
            return 0.0
        return super().convert(value, param, ctx)
