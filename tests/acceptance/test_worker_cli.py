"""``sagakit worker`` and ``sagakit migrate`` as real processes.

The test starts runs with `Engine.start` and a worker process drives them;
SIGTERM stops the worker gracefully (exit 0): a step in flight finishes and
is recorded, and its run is handed back for the next worker.
"""

from __future__ import annotations

import importlib.util
import json
import re
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from sagakit import Engine, RunStatus, Saga

from .helpers import env, start_worker

pytestmark = pytest.mark.slow

APP = """
import asyncio
import time
from pathlib import Path

from sagakit import Saga

HERE = Path(__file__).parent
orders = Saga("cli-order")


@orders.step
async def reserve(state, ctx):
    await asyncio.sleep(0.01)
    return {"reserved": True}


@orders.step
def charge(state, ctx):
    if state.get("hang"):
        (HERE / "hanging").write_text(ctx.run_id)
        time.sleep(3600)
    if state.get("slow"):
        (HERE / "charging").write_text(ctx.run_id)
        time.sleep(1.0)  # SIGTERM arrives here
    with open(HERE / "charges.log", "a") as log:
        log.write(ctx.run_id + "\\n")
    return {"charged": True}


@orders.step
def ship(state, ctx):
    return {"shipped": True}
"""


@pytest.fixture
def app(tmp_path: Path) -> Saga[Any]:
    """The app module written to ``tmp_path``, and its saga as this test sees it."""
    path = tmp_path / "workerapp.py"
    path.write_text(textwrap.dedent(APP))
    spec = importlib.util.spec_from_file_location(f"workerapp_{tmp_path.name}", path)
    assert spec is not None
    assert spec.loader is not None
    module: ModuleType = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    saga: Saga[Any] = module.orders
    return saga


def terminate(proc: subprocess.Popen[str]) -> tuple[str, str]:
    """SIGTERM the worker; it must stop by itself, with exit code 0."""
    proc.send_signal(signal.SIGTERM)
    try:
        out, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"the worker did not stop on SIGTERM:\n{out}\n{err}") from None
    assert proc.returncode == 0, f"exit {proc.returncode}\n{out}\n{err}"
    assert "Traceback" not in err
    return out, err


def wait_for(path: Path, proc: subprocess.Popen[str], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"the worker exited early: {proc.communicate()}")
        assert time.monotonic() < deadline, f"{path.name} never appeared"
        time.sleep(0.02)


def test_a_worker_process_drives_started_runs_and_stops_on_sigterm(
    tmp_path: Path, app: Saga[Any]
) -> None:
    db = tmp_path / "runs.db"  # does not exist yet: the worker creates it
    proc = start_worker(tmp_path, db, "--concurrency", "4")
    try:
        with Engine(f"sqlite:///{db}") as engine:
            ids = [f"order-{n}" for n in range(20)]
            for run_id in ids:
                assert engine.start(app, {"n": run_id}, run_id=run_id).status == "pending"
            runs = [engine.wait(run_id, timeout=30.0) for run_id in ids]
    finally:
        out, err = terminate(proc)
    assert {run.status for run in runs} == {RunStatus.COMPLETED}
    assert runs[0].state == {"n": "order-0", "reserved": True, "charged": True, "shipped": True}
    assert sorted((tmp_path / "charges.log").read_text().split()) == sorted(ids)
    assert "serving cli-order v1" in out
    assert "up to 4 runs at once" in out
    assert "worker" in err
    assert "stopped: 20 runs claimed, 20 finished" in err


HOSTILE_APP = """
from sagakit import Saga

hostile = Saga("hostile")


@hostile.step
def pay(state, ctx):
    raise RuntimeError("declined\\x1b[2J\\nWARNING forged line")
"""


def test_the_worker_log_escapes_what_steps_raise(tmp_path: Path) -> None:
    (tmp_path / "hostileapp.py").write_text(textwrap.dedent(HOSTILE_APP))
    db = tmp_path / "runs.db"
    proc = start_worker(tmp_path, db, app="hostileapp")
    try:
        with Engine(f"sqlite:///{db}") as engine:
            name = f"hostileapp_{tmp_path.name}"
            spec = importlib.util.spec_from_file_location(name, tmp_path / "hostileapp.py")
            assert spec is not None
            assert spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            engine.start(module.hostile, {}, run_id="r1")
            run = engine.wait("r1", timeout=30.0)
    finally:
        _, err = terminate(proc)
    assert run.status == RunStatus.FAILED
    assert "\x1b" not in err
    assert "declined\\x1b[2J\\nWARNING forged line" in err
    assert not any(line.startswith("WARNING forged") for line in err.splitlines())


def test_sigterm_mid_step_lets_it_finish_and_hands_the_run_to_the_next_worker(
    tmp_path: Path, app: Saga[Any]
) -> None:
    db = tmp_path / "runs.db"
    url = f"sqlite:///{db}"
    first = start_worker(tmp_path, db)
    try:
        with Engine(url) as engine:
            engine.start(app, {"slow": True}, run_id="order-slow")
        wait_for(tmp_path / "charging", first)
    finally:
        _, err = terminate(first)
    assert "SIGTERM: stopping" in err
    assert "1 handed back" in err
    with Engine(url) as engine:
        run = engine.get("order-slow")
        assert run.status == RunStatus.RUNNING
        assert run.owner is None  # handed back, not left for its lease to lapse
        events = [f"{e.kind}:{e.step}" for e in engine.history("order-slow")]
        assert events[-1] == "step_succeeded:charge"  # the charge in flight was recorded

    second = start_worker(tmp_path, db)
    try:
        with Engine(url) as engine:
            assert engine.wait("order-slow", timeout=30.0).status == RunStatus.COMPLETED
            events = [f"{e.kind}:{e.step}" for e in engine.history("order-slow")]
    finally:
        terminate(second)
    assert events.count("step_started:charge") == 1  # not charged twice
    assert (tmp_path / "charges.log").read_text().split() == ["order-slow"]


