"""What to journal of how a call ended.

A success records the result (and what of it the state keeps); a failure
records the error with the time of the next attempt, computed with the step's
retry policy and a random jitter, and, once it is final, what the step's
failure handler answered; a pause records the pause. Each function returns
the events for the driver to journal, in order.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from sagakit import core, runlog
from sagakit.control import Next, Pause
from sagakit.definition import Saga
from sagakit.driver.calls import Ask, Outcome
from sagakit.driver.writer import Entry
from sagakit.journal import FAILED, JSON, SUCCEEDED, EventKind, Phase


def succeeded(outcome: Outcome) -> Entry:
    """The event that records a call's success (``outcome.error`` is None)."""
    call = outcome.call
    return (
        SUCCEEDED[call.phase],
        call.step,
        call.attempt,
        (
            {"result": outcome.result}
            if outcome.merged is None
            else {"result": outcome.result, "state": outcome.merged}
        ),
    )


def paused(outcome: Outcome, pause: Pause, log: logging.LoggerAdapter[Any], run_id: str) -> Entry:
    """The event that records an action's ``pause`` (``outcome.pause``)."""
    call = outcome.call
    log.info(
        "run %s: step %r paused: %s",
        run_id,
        call.step,
        pause,
        extra=runlog.at(call.step, call.phase.value, call.attempt),
    )
    return (EventKind.PAUSED, call.step, call.attempt, pause.to_json())


async def failed(
    outcome: Outcome,
    *,
    saga: Saga[Any],
    plan: core.Plan,
    progress: core.Progress,
    clock: Callable[[], float],
    random: Callable[[], float],
    ask: Ask,
    log: logging.LoggerAdapter[Any],
    run_id: str,
) -> list[Entry]:
    """The events that record a call's failure (``outcome.error`` is set).

    Args:
        outcome: How the call ended.
        saga: The run's saga (the step's retry policies and failure handler).
        plan: The run's plan.
        progress: The run's progress.
        clock: The engine's clock.
        random: A number in [0, 1) for the retry delay's jitter.
        ask: Calls the step's failure handler, once the failure is final.
        log: The run's logger.
        run_id: The run's id.
    """
    call = outcome.call
    error = outcome.error
    assert error is not None
    final = core.is_final_failure(
        plan, progress, call.phase, call.step, permanent=outcome.permanent
    )
    step = saga[call.step]
    policy = step.retry_policy if call.phase is Phase.ACTION else step.compensation_retry
    retry_at: float | None = None
    if not final:
        failures = progress.attempts(call.phase, call.step).failures + 1
        retry_at = clock() + policy.delay(failures, random())
    data: JSON = {
        "error": error.to_json(),
        "permanent": outcome.permanent,
        "unknown": outcome.unknown,
        "retry_at": retry_at,
    }
    pause: Pause | None = None
    if final and call.phase is Phase.ACTION and step.failure_handler is not None:
        answer = await ask(step.failure_handler, call, error)
        if isinstance(answer, Pause):
            pause = answer
            data["handled"] = core.PAUSE
        elif answer is Next.RETRY:
            data["handled"] = core.RETRY
            data["retry_at"] = clock() + policy.delay(1, random())
        elif answer is Next.CONTINUE:
            data["handled"] = core.CONTINUE
    handled = data.get("handled")
    log.log(
        logging.WARNING if final else logging.INFO,
        "run %s: %s; %s",
        run_id,
        error,
        f"failed for good, the failure handler says {handled}"
        if handled
        else "failed for good"
        if final
        else f"retrying in {max(0.0, (retry_at or 0.0) - clock()):.3g}s",
        extra=runlog.at(call.step, call.phase.value, call.attempt),
    )
    entries: list[Entry] = [(FAILED[call.phase], call.step, call.attempt, data)]
    if pause is not None:
        entries.append((EventKind.PAUSED, call.step, None, pause.to_json()))
    return entries
