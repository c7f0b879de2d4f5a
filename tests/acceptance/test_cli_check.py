"""``sagakit check`` as a process, on SQLite and PostgreSQL: before a deploy, do the runs fit?

Runs are recorded with the order saga's version 1 (`checkapp.record`), then
checked against what a deploy might register instead (`checkapp`'s
variants): the table, ``--json`` against the schema, the exit code CI gates
on, bad input, and a store left exactly as it was.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from sagakit import Engine

from . import checkapp
from .helpers import fails, ok, sagakit
from .stores import sql_store_url

__all__ = ["sql_store_url"]  # a fixture, used by name

APP = Path(__file__).parent
SCHEMA = json.loads((APP.parents[1] / "src/sagakit/schema/output.schema.json").read_text())


@pytest.fixture
def db(sql_store_url: str) -> str:
    checkapp.record(sql_store_url)
    return sql_store_url


def check(db: str, cwd: Path, *args: str) -> Any:
    return sagakit(cwd, "check", "--db", db, *args, pythonpath=APP)


def snapshot(db: str) -> dict[str, Any]:
    """Every run's row as the engine reads it, and its whole journal."""
    with Engine(db) as engine:
        return {
            run.id: (run.status, run.updated_at, run.owner, run.pending, engine.history(run.id))
            for run in engine.runs(limit=1000)
        }


@pytest.mark.parametrize("app", ["checkapp:same", "checkapp:with_v2"])
def test_definitions_that_fit_exit_0(db: str, tmp_path: Path, app: str) -> None:
    out = ok(check(db, tmp_path, "--app", app))
    assert "every run fits (3 runs checked)" in out  # parked, paused, attention; not done


def test_a_renamed_step_lists_every_run_in_flight_and_exits_1(db: str, tmp_path: Path) -> None:
    before = snapshot(db)
    done = check(db, tmp_path, "--app", "checkapp:renamed")
    fails(done, 1)
    lines = {line.split()[0]: line for line in done.stdout.splitlines() if line.strip()}
    assert set(checkapp.IN_FLIGHT) <= set(lines)
    assert "done" not in lines  # settled: never reported
    assert "running" in lines["parked"]
    assert "paused" in lines["paused"]
    assert "needs_attention" in lines["attention"]
    for run in checkapp.IN_FLIGHT:
        assert "refused" in lines[run]
        assert (
            "step 'charge' in its journal not in the definition (renamed or removed)"
            in (lines[run])
        )
    assert "3 of 3 runs would not fit these definitions" in done.stdout
    assert snapshot(db) == before  # nothing written: no claim, no hold, no event


def test_json_follows_the_schema_and_names_each_reason(db: str, tmp_path: Path) -> None:
    cases = {
        "checkapp:inserted": ("changed", "ran before step 'validate' had finished"),
        "checkapp:only_v2": ("no_definition", "no definition for saga 'order' version '1'"),
    }
    for app, (kind, words) in cases.items():
        done = check(db, tmp_path, "--app", app, "--json")
        fails(done, 1)
        doc = json.loads(done.stdout)
        jsonschema.validate(doc, SCHEMA)
        assert doc["schema"] == "sagakit/check/v1"
        assert doc["ok"] is False
        assert doc["checked"] == 3
        assert doc["counts"][kind] == 3
        assert sorted(m["run_id"] for m in doc["misfits"]) == sorted(checkapp.IN_FLIGHT)
        assert all(m["kind"] == kind and words in m["reasons"][0] for m in doc["misfits"]), doc
    doc = json.loads(ok(check(db, tmp_path, "--app", "checkapp:same", "--json")))
    jsonschema.validate(doc, SCHEMA)
    assert (doc["ok"], doc["misfits"], doc["definitions"]) == (
        True,
        [],
        [{"saga": "order", "version": "1"}],
    )


def test_a_kind_changed_on_a_step_already_undone_is_listed(db: str, tmp_path: Path) -> None:
    done = check(db, tmp_path, "--app", "checkapp:uncompensated", "--json")
    fails(done, 1)
    doc = json.loads(done.stdout)
    assert [(m["run_id"], m["kind"], m["status"]) for m in doc["misfits"]] == [
        ("attention", "changed", "needs_attention")
    ]
    assert doc["misfits"][0]["reasons"] == [
        "step 'reserve' has no compensation now, yet its journal records one (its kind "
        "changed from compensatable): it would be left undone"
    ]


def test_the_saga_filter_and_usage_errors(db: str, tmp_path: Path) -> None:
    out = ok(check(db, tmp_path, "--app", "checkapp:renamed", "--saga", "invoice"))
    assert "every run fits (0 runs checked)" in out
    err = fails(check(db, tmp_path, "--app", "no_such_module"), 2)
    assert "cannot import 'no_such_module'" in err
    err = fails(check(db, tmp_path), 2)
    assert "--app" in err


def test_a_missing_or_foreign_database_is_one_line_and_never_created(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.db"
    err = fails(check(str(missing), tmp_path, "--app", "checkapp:same"))
    assert "no sagakit database at" in err
    assert len(err.strip().splitlines()) == 1
    assert not missing.exists()
    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")
    err = fails(check(str(empty), tmp_path, "--app", "checkapp:same"))
    assert len(err.strip().splitlines()) == 1, err
    assert empty.read_bytes() == b""  # read only: no schema created in it


YAML = """
saga: order
version: "1"
steps:
  - {name: reserve, function: orderfns.reserve, compensate: orderfns.unreserve}
  - {name: %s, function: orderfns.charge, compensate: orderfns.refund}
  - {name: approve, function: orderfns.approve}
"""


def test_a_yaml_definition_is_checked_as_a_module_is(db: str, tmp_path: Path) -> None:
    # The check never calls a step: what counts is each step's name and kind.
    (tmp_path / "orderfns.py").write_text(
        "".join(
            f"def {name}(state, ctx):\n    return None\n\n\n"
            for name in ("reserve", "unreserve", "charge", "refund", "approve")
        )
    )
    (tmp_path / "same.yaml").write_text(YAML % "charge")
    (tmp_path / "renamed.yaml").write_text(YAML % "take_payment")
    assert "every run fits" in ok(check(db, tmp_path, "--app", "same.yaml"))
    done = check(db, tmp_path, "--app", "renamed.yaml", "--json")
    fails(done, 1)
    assert json.loads(done.stdout)["counts"]["refused"] == 3
