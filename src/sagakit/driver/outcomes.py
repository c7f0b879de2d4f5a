"""Journaling how a call ended, for the driver.

A success records the result (and what of it the state keeps); a failure
records the error with the time of the next attempt, computed with the step's
retry policy and a random jitter, and, once it is final, what the step's
failure handler answered; a pause records the pause.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from sagakit import core
from sagakit.control import Next, Pause
from sagakit.driver.calls import Outcome, ask
from sagakit.driver.writer import flush
from sagakit.journal import FAILED, JSON, SUCCEEDED, EventKind, Phase

if TYPE_CHECKING:
    from sagakit.driver.driver import Driver


async def record_outcome(driver: Driver, outcome: Outcome) -> None:
    call = outcome.call
    if outcome.pause is not None:
        driver.log.info("run %s: step %r paused: %s", driver.run_id, call.step, outcome.pause)
        driver.append(
            EventKind.PAUSED, step=call.step, attempt=call.attempt, data=outcome.pause.to_json()
        )
        return
    if outcome.error is None:
        record_success(driver, outcome)
        if outcome.transaction is not None:
            await flush(driver, via=outcome.transaction)
        return
    final = core.is_final_failure(
        driver.plan, driver.progress, call.phase, call.step, permanent=outcome.permanent
    )
    step = driver.saga[call.step]
    policy = step.retry_policy if call.phase is Phase.ACTION else step.compensation_retry
    retry_at: float | None = None
    if not final:
        failures = driver.progress.attempts(call.phase, call.step).failures + 1
        retry_at = driver.clock() + policy.delay(failures, driver.random())
    data: JSON = {
        "error": outcome.error.to_json(),
        "permanent": outcome.permanent,
        "unknown": outcome.unknown,
        "retry_at": retry_at,
    }
    pause: Pause | None = None
    if final and call.phase is Phase.ACTION and step.failure_handler is not None:
        answer = await ask(driver, step.failure_handler, call, outcome.error)
        if isinstance(answer, Pause):
            pause = answer
            data["handled"] = core.PAUSE
        elif answer is Next.RETRY:
            data["handled"] = core.RETRY
            data["retry_at"] = driver.clock() + policy.delay(1, driver.random())
        elif answer is Next.CONTINUE:
            data["handled"] = core.CONTINUE
    handled = data.get("handled")
    driver.log.log(
        logging.WARNING if final else logging.INFO,
        "run %s: %s; %s",
        driver.run_id,
        outcome.error,
        f"failed for good, the failure handler says {handled}"
        if handled
        else "failed for good"
        if final
        else f"retrying in {max(0.0, (retry_at or 0.0) - driver.clock()):.3g}s",
    )
    driver.append(FAILED[call.phase], step=call.step, attempt=call.attempt, data=data)
    if pause is not None:
        driver.append(EventKind.PAUSED, step=call.step, data=pause.to_json())


def record_success(driver: Driver, outcome: Outcome) -> None:
    call = outcome.call
    driver.append(
        SUCCEEDED[call.phase],
        step=call.step,
        attempt=call.attempt,
        data=(
            {"result": outcome.result}
            if outcome.merged is None
            else {"result": outcome.result, "state": outcome.merged}
        ),
    )
