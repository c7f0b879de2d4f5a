"""Telling people a run needs attention: alerts delivered at least once.

The commit that makes a run need attention also makes it owe an alert: the
``needs_attention`` event is in its journal with no ``alert_sent`` after
it, and the run's timer (``wake_at``) says when the alert is due. Whoever
delivers it claims the run like any other work (so one process at a time
does), calls the sink, and journals ``alert_sent`` (the sink, the attempt)
or ``alert_failed`` (the error, and the next try as the run's new timer)
in the commit that releases the run. A process that dies before that commit
leaves the alert owed and due: the next claimer delivers it again. So an
alert is delivered at least once, and never again once ``alert_sent`` is
journaled; a crash between the sink's answer and that commit repeats it,
which the report's idempotency key lets a receiver drop.

`Alerts` is the engine's part that does this: after a drive here halts, and
for a `Worker`, for every run it claims whose alert is due.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import TYPE_CHECKING

from sagakit import runlog
from sagakit.definition import RetryPolicy
from sagakit.errors import LeaseLost, SagaError
from sagakit.journal import JSON, ErrorInfo, Event, EventKind, Phase
from sagakit.redaction import Redactor
from sagakit.run import AttentionReport
from sagakit.runlog import RunFields
from sagakit.store import Lease

if TYPE_CHECKING:
    from sagakit.driver import Driver
    from sagakit.engine.drives import Drives
    from sagakit.engine.registry import SagaRegistry

AttentionHook = Callable[[AttentionReport], Awaitable[None] | None]

DEFAULT_ALERT_RETRY = RetryPolicy(
    max_attempts=None, initial_delay=5.0, backoff=2.0, max_delay=300.0, jitter=0.1
)
"""How a failed alert is tried again: after 5 s, doubling up to 5 minutes, forever."""

DEFAULT_ALERT_TIMEOUT = 30.0
"""How long a try at an alert may take, in seconds."""

LOG_SINK = "log"
"""The sink named in ``alert_sent`` when a worker with no hook delivered to its log."""

logger = logging.getLogger("sagakit")


def sink_name(hook: AttentionHook | None) -> str:
    """How a sink is named in the journal and the logs.

    A sink may name itself with a ``sink_name`` attribute (`WebhookSink`
    does, without the secrets its URL may hold); a function is named by its
    module and qualified name.
    """
    if hook is None:
        return LOG_SINK
    named = getattr(hook, "sink_name", None)
    if isinstance(named, str):
        return named
    qualname = getattr(hook, "__qualname__", None) or type(hook).__qualname__
    module = getattr(hook, "__module__", None) or type(hook).__module__
    return f"{module}.{qualname}"


class Alerts:
    """Delivers the alerts that runs needing attention owe, and journals each try.

    Args:
        drives: The drives of this process: they claim runs and keep the
            lease of a run while its alert is delivered.
        registry: The sagas registered, to show a run with its state model.
        hook: The ``on_attention`` sink (sync or async), if any.
        retry: When a failed alert is tried again.
        timeout: How long a try may take: a sink that has not answered
            by then has failed (a sync hook's thread is left to finish).

    Attributes:
        hook: The ``on_attention`` sink. With none, an engine leaves owed
            alerts to a worker (and logs the halt); a worker delivers them
            to its log.
        to_log: Deliver to the log when there is no hook (set by a `Worker`).
        retry_here: Try a failed alert again from this process, at its time
            (an engine); a `Worker` claims it when due instead.
    """

    def __init__(
        self,
        drives: Drives,
        registry: SagaRegistry,
        *,
        hook: AttentionHook | None,
        retry: RetryPolicy = DEFAULT_ALERT_RETRY,
        timeout: float = DEFAULT_ALERT_TIMEOUT,
    ) -> None:
        if not timeout > 0:
            raise SagaError(f"alert_timeout must be positive, got {timeout}")
        self.drives = drives
        self.registry = registry
        self.hook = hook
        self.retry = retry
        self.timeout = timeout
        self.to_log = False
        self.retry_here = True
        self._random = random.Random()
        self._later: set[asyncio.Task[None]] = set()

    @property
    def delivers(self) -> bool:
        """Whether this process delivers alerts (it has a sink)."""
        return self.hook is not None or self.to_log

    def close(self) -> None:
        """Forget the tries scheduled here; their alerts stay owed in the store."""
        for task in self._later:
            task.cancel()
        self._later.clear()

    async def halted(self, driver: Driver, event: Event) -> None:
        """A drive here halted on ``event``: deliver the alert now, if this process can.

        Called once the drive has released the run, so an operator may act
        on it meanwhile; the alert is then moot, and not delivered.
        """
        if self.delivers:
            try:
                await self.deliver_owed(driver.run_id)
            except SagaError as exc:  # the store failed: the alert stays owed and due
                driver.log.error("run %s: could not deliver its alert: %s", driver.run_id, exc)
            return
        phase = Phase(event.data.get("phase", Phase.ACTION))
        attempts = driver.progress.attempts(phase, event.step or "")
        driver.log.error(
            "run %s needs attention: %s of step %r: %s (after %d attempts); its alert is "
            "owed until a worker, or an engine with an on_attention hook, delivers it",
            driver.run_id,
            phase.value,
            event.step,
            event.data.get("reason", ""),
            attempts.started,
            extra=runlog.at(event.step, phase.value, attempts.started or None),
        )

    async def deliver_owed(self, run_id: str) -> None:
        """Claim a run and deliver the alert it owes, if it owes one now.

        Nothing is done if another process holds the run (it is delivering
        the alert, or acting on the run).
        """
        drives = self.drives
        taken = await drives.claim(run_id)
        if taken is None:
            return
        try:
            driver = await drives.claimed(taken)
        except SagaError as exc:
            logger.error(
                "run %s: its alert cannot be delivered here: %s",
                run_id,
                exc,
                extra=runlog.extra(run_id, taken.saga, taken.version),
            )
            await drives.store.release(run_id, Lease(drives.owner, taken.lease_epoch))
            return
        await self.deliver(driver)

    async def deliver(self, driver: Driver) -> None:
        """Deliver the alert owed by the run ``driver`` has claimed, and journal how it went.

        The run is handed back before the sink is called, its timer moved
        past the try (`timeout`, and a lease for the journaling): a slow
        sink holds nothing up, an operator may act on the run meanwhile
        (a hook may even resolve it), and should this process die, the
        alert is due again then. The run is claimed again to journal
        ``alert_sent`` or ``alert_failed``. A run that owes nothing now
        (or has mail, which a drive reads first) is released as it stands.
        """
        drives = self.drives
        progress = driver.progress
        due = progress.alert_due
        seq = progress.alert_seq
        if seq is None or due is None or due > drives.clock() or driver.record.mail:
            await drives.store.release(driver.run_id, driver.lease)
            return
        sink = sink_name(self.hook)
        attempt = progress.alert_failures + 1
        report = await self._report(driver, seq)
        try:
            await driver.hand_back(drives.clock() + self.timeout + drives.lease_seconds)
        except LeaseLost:
            return  # another process took the run: it delivers the alert
        driver.log.error(
            "run %s needs attention: %s of step %r: %s (after %d attempts)",
            driver.run_id,
            report.phase.value,
            report.step,
            report.reason,
            report.attempts,
            extra=runlog.at(report.step, report.phase.value, report.attempts or None),
        )
        data: JSON = {"seq": seq, "sink": sink}
        retry_at: float | None = None
        try:
            # What the hook logs says which run it is about, sensitive values masked.
            with runlog.bound(
                RunFields(
                    driver.run_id, driver.saga.name, driver.saga.version, redactor=driver.redactor
                )
            ):
                await self._call(report)
        except Exception as exc:
            retry_at = drives.clock() + self.retry.delay(attempt, self._random.random())
            error = (
                Redactor(driver.saga.sensitive)
                .collect(progress.state)
                .error(
                    ErrorInfo.from_exception(exc, step=None, phase=Phase.ACTION, attempt=attempt)
                )
            )
            data.update(error=error.to_json(), retry_at=retry_at)
            driver.log.error(
                "run %s: its alert to %s failed (attempt %d): %s; trying again in %.3gs",
                driver.run_id,
                sink,
                attempt,
                f"{error.type}: {error.message}",
                retry_at - drives.clock(),
                exc_info=True,
            )
        kind = EventKind.ALERT_SENT if retry_at is None else EventKind.ALERT_FAILED
        if not await self._journal(driver.run_id, seq, kind, attempt, data):
            return
        if retry_at is None:
            driver.log.info("run %s: alert sent to %s (attempt %d)", driver.run_id, sink, attempt)
        elif self.retry_here:
            self._try_later(driver.run_id, retry_at)

    async def _journal(
        self, run_id: str, seq: int, kind: EventKind, attempt: int, data: JSON
    ) -> bool:
        """Claim the run again and journal the try; whether it was journaled.

        A failure is not journaled if the alert is no longer owed (a person
        acted on the run meanwhile); a delivery is, unless one is already.
        """
        drives = self.drives
        try:
            taken = await drives.claim(run_id)
            if taken is None:
                logger.warning(
                    "run %s: its alert was %s, but another process holds the run; not "
                    "journaled (it is delivered again if it is still owed)",
                    run_id,
                    "sent" if kind is EventKind.ALERT_SENT else "not sent",
                    extra=runlog.extra(run_id),
                )
                return False
            events = await drives.store.journal(run_id)
            try:
                again = await drives.claimed(taken, events=events)
            except SagaError:
                await drives.store.release(run_id, Lease(drives.owner, taken.lease_epoch))
                raise
            sent = any(e.kind is EventKind.ALERT_SENT and e.data.get("seq") == seq for e in events)
            owed = again.progress.alert_seq == seq
            if sent or not (owed or kind is EventKind.ALERT_SENT):
                await drives.store.release(run_id, again.lease)
                return False
            await again.journal_alert(kind, attempt, data)
        except SagaError as exc:  # LeaseLost, StoreError: the store still owes the alert
            logger.error(
                "run %s: could not journal its alert (%s); it is delivered again once due",
                run_id,
                exc,
                extra=runlog.extra(run_id),
            )
            return False
        return True

    def _try_later(self, run_id: str, at: float) -> None:
        task = asyncio.ensure_future(self._later_delivery(run_id, at))
        self._later.add(task)
        task.add_done_callback(self._later.discard)

    async def _later_delivery(self, run_id: str, at: float) -> None:
        await self.drives.clock.sleep_until(at)
        try:
            await self.deliver_owed(run_id)
        except SagaError as exc:  # the store failed: the alert stays owed and due
            logger.error(
                "run %s: could not deliver its alert: %s", run_id, exc, extra=runlog.extra(run_id)
            )

    async def _report(self, driver: Driver, seq: int) -> AttentionReport:
        """The report of the halt at ``seq``, from the run's journal and its row."""
        progress = driver.progress
        history = await self.drives.store.journal(driver.run_id)
        halt = next((e for e in history if e.seq == seq), None)
        data = halt.data if halt is not None else {}
        phase = Phase(data.get("phase", Phase.ACTION))
        name = (halt.step if halt is not None else None) or ""
        failures = (EventKind.STEP_FAILED, EventKind.COMPENSATION_FAILED)
        errors = tuple(e.error for e in history if e.kind in failures and e.error is not None)
        # The run as others see it: released (this process holds it only to alert).
        record = replace(driver.record, owner=None, lease_until=None, wake_at=None)
        run = self.registry.to_run(record)
        return AttentionReport(
            run=run,
            cause=run.error,
            step=name,
            phase=phase,
            reason=str(data.get("reason", "")),
            attempts=progress.attempts(phase, name).started if name else 0,
            errors=errors,
            state=dict(progress.state),
            sensitive=driver.saga.sensitive,
            seq=seq,
        )

    async def _call(self, report: AttentionReport) -> None:
        """Call the hook, within the timeout.

        Raises:
            TimeoutError: the hook did not return in time.
            Exception: what the hook raised.
        """
        if self.hook is None:
            return  # the log line is the alert
        try:
            # The hook's timeout is real time (it races the hook as it runs),
            # and the clock is busy meanwhile: no timer fires over a hook.
            with self.drives.clock.busy():
                await asyncio.wait_for(self._call_hook(self.hook, report), self.timeout)
        except TimeoutError:
            raise TimeoutError(f"the sink did not answer within {self.timeout:g}s") from None

    async def _call_hook(self, hook: AttentionHook, report: AttentionReport) -> None:
        """Call the hook (a sync one on a thread, so a slow pager stalls no run)."""
        if inspect.iscoroutinefunction(hook) or inspect.iscoroutinefunction(
            getattr(hook, "__call__", None)  # noqa: B004 (an object with an async __call__)
        ):
            outcome = hook(report)
            if inspect.isawaitable(outcome):
                await outcome
            return
        loop = asyncio.get_running_loop()
        outcome = await loop.run_in_executor(self.drives.executor, hook, report)
        if inspect.isawaitable(outcome):
            await outcome
