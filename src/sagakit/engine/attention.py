"""Telling people a run needs attention.

The `AttentionReport`, its log line, and the engine's ``on_attention`` hook.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from typing import TYPE_CHECKING

from sagakit.journal import Event, EventKind, Phase
from sagakit.run import AttentionReport

if TYPE_CHECKING:
    from sagakit.driver import Driver
    from sagakit.engine.registry import SagaRegistry
    from sagakit.store import RunRecord, Store

AttentionHook = Callable[[AttentionReport], Awaitable[None] | None]

logger = logging.getLogger("sagakit")


async def alert(
    driver: Driver,
    event: Event,
    *,
    store: Store,
    registry: SagaRegistry,
    read: Callable[[str], Awaitable[RunRecord]],
    hook: AttentionHook | None,
    executor: Executor | None,
) -> None:
    """Report the run ``driver`` halted with ``event`` (``needs_attention``).

    It is logged, and ``hook`` called, whose errors are logged, never raised.

    Args:
        driver: The drive that halted.
        event: Its ``needs_attention`` event.
        store: Where the run's journal is read.
        registry: The sagas registered, to show the run with its state model.
        read: The stored run by id (`AsyncEngine`'s read, which opens the store).
        hook: The ``on_attention`` hook, if any.
        executor: The threads a synchronous hook runs on (None: asyncio's default).
    """
    progress = driver.progress
    phase = Phase(event.data.get("phase", Phase.ACTION))
    name = event.step or ""
    history = await store.journal(driver.run_id)
    failures = (EventKind.STEP_FAILED, EventKind.COMPENSATION_FAILED)
    errors = tuple(e.error for e in history if e.kind in failures and e.error is not None)
    run = registry.to_run(await read(driver.run_id))
    report = AttentionReport(
        run=run,
        cause=run.error,
        step=name,
        phase=phase,
        reason=str(event.data.get("reason", "")),
        attempts=progress.attempts(phase, name).started,
        errors=errors,
        state=dict(progress.state),
        sensitive=driver.saga.sensitive,
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
    if hook is None:
        return
    try:
        if inspect.iscoroutinefunction(hook):
            await hook(report)
        else:  # on a thread, so a slow pager does not stall the runs in flight
            loop = asyncio.get_running_loop()
            outcome = await loop.run_in_executor(executor, hook, report)
            if inspect.isawaitable(outcome):
                await outcome
    except Exception:
        logger.exception("the on_attention hook failed for run %s", driver.run_id)
