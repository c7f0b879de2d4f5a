"""``--json`` on the commands that read and run.

The real command line, run as a subprocess on a store (SQLite and
PostgreSQL) holding runs in several statuses: completed, rolled back and
needing attention (``cardapp``, with a card number and an API key marked
sensitive), paused (``tripapp``), and paused with a cancel recorded but not
acted on. Each document is
checked against the JSON Schema shipped in the package, and no secret
reaches it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from sagakit import Engine, RunStatus

from . import cardapp, tripapp
from .cardapp import API_KEY, CARD
from .helpers import fails, ok, sagakit
from .stores import SQL_STORES, module_store, sql_store_url

__all__ = ["sql_store_url"]  # a fixture, used by name

APP = Path(__file__).parent
SECRETS = (CARD, API_KEY, CARD[-8:])
SCHEMA = json.loads(
    (Path(cardapp.__file__).parents[2] / "src/sagakit/schema/output.schema.json").read_text()
)


def shipped_schema() -> dict[str, Any]:
    """The schema as the installed package reads it."""
    from sagakit.cli.jsonout import output_schema

    return output_schema()


@dataclass(frozen=True)
class Store:
    """A store holding the module's runs, and a directory to run the commands in."""

    url: str
    cwd: Path


@pytest.fixture(scope="module", params=SQL_STORES)
def store(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Store]:
    where = tmp_path_factory.mktemp("json")
    with module_store(request.param, where) as url:
        with Engine(url) as engine:
            cardapp.record_payments(engine)
            for run_id in ("trip-paused", "trip-cancelling"):
                run = engine.run(tripapp.trip, {"london": "Ritz"}, run_id=run_id)
                assert run.status is RunStatus.PAUSED
        # Without --app the cancel is only recorded: the run stays paused, with it pending.
        ok(
            sagakit(
                where,
                *("cancel", "trip-cancelling", "--reason", "customer left", "--db", url),
            )
        )
        yield Store(url, where)


def document(store: Store, *args: str, kind: str) -> dict[str, Any]:
    """Run ``sagakit ARGS --json``: exit 0, no secret, one document valid under the schema."""
    done = sagakit(store.cwd, *args, "--db", store.url, "--json", pythonpath=APP)
    out = ok(done)
    for secret in SECRETS:
        assert secret not in out + done.stderr, f"{secret!r} printed:\n{out}"
    doc: dict[str, Any] = json.loads(out)
    jsonschema.validate(doc, SCHEMA)
    assert doc["schema"] == f"sagakit/{kind}/v1"
    return doc


def test_the_shipped_schema_is_the_packages_and_is_valid() -> None:
    assert shipped_schema() == SCHEMA
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


def test_list_json_names_every_status_and_the_pending_cancel(store: Store) -> None:
    doc = document(store, "list", kind="runs")
    status = {run["id"]: run["status"] for run in doc["runs"]}
    assert status == {
        "pay-ok": "completed",
        "pay-bad": "rolled_back",
        "pay-stuck": "needs_attention",
        "trip-paused": "paused",
        "trip-cancelling": "paused",
    }
    assert doc["truncated"] is False
    runs = {run["id"]: run for run in doc["runs"]}
    assert "state" not in runs["pay-ok"], "list shows no state, as its text does not"
    (cancel,) = runs["trip-cancelling"]["pending"]
    assert cancel["kind"] == "cancel"
    assert cancel["reason"] == "customer left"
    assert runs["trip-paused"]["pending"] == []
    assert "gateway refused card *** with key ***" in runs["pay-bad"]["error"]["message"]


def test_list_json_filters_and_truncates(store: Store) -> None:
    doc = document(store, "list", "--status", "paused", "--limit", "1", kind="runs")
    assert [run["status"] for run in doc["runs"]] == ["paused"]
    assert doc["truncated"] is True
    empty = document(store, "list", "--saga", "no-such-saga", kind="runs")
    assert empty["runs"] == []


@pytest.mark.parametrize("with_app", [False, True], ids=["journal-only", "with-app"])
@pytest.mark.parametrize(
    "run_id", ["pay-ok", "pay-bad", "pay-stuck", "trip-paused", "trip-cancelling"]
)
def test_show_and_history_json_mask_every_sensitive_field(
    store: Store, run_id: str, with_app: bool
) -> None:
    app = ("--app", "cardapp", "--app", "tripapp") if with_app else ()
    shown = document(store, "show", run_id, *app, kind="run")
    assert shown["run"]["id"] == run_id
    assert shown["timeline"]["run_id"] == run_id
    journal = document(store, "history", run_id, *app, kind="history")
    assert [event["seq"] for event in journal["events"]] == list(
        range(1, len(journal["events"]) + 1)
    )
    assert journal["events"][0]["kind"] == "run_started"


