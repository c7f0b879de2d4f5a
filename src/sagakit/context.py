"""`StepContext`: what a step's action or compensation learns about its call.

It also carries the services a step may use (reservations, the local
transaction).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from sagakit.control import Signal
from sagakit.errors import SagaError
from sagakit.frozen import fast_init
from sagakit.journal import JSON, ErrorInfo, Phase, idempotency_key
from sagakit.redaction import Redactor
from sagakit.runlog import RunFields, RunLogger
from sagakit.store import Reservation

_T = TypeVar("_T")


class Reserver(Protocol):
    """What the engine lends a context for reservations (see `StepContext.reserve`)."""

    loop: asyncio.AbstractEventLoop

    async def reserve(
        self, name: str, *, ttl: float, wait: float, call: tuple[Phase, str] | None = None
    ) -> Reservation:
        """Take or refresh ``name`` for the run, waiting up to ``wait`` seconds.

        ``call`` names the call that asks (its phase and step): its success
        is recorded only if the run still holds the reservation then.
        """
        ...

    async def reserve_all(
        self,
        names: Sequence[str],
        *,
        ttl: float,
        wait: float,
        call: tuple[Phase, str] | None = None,
    ) -> list[Reservation]:
        """Take or refresh every one of ``names`` for the run, or none of them."""
        ...

    async def release(
        self, names: Sequence[str] | None, *, call: tuple[Phase, str] | None = None
    ) -> int:
        """Free the run's reservations (only ``names`` if given)."""
        ...


logger = logging.getLogger("sagakit")


