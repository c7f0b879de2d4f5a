"""`Observers`: an engine's observers, told on a thread of their own.

The engine hands each commit's events to `Observers.committed` and goes on:
they wait in a bounded queue that one thread drains, calling every observer
in commit order. So an observer that is slow delays no run and one that
raises breaks none. While commits keep coming the thread wakes once every
`GATHER_SECONDS` and drains what came meanwhile, rather than once per commit:
waking a thread and handing it the interpreter lock at every commit cost the
engine more than the observers' own work (a no-op observer took a fifth of
SQLite's steps/s that way). It sleeps without a timeout when nothing comes,
and `flush`, `close` and a queue half full wake it at once.

- a queue that is full (an observer lags far behind) drops what does not
  fit, counts it in `Observers.dropped` and logs a warning at most once a
  minute; a run never waits for room;
- an observer that raises is logged with its traceback the first time, then
  at most once a minute with a count, and told of what follows all the same.

With no observer an engine has no `Observers` at all, and each commit costs
one test of an attribute.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from sagakit.errors import SagaError
from sagakit.journal import JSON, Event
from sagakit.observe.events import ObservedEvent, Starts, observed_events
from sagakit.observe.observer import Observer
from sagakit.redaction import Redactor

__all__ = ["DEFAULT_CAPACITY", "Observers"]

logger = logging.getLogger("sagakit")

DEFAULT_CAPACITY = 10_000
"""How many commits may wait for slow observers before more are dropped."""

GATHER_SECONDS = 0.05
"""How long the observers' thread lets commits gather before it drains them
again, while they keep coming: the most an observer hears of one late."""

EXIT_FLUSH_SECONDS = 1.0
"""How long a process that exits without closing its engine waits for its
observers to be told what the thread had let gather (see `_flush_at_exit`)."""

# At most one log line per observer (and one for drops) per this many seconds.
_LOG_EVERY = 60.0


class _Failures:
    """How often one observer has raised, and when that was last logged."""

    __slots__ = ("count", "logged_at", "unlogged")

    def __init__(self) -> None:
        self.count = 0
        self.unlogged = 0
        self.logged_at = 0.0


class _Mailbox:
    """What waits for the observers' thread, and how it is woken.

    A put is a deque append (atomic under the interpreter lock, wakes no
    one) unless the thread has said it is idle: then the put wakes it, once.
    The thread says so only after finding the deque empty, and looks again
    after saying it, so an item put meanwhile is never left waiting.

    A put that finds ``wake_at`` items waiting wakes it too, gathering or
    not: commits that come fast enough to fill the queue within a gathering
    pause are drained before it fills, so only an observer that lags (not
    the pause) has commits dropped.
    """

    __slots__ = ("idle", "items", "wake", "wake_at")

    def __init__(self, wake_at: int = DEFAULT_CAPACITY // 2) -> None:
        self.items: deque[Any] = deque()
        self.wake = threading.Event()
        self.idle = False
        self.wake_at = wake_at

    def put(self, item: Any) -> None:
        items = self.items
        items.append(item)
        if self.idle or (len(items) >= self.wake_at and not self.wake.is_set()):
            self.idle = False
            self.wake.set()

    def put_now(self, item: Any) -> None:
        """Put ``item`` and wake the thread even if it is gathering (flush, close)."""
        self.items.append(item)
        self.idle = False
        self.wake.set()

    def take(self) -> Any:
        """The oldest item, waiting without a timeout for one if there is none."""
        items = self.items
        while True:
            if items:
                return items.popleft()
            self.idle = True
            if items:  # put between the look and the flag: it woke no one
                self.idle = False
                continue
            self.wake.wait()
            self.wake.clear()

    def gather(self) -> None:
        """Let items gather for `GATHER_SECONDS`, or less if `put_now` wakes it."""
        self.wake.wait(GATHER_SECONDS)
        self.wake.clear()


class Observers:
    """The observers of one engine, and the thread that tells them.

    Args:
        observers: `Observer` instances (or objects with the same methods).
        capacity: How many commits may wait to be told before more are dropped.

    Raises:
        SagaError: an observer has no ``on_event`` method.

    Attributes:
        dropped: Commits (or other doings) not told because the queue was full.
    """

    def __init__(self, observers: Iterable[Observer], *, capacity: int = DEFAULT_CAPACITY) -> None:
        self.observers: tuple[Observer, ...] = tuple(observers)
        for observer in self.observers:
            if not callable(getattr(observer, "on_event", None)):
                raise SagaError(
                    f"an observer needs an on_event method (subclass sagakit.Observer), "
                    f"got {observer!r}"
                )
        # How each observer takes a commit's events, found once: (observer,
        # its on_events, or its on_event to call per event). An observer that
        # overrides neither is not handed events; with none that wants them,
        # no event is made at all.
        # Found again as the thread starts (the first commit, or the first
        # after `close`): a method set on an observer, or patched on its
        # class, after the engine was made but before it committed is used,
        # as `observer.on_event` read at each event would use it.
        self._takers = _takers(self.observers)
        self.dropped = 0
        self._capacity = capacity
        # Bounded by its length, read before each put; the thread is woken
        # when half of it is taken, whatever it waits for.
        self._queue = _Mailbox(_wake_at(capacity))
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._failures: dict[int, _Failures] = {}
        self._dropped_logged_at = 0.0
        self._dropped_unlogged = 0
        self._starts: Starts = {}  # only the thread touches it
        _MADE.add(self)

    def __bool__(self) -> bool:
        return bool(self.observers)

    # -- what the engine tells ------------------------------------------------------

    def run_context(self, *, run_id: str, saga: str, version: str) -> JSON | None:
        """What the observers want stored with a new run (see `Observer.run_context`).

        Called in the caller's thread and context, not the observers' thread.
        """
        carrier: JSON = {}
        for observer in self.observers:
            method = getattr(observer, "run_context", None)
            if method is None:
                continue
            try:
                given = method(run_id=run_id, saga=saga, version=version)
                if given:
                    carrier.update({str(k): str(v) for k, v in given.items()})
            except Exception as exc:
                self._failed(observer, exc)
        return carrier or None

    def committed(
        self,
        saga: str,
        version: str,
        events: Sequence[Event],
        *,
        state: JSON | None = None,
        sensitive: frozenset[str] = frozenset(),
        trace: Mapping[str, str] | None = None,
        run_started_at: float | None = None,
    ) -> None:
        """Tell the observers of the events of one commit, now durable.

        Args:
            saga: The run's saga.
            version: Its version.
            events: The events committed, in order.
            state: The run's state as committed (to find its sensitive values).
            sensitive: The saga's sensitive field names.
            trace: The trace context stored with the run.
            run_started_at: When the run started.
        """
        self._put(("events", saga, version, events, state, sensitive, trace, run_started_at))

    def lease_lost(self, *, run_id: str, saga: str, version: str, at: float) -> None:
        """Tell the observers that a drive here lost its run's lease."""
        self._put(("lease_lost", run_id, saga, version, at))

    def run_claimed(
        self, *, run_id: str, saga: str, version: str, due_at: float, at: float
    ) -> None:
        """Tell the observers that a worker here claimed a new run."""
        self._put(("run_claimed", run_id, saga, version, due_at, at))

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything told so far has been delivered; whether it was in time."""
        thread = self._thread
        if thread is None or not thread.is_alive():
            return True
        done = threading.Event()
        self._queue.put_now(done)
        return done.wait(timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Deliver what waits (for up to ``timeout`` seconds), then stop the thread.

        A later commit starts it again.
        """
        with self._lock:
            # The stop mark goes to this thread's own queue, taken with it: a
            # commit told meanwhile starts a new thread on a new queue, which
            # this mark must not stop.
            thread, self._thread = self._thread, None
            own_queue = self._queue
        if thread is None:
            return
        own_queue.put_now(None)
        thread.join(timeout)
        if thread.is_alive():
            logger.warning("observers: still delivering after %gs at close; left behind", timeout)

    # -- the queue and its thread ---------------------------------------------------------

    def _put(self, item: tuple[Any, ...]) -> None:
        if self._thread is None:
            self._start()
        mailbox = self._queue
        if len(mailbox.items) >= self._capacity:
            self._drop()
        else:
            mailbox.put(item)

    def _start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._takers = _takers(self.observers)
                # A fresh queue: a thread stopped by `close` may have left its stop mark.
                self._queue = _Mailbox(_wake_at(self._capacity))
                thread = threading.Thread(
                    target=self._deliver_all, args=(self._queue,), name="sagakit-observers"
                )
                thread.daemon = True  # never keeps a process alive: close() drains it
                thread.start()
                self._thread = thread
                _flushed_at_exit(self)

    def _forget_parents_thread(self) -> None:
        """In a forked child: drop the parent's thread, its queue and locks.

        Only the forking thread lives on in a child, so the copied thread is
        gone while ``_thread`` still names it: the child's commits would wait
        for it for ever. What the parent had queued is the parent's to tell;
        a lock its thread held at the fork would never be released. The
        child's first commit starts a thread of its own.
        """
        self._thread = None
        self._lock = threading.Lock()
        self._queue = _Mailbox(_wake_at(self._capacity))
        self._starts = {}

    def _drop(self) -> None:
        self.dropped += 1
        self._dropped_unlogged += 1
        now = time.monotonic()
        if now - self._dropped_logged_at >= _LOG_EVERY:
            logger.warning(
                "observers are %d commits behind: %d dropped since the last warning "
                "(%d in all); runs go on",
                self._capacity,
                self._dropped_unlogged,
                self.dropped,
            )
            self._dropped_logged_at = now
            self._dropped_unlogged = 0

    def _deliver_all(self, mailbox: _Mailbox) -> None:
        items = mailbox.items
        while True:
            item = mailbox.take()  # waits only when nothing is there
            while True:
                if item is None:
                    return
                if isinstance(item, threading.Event):
                    item.set()
                else:
                    try:
                        self._deliver(item)
                    except Exception:  # a bug here must not end the thread: the queue would fill
                        logger.exception("observers: could not deliver %s", item[0])
                if not items:
                    break
                item = items.popleft()
            mailbox.gather()

    def _deliver(self, item: tuple[Any, ...]) -> None:
        if item[0] == "lease_lost" or item[0] == "run_claimed":
            what, run_id, saga, version, *times = item
            about: dict[str, Any] = {"run_id": run_id, "saga": saga, "version": version}
            if what == "lease_lost":
                about["at"] = times[0]
            else:
                about["due_at"], about["at"] = times
            for observer in self.observers:
                # Observers need not subclass Observer: one without the method is skipped.
                method = getattr(observer, f"on_{what}", None)
                if method is None:
                    continue
                try:
                    method(**about)
                except Exception as exc:
                    self._failed(observer, exc)
            return
        _, saga, version, events, state, sensitive, trace, run_started_at = item
        takers = self._takers
        if not takers:
            return
        redactor = Redactor.for_run(events, sensitive, state) if sensitive else None
        told = observed_events(saga, version, events, self._starts, trace, run_started_at, redactor)
        for observer, take, batch in takers:
            if batch:
                try:
                    take(told)
                except Exception as exc:
                    self._failed(observer, exc)
                continue
            for event in told:
                try:
                    take(event)
                except Exception as exc:
                    self._failed(observer, exc)

    def _failed(self, observer: Observer, exc: Exception) -> None:
        with self._lock:
            failures = self._failures.setdefault(id(observer), _Failures())
            failures.count += 1
            failures.unlogged += 1
            now = time.monotonic()
            first = failures.count == 1
            due = first or now - failures.logged_at >= _LOG_EVERY
            if due:
                count, failures.unlogged, failures.logged_at = failures.unlogged, 0, now
        if not due:
            return
        if first:
            logger.error(
                "observer %r raised; it is ignored (logged again at most once a minute)",
                observer,
                exc_info=exc,
            )
        else:
            logger.warning(
                "observer %r raised %d more times (%d in all), last: %s: %s",
                observer,
                count,
                failures.count,
                type(exc).__name__,
                exc,
            )


