"""``sagakit signal``, ``sagakit cancel`` and what ``show`` and ``list`` say about
paused and cancelled runs: the real command line, run as a subprocess on a
SQLite file, with the sagas of ``tripapp`` (``--app tripapp``).

The runs are made in this process with an engine; the commands then act on
the same file. A request made without ``--app`` is only recorded, and a
worker (here one in this process, on its own event loop) carries it out.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from integration.helpers import serving, wait_for_status
from sagakit import AsyncEngine, Engine, RunNotFound, RunStatus
from sagakit.store import Mail

from . import tripapp
from .helpers import ok

pytestmark = pytest.mark.slow

HERE = Path(__file__).parent
APP = ("--app", "tripapp")


def sagakit(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m sagakit ARGS --db runs.db`` in ``cwd``, with ``tripapp`` importable."""
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "PYTHONPATH": str(HERE)}
    return subprocess.run(
        [sys.executable, "-m", "sagakit", *args, "--db", "runs.db"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def error_line(done: subprocess.CompletedProcess[str], code: int) -> str:
    """The one ``Error:`` line of a refused command (and no traceback)."""
    assert done.returncode == code, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    assert "Traceback" not in done.stdout + done.stderr
    assert done.stdout == ""
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, done.stderr
    if code == 1:  # not a usage error: the message is all there is
        assert done.stderr.strip() == errors[0]
    return errors[0]


def url(where: Path) -> str:
    return f"sqlite:///{where / 'runs.db'}"


def status_of(where: Path, run_id: str) -> RunStatus:
    with Engine(url(where)) as engine:
        return engine.get(run_id).status


def journal_length(where: Path, run_id: str) -> int:
    with Engine(url(where)) as engine:
        return len(engine.history(run_id))


def unread_mail(where: Path, run_id: str) -> list[Mail]:
    async def read() -> list[Mail]:
        async with AsyncEngine(url(where)) as engine:
            return await engine.store.mail(run_id)

    return asyncio.run(read())


@pytest.fixture
def trips(tmp_path: Path) -> Path:
    """A folder whose ``runs.db`` holds two paused trips, a completed trip and a
    completed ticketed trip (past its pivot)."""
    with Engine(url(tmp_path)) as engine:
        for run_id in ("paused-1", "paused-2"):
            run = engine.run(tripapp.trip, {"london": "Ritz"}, run_id=run_id)
            assert run.status is RunStatus.PAUSED
        assert engine.run(tripapp.trip, {}, run_id="done-1").status is RunStatus.COMPLETED
        run = engine.run(tripapp.ticketed, {}, run_id="ticketed-1")
        assert run.status is RunStatus.COMPLETED
    return tmp_path


def in_order(text: str, *parts: str) -> None:
    """Each part occurs in ``text`` after the one before it."""
    at = 0
    for part in parts:
        found = text.find(part, at)
        assert found >= 0, f"{part!r} is not after {text[:at]!r} in\n{text}"
        at = found + len(part)


def row(text: str, step: str) -> list[str]:
    """The cells of the timeline line of ``step`` (its action, not its undo)."""
    line = next(line for line in text.splitlines() if line.split()[1:2] == [step])
    return line.split()


# -- signal ---------------------------------------------------------------------------


def test_signal_answers_a_paused_run_which_then_completes(trips: Path) -> None:
    payload = json.dumps({"london": "Savoy"})
    out = ok(sagakit(trips, "signal", "paused-1", "choose", "--payload", payload, *APP))

    in_order(
        out,
        "run paused-1",
        "london_hotel",
        "paused",
        tripapp.QUESTION,
        "signal received",
        "choose: retry the step",
        "paris_hotel",
        "status completed",
    )
    hotel = row(out, "london_hotel")
    assert (hotel[2], hotel[-1]) == ("2", "succeeded")  # two tries: before and after the pause
    assert "next:" not in out
    with Engine(url(trips)) as engine:
        run = engine.get("paused-1")
    assert run.status is RunStatus.COMPLETED
    assert run.state["london"] == "Savoy"
    assert run.state["london_booking"] == "Savoy"
    assert run.state["paris_booking"] == "Lutetia"


def test_signal_with_a_payload_that_is_not_a_json_object_is_a_usage_error(trips: Path) -> None:
    before = journal_length(trips, "paused-1")
    line = error_line(
        sagakit(trips, "signal", "paused-1", "choose", "--payload", "{london: Savoy}", *APP), 2
    )
    assert "--payload" in line
    assert "not JSON" in line
    line = error_line(
        sagakit(trips, "signal", "paused-1", "choose", "--payload", '["Savoy"]', *APP), 2
    )
    assert "--payload" in line
    assert "must be a JSON object" in line
    assert status_of(trips, "paused-1") is RunStatus.PAUSED
    assert journal_length(trips, "paused-1") == before
    assert unread_mail(trips, "paused-1") == []


def test_signal_that_does_not_answer_the_question_is_refused(trips: Path) -> None:
    before = journal_length(trips, "paused-1")
    line = error_line(sagakit(trips, "signal", "paused-1", "give_up", *APP), 1)
    assert "cannot signal 'give_up'" in line
    assert tripapp.QUESTION in line
    assert "answered by the signals 'choose'" in line
    assert status_of(trips, "paused-1") is RunStatus.PAUSED
    assert journal_length(trips, "paused-1") == before
    assert unread_mail(trips, "paused-1") == []


def test_signal_or_cancel_of_an_unknown_run_says_it_is_not_found(trips: Path) -> None:
    line = error_line(sagakit(trips, "signal", "trip-404", "choose", *APP), 1)
    assert "no run with id 'trip-404'" in line
    line = error_line(sagakit(trips, "cancel", "trip-404", "--reason", "why"), 1)
    assert "no run with id 'trip-404'" in line


# -- cancel ---------------------------------------------------------------------------


def test_cancel_of_a_completed_run_compensates_its_steps(trips: Path) -> None:
    out = ok(sagakit(trips, "cancel", "done-1", "--reason", "customer changed plans", *APP))

    in_order(
        out,
        "paris_hotel",
        "cancel requested",
        "customer changed plans",
        "rollback started",
        "cancelled; undoing what took effect",
        "undo london_hotel",
        "undo flight",
        "status cancelled",
    )
    assert "undo paris_hotel" not in out  # it has no compensation
    assert row(out, "flight")[-1] == "compensated"
    assert row(out, "london_hotel")[-1] == "compensated"
    with Engine(url(trips)) as engine:
        run = engine.get("done-1")
    assert run.status is RunStatus.CANCELLED
    assert run.state["flight"] is None
    assert run.state["london_booking"] is None
    assert run.state["undo_reason"] == "cancel"
    assert run.state["cancel_reason"] == "customer changed plans"


def test_cancel_after_the_pivot_is_refused_unless_forced(trips: Path) -> None:
    before = journal_length(trips, "ticketed-1")
    line = error_line(sagakit(trips, "cancel", "ticketed-1", *APP), 1)
    assert "passed its pivot step 'issue_ticket'" in line
    assert "--force" in line
    assert status_of(trips, "ticketed-1") is RunStatus.COMPLETED
    assert journal_length(trips, "ticketed-1") == before

    out = ok(sagakit(trips, "cancel", "ticketed-1", "--force", "--reason", "strike", *APP))
    in_order(out, "cancel requested", "strike (forced)", "undo book_hotel", "undo book_flight")
    assert "undo issue_ticket" not in out
    assert "undo send_email" not in out
    assert "status cancelled" in out
    assert status_of(trips, "ticketed-1") is RunStatus.CANCELLED


def test_without_the_app_a_cancel_and_a_signal_are_left_for_a_worker(trips: Path) -> None:
    out = ok(sagakit(trips, "cancel", "paused-1", "--reason", "no hotel wanted"))
    assert "cancel recorded for run paused-1; it is paused" in out
    assert "will be acted on by a worker serving saga cli-trip" in out
    assert "next: answer it" not in out  # not the timeline of a run still waiting
    payload = json.dumps({"london": "Savoy"})
    out = ok(sagakit(trips, "signal", "paused-2", "choose", "--payload", payload))
    assert "signal choose recorded for run paused-2; it is paused" in out
    assert "its payload is not checked here (--app checks it now)" in out

    # Only recorded: the runs are still paused, their requests wait as mail.
    for run_id in ("paused-1", "paused-2"):
        assert status_of(trips, run_id) is RunStatus.PAUSED
    (cancel,) = unread_mail(trips, "paused-1")
    assert (cancel.kind, cancel.data["reason"]) == ("cancel", "no hotel wanted")
    (signal,) = unread_mail(trips, "paused-2")
    assert signal.kind == "signal"
    assert signal.data == {"name": "choose", "payload": {"london": "Savoy"}}
    with Engine(url(trips)) as engine:
        kinds = [str(e.kind) for e in engine.history("paused-1")]
    assert "cancel_requested" not in kinds

    with serving(url(trips), tripapp.trip), Engine(url(trips)) as engine:
        cancelled = wait_for_status(engine, "paused-1", RunStatus.CANCELLED)
        completed = wait_for_status(engine, "paused-2", RunStatus.COMPLETED)
    assert cancelled.state["flight"] is None
    assert cancelled.state["cancel_reason"] == "no hotel wanted"
    assert completed.state["london_booking"] == "Savoy"
    assert unread_mail(trips, "paused-1") == []
    assert unread_mail(trips, "paused-2") == []


# -- show and list --------------------------------------------------------------------


def test_requests_not_yet_acted_on_are_shown_by_show_history_and_list(trips: Path) -> None:
    # Without --app the requests are only recorded: the statuses stay as they
    # were, and every view of the run says what waits for it.
    ok(sagakit(trips, "cancel", "done-1", "--reason", "customer changed mind"))
    ok(sagakit(trips, "signal", "paused-2", "choose", "--payload", '{"london": "Savoy"}'))
    before = journal_length(trips, "done-1"), unread_mail(trips, "done-1")

    shown = ok(sagakit(trips, "show", "done-1"))
    assert "completed" in shown
    in_order(shown, "pending: cancel requested at ", '(reason "customer changed mind")')
    assert "not acted on yet" in shown
    history = ok(sagakit(trips, "history", "paused-2"))
    assert 'pending: signal "choose" received at ' in history
    assert "Savoy" not in history  # a payload may be sensitive: only its name is shown
    listed = ok(sagakit(trips, "list"))
    lines = {line.split()[0]: line for line in listed.splitlines()[2:] if line.strip()}
    assert "completed (cancel pending)" in lines["done-1"]
    assert "paused (signal pending)" in lines["paused-2"]
    assert "pending" not in lines["paused-1"]
    assert "pending" not in ok(sagakit(trips, "show", "paused-1"))
    # Reading changed nothing: the mail still waits, the journal is as it was.
    assert (journal_length(trips, "done-1"), unread_mail(trips, "done-1")) == before

    # Once a worker acts on them, nothing is pending any more.
    with serving(url(trips), tripapp.trip), Engine(url(trips)) as engine:
        wait_for_status(engine, "done-1", RunStatus.CANCELLED)
        wait_for_status(engine, "paused-2", RunStatus.COMPLETED)
        assert engine.pending("done-1") == []
        assert engine.get("done-1").pending == 0
    assert "pending" not in ok(sagakit(trips, "show", "done-1"))
    assert "pending" not in ok(sagakit(trips, "list"))


def test_pending_of_an_unknown_run_is_run_not_found(trips: Path) -> None:
    with Engine(url(trips)) as engine, pytest.raises(RunNotFound, match="nope"):
        engine.pending("nope")


def test_show_of_a_paused_run_asks_its_question_and_says_how_to_answer(trips: Path) -> None:
    out = ok(sagakit(trips, "show", "paused-1"))
    in_order(out, "flight", "london_hotel", "paused", tripapp.QUESTION, "[answer: choose]")
    assert row(out, "flight")[-1] == "succeeded"
    assert row(out, "london_hotel")[-1] == "paused"
    assert "status paused" in out
    assert "next: answer it with sagakit signal paused-1 NAME --payload '{...}'" in out
    assert 'sagakit cancel paused-1 --reason "why"' in out


def test_show_of_a_cancelled_run_gives_the_reason(trips: Path) -> None:
    ok(sagakit(trips, "cancel", "paused-1", "--reason", "found a cheaper trip", *APP))
    out = ok(sagakit(trips, "show", "paused-1"))
    in_order(
        out,
        "paused",
        tripapp.QUESTION,
        "cancel requested",
        "found a cheaper trip",
        "rollback started",
        "undo flight",
        "status cancelled",
    )
    # The hotel step paused and was never answered: not shown as failed.
    assert row(out, "london_hotel")[-1] == "paused"
    assert row(out, "flight")[-1] == "compensated"
    assert "undo london_hotel" not in out  # it never took effect
    assert "next:" not in out


def test_list_of_paused_runs(trips: Path) -> None:
    out = ok(sagakit(trips, "list", "--status", "paused"))
    listed = {line.split()[0] for line in out.splitlines()[2:]}
    assert listed == {"paused-1", "paused-2"}
    assert "cli-trip v1" in out