def test_show_json_holds_the_state_masked_and_the_timeline(store: Store) -> None:
    doc = document(store, "show", "pay-stuck", kind="run")
    run = doc["run"]
    assert run["status"] == "needs_attention"
    assert run["state"]["card_number"] == "***"
    assert run["state"]["cvv"] == "***"
    assert run["state"]["order_id"] == "stuck"
    assert [error["message"] for error in run["compensation_errors"]] == [
        "void refused for card *** (key ***)"
    ]
    rows = [(row["step"], row["phase"], row["outcome"]) for row in doc["timeline"]["rows"]]
    assert ("authorize", "action", "succeeded") in rows
    assert ("charge", "action", "failed") in rows
    assert ("authorize", "compensation", "needs_attention") in rows
    authorize = next(row for row in doc["timeline"]["rows"] if row["step"] == "authorize")
    assert authorize["result"] == {"api_key": "***"}


def test_history_json_shows_the_masks_and_the_pending_request(store: Store) -> None:
    doc = document(store, "history", "pay-bad", kind="history")
    started = doc["events"][0]["data"]["state"]
    assert started["card_number"] == "***"
    assert started["order_id"] == "bad"
    waiting = document(store, "history", "trip-cancelling", kind="history")
    assert [request["kind"] for request in waiting["pending"]] == ["cancel"]


@pytest.mark.parametrize("command", ["show", "history"])
def test_an_unknown_run_is_one_line_on_stderr_and_nothing_on_stdout(
    store: Store, command: str
) -> None:
    done = sagakit(store.cwd, command, "no-such-run", "--db", store.url, "--json")
    line = fails(done, 1)
    assert done.stdout == ""
    assert line.strip().startswith("Error: no run with id 'no-such-run'")
    assert len(line.strip().splitlines()) == 1


def test_a_missing_database_is_one_line_and_nothing_on_stdout(tmp_path: Path) -> None:
    done = sagakit(tmp_path, "list", "--db", "postgresql://u:hunter2@127.0.0.1:1/x", "--json")
    line = fails(done, 1)
    assert done.stdout == ""
    assert "hunter2" not in line
    assert len(line.strip().splitlines()) == 1


# -- validate and run on a YAML file ----------------------------------------------------

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "payment"
DOWN = {"order_id": "o-1", "customer_id": "c-1", "amount": 10.0, "carrier": "down-express"}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of the payment example: the YAML files beside their package."""
    target = tmp_path / "project"
    shutil.copytree(EXAMPLE, target, ignore=shutil.ignore_patterns("__pycache__"))
    return target


def yaml_command(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return sagakit(project, *args, "--json")


def run_command(project: Path, db: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``sagakit run ARGS --json`` recording in ``db``."""
    return sagakit(project, "run", *args, "--db", db, "--json")


def valid(out: str, kind: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(out)
    jsonschema.validate(doc, SCHEMA)
    assert doc["schema"] == f"sagakit/{kind}/v1"
    return doc


@pytest.mark.parametrize("no_import", [False, True], ids=["imported", "no-import"])
def test_validate_json_gives_the_saga_and_its_stages(project: Path, no_import: bool) -> None:
    flag = ("--no-import",) if no_import else ()
    done = yaml_command(project, "validate", "workflow.yaml", *flag)
    doc = valid(ok(done), "validation")
    assert done.stderr == ""
    assert doc["ok"] is True
    assert doc["imported"] is not no_import
    assert doc["errors"] == []
    assert doc["saga"] == {
        "name": "PaymentProcessing",
        "version": "1.0.0",
        "steps": 4,
        "stages": [
            ["Create_Order"],
            ["Charge_Payment"],
            ["Reserve_Inventory"],
            ["Create_Shipment"],
        ],
    }


def test_validate_json_lists_every_problem_and_exits_1_with_one_line(project: Path) -> None:
    text = (project / "payment.yaml").read_text()
    (project / "broken.yaml").write_text(text.replace("timeout: 10\n", "timeout: -1\n", 1))
    done = yaml_command(project, "validate", "broken.yaml")
    assert fails(done).splitlines() == ["Error: broken.yaml: 1 problem"]
    doc = valid(done.stdout, "validation")
    assert doc["ok"] is False
    assert doc["saga"] is None
    assert doc["errors"] == [
        {
            "file": "broken.yaml",
            "line": 13,
            "step": "create_order",
            "message": "timeout: Input should be greater than 0",
        }
    ]


def test_run_json_prints_the_run_and_its_timeline_only(project: Path, sql_store_url: str) -> None:
    done = run_command(
        project, sql_store_url, "payment.yaml", "--input", json.dumps(DOWN), "--run-id", "r1"
    )
    assert done.stderr == "", "--db given: no line about the store"
    doc = valid(ok(done), "run")
    assert doc["run"]["id"] == "r1"
    assert doc["run"]["status"] == "rolled_back"
    assert doc["run"]["state"]["compensations_run"][0] == "release_inventory"
    assert any(
        row["step"] == "reserve_inventory" and row["phase"] == "compensation"
        for row in doc["timeline"]["rows"]
    )


def test_run_json_of_a_broken_file_prints_nothing_on_stdout(project: Path) -> None:
    (project / "broken.yaml").write_text("name: [")
    done = yaml_command(project, "run", "broken.yaml")
    assert not (project / "sagakit.db").exists(), "nothing was run, nothing created"
    assert fails(done).splitlines()[-1] == "Error: broken.yaml: 1 problem; nothing was run"
    assert done.stdout == ""
