"""What a run's mail does: cancel requests and signals posted by other processes.

The driver reads a run's mail when the store says some waits (see
`RunWriter.unread_mail`); `take` says what to journal for one message: a
cancel taken or refused, a signal merged into the state or answering a pause,
through the step's signal handler. The commit that journals it consumes it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from sagakit import core, runlog
from sagakit.control import Next, Pause, Signal
from sagakit.definition import Saga
from sagakit.driver.calls import Ask
from sagakit.driver.writer import Entry
from sagakit.errors import StateError
from sagakit.journal import JSON, ErrorInfo, EventKind, Phase
from sagakit.redaction import Redactor
from sagakit.store import Mail


async def take(
    mail: Mail,
    *,
    saga: Saga[Any],
    plan: core.Plan,
    progress: core.Progress,
    clock: Callable[[], float],
    ask: Ask,
    log: logging.LoggerAdapter[Any],
) -> list[Entry]:
    """The events that journal what ``mail`` does to the run, in order.

    Args:
        mail: The message, not read before.
        saga: The run's saga (its state model and signal handlers).
        plan: The run's plan.
        progress: The run's progress, with the messages read before it journaled.
        clock: The engine's clock (the time a signal is received).
        ask: Calls a step's signal handler.
        log: The run's logger.
    """
    if mail.kind == "cancel":
        return [_take_cancel(mail, plan, progress, log)]
    if mail.kind == "signal":
        return await _take_signal(mail, saga=saga, progress=progress, clock=clock, ask=ask, log=log)
    log.error("run %s: dropping mail of unknown kind %r", mail.run_id, mail.kind)
    return []


def withdrawals(calls: Sequence[core.Invoke]) -> list[Entry]:
    """The events that withdraw ``calls``, journaled but not yet made, after a cancel."""
    return [(EventKind.STEP_WITHDRAWN, call.step, call.attempt, None) for call in calls]


def _take_cancel(
    mail: Mail, plan: core.Plan, progress: core.Progress, log: logging.LoggerAdapter[Any]
) -> Entry:
    reason = mail.data.get("reason")
    force = bool(mail.data.get("force"))
    # Who asked (a dashboard's user), journaled with what was done about it.
    by: JSON = {"by": mail.data["by"]} if mail.data.get("by") else {}
    refusal = core.cancel_refusal(plan, progress, force=force)
    if refusal is not None:
        log.warning("run %s: cancel refused: %s", mail.run_id, refusal)
        return (EventKind.CANCEL_REFUSED, None, None, {"reason": reason, "why": refusal, **by})
    log.warning("run %s: cancel requested (%s)", mail.run_id, reason or "no reason given")
    return (EventKind.CANCEL_REQUESTED, None, None, {"reason": reason, "force": force, **by})


async def _take_signal(
    mail: Mail,
    *,
    saga: Saga[Any],
    progress: core.Progress,
    clock: Callable[[], float],
    ask: Ask,
    log: logging.LoggerAdapter[Any],
) -> list[Entry]:
    name = str(mail.data.get("name"))
    payload = mail.data.get("payload") or {}
    data: JSON = {"name": name, "payload": payload}
    if mail.data.get("by"):
        data["by"] = mail.data["by"]
    if progress.status.terminal:
        data["ignored"] = f"the run had already finished as {progress.status.value}"
        return [(EventKind.SIGNAL_RECEIVED, None, None, data)]
    try:
        saga.check_signal(progress.state, name, payload)
    except StateError as exc:
        # pydantic quotes the value it refused: a sensitive one is masked here,
        # since this text is journaled (in clear, like every error) and logged.
        why = Redactor(saga.sensitive).collect(payload, progress.state).text(str(exc))
        data["ignored"] = f"its payload does not fit the state: {why}"
        log.error("run %s: signal %r ignored: %s", mail.run_id, name, why)
        return [(EventKind.SIGNAL_RECEIVED, None, None, data)]
    paused = progress.paused
    step = paused.get("step") if paused else None
    options = paused.get("options") if paused else None
    answers = (
        paused is not None
        and isinstance(step, str)
        and paused.get("waiting_for") is None
        and (not options or name in options)
    )
    if not answers:  # merged into the state, kept for a step that waits for it
        return [(EventKind.SIGNAL_RECEIVED, None, None, data)]
    assert isinstance(step, str)
    handler = saga[step].signal_handler
    call = core.Invoke(Phase.ACTION, step, progress.attempts(Phase.ACTION, step).started)
    answer: Next | Pause | None = Next.RETRY
    if handler is not None:
        # The handler sees the state with the payload merged, as the step will.
        saved = progress.state
        # The trackers cover the payload's keys too (more is harmless), should
        # anything read them while the handler runs.
        core.track(progress, payload)
        progress.state = {**saved, **payload}
        try:
            answer = await ask(handler, call, Signal(name, payload, clock()))
        finally:
            progress.state = saved
    if isinstance(answer, Pause):
        return [
            (EventKind.SIGNAL_RECEIVED, None, None, data),
            (EventKind.PAUSED, step, None, answer.to_json()),
        ]
    data["decision"] = (answer or Next.RETRY).value
    if answer is Next.COMPENSATE and progress.attempts(Phase.ACTION, step).error is None:
        data["error"] = ErrorInfo(
            type="sagakit.Declined",
            message=f"the signal {name!r} answered the pause with compensate",
            step=step,
        ).to_json()
    log.info(
        "run %s: signal %r: %s step %r",
        mail.run_id,
        name,
        data["decision"],
        step,
        extra=runlog.at(step),
    )
    return [(EventKind.SIGNAL_RECEIVED, None, None, data)]
