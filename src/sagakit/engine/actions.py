"""The operator's actions on a stored run, with the checks that refuse them.

Cancel and signal are mail the run's driver reads, wherever it runs; retry
and resolve act on a run that needs attention, taken and driven here.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from sagakit import core
from sagakit.definition import Saga
from sagakit.errors import InvalidRunState, RunBusy, RunNotFound, SagaError, StateError
from sagakit.journal import JSON, EventKind, RunStatus
from sagakit.jsonutil import to_jsonable
from sagakit.store import Lease, RunRecord, Store
from sagakit.store.encrypted import refuse_encrypted

if TYPE_CHECKING:
    from sagakit.engine.drives import Drives
    from sagakit.engine.registry import SagaRegistry
    from sagakit.run import Run

MAX_BY = 200
"""The longest name ``by=`` takes: who acted, not a message."""


def checked_by(by: str) -> str:
    """``by=`` of an operator action, checked: a short name of who acted.

    Raises:
        SagaError: it is empty, longer than `MAX_BY` characters, or holds
            control characters (it is shown in timelines and terminals).
    """
    if not isinstance(by, str) or not by.strip():
        raise SagaError(f"by= must name who acted, got {by!r}")
    if len(by) > MAX_BY or not by.isprintable():
        raise SagaError(
            f"by= must be one printable line of at most {MAX_BY} characters, got {by[:40]!r}"
        )
    return by


# -- cancel and signals -----------------------------------------------------------


def signal_data(name: str, payload: Any) -> JSON:
    """A signal's mail: its name and its payload as a JSON dict (`AsyncEngine.signal`).

    Raises:
        SagaError: the signal has no name.
        StateError: the payload is not a dict or a model, or is not JSON.
    """
    if not isinstance(name, str) or not name.strip():
        raise SagaError(f"a signal needs a name, got {name!r}")
    if hasattr(payload, "model_dump"):
        payload = payload.model_dump(mode="json", exclude_unset=True)
    body = {} if payload is None else payload
    if not isinstance(body, dict):
        raise StateError(f"the payload of signal {name!r} must be a dict or a model")
    body = to_jsonable(body, f"payload of signal {name!r}")
    return {"name": name, "payload": body}


async def deliver(
    run_id: str,
    kind: str,
    data: JSON,
    *,
    store: Store,
    registry: SagaRegistry,
    drives: Drives,
    read: Callable[[str], Awaitable[RunRecord]],
    park_after: float | None = None,
) -> Run:
    """Post mail for a run, then act on it here if the run is free and known.

    Args:
        run_id: The run.
        kind: ``cancel`` or ``signal``.
        data: The mail.
        store: Where runs are kept.
        registry: The sagas whose runs may be driven here.
        drives: The drives of this process: one of them may be this run's.
        read: The stored run by id (`AsyncEngine`'s read, which opens the
            store and raises `RunNotFound`).
        park_after: Hand the run back (with its timer, for a worker) rather
            than wait here on a retry more than this many seconds away.
    """
    record = await read(run_id)
    refuse_encrypted(record)  # a keyless process neither reads nor answers its state
    saga = registry.find(record.saga, record.version)
    _check_delivery(record, saga, kind, data)
    if saga is not None:
        progress = core.replay(saga.plan(), await store.journal(run_id))
        _check_against_journal(record, saga, progress, kind, data)
    posted = await store.post(run_id, kind, data, at=drives.clock())
    if posted is None:
        raise RunNotFound(run_id)
    driver = drives.get(run_id)
    if driver is not None:  # driven by this engine: it reads the mail now
        driver.poke()
        return registry.to_run(await read(run_id))
    if saga is None:
        return registry.to_run(await read(run_id))  # a worker serving the saga acts on it
    taken = await drives.claim(run_id)
    if taken is None:  # another process drives it and reads the mail at its next step
        return registry.to_run(await read(run_id))
    try:
        claimed = await drives.claimed(taken, park_after=park_after)
    except SagaError:
        await store.release(run_id, Lease(drives.owner, taken.lease_epoch))
        raise
    await drives.drive(claimed)
    return registry.to_run(await read(run_id))


def _check_delivery(record: RunRecord, saga: Saga[Any] | None, kind: str, data: JSON) -> None:
    finished = (RunStatus.ROLLED_BACK, RunStatus.CANCELLED, RunStatus.FAILED)
    status = RunStatus(record.status)
    if kind == "cancel" and status in finished:
        raise InvalidRunState(
            record.id, status, "cancel", f"the run has already finished as {status.value}"
        )
    if kind == "signal":
        if status.terminal:
            raise InvalidRunState(
                record.id, status, f"signal {data['name']!r}", "the run has finished"
            )
        if saga is not None:
            saga.check_signal(record.state, data["name"], data["payload"])  # StateError if unfit


def _check_against_journal(
    record: RunRecord, saga: Saga[Any], progress: core.Progress, kind: str, data: JSON
) -> None:
    if kind == "cancel":
        refusal = core.cancel_refusal(saga.plan(), progress, force=bool(data.get("force")))
        if refusal is not None:
            raise InvalidRunState(record.id, progress.status, "cancel", refusal)
        return
    paused = progress.paused
    options = paused.get("options") if paused else None
    if paused and options and not paused.get("waiting_for") and data["name"] not in options:
        raise InvalidRunState(
            record.id,
            progress.status,
            f"signal {data['name']!r}",
            f"the run is paused on {paused.get('question')!r}, answered by the signals "
            f"{', '.join(map(repr, options))}",
        )


# -- retry and resolve ------------------------------------------------------------


async def operator_action(
    run_id: str,
    kind: EventKind,
    data: dict[str, Any],
    *,
    strict: bool,
    expected: str | None,
    store: Store,
    registry: SagaRegistry,
    drives: Drives,
    read: Callable[[str], Awaitable[RunRecord]],
    park_after: float | None = None,
) -> Run:
    """Journal ``retried`` or ``resolved`` on a run that needs attention, and drive it here.

    The work of `AsyncEngine.retry` and `AsyncEngine.resolve`.

    Args:
        run_id: The run.
        kind: ``retried`` or ``resolved``.
        data: The event's data (the note).
        strict: Refuse a run that does not need attention (resolve), rather
            than return it unchanged (retry).
        expected: The step the caller saw the run halted on, if any.
        store: Where runs are kept (open).
        registry: The sagas whose runs may be driven here.
        drives: The drives of this process, which take the run.
        read: The stored run by id (`AsyncEngine`'s read, which opens the
            store and raises `RunNotFound`).
        park_after: As for `deliver`.
    """
    action = "resolve" if kind is EventKind.RESOLVED else "retry"
    record = await read(run_id)
    refuse_encrypted(record)  # before the claim: a refused run is left as it is
    if record.status is not RunStatus.NEEDS_ATTENTION:
        if strict:
            raise InvalidRunState(run_id, record.status, action)
        return registry.to_run(record)
    registry.saga_for(record)
    taken = await drives.claim(run_id)
    if taken is None:
        raise RunBusy(run_id, record.owner)
    driver = await drives.claimed(taken, park_after=park_after)
    if driver.progress.status is not RunStatus.NEEDS_ATTENTION:  # raced with another operator
        await store.release(run_id, driver.lease)
        if strict:
            raise InvalidRunState(run_id, driver.progress.status, action)
        return registry.to_run(taken)
    halted = driver.progress.attention
    if expected is not None and (halted is None or halted[1] != expected):
        await store.release(run_id, driver.lease)
        where = f"step {halted[1]!r}" if halted else "nothing"
        raise InvalidRunState(run_id, f"halted on {where}, not on step {expected!r}", action)
    if halted is not None:
        data = {"phase": halted[0].value, **data}
    driver.append(kind, step=halted[1] if halted else None, data=data)
    await drives.drive(driver)
    return registry.to_run(await read(run_id))
