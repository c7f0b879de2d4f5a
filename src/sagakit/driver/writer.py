"""The driver's commits: buffered events and the run's derived row, under its lease.

`flush` makes one commit of what the drive journaled since the last one,
retries it while the store fails for a passing reason, carries it on under a
lease the drive's own process took again, makes it through a step's local
transaction, and creates a run not yet stored with its first events.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from typing import TYPE_CHECKING

from sagakit.errors import LeaseLost, StoreError
from sagakit.journal import JSON
from sagakit.store import Commit, LocalTransaction, RunRecord

if TYPE_CHECKING:
    from sagakit.driver.driver import Driver

# How many of the latest compensation errors the run's row keeps.
_ROW_ERRORS = 50


class RunExists(Exception):
    """The run a drive was to create was already stored: nothing was run."""

    def __init__(self, record: RunRecord) -> None:
        super().__init__(record.id)
        self.record = record


async def _reclaimed_here(driver: Driver) -> bool:
    """Whether the lease this drive lost went to its own process (then
    adopted here), rather than to another.

    The answer to the claim that took the run again may reach this
    process after the renewal or commit that found the old lease gone (on
    PostgreSQL they travel on different connections); the run's row
    already tells. One read, and only once the lease is found lost.
    """
    try:
        row = await driver.store.get_run(driver.run_id)
    except StoreError:
        return False
    # Only a newer lease: a commit refused under the very lease this drive
    # holds (a retry whose first try landed unacknowledged) is not ours
    # to make again.
    return row is not None and row.lease_epoch == driver.lease.epoch + 1 and driver.adopt(row)


async def flush(
    driver: Driver,
    *,
    release: bool = False,
    wake_at: float | None = None,
    via: LocalTransaction | None = None,
) -> None:
    """Commit buffered events with the run's derived row, in one transaction.

    With ``via``, the commit goes through that local transaction, so the
    step's own writes and these events become durable together.
    """
    if not driver._buffer and not release and wake_at is None and not driver._mail_read:
        return
    progress = driver.progress
    error: JSON | None = None
    if progress.error is not None or progress.compensation_errors:
        # The row carries a summary (the journal keeps every error whole), so
        # a compensation retried many times does not make each commit bigger.
        error = {
            "cause": progress.error,
            "compensation": [
                {**e, "traceback": ""} for e in progress.compensation_errors[-_ROW_ERRORS:]
            ],
        }
    # Positional, in field order: this runs at every step.
    commit = Commit(
        driver.record.id,
        driver.lease,
        tuple(driver._buffer),
        progress.status,
        dict(progress.state),
        error,
        driver.clock(),
        wake_at,
        release,
        tuple(driver._mail_read),
        progress.status == driver._row_status and wake_at == driver._row_wake_at,  # keeps_status
    )
    if driver.lost:
        if await _reclaimed_here(driver):
            commit = replace(commit, lease=driver.lease)
        else:
            if via is not None:
                await driver._in_thread(via.close)
            raise LeaseLost(driver.record.id)
    if driver.unborn:
        await _create(driver, commit)
        return
    if via is not None:
        # No retry here: once this transaction fails, the step's local
        # writes are gone with it. Like a crash, the step then runs again.
        try:
            driver.mail_waiting = await driver._in_thread(via.commit, commit) or driver.mail_waiting
        finally:
            await driver._in_thread(via.close)
        _committed(driver, commit)
        return
    # The buffer is kept until the commit lands, so a passing failure (a
    # lock held too long, a dropped connection) can be retried: commits are
    # fenced and event seqs are unique, so a retry cannot write twice.
    give_up = time.monotonic() + driver.commit_patience
    pause = 0.05
    while True:
        try:
            driver.mail_waiting = await driver.store.commit(commit) or driver.mail_waiting
            break
        except LeaseLost:
            if commit.lease == driver.lease and not await _reclaimed_here(driver):
                raise
            # The drive adopted a newer lease of its own while this commit
            # was under way (see `adopt`): fenced out, it wrote nothing.
            commit = replace(commit, lease=driver.lease)
        except StoreError as exc:
            if time.monotonic() + pause > give_up:
                raise
            driver.log.warning(
                "run %s: the store failed (%s); retrying in %.2fs", driver.run_id, exc, pause
            )
            await asyncio.sleep(pause)
            pause = min(pause * 2, 1.0)
    _committed(driver, commit)


async def _create(driver: Driver, commit: Commit) -> None:
    """Store the run with the commit's events, as the commit leaves its row.

    Not retried as commits are: if the store fails, nothing was run yet
    and the caller hears of it, as of any failed start.
    """
    assert commit.events, "a run is created with its first event"
    record = replace(
        driver.record,
        status=commit.status,
        state=commit.state,
        error=commit.error,
        updated_at=commit.at,
        owner=None if commit.release else driver.lease.owner,
        lease_until=None if commit.release else driver.record.lease_until,
        wake_at=commit.wake_at,
        last_seq=commit.events[-1].seq,
    )
    stored, created = await driver.store.create_run(record, commit.events)
    if not created:
        raise RunExists(stored)
    driver.unborn = False
    _committed(driver, commit)
    if driver.on_stored is not None:
        driver.on_stored(driver)


def _committed(driver: Driver, commit: Commit) -> None:
    driver._buffer = []
    driver._mail_read = []
    driver._row_status = commit.status
    driver._row_wake_at = commit.wake_at
    if commit.release:
        driver.released = True
        driver._last_commit = commit
