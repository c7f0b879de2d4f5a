"""How every store turns states, errors and events into JSON text.

One encoder for all backends, so that what one store accepts every other
store accepts too (a saga that runs on SQLite runs on PostgreSQL).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sagakit import jsonutil
from sagakit.errors import StateError
from sagakit.journal import Event


def encode_json(value: Any, what: str, run_id: str) -> str:
    """``value`` as JSON text, or a `StateError` that names the run and the part.

    NaN and Infinity are refused: JSON has no such values and PostgreSQL's
    jsonb cannot store them.
    """
    try:
        text = jsonutil.dumps(value)
    except (ValueError, TypeError) as exc:  # pydantic's serialisation error is a ValueError
        raise StateError(f"the {what} of run {run_id!r} is not JSON-serialisable: {exc}") from exc
    if "NaN" in text or "Infinity" in text:
        try:  # the strict parse runs only when such a value could be there
            jsonutil.loads_strict(text)
        except ValueError:
            raise StateError(
                f"the {what} of run {run_id!r} holds NaN or Infinity, which JSON cannot "
                "store; use None or a string"
            ) from None
    return text


def event_rows(run_id: str, events: Sequence[Event]) -> list[tuple[Any, ...]]:
    """Rows ``(run_id, seq, kind, step, attempt, at, data)`` of a run's new events.

    Raises:
        ValueError: an event belongs to another run (a bug in the caller).
        StateError: an event's data is not JSON.
    """
    rows = []
    for e in events:
        if e.run_id != run_id:
            raise ValueError(f"event of run {e.run_id!r} written to run {run_id!r}")
        data = encode_json(e.data, f"event {e.seq} data", run_id)
        rows.append((run_id, e.seq, str(e.kind), e.step, e.attempt, e.at, data))
    return rows
