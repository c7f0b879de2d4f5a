"""``sagakit purge`` and ``sagakit show --archive`` as subprocesses, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sagakit.journal import Event, EventKind, RunStatus
from sagakit.store import RunRecord, open_store

from .helpers import env, fails, ok, sagakit

DAY = 86_400.0


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgresql":
        url: str = request.getfixturevalue("postgres_url")
        return url
    return f"sqlite:///{tmp_path / 'runs.db'}"


def fill(db: str, runs: dict[str, tuple[RunStatus, float]]) -> None:
    """Runs of saga ``order`` by id: their status and how many days ago they last changed."""

    async def go() -> None:
        store = open_store(db)
        await store.open()
        try:
            now = time.time()
            for run_id, (status, days) in runs.items():
                at = now - days * DAY
                started = Event(run_id, 1, EventKind.RUN_STARTED, at, data={"state": {"n": 1}})
                record = RunRecord(run_id, "order", "1", status, {"n": 1}, None, at, at)
                await store.create_run(record, [started])
            await store.reserve("room", run_id="old-done", now=now, expires_at=now + 3600)
        finally:
            await store.close()

    asyncio.run(go())


def left(db: str) -> set[str]:
    async def go() -> set[str]:
        store = open_store(db)
        await store.open()
        try:
            return {run.id for run in await store.list_runs(limit=1000)}
        finally:
            await store.close()

    return asyncio.run(go())


UNSETTLED = {
    f"old-{status}": (status, 400.0)
    for status in (
        RunStatus.PENDING,
        RunStatus.RUNNING,
        RunStatus.COMPENSATING,
        RunStatus.PAUSED,
        RunStatus.NEEDS_ATTENTION,
    )
}
SETTLED = {
    "old-done": (RunStatus.COMPLETED, 40.0),
    "old-undone": (RunStatus.ROLLED_BACK, 31.0),
    "old-cancelled": (RunStatus.CANCELLED, 45.0),
    "old-failed": (RunStatus.FAILED, 45.0),
    "recent-done": (RunStatus.COMPLETED, 29.0),
}


def test_purge_deletes_old_settled_runs_only(tmp_path: Path, db: str) -> None:
    fill(db, {**UNSETTLED, **SETTLED})
    dry = ok(sagakit(tmp_path, "purge", "--older-than", "30d", "--dry-run", "--db", db))
    assert dry.startswith("would purge 3 runs (completed, rolled_back, cancelled)")
    assert left(db) == {*UNSETTLED, *SETTLED}
    out = ok(sagakit(tmp_path, "purge", "--older-than", "30d", "--batch", "2", "--db", db))
    assert out.startswith("purged 3 runs (1 completed, 1 rolled_back, 1 cancelled)")
    # Failed runs stay unless asked for; active, paused and needs_attention always.
    assert left(db) == {*UNSETTLED, "old-failed", "recent-done"}
    out = ok(sagakit(tmp_path, "purge", "--older-than", "2w", "--status", "failed", "--db", db))
    assert out.startswith("purged 1 runs (1 failed)")
    assert left(db) == {*UNSETTLED, "recent-done"}
    # However short the age, unsettled runs stay.
    ok(sagakit(tmp_path, "purge", "--older-than", "1s", "--db", db))
    assert left(db) == set(UNSETTLED)


def test_purge_archives_and_show_reads_the_run_back(tmp_path: Path, db: str) -> None:
    ok(sagakit(tmp_path, "demo", "--db", db))
    before = {run_id: ok(sagakit(tmp_path, "show", run_id, "--db", db)) for run_id in left(db)}
    journals = {run_id: ok(sagakit(tmp_path, "history", run_id, "--db", db)) for run_id in before}
    time.sleep(1.1)  # the demo's runs are now more than a second old
    archive = tmp_path / "runs.jsonl"
    out = ok(
        sagakit(tmp_path, "purge", "--older-than", "1s", "--archive", str(archive), "--db", db)
    )
    assert out.startswith("purged 2 runs (1 completed, 1 rolled_back, 0 cancelled)")
    assert left(db) == set()
    lines = [json.loads(line) for line in archive.read_text().splitlines()]
    assert {line["run"]["id"] for line in lines} == set(before)
    assert all(line["format"] == "sagakit-archive/1" and line["journal"] for line in lines)
    for run_id, shown in before.items():
        again = ok(sagakit(tmp_path, "show", "--archive", str(archive), run_id))
        assert again == shown
        journal = ok(sagakit(tmp_path, "history", "--archive", str(archive), run_id))
        assert journal == journals[run_id]
        fails(sagakit(tmp_path, "show", run_id, "--db", db))  # gone from the store
        fails(sagakit(tmp_path, "history", run_id, "--db", db))
    missing = fails(sagakit(tmp_path, "show", "--archive", str(archive), "no-such-run"))
    assert (
        missing.strip()
        .splitlines()[-1]
        .endswith("no run 'no-such-run' in the archive " + str(archive))
    )


@pytest.mark.parametrize(
    "age",
    ["-5d", "30", "0s", "1e9d", "99999999999d", "30d; DROP TABLE runs", "", "nan d", "\x1b[31m30d"],
)
def test_a_hostile_age_is_refused_in_one_line(tmp_path: Path, db: str, age: str) -> None:
    fill(db, SETTLED)
    err = fails(sagakit(tmp_path, "purge", "--older-than", age, "--db", db), code=2)
    errors = [line for line in err.splitlines() if line.startswith("Error")]
    assert len(errors) == 1
    assert "--older-than" in errors[0]
    assert "\x1b" not in err
    assert left(db) == set(SETTLED)


@pytest.mark.parametrize(
    "status", ["running", "paused", "needs_attention", "completed,pending", "x"]
)
def test_an_unsettled_status_is_refused_in_one_line(tmp_path: Path, db: str, status: str) -> None:
    fill(db, SETTLED)
    err = fails(sagakit(tmp_path, "purge", "--older-than", "1s", "--status", status, "--db", db), 2)
    errors = [line for line in err.splitlines() if line.startswith("Error")]
    assert len(errors) == 1
    assert "--status" in errors[0]
    assert left(db) == set(SETTLED)


def test_an_archive_that_cannot_be_written_deletes_nothing(tmp_path: Path, db: str) -> None:
    fill(db, SETTLED)
    archive = tmp_path / "no-such-dir" / "runs.jsonl"
    err = fails(
        sagakit(tmp_path, "purge", "--older-than", "30d", "--archive", str(archive), "--db", db)
    )
    assert "runs.jsonl" in err
    assert left(db) == set(SETTLED)


def test_an_encrypted_store_is_archived_encrypted_and_read_back_with_the_key(
    tmp_path: Path,
) -> None:
    from sagakit.store.encrypted import KEYS_VARIABLE, generate_key

    db = f"sqlite:///{tmp_path / 'runs.db'}"
    keys: dict[str, str | None] = {KEYS_VARIABLE: generate_key()}
    ok(sagakit(tmp_path, "demo", "--db", db, environ=keys))
    [run_id] = [r for r in left(db) if r.endswith("-ok")]
    shown = ok(sagakit(tmp_path, "show", run_id, "--db", db, environ=keys))
    time.sleep(1.1)
    archive = tmp_path / "runs.jsonl"
    # Purging needs no key: it deletes, and archives what the store holds.
    ok(sagakit(tmp_path, "purge", "--older-than", "1s", "--archive", str(archive), "--db", db))
    assert "Ada Lovelace" not in archive.read_text()  # the demo's traveller, encrypted
    assert "$encrypted" in archive.read_text()
    again = ok(sagakit(tmp_path, "show", "--archive", str(archive), run_id, environ=keys))
    assert again == shown


def test_a_worker_purges_old_settled_runs_as_it_serves(tmp_path: Path, db: str) -> None:
    fill(db, {**UNSETTLED, **SETTLED})
    (tmp_path / "purgeapp.py").write_text(
        "from sagakit import Saga\n\nother = Saga('other')\n\n\n"
        "@other.step\ndef noop(state, ctx):\n    return {}\n"
    )
    worker = subprocess.Popen(
        [
            *(sys.executable, "-m", "sagakit", "worker", "--db", db, "--app", "purgeapp"),
            *("--poll", "0.05", "--purge-older-than", "30d", "--purge-every", "0.2"),
        ],
        cwd=tmp_path,
        env=env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while left(db) != {*UNSETTLED, "old-failed", "recent-done"}:
            assert worker.poll() is None, worker.communicate()
            assert time.monotonic() < deadline, left(db)
            time.sleep(0.1)
        time.sleep(0.5)  # a few more turns take nothing else
        assert left(db) == {*UNSETTLED, "old-failed", "recent-done"}
    finally:
        worker.send_signal(signal.SIGTERM)
        _, err = worker.communicate(timeout=30)
    assert worker.returncode == 0, err
    assert "purged 3 settled runs last changed over 30d 00h ago" in err
