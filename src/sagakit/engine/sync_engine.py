"""`Engine`: the synchronous engine, the same API as `AsyncEngine` without ``await``.

It runs `AsyncEngine`'s own coroutines on a private event loop thread, so
both behave identically and the logic is written once.

An engine should be closed (``with Engine(...) as engine:``, or `close`).
One that is garbage-collected unclosed warns (`ResourceWarning`) and lets go
of its store and thread in the background, without waiting for them: the
collector may run at any moment, in any thread, holding any lock, and a
finaliser that waited on the loop thread could wait for itself.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import logging
import os
import threading
import warnings
import weakref
from collections.abc import Coroutine
from datetime import timedelta
from typing import Any, TypeVar

from sagakit.clock import Clock
from sagakit.definition import Saga
from sagakit.engine.async_engine import DEFAULT_RECONCILE_GRACE, DEFAULT_URL, AsyncEngine
from sagakit.engine.checking import CheckReport
from sagakit.engine.starting import Deadline
from sagakit.errors import SagaError
from sagakit.journal import Event, RunStatus
from sagakit.reconcile import ReconcileReport
from sagakit.run import Run
from sagakit.store import Backlog, Mail, Reservation, RunCounts, RunCursor, Store, redact_url

T = TypeVar("T")

logger = logging.getLogger("sagakit")


class _LoopThread:
    """An event loop on a daemon thread, for the sync facade."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.pid = os.getpid()
        """The process whose thread runs the loop: a child it forks has no such thread."""
        self.died_of: BaseException | None = None
        self.abandoned = False
        self.thread = threading.Thread(target=self._main, name="sagakit-loop", daemon=True)
        self.thread.start()

    def _main(self) -> None:
        try:
            self.loop.run_forever()
        except BaseException as exc:  # SystemExit from user code ends the loop: remember why
            self.died_of = exc
        if self.abandoned:
            # Nobody joins this thread to close the loop after it (see `abandon`).
            self.loop.close()

    def call(
        self, coro: Coroutine[Any, Any, T], *, context: contextvars.Context | None = None
    ) -> T:
        if threading.current_thread() is self.thread:
            coro.close()
            raise SagaError(
                "a sync Engine method was called from inside one of its own async steps; "
                "use AsyncEngine there"
            )
        if self.forked():
            coro.close()
            raise SagaError(
                f"this Engine was made by process {self.pid}, which forked this one: make "
                "an Engine of its own in this process (the loop and the store's connections "
                "are the parent's)"
            )
        if not self.thread.is_alive():
            coro.close()
            raise self._dead()
        if context is not None:
            coro = _in_context(coro, context)
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        while True:
            # Not future.result(timeout=...): a TimeoutError the coroutine raised
            # (RunTimeout is one) would be mistaken for the wait running out.
            done, _ = concurrent.futures.wait([future], timeout=0.5)
            if done:
                return future.result()
            # A caller must not wait forever on a loop that has died.
            if not self.thread.is_alive():
                raise self._dead() from self.died_of

    def forked(self) -> bool:
        """Whether this is a child of the process that made the loop (`os.fork`)."""
        return os.getpid() != self.pid

    def _dead(self) -> SagaError:
        if self.died_of is None:
            return SagaError("this Engine is closed; create a new one")
        return SagaError(
            f"the engine's event loop stopped ({self.died_of!r}); runs in flight keep "
            "their journal and are resumed by recover() once their lease lapses"
        )

    def stop(self) -> None:
        if self.loop.is_closed():
            return
        if self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join()
        else:
            # The loop died under its tasks: close what they were running, so
            # nothing is left half-started for the garbage collector to report.
            for task in asyncio.all_tasks(self.loop):
                task.get_coro().close()
        self.loop.close()

    def abandon(self, engine: AsyncEngine) -> None:
        """Close ``engine`` on the loop, then stop it, from any thread, waiting for neither.

        For an engine the garbage collector finalises: that may happen in
        any thread at any moment, for instance while it holds the lock that
        ``concurrent.futures`` takes to start work on a thread. Closing the
        store needs that lock, so a finaliser waiting for the close would
        wait for itself. Here nothing waits: the loop thread closes the
        engine once the lock is free, then ends, and, a daemon, it never
        keeps the process alive.
        """
        if self.loop.is_closed() or self.forked():
            return  # in a forked child, all of it is the parent's (see `_shutdown`)
        self.abandoned = True
        if not self.thread.is_alive():
            # The loop died (SystemExit in a step): close on a thread of its
            # own, so that no store connection is left open, and wait for nothing.
            threading.Thread(
                target=_shutdown_in_background,
                args=(self, engine),
                name="sagakit-close",
                daemon=True,
            ).start()
            return
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nothing to do
            self.loop.call_soon_threadsafe(self._close_then_stop, engine)

    def _close_then_stop(self, engine: AsyncEngine) -> None:
        """On the loop: close ``engine``, then stop the loop (`abandon`)."""
        closing = self.loop.create_task(engine.close())

        def stop(task: asyncio.Task[None]) -> None:
            if not task.cancelled() and task.exception() is not None:
                logger.warning(
                    "closing an Engine that was never closed failed: %r", task.exception()
                )
            self.loop.stop()

        closing.add_done_callback(stop)


