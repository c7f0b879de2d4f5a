"""Alerts are never lost: a worker SIGKILLed at the alert leaves it to another worker.

The hook of the first worker process kills its own process (SIGKILL, so
nothing is cleaned up), either before it has delivered anything or right
after, before the delivery is journaled. A second worker process then
delivers the alert: once per owed record as journaled, and, in the second
case, a second time on the wire (at least once, not exactly once).
"""

from __future__ import annotations

import importlib.util
import json
import signal
import subprocess
import textwrap
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from sagakit import Engine, EventKind, RunStatus

from .helpers import ok, sagakit, start_worker

PAGER = """
import os
import signal
from pathlib import Path

from sagakit import PermanentError, RetryPolicy, Saga

HERE = Path(__file__).parent
stuck = Saga("alert-stuck")


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
    first = not (HERE / "killed").exists()
    if first and os.environ.get("KILL_AT") == "before":
        (HERE / "killed").write_text(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)
    with open(HERE / "paged.txt", "a") as out:
        out.write(f"{report.idempotency_key} {os.getpid()}\\n")
    if first and os.environ.get("KILL_AT") == "after":
        (HERE / "killed").write_text(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)
"""

FAST = ("--lease", "1", "--alert-timeout", "1", "--on-attention", "pager:page")


def load_pager(tmp_path: Path) -> object:
    spec = importlib.util.spec_from_file_location("alert_pager_here", tmp_path / "pager.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def wait_until(check: object, timeout: float = 60.0) -> None:
    assert callable(check)
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def stop(proc: subprocess.Popen[str]) -> str:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    return err


@pytest.mark.slow
@pytest.mark.parametrize("kill_at", ["before", "after"])
def test_an_alert_cut_short_by_a_sigkill_is_delivered_by_another_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kill_at: str
) -> None:
    (tmp_path / "pager.py").write_text(textwrap.dedent(PAGER))
    monkeypatch.setenv("KILL_AT", kill_at)
    db = tmp_path / "runs.db"
    pager = load_pager(tmp_path)
    first = start_worker(tmp_path, db, *FAST, app="pager")
    second: subprocess.Popen[str] | None = None
    try:
        with Engine(f"sqlite:///{db}") as engine:
            engine.start(pager.stuck, {}, run_id="stuck-1")  # type: ignore[attr-defined]
            # The first worker drives the run until it halts, then dies in its hook.
            first.wait(timeout=60)
            assert first.returncode == -signal.SIGKILL
            assert engine.get("stuck-1").status == RunStatus.NEEDS_ATTENTION
            kinds = [e.kind for e in engine.history("stuck-1")]
            assert kinds[-1] is EventKind.NEEDS_ATTENTION  # owed, nothing journaled since

            second = start_worker(tmp_path, db, *FAST, app="pager")

            def journaled() -> bool:
                history = engine.history("stuck-1")
                return any(e.kind is EventKind.ALERT_SENT for e in history)

            wait_until(journaled)
            time.sleep(1.5)  # another poll or two: nothing more is delivered
            history = engine.history("stuck-1")
    finally:
        errors = stop(first) + (stop(second) if second is not None else "")
    assert "Traceback" not in errors
    halt = next(e for e in history if e.kind is EventKind.NEEDS_ATTENTION)
    sent = [e for e in history if e.kind is EventKind.ALERT_SENT]
    assert [(e.data["seq"], e.data["sink"], e.attempt) for e in sent] == [
        (halt.seq, "pager.page", 1)
    ]
    assert not [e for e in history if e.kind is EventKind.ALERT_FAILED]
    assert second is not None
    lines = (tmp_path / "paged.txt").read_text().splitlines()
    key = f"stuck-1/attention/{halt.seq}"
    if kill_at == "before":  # the first worker delivered nothing: exactly once
        assert lines == [f"{key} {second.pid}"]
    else:  # delivered, then killed before it was journaled: once more, same key
        assert lines == [f"{key} {first.pid}", f"{key} {second.pid}"]


def test_a_worker_posts_alerts_to_its_webhook_and_show_says_so(tmp_path: Path) -> None:
    posts: list[tuple[str, dict[str, object]]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            posts.append((self.headers["Idempotency-Key"], body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    port = server.server_address[1]
    (tmp_path / "pager.py").write_text(textwrap.dedent(PAGER))
    db = tmp_path / "runs.db"
    hook = f"http://bot:pa55word@127.0.0.1:{port}/hooks/T0KEN"
    proc = start_worker(tmp_path, db, "--alert-webhook", hook, app="pager")
    try:
        with Engine(f"sqlite:///{db}") as engine:
            engine.start(load_pager(tmp_path).stuck, {}, run_id="hooked")  # type: ignore[attr-defined]
            wait_until(lambda: bool(posts))
            wait_until(
                lambda: any(e.kind is EventKind.ALERT_SENT for e in engine.history("hooked"))
            )
    finally:
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=30)
        server.shutdown()
        server.server_close()
    shown = f"webhook http://127.0.0.1:{port}/..."
    assert [(key, body["idempotency_key"]) for key, body in posts] == [
        ("hooked/attention/9", "hooked/attention/9")
    ]
    done = sagakit(tmp_path, "show", "hooked", "--db", f"sqlite:///{db}")
    text = ok(done)
    assert f"alert: sent to {shown} at +" in text
    assert "alert sent" in text
    for printed in (text, *out):
        assert "pa55word" not in printed
        assert "T0KEN" not in printed
