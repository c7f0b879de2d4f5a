"""``--log-format json``: a real worker's stderr, one JSON object per line.

A worker process (``sagakit worker --log-format json``) drives runs of a
card saga that retry, fail for good and compensate. Every line it writes on
stderr must be a JSON object; the records about a run carry its id, saga,
version, step, phase and attempt, the application's own records logged in a
step included; the card number (a sensitive field, quoted by the steps'
errors, a failure handler's traceback and a compensation's log) and the
password of a URL a step logs appear nowhere. The format may be given to the
worker, to the group, or by ``SAGAKIT_LOG_FORMAT``; a bad one is one line
and exit code 2.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from sagakit import Engine, RunStatus, Saga

from .helpers import env, fails, sagakit

pytestmark = pytest.mark.slow

CARD = "4929-0000-1111-2222"
PASSWORD = "hunter2-db-secret"

APP = f"""
import logging
from typing import Annotated

from pydantic import BaseModel

from sagakit import Next, PermanentError, RetryPolicy, Saga, Sensitive

log = logging.getLogger("logapp")


class Card(BaseModel):
    order: str
    card: Annotated[str, Sensitive()]


cards = Saga("log-card", state=Card)
FAST = RetryPolicy(max_attempts=3, initial_delay=0.05, jitter=0.0)


@cards.step(retry=FAST)
def hold(state, ctx):
    log.info("holding order %s", state.order)
    log.info("using postgresql://app:{PASSWORD}@db.internal/cards")
    if ctx.attempt == 1:
        raise ConnectionError(f"the bank timed out holding {{state.card}}")
    return {{}}


@hold.compensate
def release(state, ctx):
    ctx.log.info("releasing the hold on %s", state.card)


@cards.step
async def capture(state, ctx):
    if state.order.startswith("bad"):
        raise PermanentError(f"the card {{state.card}} is blocked")
    log.info("captured order %s", state.order)


@capture.on_failure
def declined(state, ctx, error):
    raise RuntimeError(f"the failure handler choked on {{state.card}}")
