"""A new run before it is stored.

Its row and ``run_started`` event, its deadline, and the stored run that
already holds its id (returned only if it was started with the same input).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sagakit.definition import Saga
from sagakit.engine.registry import SagaRegistry
from sagakit.errors import RunIdConflict, RunInputConflict, SagaError
from sagakit.journal import JSON, Event, EventKind, RunStatus
from sagakit.jsonutil import dumps, loads
from sagakit.observe import Observers
from sagakit.redaction import SENSITIVE_KEY
from sagakit.run import check_run_id
from sagakit.store import RunRecord, Store

Deadline = datetime | timedelta | None

# Bound once: an enum member read through its class costs about a thousand
# instructions on Python 3.11 (the metaclass's __getattr__ hook), for every run.
_PENDING = RunStatus.PENDING
_RUN_STARTED = EventKind.RUN_STARTED


def new_run(
    registry: SagaRegistry,
    chosen: Saga[Any] | str,
    input: Any,
    run_id: str | None,
    deadline: Deadline,
    *,
    owner: str | None,
    clock: Callable[[], float],
    lease_seconds: float,
    observers: Observers | None = None,
) -> tuple[RunRecord, Event, Saga[Any]]:
    """A new run's row and ``run_started`` event, not yet stored, and its saga.

    The saga is the one given, or a name resolved to its newest version.

    Args:
        registry: Where a saga given by name is found, and a saga given
            itself is registered on the way.
        chosen: The saga, or the name of a registered one.
        input: The initial state.
        run_id: The run's id; a random one if None.
        deadline: As for `AsyncEngine.run`.
        owner: The process the run is owned by from the start (its lease
            taken at once), or None: owned by nobody, for a worker to claim.
        clock: Seconds since the epoch.
        lease_seconds: How long the lease of an owned run lasts.
        observers: Asked, in the caller's context, what to store with the
            run (``trace``: see `Observer.run_context`).

    Raises:
        InvalidRunId: ``run_id`` breaks the rule for run ids (`check_run_id`).
        StateError: the input does not fit the state model or is not JSON.
    """
    if isinstance(chosen, str):
        saga = registry.saga(chosen)
    else:
        saga = chosen
        registry.register(saga)
    state = saga.dump_state(input if input is not None else {})
    now = clock()
    owned = owner is not None
    if run_id is None:
        # Imported here: uuid imports platform, and a worker, which starts no
        # run, restarting to take its runs back should not wait for them.
        import uuid

        run_id = uuid.uuid4().hex
    else:
        run_id = check_run_id(run_id)
    # Positional, in field order: keywords cost a dict, for every run.
    record = RunRecord(
        run_id,
        saga.name,
        saga.version,
        _PENDING,
        state,
        None,  # error
        now,  # created_at
        now,  # updated_at
        owner,
        1 if owned else 0,  # lease_epoch
        now + lease_seconds if owned else None,  # lease_until
        None,  # wake_at
        1,  # last_seq
    )
    data: JSON = {"state": state}
    if saga.sensitive:
        # Journaled so that every reader masks them, with or without the saga's code.
        data[SENSITIVE_KEY] = sorted(saga.sensitive)
    # The usual run has no deadline: no call to say so.
    if deadline is not None or saga.deadline is not None:
        due = _deadline(deadline, saga, now)
        if due is not None:
            data["deadline"] = due
    if observers is not None:
        trace = observers.run_context(run_id=run_id, saga=saga.name, version=saga.version)
        if trace is not None:
            data["trace"] = trace
    return record, Event(run_id, 1, _RUN_STARTED, now, None, None, data), saga


async def existing(store: Store, stored: RunRecord, saga: Saga[Any], first: Event) -> RunRecord:
    """The stored run that holds a new run's id, if it is the same request.

    The same request is a run of the same saga started with the same input:
    ``first`` (the ``run_started`` event the new run would have had) and the
    stored run's own ``run_started`` hold the input as validated and dumped
    by the state model, so two inputs that the model makes equal are equal.

    Raises:
        RunIdConflict: it is a run of another saga.
        RunInputConflict: it is a run of the same saga started with another input.
    """
    if stored.saga != saga.name:
        raise RunIdConflict(stored.id, stored.saga, saga.name)
    # Read only on this path, a start that found its id taken: the state in
    # the row has moved on since, the journal's first event holds the input.
    journal = await store.journal(stored.id)
    if not journal or journal[0].kind is not EventKind.RUN_STARTED:
        return stored  # every journal begins so; were one not to, there is nothing to compare
    original = journal[0].data.get("state")
    # As the store gives it back: through JSON, as the stored one went.
    given = loads(dumps(first.data.get("state")))
    if original != given:
        old = original if isinstance(original, dict) else {}
        keys = sorted(k for k in {*old, *given} if old.get(k, _ABSENT) != given.get(k, _ABSENT))
        raise RunInputConflict(stored.id, saga.name, keys)
    return stored


_ABSENT = object()


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
