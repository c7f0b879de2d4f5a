"""``by=`` on the operator's actions: who retried, resolved, cancelled or signalled.

Each action journals it (on every store), the timeline carries it in
`Mark.by`, ``sagakit show`` labels the mark with it, and a name that is
empty, too long or not one printable line is refused with nothing journaled.
"""

from __future__ import annotations

from typing import Any

import pytest
from rich.console import Console

from sagakit import Engine, Next, Pause, PermanentError, RunStatus, Saga, Signal, StepContext
from sagakit.errors import SagaError
from sagakit.timeline import build_timeline, mark_label, render_timeline

BROKEN: set[str] = set()

undo_fails: Saga[Any] = Saga("by-undo-fails")


@undo_fails.step
def reserve(state: dict[str, Any], ctx: StepContext) -> None:
    return None


@reserve.compensate
def release(state: dict[str, Any], ctx: StepContext) -> None:
    if ctx.run_id in BROKEN:
        raise PermanentError("release refused")


@undo_fails.step
def charge(state: dict[str, Any], ctx: StepContext) -> None:
    raise PermanentError("declined")


asks: Saga[Any] = Saga("by-asks")


@asks.step
def book(state: dict[str, Any], ctx: StepContext) -> None:
    return None


@book.compensate
def unbook(state: dict[str, Any], ctx: StepContext) -> None:
    return None


@asks.step
def confirm(state: dict[str, Any], ctx: StepContext) -> None:
    raise Pause("go on?", options=["yes"])


@confirm.on_signal
def answered(state: dict[str, Any], ctx: StepContext, signal: Signal) -> Next:
    return Next.CONTINUE


def stuck(engine: Engine, run_id: str) -> None:
    BROKEN.add(run_id)
    engine.register(undo_fails, asks)
    assert engine.run(undo_fails, {}, run_id=run_id).status is RunStatus.NEEDS_ATTENTION


def shown(engine: Engine, run_id: str) -> str:
    console = Console(width=200, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    console.print(render_timeline(build_timeline(engine.history(run_id), engine.get(run_id))))
    console.file.close()
    return console.export_text()


def test_retry_and_resolve_journal_who(engine: Engine) -> None:
    stuck(engine, "r1")
    assert engine.retry("r1", note="try again", by="dashboard:alice").status is (
        RunStatus.NEEDS_ATTENTION
    )
    done = engine.resolve("r1", note="released by hand", by="dashboard:bob")
    assert done.status is RunStatus.ROLLED_BACK
    marks = build_timeline(engine.history("r1")).operator_actions
    assert [(m.kind.value, m.by, m.text) for m in marks] == [
        ("retried", "dashboard:alice", "try again"),
        ("resolved", "dashboard:bob", "released by hand"),
    ]
    text = shown(engine, "r1")
    assert "retried by dashboard:alice" in text
    assert "resolved by dashboard:bob" in text


def test_cancel_and_signal_journal_who(engine: Engine) -> None:
    engine.register(asks)
    assert engine.run(asks, {}, run_id="a1").status is RunStatus.PAUSED
    assert engine.signal("a1", "yes", by="dashboard:carol").status is RunStatus.COMPLETED
    assert engine.cancel("a1", reason="changed mind", by="dashboard:dan").status is (
        RunStatus.CANCELLED
    )
    timeline = build_timeline(engine.history("a1"))
    who = {m.kind.value: m.by for m in timeline.marks if m.by is not None}
    assert who == {"signal_received": "dashboard:carol", "cancel_requested": "dashboard:dan"}
    labels = [mark_label(m) for m in timeline.marks]
    assert "signal received by dashboard:carol" in labels
    assert "cancel requested by dashboard:dan" in labels


def test_without_by_marks_name_the_operator_as_before(engine: Engine) -> None:
    stuck(engine, "r2")
    BROKEN.discard("r2")
    assert engine.retry("r2").status is RunStatus.ROLLED_BACK
    (mark,) = build_timeline(engine.history("r2")).operator_actions
    assert mark.by is None
    assert mark_label(mark) == "retried by operator"


@pytest.mark.parametrize("by", ["", "   ", "x" * 201, "alice\nbob", "a\x1b[2J"])
def test_a_bad_name_is_refused_and_nothing_is_journaled(engine: Engine, by: str) -> None:
    stuck(engine, "r3")
    before = len(engine.history("r3"))
    with pytest.raises(SagaError, match="by="):
        engine.retry("r3", by=by)
    with pytest.raises(SagaError, match="by="):
        engine.resolve("r3", note="x", by=by)
    with pytest.raises(SagaError, match="by="):
        engine.cancel("r3", by=by)
    with pytest.raises(SagaError, match="by="):
        engine.signal("r3", "yes", by=by)
    assert len(engine.history("r3")) == before
    assert engine.get("r3").pending == 0
