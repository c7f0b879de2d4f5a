"""``sagakit start``: record a run for a worker and return at once, as real processes.

The run is recorded pending and nothing of it runs in the command; a real
``sagakit worker`` on the same store then completes it. A start refused (an
unknown saga, an input the state model refuses, input that is not JSON, a
run id already taken with another input) is one line, a non-zero exit, and
records nothing; on SQLite it does not even create the database.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from sagakit import Engine, RunStatus
from sagakit.cli.jsonout import output_schema

from .cardapp import CARD
from .helpers import fails, ok, sagakit
from .stores import sql_store_url

__all__ = ["sql_store_url"]  # a fixture, used by name

pytestmark = pytest.mark.slow

APP = Path(__file__).parent
ORDER = {"order_id": "ok", "card_number": CARD}


def start(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return sagakit(cwd, "start", "card-payment", "--app", "cardapp", *args, pythonpath=APP)


def runs_in(url: str) -> list[str]:
    with Engine(url) as engine:
        return [run.id for run in engine.runs()]


def serve_until_settled(cwd: Path, url: str, run_id: str) -> Any:
    """Run ``sagakit worker`` on ``url`` until ``run_id`` settles; SIGTERM it; the run."""
    environ = {**os.environ, "NO_COLOR": "1", "PYTHONPATH": str(APP)}
    environ.pop("SAGAKIT_DB", None)
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sagakit",
            "worker",
            "--app",
            "cardapp",
            "--db",
            url,
            "--poll",
            "0.05",
        ],
        cwd=cwd,
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        with Engine(url) as engine:
            run = engine.wait(run_id, timeout=60.0, poll=0.05)
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            out, err = worker.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.communicate()
            raise AssertionError("the worker did not stop on SIGTERM") from None
    assert worker.returncode == 0, err
    assert "card-payment v1" in out.splitlines()[0]
    return run


def test_start_records_the_run_and_a_worker_completes_it(
    sql_store_url: str, tmp_path: Path
) -> None:
    done = start(tmp_path, "--input", json.dumps(ORDER), "--run-id", "o-1", "--db", sql_store_url)
    out = ok(done)
    assert out.startswith("run o-1 of saga card-payment v1 recorded pending in ")
    assert CARD not in out + done.stderr
    with Engine(sql_store_url) as engine:
        recorded = engine.get("o-1")
        assert recorded.status is RunStatus.PENDING, "start drives nothing"
        assert recorded.owner is None
        assert [e.kind.value for e in engine.history("o-1")] == ["run_started"]
    run = serve_until_settled(tmp_path, sql_store_url, "o-1")
    assert run.status is RunStatus.COMPLETED
    assert run.state["receipt"] == "r-ok"


def test_start_json_gives_the_run_id_and_a_random_one_by_default(
    sql_store_url: str, tmp_path: Path
) -> None:
    order = tmp_path / "order.json"
    order.write_text(json.dumps(ORDER))
    done = start(tmp_path, "--input", f"@{order}", "--db", sql_store_url, "--json")
    doc: dict[str, Any] = json.loads(ok(done))
    jsonschema.validate(doc, output_schema())
    assert doc["schema"] == "sagakit/start/v1"
    assert doc["created"] is True
    assert doc["run"]["id"] == doc["run_id"]
    assert doc["run"]["status"] == "pending"
    assert doc["run"]["state"]["card_number"] == "***"
    assert CARD not in done.stdout + done.stderr
    assert runs_in(sql_store_url) == [doc["run_id"]]
    run = serve_until_settled(tmp_path, sql_store_url, doc["run_id"])
    assert run.status is RunStatus.COMPLETED


def test_starting_again_with_the_same_input_changes_nothing(
    sql_store_url: str, tmp_path: Path
) -> None:
    args = ("--input", json.dumps(ORDER), "--run-id", "o-2", "--db", sql_store_url, "--json")
    first = json.loads(ok(start(tmp_path, *args)))
    again = json.loads(ok(start(tmp_path, *args)))
    assert (first["created"], again["created"]) == (True, False)
    assert again["run"]["created_at"] == first["run"]["created_at"]
    assert runs_in(sql_store_url) == ["o-2"]


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (("--input", '{"order_id": "x"}'), 1, "--input does not fit the state of saga"),
        (("--input", "{not json"), 2, "Invalid value for --input: not JSON"),
        (("--input", "[1, 2]"), 2, "must be a JSON object"),
        (("--input", json.dumps(ORDER), "--run-id", "a/b"), 1, "run id 'a/b'"),
        (("--input", json.dumps(ORDER), "--saga-version", "9"), 1, "has no version '9'"),
    ],
    ids=["state", "not-json", "not-object", "run-id", "version"],
)
def test_a_refused_start_records_nothing_and_creates_no_database(
    tmp_path: Path, args: tuple[str, ...], code: int, says: str
) -> None:
    done = start(tmp_path, *args, "--db", "new.db", "--json")
    line = fails(done, code)
    assert done.stdout == ""
    assert says in line
    assert line.strip().splitlines()[-1].startswith("Error: ")
    if code == 1:
        assert len(line.strip().splitlines()) == 1, line
    assert CARD not in line
    assert not (tmp_path / "new.db").exists()


def test_an_unknown_saga_is_one_line_naming_the_registered_ones(tmp_path: Path) -> None:
    done = sagakit(
        tmp_path, "start", "no-such", "--app", "cardapp", "--db", "new.db", pythonpath=APP
    )
    line = fails(done)
    assert line.strip() == (
        "Error: no saga named 'no-such' is registered (registered: card-payment, travel-itinerary)"
    )
    assert not (tmp_path / "new.db").exists()


def test_a_run_id_taken_with_another_input_is_refused(sql_store_url: str, tmp_path: Path) -> None:
    ok(start(tmp_path, "--input", json.dumps(ORDER), "--run-id", "o-3", "--db", sql_store_url))
    other = {**ORDER, "order_id": "other"}
    done = start(tmp_path, "--input", json.dumps(other), "--run-id", "o-3", "--db", sql_store_url)
    line = fails(done)
    assert "already belongs to a run of saga 'card-payment' started with another input" in line
    assert "'order_id'" in line
    assert len(line.strip().splitlines()) == 1
    with Engine(sql_store_url) as engine:
        assert engine.get("o-3").state["order_id"] == "ok"
        assert len(engine.history("o-3")) == 1
