"""`Observer`: the base class of what an engine tells of its runs.

Subclass it and override the methods you need; those you leave are no-ops.
A base class, not a protocol, so that a method added in a later release
(more of the worker's doings) breaks no observer written today.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from sagakit.observe.events import ObservedEvent

__all__ = ["Observer"]


class Observer:
    """Told of every journal event an engine commits, and of some of its doings.

    Pass instances to an engine (``Engine(..., observers=[...])``, the same
    for `AsyncEngine`; ``sagakit worker --observer MODULE:ATTR``). Every
    method but `run_context` is called on a thread of the engine's own, in
    commit order, after the commit is durable; an observer that raises is
    logged and ignored, and one that is slow delays no run (what is told
    while it lags waits in a bounded queue; past its bound it is dropped and
    counted). See docs/observability.md.

    Example:
        >>> class CountFailures(Observer):
        ...     def __init__(self) -> None:
        ...         self.failures = 0
        ...
        ...     def on_event(self, event: ObservedEvent) -> None:
        ...         if event.outcome == "failed":
        ...             self.failures += 1
    """

    def on_event(self, event: ObservedEvent) -> None:
        """One committed journal event of a run (see `ObservedEvent`)."""

    def on_events(self, events: Sequence[ObservedEvent]) -> None:
        """The events of one commit of a run, in order: by default `on_event` for each.

        Override it instead of `on_event` to take a commit's events in one
        call (one call a commit, not one an event). Then an exception raised
        here is logged and ends this commit's events for this observer only;
        with `on_event`, each event is told whatever the one before raised.
        Neither overridden (only the other methods are): no event is handed
        to this observer at all. A class that overrides `on_event` further
        down its MRO than this (a subclass of `Metrics`, or a mixin listed
        before it, say) is told per event through its `on_event`.
        """
        for event in events:
            self.on_event(event)

    def on_lease_lost(self, *, run_id: str, saga: str, version: str, at: float) -> None:
        """This process lost the lease of a run it drove: another process took it over.

        Args:
            run_id: The run.
            saga: Its saga.
            version: Its saga version.
            at: When the drive found out (seconds since the epoch).
        """

    def on_run_claimed(
        self, *, run_id: str, saga: str, version: str, due_at: float, at: float
    ) -> None:
        """A worker in this process claimed a new run, never driven before.

        Args:
            run_id: The run.
            saga: Its saga.
            version: Its saga version.
            due_at: When it became due: when it was started.
            at: When the worker claimed it (seconds since the epoch).
        """

    def run_context(self, *, run_id: str, saga: str, version: str) -> Mapping[str, str] | None:
        """What to store with a run being started, for every later event to carry.

        Called in the caller's own thread and context as the run is made (in
        ``engine.start(...)`` or ``engine.run(...)``), before it is stored:
        the place to capture the caller's trace context. What it returns
        (text keys and values, such as W3C ``traceparent``) is journaled in
        the ``run_started`` event under ``trace`` and handed back, by every
        process, as `ObservedEvent.trace`. An exception here is logged and
        ignored, and the run starts all the same.
        """
        return None
