"""`Failures`: the exceptions behind recent failures, remembered in memory.

The journal records an error as an `ErrorInfo` (type, message, traceback as
text), never the exception object, which cannot be stored. A caller in the
process that raised it may still want the object itself (to re-raise it, or
to catch it by its type: `Run.raise_for_status`). So the drives of one engine
remember the exceptions of the calls that failed for good, and the engine
hands the one a run's error names back with the run.

This is a convenience, not a record: it is bounded (each exception keeps its
traceback's frames alive, and with them the values they held), lost with the
process, and knows nothing of other processes.
"""

from __future__ import annotations

from collections import OrderedDict

from sagakit.journal import ErrorInfo

Key = tuple[str, str | None, str, int | None]
"""A call by run id, step, phase and attempt."""


class Failures:
    """The latest exceptions of calls that failed for good, by run, step, phase and attempt.

    Args:
        limit: How many to remember; the oldest is forgotten first.
    """

    __slots__ = ("_kept", "limit")

    def __init__(self, limit: int = 128) -> None:
        self.limit = limit
        self._kept: OrderedDict[Key, BaseException] = OrderedDict()

    def __len__(self) -> int:
        return len(self._kept)

    def remember(self, run_id: str, error: ErrorInfo, exception: BaseException) -> None:
        """Keep ``exception``, the one ``error`` of run ``run_id`` records."""
        kept = self._kept
        key = (run_id, error.step, str(error.phase), error.attempt)
        kept[key] = exception
        kept.move_to_end(key)
        while len(kept) > self.limit:
            kept.popitem(last=False)

    def recall(self, run_id: str, error: ErrorInfo) -> BaseException | None:
        """The exception that ``error`` of run ``run_id`` records, if still remembered."""
        return self._kept.get((run_id, error.step, str(error.phase), error.attempt))
