"""SQL kept as files, one folder per dialect (``sqlite``, ``postgresql``).

Each dialect folder holds ``queries.sql``, a list of named blocks::

    -- name: get_run
    SELECT ... FROM runs WHERE id = ?;

and ``migrations/NNNN_description.sql``, applied in order of their number.
SQL is never assembled from user input: stores run these texts as they are.

A block may be a fragment that others include as ``{name:alias}``: its text,
comment lines left out, with ``{alias}`` replaced by the alias given. A
fragment included anywhere is not a query of its own.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from sagakit.errors import StoreError
from sagakit.jsonutil import encode_json
from sagakit.store.base import DataKind, DataRewrite, Rewritten

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

_NAME = re.compile(r"^--\s*name:\s*(?P<name>\w+)\s*$")
_MIGRATION = re.compile(r"^(?P<version>\d+)_\w+\.sql$")
_INCLUDE = re.compile(r"\{(?P<name>\w+):(?P<alias>\w+)\}")


def _folder(dialect: str) -> Path | Traversable:
    """The folder of a dialect's SQL files.

    Read from the package's directory when it is one (an installed or
    editable package): importlib.resources, which also reads a package
    inside a zip file, is imported only then, as it costs a store's start
    (and a worker's restart) a few milliseconds of imports.
    """
    here = Path(__file__).parent / dialect
    if here.is_dir():
        return here
    from importlib import resources

    return resources.files(__name__).joinpath(dialect)


def load_queries(dialect: str) -> dict[str, str]:
    """The named queries of a dialect.

    Args:
        dialect: The folder name, such as ``"sqlite"``.

    Returns:
        Each query's text by its name, without its comment lines (a line
        whose text starts with ``--``): they are for the reader of the file,
        and a long text costs each call that sends it (psycopg parses a
        query's placeholders again at each call when its text is over 4 KiB,
        its cache's limit). Text before the first name is ignored.

    Raises:
        ValueError: a name is used twice (a mistake in the file).
    """
    text = _folder(dialect).joinpath("queries.sql").read_text("utf-8")
    queries: dict[str, str] = {}
    name: str | None = None
    lines: list[str] = []
    for line in [*text.splitlines(), "-- name: _end"]:
        match = _NAME.match(line)
        if match is None:
            if not line.lstrip().startswith("--"):
                lines.append(line)
            continue
        if name is not None:
            if name in queries:
                raise ValueError(f"query {name!r} is defined twice in {dialect}/queries.sql")
            queries[name] = "\n".join(lines).strip()
        name = match["name"]
        lines = []
    return _expand_fragments(queries)


def _expand_fragments(queries: dict[str, str]) -> dict[str, str]:
    """``queries`` with each ``{name:alias}`` written out (see the module's docstring).

    A column repeated in every query that returns runs, written once, keeps
    them from drifting apart.
    """
    used = {found["name"] for text in queries.values() for found in _INCLUDE.finditer(text)}
    fragments = {
        name: "\n".join(
            line for line in queries.pop(name).splitlines() if not line.startswith("--")
        )
        for name in used
        if name in queries
    }

    def include(found: re.Match[str]) -> str:
        fragment = fragments.get(found["name"])
        if fragment is None:
            raise ValueError(f"a query includes {found[0]}, which is not a fragment")
        return fragment.replace("{alias}", found["alias"])

    return {name: _INCLUDE.sub(include, text) for name, text in queries.items()}


def migrations(dialect: str) -> list[tuple[int, str]]:
    """The migrations of a dialect, in the order they apply.

    Returns:
        ``(version, sql)`` pairs sorted by version; the schema version after
        applying one is its number.

    Raises:
        ValueError: two files have the same number.
    """
    folder = _folder(dialect).joinpath("migrations")
    found: dict[int, str] = {}
    for entry in folder.iterdir():
        match = _MIGRATION.match(entry.name)
        if match is None:
            continue
        version = int(match["version"])
        if version in found:
            raise ValueError(f"two {dialect} migrations are numbered {version}")
        found[version] = entry.read_text("utf-8")
    return sorted(found.items())


REWRITE_PAGES: Final = (("runs", ("",)), ("events", ("", 0)), ("mail", (0,)))
"""The tables `Store.rewrite_data` walks, each with the key its first page starts after.

Each has the queries ``rewrite_{table}_page`` (its rows after a key, in key
order, at most a page) and ``rewrite_{table without its s}`` (one row's new
JSON, then its key).
"""


Page = tuple[int, int, tuple[Any, ...]]
"""One page rewritten: rows read, rows rewritten, the key the next page starts after."""


async def rewrite_tables(
    page: Callable[[str, tuple[Any, ...]], Awaitable[Page]], batch_size: int
) -> Rewritten:
    """Walk every table of `REWRITE_PAGES` a page at a time.

    Each backend's `Store.rewrite_data` gives its own ``page``, one transaction each.

    Raises:
        StoreError: ``batch_size`` is below 1.
    """
    if batch_size < 1:
        raise StoreError(f"batch_size must be at least 1, got {batch_size}")
    counts = []
    for table, start in REWRITE_PAGES:
        after, changed = start, 0
        while True:
            read, written, after = await page(table, after)
            changed += written
            if read < batch_size:
                break
        counts.append(changed)
    return Rewritten(*counts)


def rewrite_page(
    table: str, rows: Sequence[Sequence[Any]], rewrite: DataRewrite, decode: Callable[[Any], Any]
) -> tuple[list[tuple[Any, ...]], tuple[Any, ...]]:
    """The updates one page of ``rewrite_{table}_page`` rows calls for.

    Args:
        table: ``runs``, ``events`` or ``mail``.
        rows: The page's rows, as its query selects them.
        rewrite: `Store.rewrite_data`'s function.
        decode: Turns a row's JSON column into a value (the driver may have).

    Returns:
        The parameters of ``rewrite_{table without its s}`` for each row
        ``rewrite`` replaced (its JSON text first, then its key), and the key
        of the page's last row, which the next page starts after.
    """
    updates: list[tuple[Any, ...]] = []
    kind: DataKind
    key: tuple[Any, ...]
    for row in rows:
        if table == "runs":
            run_id, value = row
            kind, key, what = "state", (run_id,), "state"
        elif table == "events":
            run_id, seq, value = row
            kind, key, what = "event", (run_id, seq), f"event {seq} data"
        else:
            mail_id, mail_kind, run_id, value = row
            kind, key, what = "mail", (mail_id,), f"{mail_kind} mail"
        new = rewrite(kind, run_id, decode(value))
        if new is not None:
            updates.append((encode_json(new, what, run_id), *key))
    width = 2 if table == "events" else 1
    return updates, tuple(rows[-1][:width]) if rows else ()
