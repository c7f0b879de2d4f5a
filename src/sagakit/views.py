"""A run as an application shows it to its users: `RunView` and `run_view`.

What a service needs to answer "where is my order?" without reading the
journal itself: the run's status, the step it is on, the requests not
acted on yet, and its timeline, every field the saga marks sensitive read
``***``. `RunView.to_json` gives the same shapes as ``sagakit show --json``
(`sagakit.timeline.document`), ready for an HTTP response.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sagakit.engine import Engine
from sagakit.journal import RunStatus
from sagakit.redaction import Redactor
from sagakit.run import Run
from sagakit.timeline.build import Outcome, Row, Timeline, build_timeline
from sagakit.timeline.document import pending_requests, run_json, timeline_json

__all__ = ["RunView", "run_view"]

# A row in one of these is where the run stands: in flight, waiting, or halted.
_UNSETTLED = frozenset({Outcome.RUNNING, Outcome.RETRYING, Outcome.PAUSED, Outcome.NEEDS_ATTENTION})


@dataclass(frozen=True, slots=True)
class RunView:
    """A run as its users may see it, every sensitive field masked.

    Attributes:
        run: The run (state and errors masked).
        timeline: Its timeline, built from the masked journal.
        pending: Requests (cancels, signals) recorded and not acted on yet,
            as JSON; a signal's payload is left out.
        current_step: The step the run is on — running, retrying, paused
            or halted on; else the last step it reached — or None once it
            has finished (or before it reached any step).
        current_phase: ``"action"`` or ``"compensation"`` for `current_step`
            (a run rolling back is on a compensation).
    """

    run: Run
    timeline: Timeline
    pending: tuple[dict[str, Any], ...]
    current_step: str | None
    current_phase: str | None

    @property
    def status(self) -> RunStatus:
        """The run's status."""
        return self.run.status

    @property
    def finished(self) -> bool:
        """Whether the run has settled for good (completed, rolled back, failed, cancelled)."""
        return self.run.status.terminal

    def to_json(self, *, state: bool = False) -> dict[str, Any]:
        """The view as plain JSON values, for an HTTP response.

        Args:
            state: Include the run's state (masked). Off by default: what a
                run holds is often more than its users should read.

        Returns:
            ``{"run": ..., "current_step": ..., "current_phase": ...,
            "finished": ..., "timeline": ...}``; ``run`` and ``timeline``
            have the shapes of ``sagakit show --json`` (``sagakit/run/v1``).
        """
        return {
            "run": run_json(self.run, list(self.pending), state=state),
            "current_step": self.current_step,
            "current_phase": self.current_phase,
            "finished": self.finished,
            "timeline": timeline_json(self.timeline),
        }


def _current(run: Run, timeline: Timeline) -> Row | None:
    if run.status.terminal or not timeline.rows:
        return None
    unsettled = [row for row in timeline.rows if row.outcome in _UNSETTLED]
    return unsettled[-1] if unsettled else timeline.rows[-1]


def run_view(engine: Engine, run_id: str) -> RunView:
    """Read a run as its users may see it: status, current step, pending requests, timeline.

    Masked as ``sagakit show`` masks it: the fields the run's journal and
    every registered version of its saga mark sensitive read ``***``.

    Args:
        engine: An engine on the store (it need not have the saga registered).
        run_id: The run.

    Raises:
        RunNotFound: no such run.
    """
    run = engine.get(run_id)
    events = engine.history(run_id)
    sensitive = frozenset().union(*(s.sensitive for s in engine.sagas if s.name == run.saga))
    redactor = Redactor.for_run(events, sensitive, run.data)
    run = run.redacted(redactor)
    timeline = build_timeline(redactor.events(events), run)
    pending = pending_requests(engine.pending(run.id)) if run.pending else []
    current = _current(run, timeline)
    return RunView(
        run=run,
        timeline=timeline,
        pending=tuple(pending),
        current_step=current.step if current is not None else None,
        current_phase=current.phase.value if current is not None else None,
    )
