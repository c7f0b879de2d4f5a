"""Recovery: resuming the unsettled runs whose lease lapsed (their owner died)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

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


async def recover(
    *,
    store: Store,
    registry: SagaRegistry,
    drives: Drives,
    read: Callable[[str], Awaitable[RunRecord]],
) -> list[Run]:
    """Drive every run `take_over` claims until it settles (`AsyncEngine.recover`).

    Args:
        store: Where runs are kept (open).
        registry: The sagas whose runs are resumed here.
        drives: The drives of this process, which take the runs.
        read: The stored run by id (`AsyncEngine`'s read), for the runs as they ended.

    Returns:
        The recovered runs, as they ended.

    Raises:
        EncryptionError: runs whose data is encrypted were met and this
            engine has no key; they are left as they were, the others recovered.
    """
    recovering: dict[str, asyncio.Task[Driver]] = {}
    refused: list[EncryptionError] = []
    for status in ACTIVE_STATUSES:
        offset = 0
        while True:
            page = await store.list_runs(status=status, limit=_PAGE, offset=offset)
            offset += len(page)
            for record in page:
                try:
                    driver = await take_over(record, store=store, registry=registry, drives=drives)
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
            logger.error("run %s could not be recovered: %s", run_id, exc)
            continue
        recovered.append(registry.to_run(await read(run_id)))
    if refused:
        more = f" ({len(refused) - 1} more such runs left as they are)" if len(refused) > 1 else ""
        raise EncryptionError(f"{refused[0]}{more}")
    return recovered


async def take_over(
    record: RunRecord, *, store: Store, registry: SagaRegistry, drives: Drives
) -> Driver | None:
    """Claim a run for `recover` if its lease lapsed and its saga is known.

    Raises:
        EncryptionError: the run's data is encrypted and this engine has no
            key (it is left as it was).
    """
    now = drives.clock()
    if record.owner is not None and (record.lease_until or 0) >= now:
        return None
    if registry.find(record.saga, record.version) is None:
        logger.warning(
            "run %s of saga %s version %s is not registered here (versions here: %s); "
            "left untouched: a run only ever runs on its own version's code",
            record.id,
            record.saga,
            record.version,
            ", ".join(registry.versions(record.saga)) or "none",
        )
        return None
    refuse_encrypted(record)  # before the claim, which would clear its timer
    taken = await drives.claim(record.id, now=now)
    if taken is None or drives.carry_on(taken):
        return None
    lease = Lease(drives.owner, taken.lease_epoch)
    if taken.status not in ACTIVE_STATUSES:  # settled meanwhile
        await store.release(taken.id, lease)
        return None
    try:
        return await drives.claimed(taken)
    except EncryptionError:
        await store.release(taken.id, lease)
        raise
    except SagaError as exc:
        logger.error("run %s cannot be resumed, left as it is: %s", record.id, exc)
        await store.release(taken.id, lease)
        return None
