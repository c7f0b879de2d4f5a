"""Encryption at rest from the command line, as real processes.

The keys come from ``SAGAKIT_ENCRYPTION_KEYS``. A SQLite file written with
them holds no secret in its bytes (nor its WAL); the read commands show the
values with the key and ``<encrypted>`` without it; the commands that write
refuse without it, in one line, and leave the store as it was; a wrong key is
one line naming the run; ``keys rotate`` re-encrypts SQLite and PostgreSQL
stores so that the new key alone reads them.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from sagakit import Engine, RunStatus
from sagakit.store.encrypted import KEYS_VARIABLE, generate_key

from .helpers import ok, sagakit

pytestmark = pytest.mark.slow

SECRET = "4111-1111-1111-1111"
A, B = generate_key(), generate_key()

APP = """
from sagakit import Saga

vault = Saga("vault")


@vault.step
def tokenize(state, ctx):
    return {"token": "tok-" + state["card"][-4:]}


vault.wait_for("approve")


@vault.step
def charge(state, ctx):
    return {"charged": state["card"] + "/" + state["pin"]}
"""


def run_cli(cwd: Path, *args: str, keys: str | None) -> subprocess.CompletedProcess[str]:
    """The command line with ``keys`` as its only encryption keys (None: no keys)."""
    return sagakit(cwd, *args, pythonpath=cwd, environ={KEYS_VARIABLE: keys})


def refused(done: subprocess.CompletedProcess[str]) -> str:
    """The one line a refusal prints (exit 1, no traceback)."""
    assert done.returncode == 1, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    assert "Traceback" not in done.stdout + done.stderr
    (line,) = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
    return line


def rows(db: Path) -> list[list[tuple[object, ...]]]:
    with sqlite3.connect(db) as conn:
        return [
            conn.execute("SELECT * FROM runs ORDER BY id").fetchall(),
            conn.execute("SELECT * FROM events ORDER BY run_id, seq").fetchall(),
            conn.execute("SELECT * FROM mail ORDER BY id").fetchall(),
        ]


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """A SQLite store written with key A: v1 paused, v2 pending (for a worker)."""
    (tmp_path / "vaultapp.py").write_text(textwrap.dedent(APP))
    sys.path.insert(0, str(tmp_path))
    try:
        import vaultapp  # type: ignore[import-not-found]

        db = tmp_path / "runs.db"
        with Engine(f"sqlite:///{db}", encryption_keys=[A]) as engine:
            run = engine.run(vaultapp.vault, {"card": SECRET}, run_id="v1")
            assert run.status is RunStatus.PAUSED
            engine.start(vaultapp.vault, {"card": SECRET}, run_id="v2")
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("vaultapp", None)
    return db


def test_the_database_files_hold_no_secret(store: Path) -> None:
    files = [p for p in store.parent.iterdir() if p.name.startswith(store.name)]
    assert store in files
    for path in files:
        data = path.read_bytes()
        assert SECRET.encode() not in data, path.name
        assert b"tok-1111" not in data, path.name


def test_read_commands_show_values_with_the_key_and_a_mark_without(store: Path) -> None:
    db = f"sqlite:///{store}"
    with_key = ok(run_cli(store.parent, "history", "v1", "--db", db, keys=A))
    assert SECRET in with_key
    assert "tok-1111" in with_key
    assert "<encrypted>" not in with_key
    before = rows(store)
    for command in (["history", "v1"], ["show", "v1"], ["list"]):
        shown = ok(run_cli(store.parent, *command, "--db", db, keys=None))
        assert SECRET not in shown
        assert "gAAAA" not in shown  # no token either
    history = ok(run_cli(store.parent, "history", "v1", "--db", db, keys=None))
    assert 'state "<encrypted>"' in history
    assert 'result "<encrypted>"' in history
    assert rows(store) == before


def test_commands_that_write_refuse_without_the_key_and_change_nothing(store: Path) -> None:
    db = f"sqlite:///{store}"
    before = rows(store)
    for command in (
        ["signal", "v1", "approve", "--payload", '{"pin": "1234"}'],
        ["cancel", "v1", "--reason", "stop"],
        ["resolve", "v1", "--note", "done", "--app", "vaultapp"],
        ["recover", "--app", "vaultapp"],
    ):
        line = refused(run_cli(store.parent, *command, "--db", db, keys=None))
        assert "is encrypted, and this process has no encryption key" in line, command
        assert KEYS_VARIABLE in line
        assert rows(store) == before, command
    # retry only acts on a run that needs attention: on this one it reads and says so.
    said = ok(run_cli(store.parent, "retry", "v1", "--app", "vaultapp", "--db", db, keys=None))
    assert "nothing to retry" in said
    assert rows(store) == before


def test_a_worker_without_the_key_refuses_and_leaves_the_run_as_it_was(store: Path) -> None:
    db = f"sqlite:///{store}"
    before = rows(store)
    done = run_cli(
        store.parent, "worker", "--app", "vaultapp", "--db", db, "--poll", "0.05", keys=None
    )
    line = refused(done)
    assert line == (
        "Error: the data of run 'v2' is encrypted, and this process has no encryption key; "
        f"give it the keys the store is written with ({KEYS_VARIABLE} for the sagakit "
        "command, encryption_keys= for Engine and open_store)"
    )
    runs, events, mail = rows(store)
    # Row for row as it was, but for the lease epoch its claim moved on (fencing).
    epoch = 9  # the lease_epoch column
    assert [r[:epoch] + r[epoch + 1 :] for r in runs] == [
        r[:epoch] + r[epoch + 1 :] for r in before[0]
    ]
    assert (events, mail) == (before[1], before[2])


def test_a_wrong_key_is_one_line_naming_the_run(store: Path) -> None:
    line = refused(run_cli(store.parent, "history", "v1", "--db", f"sqlite:///{store}", keys=B))
    assert line.startswith("Error: the state of run 'v1' cannot be decrypted")
    assert A not in line
    assert B not in line


def test_a_key_that_is_not_a_key_is_refused_without_being_shown(store: Path) -> None:
    line = refused(
        run_cli(store.parent, "list", "--db", f"sqlite:///{store}", keys=f"{A},hunter2-typo")
    )
    assert "encryption key 2 of 2 is not a Fernet key" in line
    assert "hunter2" not in line
    assert A not in line


def test_keys_generate_prints_a_new_fernet_key(tmp_path: Path) -> None:
    first = ok(run_cli(tmp_path, "keys", "generate", keys=None)).strip()
    second = ok(run_cli(tmp_path, "keys", "generate", keys=None)).strip()
    assert first != second
    Fernet(first)  # a valid key


def test_keys_rotate_on_sqlite_then_the_new_key_alone_reads_everything(store: Path) -> None:
    db = f"sqlite:///{store}"
    cwd = store.parent
    # v1: state + run_started + 1 result; v2: state + run_started.
    out = ok(run_cli(cwd, "keys", "rotate", "--db", db, "--batch-size", "1", keys=f"{B},{A}"))
    assert "re-encrypted with the newest key: 5 values (2 runs, 3 events and 0 mail" in out
    assert "already under the newest key: 0 values" in out
    again = ok(run_cli(cwd, "keys", "rotate", "--db", db, keys=f"{B},{A}"))
    assert "re-encrypted with the newest key: 0 values" in again
    assert "already under the newest key: 5 values" in again
    history = ok(run_cli(cwd, "history", "v1", "--db", db, keys=B))
    assert SECRET in history
    refused(run_cli(cwd, "history", "v1", "--db", db, keys=A))
    assert A not in out + again
    assert B not in out + again


def test_keys_rotate_needs_the_keys_and_an_existing_store(tmp_path: Path) -> None:
    line = refused(run_cli(tmp_path, "keys", "rotate", "--db", "x.db", keys=None))
    assert f"set {KEYS_VARIABLE}" in line
    line = refused(run_cli(tmp_path, "keys", "rotate", "--db", "x.db", keys=A))
    assert "no sagakit database at" in line
    assert not (tmp_path / "x.db").exists()


def test_keys_rotate_on_postgresql(postgres_url: str, tmp_path: Path) -> None:
    (tmp_path / "vaultapp.py").write_text(textwrap.dedent(APP))
    sys.path.insert(0, str(tmp_path))
    try:
        import vaultapp

        with Engine(postgres_url, encryption_keys=[A]) as engine:
            engine.run(vaultapp.vault, {"card": SECRET}, run_id="v1")
            engine.signal("v1", "approve", {"pin": "2468"})  # runs here: completes
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("vaultapp", None)
    out = ok(run_cli(tmp_path, "keys", "rotate", "--db", postgres_url, keys=f"{B},{A}"))
    assert "re-encrypted with the newest key: 6 values (1 runs, 5 events and 0 mail" in out
    history = ok(run_cli(tmp_path, "history", "v1", "--db", postgres_url, keys=B))
    assert f"{SECRET}/2468" in history
    with Engine(postgres_url, encryption_keys=[B]) as engine:
        assert engine.get("v1").data["charged"] == f"{SECRET}/2468"