def test_a_second_sigterm_stops_at_once_and_releases_the_run(
    tmp_path: Path, app: Saga[Any]
) -> None:
    db = tmp_path / "runs.db"
    url = f"sqlite:///{db}"
    proc = start_worker(tmp_path, db, "--grace", "60")
    try:
        with Engine(url) as engine:
            engine.start(app, {"hang": True}, run_id="order-stuck")
        wait_for(tmp_path / "hanging", proc)
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        assert proc.poll() is None  # waiting out its grace for the stuck charge
    finally:
        began = time.monotonic()
        _, err = terminate(proc)  # the second signal
    assert time.monotonic() - began < 10.0  # not the hour the charge would take
    assert "SIGTERM again: stopping at once" in err
    assert "still running on threads" in err
    with Engine(url) as engine:
        run = engine.get("order-stuck")
    assert run.status == RunStatus.RUNNING
    assert run.owner is None  # released: the next worker takes it without waiting


def test_the_worker_needs_an_app_and_says_what_is_wrong(tmp_path: Path) -> None:
    def worker(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "sagakit", "worker", "--db", "runs.db", *args],
            cwd=tmp_path,
            env=env(tmp_path),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    missing = worker()
    assert missing.returncode == 2
    assert "--app" in missing.stderr
    unknown = worker("--app", "no_such_module_here")
    assert unknown.returncode == 2
    assert "cannot import 'no_such_module_here'" in unknown.stderr
    assert not (tmp_path / "runs.db").exists()


def migrate(cwd: Path, db: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sagakit", "migrate", "--db", db],
        cwd=cwd,
        env=env(cwd),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_migrate_creates_a_fresh_database_then_finds_it_up_to_date(tmp_path: Path) -> None:
    first = migrate(tmp_path, "fresh.db")
    assert first.returncode == 0, first.stderr
    done = re.search(
        r"schema version (\d+) -> (\d+)|schema is up to date \(version (\d+)\)", first.stdout
    )
    assert done is not None, first.stdout
    version = done.group(2) or done.group(3)
    assert (tmp_path / "fresh.db").is_file()
    again = migrate(tmp_path, "sqlite:///fresh.db")
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == f"schema is up to date (version {version})"
    with Engine(f"sqlite:///{tmp_path / 'fresh.db'}") as engine:
        assert engine.runs() == []  # a database the engine can use as it is


def test_migrate_refuses_a_schema_newer_than_this_sagakit(tmp_path: Path) -> None:
    assert migrate(tmp_path, "runs.db").returncode == 0
    with sqlite3.connect(tmp_path / "runs.db") as db:
        db.execute("UPDATE schema_version SET version = 999")
    db.close()
    refused = migrate(tmp_path, "runs.db")
    assert refused.returncode == 1
    assert "newer than this sagakit supports" in refused.stderr
    assert "Traceback" not in refused.stderr


PAGER = """
import json
from pathlib import Path

from sagakit import PermanentError, RetryPolicy, Saga

HERE = Path(__file__).parent
stuck = Saga("cli-stuck")


@stuck.step
def book(state, ctx):
    return {"booked": True}


@book.compensate(retry=RetryPolicy(max_attempts=1))
def unbook(state, ctx):
    raise RuntimeError("the booking service is down")


@stuck.step
def pay(state, ctx):
    raise PermanentError("card declined")


def page(report):
    (HERE / "paged.json").write_text(json.dumps({
        "run": report.run.id,
        "step": report.step,
        "cause": report.cause.message,
        "errors": [error.message for error in report.errors],
    }))
"""


def test_a_worker_calls_the_on_attention_hook_it_is_given(tmp_path: Path) -> None:
    (tmp_path / "pager.py").write_text(textwrap.dedent(PAGER))
    db = tmp_path / "runs.db"
    proc = start_worker(tmp_path, db, "--on-attention", "pager:page", app="pager")
    try:
        spec = importlib.util.spec_from_file_location("pager_here", tmp_path / "pager.py")
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        with Engine(f"sqlite:///{db}") as engine:
            engine.start(module.stuck, {}, run_id="stuck-1")
        wait_for(tmp_path / "paged.json", proc)
    finally:
        terminate(proc)
    assert json.loads((tmp_path / "paged.json").read_text()) == {
        "run": "stuck-1",
        "step": "book",
        "cause": "card declined",
        "errors": ["card declined", "the booking service is down"],
    }


def test_a_bad_on_attention_hook_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "pager.py").write_text(textwrap.dedent(PAGER))
    done = subprocess.run(
        [sys.executable, "-m", "sagakit", "worker", "--app", "pager", "--on-attention", "pager"],
        cwd=tmp_path,
        env=env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "Invalid value for --on-attention: 'pager' is not MODULE:FUNCTION" in done.stderr


def test_the_worker_tunes_its_own_processs_garbage_collector() -> None:
    """Done by the worker command, which owns its process; never by the library."""
    import gc

    from sagakit.cli.worker import _tune_garbage_collector

    before = gc.get_threshold()
    try:
        _tune_garbage_collector()
        assert gc.get_freeze_count() > 0  # start-up's objects are out of full collections
        assert gc.get_threshold() == (10_000, before[1], before[2])
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