# The observers whose thread runs, flushed as the process exits: a thread
# woken at every commit had told nearly all of them by then, one that
# gathers for `GATHER_SECONDS` would not have, and is a daemon.
_RUNNING: weakref.WeakSet[Observers] = weakref.WeakSet()
_at_exit_lock = threading.Lock()
_at_exit_registered = False


def _flushed_at_exit(observers: Observers) -> None:
    """Have ``observers`` flushed at exit; the hook registered at the first start.

    Registered then, not at import: hooks run last registered first, and
    the application's tracer or meter provider, made before its engine
    commits, shuts down at exit in a hook of its own, which must come after.
    """
    global _at_exit_registered  # noqa: PLW0603  # one hook for the process
    _RUNNING.add(observers)
    with _at_exit_lock:
        if not _at_exit_registered:
            atexit.register(_flush_at_exit)
            _at_exit_registered = True


def _flush_at_exit() -> None:
    # One second in all, however many engines were left open.
    deadline = time.monotonic() + EXIT_FLUSH_SECONDS
    for observers in list(_RUNNING):
        observers.flush(max(0.0, deadline - time.monotonic()))


# Every `Observers` made: a forked child forgets the parent's thread of each,
# not only of those in `_RUNNING` (another thread of the parent may have
# set an observers' thread but not yet registered it when the process forked).
_MADE: weakref.WeakSet[Observers] = weakref.WeakSet()