async def _in_context(coro: Coroutine[Any, Any, T], context: contextvars.Context) -> T:
    """Run ``coro`` as a task of its own in ``context`` (a copy of the caller's)."""
    return await asyncio.get_running_loop().create_task(coro, context=context)


def _shutdown_in_background(portal: _LoopThread, engine: AsyncEngine) -> None:
    """`_shutdown` on a thread nobody waits for, logging a failure (`_LoopThread.abandon`)."""
    try:
        _shutdown(portal, engine)
    except Exception as exc:
        logger.warning("closing an Engine that was never closed failed: %r", exc)


def _abandon(portal: _LoopThread, engine: AsyncEngine) -> None:
    """The finaliser of an `Engine` nobody closed: warn, and let go without blocking."""
    warnings.warn(
        f"an Engine on {redact_url(engine.store.url)} was never closed; it is closed in the "
        "background now. Use `with Engine(...) as engine:` or call engine.close()",
        ResourceWarning,
        stacklevel=2,
    )
    portal.abandon(engine)


def _shutdown(portal: _LoopThread, engine: AsyncEngine) -> None:
    if portal.loop.is_closed():
        return
    if portal.forked():
        # A forked child: the loop's thread was not copied, and the store's
        # connections are the parent's (closing them would close its
        # sessions, or wait on threads that are not here). Left as they are.
        return
    try:
        if portal.thread.is_alive():
            portal.call(engine.close())
        else:  # the loop died: close the store from here so no connection leaks
            asyncio.run(engine.close())
    finally:
        portal.stop()


