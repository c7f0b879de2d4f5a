"""A new run before it is stored: its row and ``run_started`` event, its
deadline, and the stored run that already holds its id."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sagakit.definition import Saga
from sagakit.errors import RunIdConflict, SagaError
from sagakit.journal import JSON, Event, EventKind, RunStatus
from sagakit.store import RunRecord

if TYPE_CHECKING:
    from sagakit.engine.async_engine import AsyncEngine, Deadline


def new_run(
    engine: AsyncEngine,
    chosen: Saga[Any] | str,
    input: Any,
    run_id: str | None,
    deadline: Deadline,
    *,
    owned: bool,
) -> tuple[RunRecord, Event, Saga[Any]]:
    """A new run's row and ``run_started`` event, owned here or by nobody,
    not yet stored; and the saga it is for (a name resolved to its newest
    version).

    Raises:
        StateError: the input does not fit the state model or is not JSON.
    """
    if isinstance(chosen, str):
        saga = engine.saga(chosen)
    else:
        saga = chosen
        engine.register(saga)
    state = saga.dump_state(input if input is not None else {})
    now = engine.clock()
    run_id = run_id if run_id is not None else uuid.uuid4().hex
    record = RunRecord(
        id=run_id,
        saga=saga.name,
        version=saga.version,
        status=RunStatus.PENDING,
        state=state,
        error=None,
        created_at=now,
        updated_at=now,
        owner=engine.owner if owned else None,
        lease_epoch=1 if owned else 0,
        lease_until=now + engine.lease_seconds if owned else None,
        last_seq=1,
    )
    data: JSON = {"state": state}
    due = _deadline(deadline, saga, now)
    if due is not None:
        data["deadline"] = due
    return record, Event(run_id, 1, EventKind.RUN_STARTED, now, data=data), saga


def existing(stored: RunRecord, saga: Saga[Any]) -> RunRecord:
    """The stored run that holds a new run's id, if it is a run of the same saga.

    Raises:
        RunIdConflict: it is a run of another saga.
    """
    if stored.saga != saga.name:
        raise RunIdConflict(stored.id, stored.saga, saga.name)
    return stored


def _deadline(deadline: Deadline, saga: Saga[Any], now: float) -> float | None:
    """A run's deadline in seconds since the epoch (the engine's clock)."""
    if isinstance(deadline, datetime):
        if deadline.tzinfo is None:
            raise SagaError("a deadline datetime must be timezone-aware, e.g. datetime.now(UTC)")
        return deadline.timestamp()
    if isinstance(deadline, timedelta):
        return now + deadline.total_seconds()
    if deadline is not None:
        raise SagaError(f"deadline must be a datetime or a timedelta, got {deadline!r}")
    return None if saga.deadline is None else now + saga.deadline
