"""Telling people a run needs attention: the `AttentionReport`, its log line,
and the engine's ``on_attention`` hook."""

from __future__ import annotations

import asyncio
import inspect
import logging
from typing import TYPE_CHECKING

from sagakit.journal import Event, EventKind, Phase
from sagakit.run import AttentionReport

if TYPE_CHECKING:
    from sagakit.driver import Driver
    from sagakit.engine.async_engine import AsyncEngine

logger = logging.getLogger("sagakit")


async def alert(engine: AsyncEngine, driver: Driver, event: Event) -> None:
    """Report the run ``driver`` halted with ``event`` (``needs_attention``):
    log it, and call the engine's hook, whose errors are logged, never raised."""
    progress = driver.progress
    phase = Phase(event.data.get("phase", Phase.ACTION))
    name = event.step or ""
    history = await engine.store.journal(driver.run_id)
    failures = (EventKind.STEP_FAILED, EventKind.COMPENSATION_FAILED)
    errors = tuple(e.error for e in history if e.kind in failures and e.error is not None)
    run = await engine.get(driver.run_id)
    report = AttentionReport(
        run=run,
        cause=run.error,
        step=name,
        phase=phase,
        reason=str(event.data.get("reason", "")),
        attempts=progress.attempts(phase, name).started,
        errors=errors,
        state=dict(progress.state),
    )
    logger.error(
        "run %s needs attention: %s of step %r: %s (after %d attempts)",
        driver.run_id,
        phase.value,
        name,
        report.reason,
        report.attempts,
        extra={"run_id": driver.run_id, "saga": driver.saga.name, "step": name},
    )
    hook = engine.on_attention
    if hook is None:
        return
    try:
        if inspect.iscoroutinefunction(hook):
            await hook(report)
        else:  # on a thread, so a slow pager does not stall the runs in flight
            loop = asyncio.get_running_loop()
            outcome = await loop.run_in_executor(engine._executor, hook, report)
            if inspect.isawaitable(outcome):
                await outcome
    except Exception:
        logger.exception("the on_attention hook failed for run %s", driver.run_id)
