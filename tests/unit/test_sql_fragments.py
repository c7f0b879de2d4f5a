"""Fragments of the SQL files: written once, included where a query names them."""

from __future__ import annotations

import pytest

from sagakit.store import sql
from sagakit.store.sql import load_queries


def test_a_fragment_is_written_out_where_it_is_included_and_is_no_query() -> None:
    queries = load_queries("postgresql")
    assert "changes_of" not in queries
    assert not [name for name, text in queries.items() if "{changes_of" in text]
    # Every query that returns a run's state changes reads them the same way.
    reading = [name for name, text in queries.items() if "jsonb_agg(c.change" in text]
    assert {"get_run", "get_runs", "page_runs", "claimed_changes"} <= set(reading)
    assert "WHERE c.run_id = r.id" in queries["claimed_changes"]
    assert "WHERE c.run_id = runs.id" in queries["get_run"]
    assert "--" not in queries["get_run"].split("FROM", 1)[0]  # its comment left out


def test_including_what_is_not_a_fragment_is_refused() -> None:
    with pytest.raises(ValueError, match=r"\{nothing:r\}"):
        sql._expand_fragments({"q": "SELECT {nothing:r}"})


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_the_sql_files_read_from_the_folder_are_what_importlib_resources_reads(
    dialect: str,
) -> None:
    # The package's directory is read directly (importlib.resources costs a
    # worker's start its imports); it must give what importlib.resources gives.
    from importlib import resources

    folder = sql._folder(dialect)
    packaged = resources.files(sql.__name__).joinpath(dialect)
    assert folder.joinpath("queries.sql").read_text("utf-8") == (
        packaged.joinpath("queries.sql").read_text("utf-8")
    )
    found = {
        entry.name: entry.read_text("utf-8") for entry in packaged.joinpath("migrations").iterdir()
    }
    migrations = sql.migrations(dialect)
    assert migrations, "no migration found"
    assert [text for _, text in migrations] == [
        found[name]
        for name in sorted(found, key=lambda name: int(name.split("_", 1)[0]))
        if name.endswith(".sql")
    ]