@fast_init
@dataclass(frozen=True, slots=True)
class StepContext:
    """Handed to every action and compensation as its second argument.

    Attributes:
        run_id: The run.
        saga: The saga's name.
        version: The saga's version.
        step: The step's name.
        phase: ``"action"`` or ``"compensation"``.
        attempt: This attempt's number, from 1.
        idempotency_key: Stable across attempts and crashes; pass it to
            external services. A compensation has its own key.
        started_at: When this attempt started (the engine's clock).
        reason: For a compensation: why the run is undoing: ``"failure"``,
            ``"cancel"`` or ``"deadline"``.
        error: For a compensation: the error that made the run roll back
            (None after a cancel).
        cancel_reason: For a compensation after a cancel: the reason given.
        step_result: For a compensation: what its forward step returned.
        step_finished_at: For a compensation: when its forward step finished
            (or last failed, when its outcome is unknown).
        signal: For a step that waited for a signal (``wait_for``), or one
            retried after a signal answered its pause: that signal.
        previous_step_result: For an action: what the stage before it
            returned (the results of a parallel stage merged), or None.
        connection: For a ``local_transaction`` step: a DB-API connection to
            the store's database, inside the transaction that will also
            record the step's success. Do not commit or close it.
        log: A logger whose records carry the run id and step.
        clock: The engine's clock (seconds since the epoch); `now` reads it.
    """

    run_id: str
    saga: str
    version: str
    step: str
    phase: Phase
    attempt: int
    idempotency_key: str
    started_at: float
    reason: str | None = None
    error: ErrorInfo | None = None
    cancel_reason: str | None = None
    step_result: JSON | None = None
    step_finished_at: float | None = None
    signal: Signal | None = None
    previous_step_result: JSON | None = None
    connection: Any = None
    log: logging.LoggerAdapter[logging.Logger] = field(
        default_factory=lambda: logging.LoggerAdapter(logger)
    )
    clock: Callable[[], float] = field(default=time.time, repr=False)
    reserver: Reserver | None = field(default=None, repr=False, compare=False)

    def now(self) -> float:
        """The engine's clock now: a test's fake clock, if one was given."""
        return self.clock()

    def reserve(self, name: str, *, ttl: float, wait: float = 0.0) -> Reservation:
        """Hold the named resource for this run (a semantic lock), from a sync step.

        Another run asking for the same name waits or fails while this one
        holds it. The reservation is freed when the run finishes, by
        `release`, or on its own ``ttl`` seconds from now (so a run whose
        process died does not hold it forever; reserve again to extend it).
        Asking again for a name this run holds refreshes its expiry.

        The step's success is recorded only if the run still holds the name
        when the step returns: if the reservation expired meanwhile (the step
        outlived ``ttl``) or another run took it, the attempt fails with
        `ReservationLapsed` and its outcome is unknown, as after a timeout
        (retried per the step's policy, compensated if the run rolls back).

        Args:
            name: The resource, e.g. ``"seat:F1"`` or ``"sku:42"``.
            ttl: Seconds until the reservation expires by itself.
            wait: Seconds to wait for another run to free it; 0 fails at once.

        Raises:
            ReservationBusy: another run still holds it after ``wait`` seconds.
        """
        reserver = self._reserver()
        work = reserver.reserve(name, ttl=ttl, wait=wait, call=(self.phase, self.step))
        return self._blocking(reserver, work)

    async def areserve(self, name: str, *, ttl: float, wait: float = 0.0) -> Reservation:
        """`reserve`, for async steps."""
        call = (self.phase, self.step)
        return await self._reserver().reserve(name, ttl=ttl, wait=wait, call=call)

    def reserve_all(
        self, names: Sequence[str], *, ttl: float, wait: float = 0.0
    ) -> list[Reservation]:
        """Hold every one of the named resources for this run, or none of them.

        The "locks acquired in advance" of the saga pattern: a step that needs
        several resources takes them in one go. While another run holds any
        of them, this run holds none and waits (up to ``wait`` seconds), so
        two runs asking for overlapping sets, in any order, never deadlock.
        Each name behaves as with `reserve` (expiry, refresh, release, and
        the step's success requiring them).

        Args:
            names: The resources, e.g. ``["seat:F1", "seat:F2"]`` (each once;
                repeats are ignored).
            ttl: Seconds until the reservations expire by themselves.
            wait: Seconds to wait for other runs to free them; 0 fails at once.

        Returns:
            The reservations, in the order of ``names``.

        Raises:
            ReservationBusy: another run still holds one of them after ``wait``
                seconds (it names that one).
        """
        reserver = self._reserver()
        work = reserver.reserve_all(names, ttl=ttl, wait=wait, call=(self.phase, self.step))
        return self._blocking(reserver, work)

    async def areserve_all(
        self, names: Sequence[str], *, ttl: float, wait: float = 0.0
    ) -> list[Reservation]:
        """`reserve_all`, for async steps."""
        call = (self.phase, self.step)
        return await self._reserver().reserve_all(names, ttl=ttl, wait=wait, call=call)

    def release(self, *names: str) -> int:
        """Free this run's reservations now (all of them if no name is given)."""
        reserver = self._reserver()
        work = reserver.release(names or None, call=(self.phase, self.step))
        return self._blocking(reserver, work)

    async def arelease(self, *names: str) -> int:
        """`release`, for async steps."""
        return await self._reserver().release(names or None, call=(self.phase, self.step))

    def _reserver(self) -> Reserver:
        if self.reserver is None:
            raise SagaError("reservations are only available inside a running step")
        return self.reserver

    @staticmethod
    def _blocking(reserver: Reserver, work: Coroutine[Any, Any, _T]) -> _T:
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:  # a sync step on a worker thread: the usual case
            running = None
        if running is reserver.loop:  # blocking here would deadlock the loop
            work.close()
            raise SagaError(
                "ctx.reserve() and ctx.release() block; an async step must use "
                "`await ctx.areserve()` / `await ctx.arelease()`"
            )
        return asyncio.run_coroutine_threadsafe(work, reserver.loop).result()

    @property
    def workflow_id(self) -> str:
        """The run id, under the name Ruvon's ``StepContext`` gives it."""
        return self.run_id

    @property
    def step_name(self) -> str:
        """The step's name, under the name Ruvon's ``StepContext`` gives it."""
        return self.step

    # Ruvon fills the next three only for an `input_model` or a LOOP step,
    # which sagakit refuses in a Ruvon file: None is what such a function
    # sees there in every step sagakit runs. They keep Ruvon's types, so a
    # function typed against Ruvon's context type-checks against this one.
    @property
    def validated_input(self) -> Any:
        """Always None: Ruvon's input validated by a step's ``input_model``."""
        return None

    @property
    def loop_item(self) -> Any:
        """Always None: the item of Ruvon's ``LOOP`` step being run."""
        return None

    @property
    def loop_index(self) -> int | None:
        """Always None: the index of Ruvon's ``LOOP`` step's item."""
        return None

    @property
    def is_compensation(self) -> bool:
        """True when this call undoes the step."""
        return self.phase is Phase.COMPENSATION

    @property
    def since_step_finished(self) -> float | None:
        """Seconds from the forward step's end to this compensation's start.

        Lets a business rule depend on elapsed time (a full refund within
        24 hours, a fee after).
        """
        if self.step_finished_at is None:
            return None
        return self.started_at - self.step_finished_at

    @property
    def action_key(self) -> str:
        """The idempotency key of this step's action (`idempotency_key` in an action).

        A compensation whose step timed out has no result to read (its
        outcome is unknown): it asks the outside system what the action's
        call under this key did, and undoes that, if anything.
        """
        return idempotency_key(self.run_id, self.step, Phase.ACTION)


def run_logger(
    run_id: str,
    saga: str,
    step: str | None = None,
    *,
    version: str | None = None,
    phase: str | None = None,
    attempt: int | None = None,
    redactor: Callable[[], Redactor] | None = None,
) -> RunLogger:
    """A logger on ``sagakit`` whose every record carries the run's fields.

    ``redactor`` makes the run's `Redactor` when a record is logged, so that
    the record's texts have the run's sensitive values masked (see
    `sagakit.runlog.RunLogFilter`).
    """
    fields = RunFields(run_id, saga, version, step, phase, attempt, redactor)
    return RunLogger(logger, fields)
