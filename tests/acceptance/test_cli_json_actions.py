"""``--json`` on the operator's actions and the store commands, on SQLite and PostgreSQL.

retry, resolve, cancel, signal (``sagakit/action/v1``), recover, reservations,
purge, migrate and keys, as real subprocesses; each document is checked
against the JSON Schema shipped in the package, and no secret reaches it.
A failure keeps the one convention of every command: one ``Error:`` line on
stderr, a non-zero exit, and nothing on stdout unless the document is the
answer (an action carried out whose run needs attention afterwards, a purge
that its archive stopped midway).
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from cryptography.fernet import Fernet

from sagakit import Engine, RunStatus
from sagakit.cli.jsonout import output_schema
from sagakit.store import open_store
from sagakit.store.encrypted import KEYS_VARIABLE, generate_key

from . import cardapp, tripapp
from .cardapp import API_KEY, CARD, CVV
from .helpers import fails, ok, sagakit
from .stores import sql_store_url

__all__ = ["sql_store_url"]  # a fixture, used by name

pytestmark = pytest.mark.slow

APP = Path(__file__).parent
SECRETS = (CARD, API_KEY, CARD[-8:])
SCHEMA = output_schema()


def cli_json(
    cwd: Path, *args: str, code: int = 0, environ: dict[str, str | None] | None = None
) -> dict[str, Any]:
    """``sagakit ARGS --json``: exit ``code``, no secret, one document valid under the schema."""
    done = sagakit(cwd, *args, "--json", pythonpath=APP, environ=environ)
    out = ok(done) if code == 0 else done.stdout
    if code:
        assert done.returncode == code, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
        assert "Traceback" not in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    for secret in SECRETS:
        assert secret not in out + done.stderr, f"{secret!r} printed:\n{out}"
    doc: dict[str, Any] = json.loads(out)
    jsonschema.validate(doc, SCHEMA)
    return doc


def pay(url: str, order: str, run_id: str) -> None:
    """Record a card payment: ``stuck`` needs attention, ``bad`` rolls back, ``ok`` completes."""
    with Engine(url) as engine:
        engine.run(
            cardapp.payment, {"order_id": order, "card_number": CARD, "cvv": CVV}, run_id=run_id
        )


def paused_trip(url: str, run_id: str) -> None:
    with Engine(url) as engine:
        assert engine.run(tripapp.trip, {"london": "Ritz"}, run_id=run_id).status is (
            RunStatus.PAUSED
        )


def status_of(url: str, run_id: str) -> RunStatus:
    with Engine(url) as engine:
        return engine.get(run_id).status


# -- retry and resolve ------------------------------------------------------------------


def test_retry_json_of_a_run_that_fails_again_prints_it_and_exits_1(
    sql_store_url: str, tmp_path: Path
) -> None:
    pay(sql_store_url, "stuck", "p-1")
    doc = cli_json(tmp_path, "retry", "p-1", "--db", sql_store_url, "--app", "cardapp", code=1)
    assert doc["schema"] == "sagakit/action/v1"
    assert (doc["action"], doc["run_id"], doc["outcome"]) == ("retry", "p-1", "applied")
    assert doc["run"]["status"] == "needs_attention"
    assert doc["run"]["state"]["card_number"] == "***"
    assert doc["run"]["compensation_errors"][-1]["message"] == "void refused for card *** (key ***)"


def test_retry_json_of_a_settled_run_changes_nothing(sql_store_url: str, tmp_path: Path) -> None:
    pay(sql_store_url, "ok", "p-2")
    doc = cli_json(tmp_path, "retry", "p-2", "--db", sql_store_url, "--app", "cardapp")
    assert (doc["action"], doc["outcome"]) == ("retry", "nothing_to_do")
    assert doc["run"]["status"] == "completed"


def test_resolve_json_finishes_the_undo(sql_store_url: str, tmp_path: Path) -> None:
    pay(sql_store_url, "stuck", "p-3")
    doc = cli_json(
        tmp_path,
        *("resolve", "p-3", "--note", "voided by hand", "--step", "authorize"),
        *("--db", sql_store_url, "--app", "cardapp"),
    )
    assert (doc["action"], doc["outcome"]) == ("resolve", "applied")
    assert doc["run"]["status"] == "rolled_back"
    assert status_of(sql_store_url, "p-3") is RunStatus.ROLLED_BACK


# -- cancel and signal ------------------------------------------------------------------


def test_cancel_json_with_the_app_applies_it_and_without_records_it(
    sql_store_url: str, tmp_path: Path
) -> None:
    paused_trip(sql_store_url, "t-1")
    paused_trip(sql_store_url, "t-2")
    here = cli_json(
        tmp_path, "cancel", "t-1", "--reason", "no", "--db", sql_store_url, "--app", "tripapp"
    )
    assert (here["action"], here["outcome"], here["signal"]) == ("cancel", "applied", None)
    assert here["run"]["status"] == "cancelled"
    later = cli_json(tmp_path, "cancel", "t-2", "--reason", "left", "--db", sql_store_url)
    assert later["outcome"] == "recorded"
    assert later["run"]["status"] == "paused", "until a worker acts on it"
    assert later["run"]["pending"][0]["kind"] == "cancel"
    assert later["run"]["pending"][0]["reason"] == "left"


def test_signal_json_with_the_app_applies_it_and_without_records_it(
    sql_store_url: str, tmp_path: Path
) -> None:
    paused_trip(sql_store_url, "t-3")
    paused_trip(sql_store_url, "t-4")
    payload = ("--payload", '{"london": "Savoy"}')
    here = cli_json(
        tmp_path, "signal", "t-3", "choose", *payload, "--db", sql_store_url, "--app", "tripapp"
    )
    assert (here["action"], here["outcome"], here["signal"]) == ("signal", "applied", "choose")
    assert here["run"]["status"] == "completed"
    assert here["run"]["state"]["london_booking"] == "Savoy"
    later = cli_json(tmp_path, "signal", "t-4", "choose", *payload, "--db", sql_store_url)
    assert (later["outcome"], later["signal"]) == ("recorded", "choose")
    assert [(r["kind"], r["name"]) for r in later["run"]["pending"]] == [("signal", "choose")]


# -- recover and reservations -----------------------------------------------------------


def test_recover_json_names_what_it_drove_and_what_it_left(
    sql_store_url: str, tmp_path: Path
) -> None:
    with Engine(sql_store_url) as engine:
        engine.start(
            cardapp.payment,
            {"order_id": "ok", "card_number": CARD, "cvv": CVV},
            run_id="due",
        )
        engine.start(tripapp.trip, {"london": "Savoy"}, run_id="not-mine")
    doc = cli_json(tmp_path, "recover", "--db", sql_store_url, "--app", "cardapp")
    assert doc["schema"] == "sagakit/recovery/v1"
    assert [(r["id"], r["status"]) for r in doc["recovered"]] == [("due", "completed")]
    assert [(r["id"], r["saga"], r["status"]) for r in doc["untouched"]] == [
        ("not-mine", "cli-trip", "pending")
    ]
    assert all("state" not in r for r in doc["recovered"] + doc["untouched"])


def test_reservations_json_lists_the_live_ones(sql_store_url: str, tmp_path: Path) -> None:
    async def hold() -> None:
        store = open_store(sql_store_url)
        await store.open()
        try:
            now = time.time()
            await store.reserve_all(
                ["seat:1", "seat:2"], run_id="o-1", now=now, expires_at=now + 60
            )
            await store.reserve("seat:3", run_id="o-2", now=now - 120, expires_at=now - 60)
        finally:
            await store.close()

    asyncio.run(hold())
    doc = cli_json(tmp_path, "reservations", "--db", sql_store_url)
    assert doc["schema"] == "sagakit/reservations/v1"
    assert doc["run_id"] is None
    assert [(r["name"], r["run_id"]) for r in doc["reservations"]] == [
        ("seat:1", "o-1"),
        ("seat:2", "o-1"),
    ]
    assert all(r["expires_at"] > doc["at"] for r in doc["reservations"])
    none = cli_json(tmp_path, "reservations", "--run", "o-2", "--db", sql_store_url)
    assert (none["run_id"], none["reservations"]) == ("o-2", [])


# -- purge, migrate, keys ---------------------------------------------------------------


def test_purge_json_counts_then_purges(sql_store_url: str, tmp_path: Path) -> None:
    pay(sql_store_url, "ok", "p-ok")
    pay(sql_store_url, "bad", "p-bad")
    pay(sql_store_url, "stuck", "p-stuck")
    time.sleep(0.05)  # older than the 0.01s asked for below
    args = ("purge", "--older-than", "0.01s", "--db", sql_store_url)
    would = cli_json(tmp_path, *args, "--dry-run")
    assert would["schema"] == "sagakit/purge/v1"
    assert would["dry_run"] is True
    assert would["counts"] == {"completed": 1, "rolled_back": 1, "cancelled": 0}
    assert (would["total"], would["archive"], would["stopped"]) == (2, None, None)
    archive = tmp_path / "old.jsonl"
    done = cli_json(tmp_path, *args, "--archive", str(archive))
    assert (done["dry_run"], done["total"], done["stopped"]) == (False, 2, None)
    assert done["counts"] == would["counts"]
    assert done["archive"] == str(archive.resolve())
    assert len(archive.read_text().splitlines()) == 2
    assert status_of(sql_store_url, "p-stuck") is RunStatus.NEEDS_ATTENTION


def test_purge_json_stopped_by_its_archive_prints_the_counts_and_exits_1(
    sql_store_url: str, tmp_path: Path
) -> None:
    pay(sql_store_url, "ok", "p-ok")
    time.sleep(0.05)
    unwritable = tmp_path / "no-such-dir" / "old.jsonl"
    doc = cli_json(
        tmp_path,
        *("purge", "--older-than", "0.01s", "--archive", str(unwritable), "--db", sql_store_url),
        code=1,
    )
    assert doc["total"] == 0
    assert doc["stopped"] is not None
    assert "cannot write the archive" in doc["stopped"]
    assert status_of(sql_store_url, "p-ok") is RunStatus.COMPLETED, "that batch was kept"


def test_migrate_json_says_what_it_changed(sql_store_url: str, tmp_path: Path) -> None:
    first = cli_json(tmp_path, "migrate", "--db", sql_store_url)
    assert first["schema"] == "sagakit/migration/v1"
    assert first["before"] == 0
    assert first["after"] >= 1
    assert first["changed"] is True
    again = cli_json(tmp_path, "migrate", "--db", sql_store_url)
    assert (again["before"], again["after"], again["changed"]) == (
        first["after"],
        first["after"],
        False,
    )


def test_keys_generate_json_holds_a_usable_key(tmp_path: Path) -> None:
    doc = cli_json(tmp_path, "keys", "generate")
    assert doc["schema"] == "sagakit/key/v1"
    assert doc["algorithm"] == "fernet"
    Fernet(doc["key"].encode())  # a valid key
    assert cli_json(tmp_path, "keys", "generate")["key"] != doc["key"]


def test_keys_rotate_json_gives_counts_and_never_a_key(sql_store_url: str, tmp_path: Path) -> None:
    old, new = generate_key(), generate_key()
    with Engine(sql_store_url, encryption_keys=[old]) as engine:
        engine.run(cardapp.payment, {"order_id": "ok", "card_number": CARD}, run_id="enc")
    done = sagakit(
        tmp_path,
        *("keys", "rotate", "--db", sql_store_url, "--json"),
        environ={KEYS_VARIABLE: f"{new},{old}"},
    )
    out = ok(done)
    assert old not in out + done.stderr
    assert new not in out + done.stderr
    doc = json.loads(out)
    jsonschema.validate(doc, SCHEMA)
    assert doc["schema"] == "sagakit/rotation/v1"
    assert doc["reencrypted"] > 0
    assert doc["rewritten"]["runs"] == 1
    assert doc["plain_encrypted"] is False
    again = json.loads(
        ok(
            sagakit(
                tmp_path,
                *("keys", "rotate", "--db", sql_store_url, "--json"),
                environ={KEYS_VARIABLE: f"{new},{old}"},
            )
        )
    )
    assert (again["reencrypted"], again["current"]) == (0, doc["reencrypted"] + doc["current"])


# -- the error convention ---------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        ["retry", "x"],
        ["resolve", "x", "--note", "n"],
        ["cancel", "x"],
        ["signal", "x", "go"],
        ["recover"],
        ["reservations"],
        ["purge", "--older-than", "1d"],
        ["start", "card-payment", "--app", "cardapp", "--input", "{}"],
        ["list"],
    ],
    ids=lambda c: c[0],
)
def test_with_json_a_failure_is_one_line_on_stderr_and_nothing_on_stdout(
    tmp_path: Path, command: list[str]
) -> None:
    # A missing SQLite file for the commands that need a store; for start, an
    # input its state model refuses (checked before the store is opened).
    done = sagakit(tmp_path, *command, "--db", "nowhere.db", "--json", pythonpath=APP)
    line = fails(done, 1)
    assert done.stdout == ""
    assert len(line.strip().splitlines()) == 1, line
    assert line.startswith("Error: ")
    assert not (tmp_path / "nowhere.db").exists()


@pytest.mark.parametrize(
    "command",
    [["migrate"], ["keys", "rotate"], ["list"], ["retry", "x"]],
    ids=lambda c: c[0],
)
def test_with_json_an_unreachable_server_is_one_line_without_its_password(
    tmp_path: Path, command: list[str]
) -> None:
    url = "postgresql://u:hunter2@127.0.0.1:1/x"
    done = sagakit(
        tmp_path, *command, "--db", url, "--json", environ={KEYS_VARIABLE: generate_key()}
    )
    line = fails(done, 1)
    assert done.stdout == ""
    assert "hunter2" not in line
    assert len(line.strip().splitlines()) == 1, line


def test_every_document_kind_has_a_test_that_checks_real_output() -> None:
    kinds = {ref["$ref"].rsplit("/", 1)[1] for ref in SCHEMA["oneOf"]}
    # The read commands, validate and run: test_cli_json.py; start: test_cli_start.py;
    # reconcile: test_cli_reconcile.py; check: test_cli_check.py; test: test_cli_test.py.
    assert kinds == {
        "runs_v1",
        "run_v1",
        "history_v1",
        "validation_v1",
        "action_v1",
        "recovery_v1",
        "reservations_v1",
        "purge_v1",
        "migration_v1",
        "key_v1",
        "rotation_v1",
        "start_v1",
        "reconcile_v1",
        "check_v1",
        "test_v1",
    }
