"""``sagakit purge``: delete settled runs older than a limit, optionally archiving them.

Only completed, rolled_back, cancelled and failed runs are ever purged (by
default the first three: a failed run is kept until asked for), a batch at
a time, each batch one short transaction (see `sagakit.store.Store.purge`).
With ``--archive FILE``, each batch is appended to FILE as JSON lines, one
run with its whole journal per line, and written to disk before the batch
is deleted; `read_archived` reads a run back for ``sagakit show --archive``.

The archive holds the data as the store held it: nothing is masked (it is
the data, not a view of it), and values the store keeps encrypted stay
encrypted.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Final

import click

from sagakit import jsonutil
from sagakit.cli.common import console
from sagakit.cli.jsonout import emit, json_option, purge_document
from sagakit.cli.options import (
    Age,
    db_option,
    parse_age,
    shown_path,
    shown_url,
    use_db,
)
from sagakit.journal import Event, EventKind, RunStatus
from sagakit.store import (
    FINISHED_STATUSES,
    Purged,
    RunRecord,
    Store,
    open_store,
    purge_statuses,
)
from sagakit.timeline import format_duration

__all__ = [
    "ARCHIVE_FORMAT",
    "DEFAULT_PURGE_STATUSES",
    "Age",
    "archive_line",
    "parse_age",
    "purge",
    "purge_periodically",
    "read_archived",
]

ARCHIVE_FORMAT: Final = "sagakit-archive/1"
"""The ``format`` field of every archive line; a reader refuses any other."""

DEFAULT_PURGE_STATUSES: Final = (RunStatus.COMPLETED, RunStatus.ROLLED_BACK, RunStatus.CANCELLED)
"""What ``sagakit purge`` deletes unless ``--status`` says otherwise."""


def _statuses(text: str) -> tuple[RunStatus, ...]:
    return purge_statuses([part.strip() for part in text.split(",") if part.strip()])


def archive_line(purged: Purged) -> str:
    """One run with its journal as an archive line (JSON, no newline)."""
    run = purged.run
    return jsonutil.dumps(
        {
            "format": ARCHIVE_FORMAT,
            "run": {
                "id": run.id,
                "saga": run.saga,
                "version": run.version,
                "status": str(run.status),
                "state": run.state,
                "error": run.error,
                "created_at": run.created_at,
                "updated_at": run.updated_at,
                "last_seq": run.last_seq,
            },
            "journal": [
                {
                    "seq": e.seq,
                    "kind": str(e.kind),
                    "at": e.at,
                    "step": e.step,
                    "attempt": e.attempt,
                    "data": e.data,
                }
                for e in purged.journal or ()
            ],
        }
    )


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    with path.open(encoding="utf-8") as file:
        for number, line in enumerate(file, 1):
            if line.strip():
                yield number, line


def read_archived(path: Path, run_id: str) -> tuple[RunRecord, list[Event]]:
    """Read a run and its journal back from an archive.

    A run archived twice (a purge that failed after archiving its batch, then
    ran again) is read from its last line.

    Raises:
        click.ClickException: the file cannot be read, a line is not an
            archive line, or the run is not in it.
    """
    found: dict[str, Any] | None = None
    try:
        for number, line in _lines(path):
            try:
                item = jsonutil.loads_strict(line)
                if not isinstance(item, dict) or item.get("format") != ARCHIVE_FORMAT:
                    raise ValueError(f"not a {ARCHIVE_FORMAT} line")
                if item["run"]["id"] == run_id:
                    found = item
            except (ValueError, KeyError, TypeError) as exc:
                raise click.ClickException(
                    f"{shown_path(path)} line {number} is not a sagakit archive line: {exc}"
                ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise click.ClickException(f"cannot read the archive {shown_path(path)}: {exc}") from None
    if found is None:
        raise click.ClickException(f"no run {run_id!r} in the archive {shown_path(path)}")
    try:
        row = found["run"]
        record = RunRecord(
            id=row["id"],
            saga=row["saga"],
            version=row["version"],
            status=RunStatus(row["status"]),
            state=row["state"],
            error=row["error"],
            created_at=float(row["created_at"]),
            updated_at=float(row["updated_at"]),
            last_seq=int(row["last_seq"]),
        )
        events = [
            Event(
                run_id,
                int(e["seq"]),
                EventKind(e["kind"]),
                float(e["at"]),
                e["step"],
                e["attempt"],
                e["data"],
            )
            for e in found["journal"]
        ]
    except (ValueError, KeyError, TypeError) as exc:
        raise click.ClickException(
            f"run {run_id!r} in {shown_path(path)} is not a sagakit archive entry: {exc!r}"
        ) from None
    return record, events


def load_archived(path: Path, run_id: str) -> str:
    """Put an archived run into a fresh in-process store, for the reading commands.

    Returns:
        The URL of that store (``memory://...``), to open an engine on.
    """
    record, events = read_archived(path, run_id)
    url = f"memory://sagakit-archive-{uuid.uuid4().hex}"

    async def load() -> None:
        store = open_store(url)
        await store.open()
        try:
            await store.create_run(record, events)
        finally:
            await store.close()

    asyncio.run(load())
    return url


def _append(path: Path, batch: Sequence[Purged]) -> None:
    # On disk before the batch's transaction commits (see Store.purge).
    text = "".join(archive_line(purged) + "\n" for purged in batch)
    with path.open("a", encoding="utf-8") as file:
        file.write(text)
        file.flush()
        os.fsync(file.fileno())


async def _count(store: Store, statuses: Sequence[RunStatus], before: float) -> dict[str, int]:
    """How many runs of each status a purge would delete now (as `Store.purge` chooses them)."""
    page = 10_000
    counts = {str(status): 0 for status in statuses}
    for status in statuses:
        offset = 0
        while True:
            runs = await store.list_runs(status=status, limit=page, offset=offset)
            counts[str(status)] += sum(
                1
                for run in runs
                if run.updated_at < before
                and (run.owner is None or run.lease_until is None or run.lease_until < before)
            )
            if len(runs) < page:
                break
            offset += page
    return counts


async def _purge(
    store: Store, statuses: Sequence[RunStatus], before: float, batch: int, archive: Path | None
) -> tuple[dict[str, int], str | None]:
    """Purge batch after batch; the counts, and why it stopped early (the archive failed)."""
    counts = {str(status): 0 for status in statuses}
    await store.open()
    try:
        while True:
            try:
                purged = await store.purge(
                    before=before,
                    statuses=statuses,
                    limit=batch,
                    archive=None if archive is None else lambda runs: _append(archive, runs),
                )
            except OSError as exc:
                # Raised by the archive, before the batch's deletion committed.
                assert archive is not None
                why = exc.strerror or str(exc)
                return counts, f"cannot write the archive {shown_path(archive)}: {why}"
            for item in purged:
                counts[str(item.run.status)] += 1
            if len(purged) < batch:
                return counts, None
    finally:
        await store.close()


async def purge_periodically(store: Store, age: float, every: float) -> None:
    """Purge the default statuses older than ``age`` now and every ``every`` seconds.

    For ``sagakit worker --purge-older-than``: runs until cancelled. A failed
    purge is logged and tried again at the next turn; it never stops the
    worker. Several workers may do it at once: each batch deletes what is
    still there.
    """
    log = logging.getLogger("sagakit")
    while True:
        try:
            total = 0
            while True:
                purged = await store.purge(
                    before=time.time() - age, statuses=DEFAULT_PURGE_STATUSES, limit=500
                )
                total += len(purged)
                if len(purged) < 500:
                    break
                await asyncio.sleep(0)  # let the worker's own work in between batches
            if total:
                log.info(
                    "purged %d settled runs last changed over %s ago", total, format_duration(age)
                )
        except Exception as exc:  # the worker goes on; the next turn retries
            log.warning("purging old runs failed (retried in %gs): %s", every, exc)
        await asyncio.sleep(every)


class _Statuses(click.ParamType):  # type: ignore[type-arg]
    name = "STATUS[,STATUS...]"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, tuple):
            return value
        try:
            return _statuses(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


@click.command()
@click.option(
    "--older-than",
    "age",
    type=Age(),
    required=True,
    help="Purge runs last changed longer ago than this: 30d, 12h, 90m, 45s, 2w.",
)
@click.option(
    "--status",
    "statuses",
    type=_Statuses(),
    default=",".join(str(s) for s in DEFAULT_PURGE_STATUSES),
    show_default=True,
    help="Which settled runs to purge, comma-separated; of "
    + ", ".join(str(s) for s in FINISHED_STATUSES)
    + ".",
)
@click.option(
    "--archive",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Append each run with its journal to this file (JSON lines) before deleting it.",
)
@click.option(
    "--batch",
    type=click.IntRange(min=1, max=100_000),
    default=500,
    show_default=True,
    help="Runs per transaction.",
)
@click.option("--dry-run", is_flag=True, help="Count what would be purged; delete nothing.")
@db_option
@json_option
def purge(
    *,
    age: float,
    statuses: tuple[RunStatus, ...],
    archive: Path | None,
    batch: int,
    dry_run: bool,
    db: str,
    as_json: bool,
) -> None:
    """Delete settled runs older than --older-than, with their journals.

    Runs that are active, paused or need attention are never purged, nor is
    a run an operator holds right now. With --archive, each batch is written
    to the file (as stored: nothing masked) before it is deleted; `sagakit
    show --archive FILE RUN_ID` reads a run back.
    """
    url, path = use_db(db)
    if path is not None and not path.is_file():
        raise click.ClickException(f"no sagakit database at {shown_path(path)}; check --db")
    before = time.time() - age
    archived = None if archive is None else shown_path(archive)
    which = ", ".join(str(s) for s in statuses)
    if dry_run:

        async def count() -> dict[str, int]:
            store = open_store(url, read_only=True)
            await store.open()
            try:
                return await _count(store, statuses, before)
            finally:
                await store.close()

        would = asyncio.run(count())
        if as_json:
            emit(
                purge_document(
                    shown_url(db),
                    dry_run=True,
                    before=before,
                    counts=would,
                    archive=archived,
                    stopped=None,
                )
            )
            return
        total = sum(would.values())
        console.print(
            f"would purge {total} runs ({which}) last changed before "
            f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(before))} "
            f"from {shown_url(db)}",
            soft_wrap=True,
        )
        return
    counts, failed = asyncio.run(_purge(open_store(url), statuses, before, batch, archive))
    total = sum(counts.values())
    if as_json:
        # The counts are the answer even when the archive stopped the purge midway.
        emit(
            purge_document(
                shown_url(db),
                dry_run=False,
                before=before,
                counts=counts,
                archive=archived,
                stopped=failed,
            )
        )
    else:
        parts = ", ".join(f"{n} {status}" for status, n in counts.items())
        where = f"; archived to {archived}" if archived is not None and total else ""
        console.print(f"purged {total} runs ({parts}) from {shown_url(db)}{where}", soft_wrap=True)
    if failed is not None:
        raise click.ClickException(f"{failed}; the runs of that batch were not deleted")