"""


@pytest.fixture
def app(tmp_path: Path) -> Saga[Any]:
    """The app module written to ``tmp_path``, and its saga as this test sees it."""
    path = tmp_path / "logapp.py"
    path.write_text(textwrap.dedent(APP))
    spec = importlib.util.spec_from_file_location(f"logapp_{tmp_path.name}", path)
    assert spec is not None
    assert spec.loader is not None
    module: ModuleType = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    saga: Saga[Any] = module.cards
    return saga


def worker(
    tmp_path: Path, db: Path, *before: str, after: tuple[str, ...] = (), **environ: str
) -> subprocess.Popen[str]:
    """``sagakit BEFORE worker ... AFTER`` serving ``logapp`` on ``db``."""
    served = ("--db", f"sqlite:///{db}", "--app", "logapp", "--poll", "0.05", "--lease", "5")
    return subprocess.Popen(
        [sys.executable, "-m", "sagakit", *before, "worker", *served, *after],
        cwd=tmp_path,
        env={**env(tmp_path), **environ},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def stop(proc: subprocess.Popen[str]) -> tuple[str, str]:
    proc.send_signal(signal.SIGTERM)
    try:
        out, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"the worker did not stop on SIGTERM:\n{out}\n{err}") from None
    assert proc.returncode == 0, f"exit {proc.returncode}\n{out}\n{err}"
    return out, err


def json_lines(err: str) -> list[dict[str, Any]]:
    """Every stderr line, each of which must be one JSON object."""
    lines = err.splitlines()
    assert lines, "the worker logged nothing"
    records = []
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            raise AssertionError(f"not a JSON line: {line!r}") from None
        assert isinstance(record, dict)
        assert {"time", "level", "logger", "message"} <= record.keys(), record
        records.append(record)
    return records


def drive(app: Saga[Any], db: Path, *orders: str) -> dict[str, RunStatus]:
    with Engine(f"sqlite:///{db}") as engine:
        for order in orders:
            engine.start(app, {"order": order, "card": CARD}, run_id=f"run-{order}")
        return {order: engine.wait(f"run-{order}", timeout=30.0).status for order in orders}


def test_every_record_of_a_json_worker_is_a_line_of_json_carrying_its_run(
    tmp_path: Path, app: Saga[Any]
) -> None:
    db = tmp_path / "runs.db"
    proc = worker(tmp_path, db, after=("--log-format", "json"))
    try:
        statuses = drive(app, db, "good", "bad")
    finally:
        out, err = stop(proc)
    assert statuses == {"good": RunStatus.COMPLETED, "bad": RunStatus.ROLLED_BACK}
    for secret in (CARD, PASSWORD):
        assert secret not in out + err, f"{secret!r} was logged:\n{err}"
    records = json_lines(err)

    def about(message: str, logger: str = "logapp") -> list[dict[str, Any]]:
        found = [r for r in records if message in r["message"] and r["logger"] == logger]
        assert found, f"no record {message!r} of {logger}:\n{err}"
        return found

    def call(record: dict[str, Any]) -> tuple[Any, ...]:
        names = ("run_id", "saga", "version", "step", "phase", "attempt")
        return tuple(record.get(name) for name in names)

    # The application's records, from a step's thread, carry the run and the attempt.
    assert sorted(call(r) for r in about("holding order")) == sorted(
        (f"run-{order}", "log-card", "1", "hold", "action", attempt)
        for order in ("good", "bad")
        for attempt in (1, 2)
    )
    assert [call(r) for r in about("captured order good")] == [
        ("run-good", "log-card", "1", "capture", "action", 1)
    ]
    # sagakit's record of each failed attempt: the run, the step, the attempt.
    retried = about("the bank timed out holding ***", "sagakit")
    assert sorted(call(r) for r in retried) == [
        ("run-bad", "log-card", "1", "hold", "action", 1),
        ("run-good", "log-card", "1", "hold", "action", 1),
    ]
    assert {r["level"] for r in retried} == {"INFO"}
    (blocked,) = about("the card *** is blocked", "sagakit")
    assert call(blocked) == ("run-bad", "log-card", "1", "capture", "action", 1)
    assert blocked["level"] == "WARNING"
    # The failure handler's traceback quoted the card: masked, and the type kept.
    (choked,) = about("the handler of step 'capture' failed", "sagakit")
    assert choked["exception"]["type"] == "RuntimeError"
    assert choked["exception"]["message"] == "the failure handler choked on ***"
    assert "Traceback" in choked["exception"]["traceback"]
    assert call(choked)[:4] == ("run-bad", "log-card", "1", "capture")
    # A compensation's ctx.log.
    (released,) = about("releasing the hold on ***", "sagakit")
    assert call(released) == ("run-bad", "log-card", "1", "hold", "compensation", 1)
    # The password of a URL a step logged is masked.
    assert about("using postgresql://app:***@db.internal/cards")
    # Records about no run carry no run fields; the worker's own start and stop.
    (started,) = [r for r in records if r["message"].startswith("worker ")][:1]
    assert "run_id" not in started
    assert started["time"].endswith("Z")


@pytest.mark.parametrize("how", ["group-option", "environment"])
def test_the_format_is_given_to_the_group_or_by_the_environment(
    tmp_path: Path, app: Saga[Any], how: str
) -> None:
    db = tmp_path / "runs.db"
    if how == "group-option":
        proc = worker(tmp_path, db, "--log-format", "json")
    else:
        proc = worker(tmp_path, db, SAGAKIT_LOG_FORMAT="json")
    try:
        assert drive(app, db, "good") == {"good": RunStatus.COMPLETED}
    finally:
        _, err = stop(proc)
    assert any(r.get("run_id") == "run-good" for r in json_lines(err))


def test_the_worker_s_option_wins_over_the_environment(tmp_path: Path, app: Saga[Any]) -> None:
    db = tmp_path / "runs.db"
    proc = worker(tmp_path, db, after=("--log-format", "text"), SAGAKIT_LOG_FORMAT="json")
    try:
        assert drive(app, db, "good") == {"good": RunStatus.COMPLETED}
    finally:
        _, err = stop(proc)
    assert not err.lstrip().startswith("{")
    assert "INFO logapp: holding order good" in err
    assert "using postgresql://app:***@db.internal/cards" in err
    assert PASSWORD not in err


@pytest.mark.parametrize(
    ("args", "environ"),
    [
        (("worker", "--db", "x.db", "--app", "logapp", "--log-format", "yaml"), {}),
        (("--log-format", "yaml", "list", "--db", "x.db"), {}),
        (("list", "--db", "x.db"), {"SAGAKIT_LOG_FORMAT": "yaml"}),
    ],
    ids=["worker-option", "group-option", "environment"],
)
def test_a_bad_format_is_one_line_and_exit_2(
    tmp_path: Path, app: Saga[Any], args: tuple[str, ...], environ: dict[str, str | None]
) -> None:
    err = fails(sagakit(tmp_path, *args, pythonpath=tmp_path, environ=environ), 2)
    errors = [line for line in err.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, err
    assert "--log-format" in errors[0]
    assert "'yaml' is not one of 'text', 'json'" in errors[0]
    assert not (tmp_path / "x.db").exists(), "nothing was created"


def test_a_command_logs_json_lines_with_verbose(tmp_path: Path) -> None:
    done = sagakit(tmp_path, "-v", "--log-format", "json", "demo", "--db", "demo.db")
    assert done.returncode == 0, done.stderr
    records = json_lines(done.stderr)
    compensating = [r for r in records if "compensating" in r["message"]]
    assert compensating, done.stderr
    for record in compensating:
        assert record["run_id"].endswith("-rollback")
        assert record["saga"] == "travel-itinerary"
        assert record["step"] == "book_hotel_paris"
    assert os.path.exists(tmp_path / "demo.db")