class Engine:
    """The synchronous engine: the same API as `AsyncEngine`, without ``await``.

    It drives runs on a private event loop thread; synchronous step functions
    run on worker threads, asynchronous ones on that loop. Use it as a
    context manager, or call `close`.

    Example:
        >>> with Engine("sqlite:///orders.db") as engine:  # doctest: +SKIP
        ...     run = engine.run(saga, {"amount": 10}, run_id="order-42")
    """

    def __init__(self, url: str = DEFAULT_URL, **options: Any) -> None:
        self._engine = AsyncEngine(url, **options)
        self._portal = _LoopThread()
        # Never `_shutdown`, which waits on the loop thread: see `_LoopThread.abandon`.
        self._finalizer = weakref.finalize(self, _abandon, self._portal, self._engine)

    @property
    def async_engine(self) -> AsyncEngine:
        """The underlying `AsyncEngine`."""
        return self._engine

    @property
    def sagas(self) -> tuple[Saga[Any], ...]:
        """The sagas this engine knows."""
        return self._engine.sagas

    @property
    def store(self) -> Store:
        """The store runs are kept in."""
        return self._engine.store

    @property
    def owner(self) -> str:
        """This engine's name in leases."""
        return self._engine.owner

    @property
    def clock(self) -> Clock:
        """This engine's clock: call it for seconds since the epoch."""
        return self._engine.clock

    def call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on this engine's event loop and return what it returns.

        For what only `async_engine` offers, from synchronous code (the
        coroutine may use `async_engine` and its store, which live on that
        loop). ``sagakit.testing.drive`` is built on it.

        Raises:
            SagaError: called from inside one of this engine's own async
                steps (use `AsyncEngine` there), or the engine is closed.
            Exception: what the coroutine raised.
        """
        return self._portal.call(coroutine)

    def close(self) -> None:
        """Close the store and stop the engine's loop thread (waiting for both).

        Safe to call twice. An engine never closed is closed when it is
        garbage-collected, in the background, with a `ResourceWarning`.
        """
        if self._finalizer.detach() is not None:
            _shutdown(self._portal, self._engine)

    def __enter__(self) -> Engine:
        self.open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def open(self) -> None:
        """Open the store now (otherwise done on first use).

        Raises:
            StoreError: the store cannot be opened; the engine is then closed.
        """
        try:
            self._portal.call(self._engine.open())
        except BaseException:
            self.close()  # no loop thread left behind by a failed start
            raise

    def register(self, *sagas: Saga[Any]) -> None:
        """See `AsyncEngine.register`."""
        self._engine.register(*sagas)

    def saga(self, name: str, version: str | None = None) -> Saga[Any]:
        """See `AsyncEngine.saga`."""
        return self._engine.saga(name, version)

    def versions(self, name: str) -> list[str]:
        """See `AsyncEngine.versions`."""
        return self._engine.versions(name)

    def run(
        self,
        saga: Saga[Any] | str,
        input: Any = None,
        *,
        run_id: str | None = None,
        deadline: Deadline = None,
    ) -> Run:
        """See `AsyncEngine.run`."""
        # In the caller's context, as AsyncEngine.run is: what observers store
        # with the run (the caller's trace context) is read from it.
        return self._portal.call(
            self._engine.run(saga, input, run_id=run_id, deadline=deadline),
            context=contextvars.copy_context(),
        )

    def start(
        self,
        saga: Saga[Any] | str,
        input: Any = None,
        *,
        run_id: str | None = None,
        deadline: Deadline = None,
    ) -> Run:
        """See `AsyncEngine.start`."""
        return self._portal.call(
            self._engine.start(saga, input, run_id=run_id, deadline=deadline),
            context=contextvars.copy_context(),
        )

    def cancel(
        self,
        run_id: str,
        *,
        reason: str | None = None,
        force: bool = False,
        by: str | None = None,
        park_after: float | None = None,
    ) -> Run:
        """See `AsyncEngine.cancel`."""
        return self._portal.call(
            self._engine.cancel(run_id, reason=reason, force=force, by=by, park_after=park_after)
        )

    def signal(
        self,
        run_id: str,
        name: str,
        payload: Any = None,
        *,
        by: str | None = None,
        park_after: float | None = None,
    ) -> Run:
        """See `AsyncEngine.signal`."""
        return self._portal.call(
            self._engine.signal(run_id, name, payload, by=by, park_after=park_after)
        )

    def wait(self, run_id: str, *, timeout: float | None = None, poll: float = 0.5) -> Run:
        """See `AsyncEngine.wait`."""
        return self._portal.call(self._engine.wait(run_id, timeout=timeout, poll=poll))

    def get(self, run_id: str) -> Run:
        """See `AsyncEngine.get`."""
        return self._portal.call(self._engine.get(run_id))

    def runs(
        self,
        *,
        status: RunStatus | str | None = None,
        saga: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Run]:
        """See `AsyncEngine.runs`."""
        return self._portal.call(
            self._engine.runs(status=status, saga=saga, limit=limit, offset=offset)
        )

    def page_runs(
        self,
        *,
        after: RunCursor | None = None,
        before: RunCursor | None = None,
        limit: int = 50,
        saga: str | None = None,
        version: str | None = None,
        status: RunStatus | str | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> list[Run]:
        """See `AsyncEngine.page_runs`."""
        return self._portal.call(
            self._engine.page_runs(
                after=after,
                before=before,
                limit=limit,
                saga=saga,
                version=version,
                status=status,
                since=since,
                until=until,
            )
        )

    def count_runs(self) -> RunCounts:
        """See `AsyncEngine.count_runs`."""
        return self._portal.call(self._engine.count_runs())

    def backlog(self) -> Backlog:
        """See `AsyncEngine.backlog`."""
        return self._portal.call(self._engine.backlog())

    def history(self, run_id: str) -> list[Event]:
        """See `AsyncEngine.history`."""
        return self._portal.call(self._engine.history(run_id))

    def pending(self, run_id: str) -> list[Mail]:
        """See `AsyncEngine.pending`."""
        return self._portal.call(self._engine.pending(run_id))

    def reservations(self, *, run_id: str | None = None) -> list[Reservation]:
        """See `AsyncEngine.reservations`."""
        return self._portal.call(self._engine.reservations(run_id=run_id))

    def retry(
        self,
        run_id: str,
        *,
        note: str | None = None,
        step: str | None = None,
        by: str | None = None,
        park_after: float | None = None,
    ) -> Run:
        """See `AsyncEngine.retry`."""
        return self._portal.call(
            self._engine.retry(run_id, note=note, step=step, by=by, park_after=park_after)
        )

    def resolve(
        self,
        run_id: str,
        *,
        note: str,
        step: str | None = None,
        by: str | None = None,
        park_after: float | None = None,
    ) -> Run:
        """See `AsyncEngine.resolve`."""
        return self._portal.call(
            self._engine.resolve(run_id, note=note, step=step, by=by, park_after=park_after)
        )

    def check(self, *, saga: str | None = None) -> CheckReport:
        """See `AsyncEngine.check`."""
        return self._portal.call(self._engine.check(saga=saga))

    def reconcile(
        self,
        *,
        apply: bool = False,
        grace: float | timedelta = DEFAULT_RECONCILE_GRACE,
        saga: str | None = None,
    ) -> ReconcileReport:
        """See `AsyncEngine.reconcile`."""
        return self._portal.call(self._engine.reconcile(apply=apply, grace=grace, saga=saga))

    def recover(self, *, park_after: float | None = 2.0) -> list[Run]:
        """See `AsyncEngine.recover`."""
        return self._portal.call(self._engine.recover(park_after=park_after))
