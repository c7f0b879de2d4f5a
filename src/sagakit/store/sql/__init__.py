"""SQL kept as files, one folder per dialect (``sqlite``, ``postgresql``).

Each dialect folder holds ``queries.sql``, a list of named blocks::

    -- name: get_run
    SELECT ... FROM runs WHERE id = ?;

and ``migrations/NNNN_description.sql``, applied in order of their number.
SQL is never assembled from user input: stores run these texts as they are.
"""

from __future__ import annotations

import re
from importlib import resources

_NAME = re.compile(r"^--\s*name:\s*(?P<name>\w+)\s*$")
_MIGRATION = re.compile(r"^(?P<version>\d+)_\w+\.sql$")


def load_queries(dialect: str) -> dict[str, str]:
    """The named queries of a dialect.

    Args:
        dialect: The folder name, such as ``"sqlite"``.

    Returns:
        Each query's text by its name. Text before the first name is ignored.

    Raises:
        ValueError: a name is used twice (a mistake in the file).
    """
    text = resources.files(__name__).joinpath(dialect, "queries.sql").read_text("utf-8")
    queries: dict[str, str] = {}
    name: str | None = None
    lines: list[str] = []
    for line in [*text.splitlines(), "-- name: _end"]:
        match = _NAME.match(line)
        if match is None:
            lines.append(line)
            continue
        if name is not None:
            if name in queries:
                raise ValueError(f"query {name!r} is defined twice in {dialect}/queries.sql")
            queries[name] = "\n".join(lines).strip()
        name = match["name"]
        lines = []
    return queries


def migrations(dialect: str) -> list[tuple[int, str]]:
    """The migrations of a dialect, in the order they apply.

    Returns:
        ``(version, sql)`` pairs sorted by version; the schema version after
        applying one is its number.

    Raises:
        ValueError: two files have the same number.
    """
    folder = resources.files(__name__).joinpath(dialect, "migrations")
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