def _forget_threads_in_child() -> None:
    global _at_exit_lock  # noqa: PLW0603  # the child's own
    # Held by another thread of the parent at the fork, it would never be
    # released here, and the child's first commit would wait for it for ever.
    _at_exit_lock = threading.Lock()
    for observers in list(_MADE):
        observers._forget_parents_thread()


if hasattr(os, "register_at_fork"):  # not on Windows, which does not fork
    os.register_at_fork(after_in_child=_forget_threads_in_child)


def _wake_at(capacity: int) -> int:
    """How many waiting items wake the observers' thread from its gathering pause."""
    return max(1, capacity // 2)


_ON_EVENT = Observer.on_event
_ON_EVENTS = Observer.on_events


_Taker = tuple[Observer, Callable[[Any], None], bool]


def _takers(observers: tuple[Observer, ...]) -> tuple[_Taker, ...]:
    """How each observer that takes events takes them (see `_taker`)."""
    return tuple(_taker(observer) for observer in observers if _takes_events(observer))


def _takes_events(observer: Observer) -> bool:
    """Whether ``observer`` does anything with events: it overrides on_event or on_events."""
    on_event = getattr(observer.on_event, "__func__", None)
    on_events = getattr(getattr(observer, "on_events", None), "__func__", None)
    return not (on_event is _ON_EVENT and on_events is _ON_EVENTS)


def _taker(observer: Observer) -> _Taker:
    """How ``observer`` is handed a commit's events: its own on_events, else on_event per event.

    Its on_events is used only where its class overrides it at least as far
    down the class's MRO as on_event: a subclass or a mixin ahead in the MRO
    that overrides on_event (below or beside a class with its own on_events,
    such as `Metrics`) is told per event, as `observer.on_event` always was.
    An on_events its class does not define (a mock's, made up on reading)
    is not used either, unless it was set on the instance itself.
    """
    own = getattr(observer, "__dict__", {})
    if "on_event" in own:  # set on the instance itself
        return observer, observer.on_event, False
    if "on_events" in own:
        on_events = own["on_events"]
        if callable(on_events):
            return observer, on_events, True
    mro = type(observer).__mro__
    events_owner = next((k for k in mro if "on_events" in vars(k)), None)
    if events_owner is None or events_owner is Observer:
        return observer, observer.on_event, False
    event_owner = next((k for k in mro if "on_event" in vars(k)), None)
    if event_owner is not None and mro.index(event_owner) < mro.index(events_owner):
        return observer, observer.on_event, False
    batch: Callable[[Sequence[ObservedEvent]], None] = observer.on_events
    return observer, batch, True
