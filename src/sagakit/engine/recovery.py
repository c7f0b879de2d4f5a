"""Recovery: doing, once, what a worker does with the runs that are due now.

`recover` claims the runs a worker would claim (`Store.claim_due`: owned by
nobody or with a lapsed lease, and active with no timer running, or with a
timer that is due, or with mail waiting), first those an earlier incarnation
of this process held (`Store.claim_held`, as a worker takes them back: a
dead process of this host, or an earlier process under this engine's worker
id), and drives each until nothing is left to do now. A run that would then
wait on a long retry timer is handed back with the timer kept, exactly as a
worker parks it; a run whose timer is not due is not taken at all.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from sagakit import runlog
from sagakit.engine.identity import LeaseIdentity
from sagakit.errors import EncryptionError, SagaError
from sagakit.store import ACTIVE_STATUSES, Lease, RunRecord, Store
from sagakit.store.encrypted import refuse_encrypted

if TYPE_CHECKING:
    from sagakit.driver import Driver
    from sagakit.engine.drives import Drives
    from sagakit.engine.registry import SagaRegistry
    from sagakit.run import Run

logger = logging.getLogger("sagakit")

_PAGE = 500
UNFIT_HOLD = 60.0
"""Seconds a run whose journal does not fit its saga is held back (as a worker does)."""


async def recover(
    *,
    store: Store,
    registry: SagaRegistry,
    drives: Drives,
    read: Callable[[str], Awaitable[RunRecord]],
    park_after: float | None = 2.0,
    identity: LeaseIdentity | None = None,
) -> list[Run]:
    """Drive every due run of the registered sagas until nothing is left to do now.

    The work of `AsyncEngine.recover`.

    Args:
        store: Where runs are kept (open).
        registry: The sagas whose runs are resumed here.
        drives: The drives of this process, which take the runs.
        read: The stored run by id (`AsyncEngine`'s read), for the runs as they ended.
        park_after: Hand back a run whose next retry is more than this many
            seconds away, with its timer kept (None: wait here however long).
        identity: This process's identity in leases: the runs of the earlier
            owners it recognises (`LeaseIdentity.takeover`) are taken at once,
            their leases live or not. None: only runs due by `Store.claim_due`.

    Returns:
        The runs taken, as they ended.

    Raises:
        EncryptionError: runs due here hold encrypted data and this engine
            has no key; nothing is claimed, every run is left as it was.
    """
    unserved, refused = await _waiting(store, registry, drives.clock())
    _report_unserved(unserved, registry)
    if refused:
        # Refused before any claim: a claim would bump the run's lease epoch
        # and clear its timer, and recovering around it would claim it again.
        more = f" ({len(refused) - 1} more such runs)" if len(refused) > 1 else ""
        raise EncryptionError(f"{refused[0]}{more}; nothing was recovered")
    sagas = [(saga.name, saga.version) for saga in registry.sagas]
    recovering: dict[str, asyncio.Task[Driver]] = {}
    earlier = await _earlier(store, identity) if identity is not None and sagas else []
    while sagas:
        now = drives.clock()
        owner, lease_until = drives.owner, now + drives.lease_seconds
        with drives.clock.busy():  # no timer of a drive here skips over the claim
            page: list[RunRecord] = []
            if earlier:
                page = await store.claim_held(
                    earlier, owner=owner, now=now, lease_until=lease_until, limit=_PAGE, sagas=sagas
                )
                if len(page) < _PAGE:
                    earlier = []  # they hold nothing more to take
            if len(page) < _PAGE:
                page += await store.claim_due(
                    owner=owner,
                    now=now,
                    lease_until=lease_until,
                    limit=_PAGE - len(page),
                    sagas=sagas,
                )
        for record in page:
            try:
                driver = await _take(record, store=store, drives=drives, park_after=park_after)
            except EncryptionError as exc:
                refused.append(exc)
                continue
            if driver is not None:  # drive it now: its heartbeat starts at once
                recovering[record.id] = asyncio.ensure_future(drives.drive(driver))
        if len(page) < _PAGE:
            break
    recovered: list[Run] = []
    for run_id, drive in recovering.items():
        try:
            await drive
        except SagaError as exc:
            logger.error(
                "run %s could not be recovered: %s", run_id, exc, extra=runlog.extra(run_id)
            )
            continue
        recovered.append(registry.to_run(await read(run_id)))
    if refused:
        raise EncryptionError(f"{refused[0]} (the other runs were recovered)")
    return recovered


async def _earlier(store: Store, identity: LeaseIdentity) -> list[str]:
    """The owners of leases whose runs ``identity`` may take at once (see `Worker`)."""
    found = []
    for owner in sorted(await store.owners()):
        reason = identity.takeover(owner)
        if reason is not None:
            logger.info("runs held by %s (%s) are taken back at once", owner, reason.value)
            found.append(owner)
    return found


async def _take(
    record: RunRecord, *, store: Store, drives: Drives, park_after: float | None
) -> Driver | None:
    """A driver for a run `recover` has just claimed, or None if it is not driven here."""
    if drives.carry_on(record):  # this process drives it already (its lease had lapsed)
        return None
    try:
        return await drives.claimed(record, park_after=park_after)
    except EncryptionError:
        # Its data turned encrypted since the scan (a keyed process wrote it):
        # handed back as it is, for a process that has the key.
        await store.release(record.id, Lease(drives.owner, record.lease_epoch))
        raise
    except SagaError as exc:
        # Held back, as a worker does: released plainly, a run with mail or
        # still active would be due again at once.
        logger.error(
            "run %s cannot be resumed, left as it is for %gs: %s",
            record.id,
            UNFIT_HOLD,
            exc,
            extra=runlog.extra(record.id, record.saga, record.version),
        )
        lease = Lease(drives.owner, record.lease_epoch)
        await store.release(record.id, lease, hold_until=drives.clock() + UNFIT_HOLD)
        return None


async def _waiting(
    store: Store, registry: SagaRegistry, now: float
) -> tuple[list[RunRecord], list[EncryptionError]]:
    """The active runs nobody holds that recover cannot take.

    Those whose saga version is not registered here, and the refusals of
    those whose data this engine cannot read.
    """
    unserved: list[RunRecord] = []
    refused: list[EncryptionError] = []
    for status in ACTIVE_STATUSES:
        offset = 0
        while True:
            page = await store.list_runs(status=status, limit=_PAGE, offset=offset)
            offset += len(page)
            for record in page:
                if record.owner is not None and (record.lease_until or 0) >= now:
                    continue
                if registry.find(record.saga, record.version) is None:
                    unserved.append(record)
                    continue
                try:
                    refuse_encrypted(record)
                except EncryptionError as exc:
                    refused.append(exc)
            if len(page) < _PAGE:
                break
    return unserved, refused


def _report_unserved(records: list[RunRecord], registry: SagaRegistry) -> None:
    for record in records:
        logger.warning(
            "run %s of saga %s version %s is not registered here (versions here: %s); "
            "left untouched: a run only ever runs on its own version's code",
            record.id,
            record.saga,
            record.version,
            ", ".join(registry.versions(record.saga)) or "none",
            extra=runlog.extra(record.id, record.saga, record.version),
        )
