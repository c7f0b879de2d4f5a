"""A real process SIGKILLed mid-step and mid-compensation, then recovered.

Each external effect must happen once (the ledger deduplicates by
idempotency key), finished steps and compensations must not run again, and
a crash must resume the run forward (or resume its rollback), never turn
into a failure.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from sagakit import Engine, EventKind, RunStatus

APP = Path(__file__).with_name("crashapp.py")
pytestmark = pytest.mark.slow


def app_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "CRASHAPP_LEDGER": str(tmp_path / "ledger.db"),
        "PYTHONPATH": os.pathsep.join([str(APP.parent), os.environ.get("PYTHONPATH", "")]),
        **extra,
    }


def start(tmp_path: Path, command: str, *args: str, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(APP), command, f"sqlite:///{tmp_path / 'runs.db'}", *args],
        env=app_env(tmp_path, **env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(path: Path, proc: subprocess.Popen[str], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"the app exited early: {proc.communicate()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{path.name} never appeared")
        time.sleep(0.02)


def kill(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    assert proc.stdout is not None
    assert proc.stderr is not None
    proc.stdout.close()
    proc.stderr.close()


def recover(tmp_path: Path, *, cli: bool = False) -> str:
    """Resume the killed process's runs in a new process: the app's own, or the CLI."""
    time.sleep(1.2)  # let the dead process's lease lapse
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    command = (
        [sys.executable, "-m", "sagakit", "recover", "--db", url, "--app", "crashapp"]
        if cli
        else [sys.executable, str(APP), "recover", url]
    )
    done = subprocess.run(
        command,
        env=app_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def ledger(tmp_path: Path) -> tuple[Counter[str], Counter[str]]:
    """(calls per step, effects per step)."""
    with sqlite3.connect(tmp_path / "ledger.db") as db:
        calls = Counter(what for (what,) in db.execute("SELECT what FROM calls"))
        effects = Counter(what for (what,) in db.execute("SELECT what FROM effects"))
    db.close()
    return calls, effects


def history(tmp_path: Path, run_id: str) -> list[str]:
    with Engine(f"sqlite:///{tmp_path / 'runs.db'}") as engine:
        return [f"{e.kind}:{e.step}:{e.attempt}" for e in engine.history(run_id)]


def status(tmp_path: Path, run_id: str) -> RunStatus:
    with Engine(f"sqlite:///{tmp_path / 'runs.db'}") as engine:
        return engine.get(run_id).status


def test_killed_in_the_middle_of_a_step_resumes_forward(tmp_path: Path) -> None:
    proc = start(tmp_path, "run", "r1", SAGAKIT_HANG="b")
    wait_for(tmp_path / "hanging", proc)
    kill(proc)
    assert status(tmp_path, "r1") == RunStatus.RUNNING  # nothing pretends it finished

    assert "run r1 recovered: now completed" in recover(tmp_path, cli=True)
    calls, effects = ledger(tmp_path)
    assert calls == Counter({"a": 1, "b": 2, "c": 1, "d": 1})  # only b, cut short, ran again
    assert effects == Counter({"a": 1, "b": 1, "c": 1, "d": 1})  # each effect happened once
    events = history(tmp_path, "r1")
    assert "step_started:b:1" in events
    assert "step_started:b:2" in events
    assert not any(e.startswith(("step_failed", "compensation")) for e in events)


def test_recovered_at_once_on_the_same_host_without_waiting_out_the_lease(
    tmp_path: Path,
) -> None:
    proc = start(tmp_path, "run", "r9", SAGAKIT_HANG="b", CRASHAPP_LEASE="300")
    wait_for(tmp_path / "hanging", proc)
    kill(proc)
    # No wait: the lease has five minutes to run, but its process is gone (its
    # pid reaped), which `sagakit recover` on the same host can tell.
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    done = subprocess.run(
        [sys.executable, "-m", "sagakit", "recover", "--db", url, "--app", "crashapp"],
        env=app_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "run r9 recovered: now completed" in done.stdout
    calls, effects = ledger(tmp_path)
    assert calls == Counter({"a": 1, "b": 2, "c": 1, "d": 1})
    assert effects == Counter({"a": 1, "b": 1, "c": 1, "d": 1})


def test_killed_in_the_middle_of_a_compensation_resumes_the_rollback(tmp_path: Path) -> None:
    proc = start(tmp_path, "run", "r2", SAGAKIT_FAIL="d", SAGAKIT_HANG="undo:b")
    wait_for(tmp_path / "hanging", proc)
    kill(proc)
    assert status(tmp_path, "r2") == RunStatus.COMPENSATING

    assert "r2 rolled_back" in recover(tmp_path)
    calls, effects = ledger(tmp_path)
    # c was undone before the crash and is not undone again; b is re-run
    # with the same key; a follows; the actions never run again.
    assert calls == Counter({"a": 1, "b": 1, "c": 1, "d": 1, "undo:c": 1, "undo:b": 2, "undo:a": 1})
    assert effects["undo:b"] == 1
    events = history(tmp_path, "r2")
    undo_order = [e for e in events if e.startswith("compensation_succeeded")]
    assert undo_order == [
        "compensation_succeeded:c:1",
        "compensation_succeeded:b:2",
        "compensation_succeeded:a:1",
    ]


def test_a_retry_timer_survives_a_crash(tmp_path: Path) -> None:
    proc = start(tmp_path, "run", "r3", SAGAKIT_FLAKY="c")
    wait_for(tmp_path / "waiting", proc)
    time.sleep(0.3)  # the failure (and its retry time) is committed
    kill(proc)
    with Engine(f"sqlite:///{tmp_path / 'runs.db'}") as engine:
        failed = next(e for e in engine.history("r3") if e.kind is EventKind.STEP_FAILED)
    retry_at = failed.data["retry_at"]
    assert retry_at == pytest.approx(failed.at + 5.0, abs=0.01)

    # Not due yet: recover leaves it (as a worker would) rather than hold it while it waits.
    assert "r3" not in recover(tmp_path)
    time.sleep(max(0.0, retry_at - 1.2 - time.time()))  # recover() waits 1.2 s first
    assert "r3 completed" in recover(tmp_path)
    with Engine(f"sqlite:///{tmp_path / 'runs.db'}") as engine:
        second = next(
            e
            for e in engine.history("r3")
            if e.kind is EventKind.STEP_STARTED and e.step == "c" and e.attempt == 2
        )
    # Neither reset (a fresh 5 s wait) nor lost (retried at once).
    assert retry_at <= second.at < retry_at + 4.0
