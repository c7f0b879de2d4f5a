"""How the PostgreSQL store writes new runs and commits: as columns of arrays.

A write is a row tuple with its events' rows (`Write`); a batch of them
becomes one list per column (`batch_params`, `commit_params`), which the
named queries of ``sql/postgresql/queries.sql`` unnest, so a group commit of
any size is a handful of statements. A commit the batch did not write is
explained by `verdict`, from the run's row as it is after the batch. Shared
by group commit and local transactions.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from sagakit.errors import StoreError
from sagakit.journal import JSON, Event, RunStatus
from sagakit.jsonutil import encode_json
from sagakit.store.base import ACTIVE_STATUSES, FINISHED_STATUSES, Commit, RunRecord
from sagakit.store.changes import around_state, started_over, utf8_size
from sagakit.store.postgresql.arrays import Bools, Float8s, Int4s, Int8s, Texts

# The verdict on a commit refused by fencing (no exception object per refusal).
LOST: Final = object()
_ACTIVE: Final = frozenset(ACTIVE_STATUSES)
_FINISHED: Final = frozenset(FINISHED_STATUSES)

BIG: Final = 256 * 1024
"""A state, a change or an event's data whose JSON is at least this many
bytes is not sent in the arrays a batched statement unnests: psycopg writes
an array as one quoted literal (a copy of every text in it), and libpq sends
every parameter of a statement in one buffer. It is sent on its own instead,
by a statement that puts it in place of the placeholder the arrays hold
(`Write.big`), in the write's transaction."""

# What the arrays hold in place of a big part (a JSON object, as the columns do).
_PLACEHOLDER: Final = "{}"


def _at_least(text: str, size: int) -> bool:
    """Whether ``text`` is ``size`` bytes or more in UTF-8, as libpq sends it.

    Counted in bytes, not characters: a text that is not ASCII is up to four
    times longer in bytes. Encoded only when its length in characters does
    not tell (between a quarter of ``size`` and ``size``).
    """
    if len(text) >= size:
        return True
    if len(text) * 4 < size or text.isascii():
        return False
    return len(text.encode()) >= size


def _big(text: str, big: list[tuple[str, tuple[Any, ...]]], query: str, *where: Any) -> str:
    """``text``, or the placeholder if it is big, its statement added to ``big``."""
    # Most texts are below BIG even at four bytes a character: said without
    # a call, as this runs for the state and each event of a commit.
    if len(text) * 4 < BIG or not _at_least(text, BIG):
        return text
    big.append((query, (text, *where)))
    return _PLACEHOLDER


def create_write(run: RunRecord, events: Sequence[Event]) -> Write:
    """A new run with its first events, as ``insert_runs`` takes it.

    A big state is written as the state its ``run_started`` event holds
    (the keys its first commit set as its first change, `started_over`),
    and the event's data is put together around it in the database
    (``big_event_data_around``): one text of the state is sent, not two.
    """
    big: list[tuple[str, tuple[Any, ...]]] = []
    state = encode_json(run.state, "state", run.id)
    size = utf8_size(state)
    changed: JSON | None = None
    started: JSON = run.state
    if _at_least(state, BIG) and events and events[-1].seq != events[0].seq:
        split = started_over(run.state, events)
        if split is not None:
            started, changed = split
            del state  # not held while the other is encoded
            state = encode_json(started, "state", run.id)
            size = utf8_size(state)
    row = (
        run.id,
        run.saga,
        run.version,
        str(run.status),
        _big(state, big, "big_state", run.id),
        None if run.error is None else encode_json(run.error, "error", run.id),
        run.created_at,
        run.updated_at,
        run.owner,
        run.lease_epoch,
        run.lease_until,
        run.wake_at,
        events[-1].seq if events else run.last_seq,
    )
    del state
    rows = event_rows(run.id, events, big, started if big else None)
    if changed is not None:
        # Even when the state the event holds is small (in the row, and
        # nothing else big): the row holds that state, not the run's.
        text = encode_json(changed, "state", run.id)
        big.append(("created_change", (text, run.id, events[-1].seq)))
    return Write(run.id, row, rows, True, big=big, size=size)


def record(row: Sequence[Any]) -> RunRecord:
    """A run's row, in the column order of the ``runs`` queries, as a `RunRecord`.

    Its 15th column is the run's state changes, in order (None: it has
    none): each sets top-level keys of the state its row holds (see
    migration 0006). The query reads them with the row, in one snapshot.
    """
    run_id, saga, version, status, state, error, created, updated, *lease = row[:14]
    changes = row[14]
    if changes:
        for change in changes:
            state.update(change)
    return RunRecord(
        run_id, saga, version, RunStatus(status), state, error, created, updated, *lease
    )


def _columns(
    rows: Sequence[tuple[Any, ...]], names: Sequence[str], types: Sequence[type[list[Any]]]
) -> dict[str, list[Any]]:
    """Rows to one list per column: the arrays a batched statement unnests.

    Each column is a list of its type in ``types`` (see
    `sagakit.store.postgresql.arrays`), which says how it is sent.
    """
    if not rows:
        return {name: kind() for name, kind in zip(names, types, strict=True)}
    columns = zip(*rows, strict=True)
    return {name: kind(column) for name, kind, column in zip(names, types, columns, strict=True)}


def batch_params(writes: Sequence[Write], names: Sequence[str]) -> dict[str, list[Any]]:
    """The parameters of a batched statement: its rows' columns and their events'."""
    params = _columns([w.row for w in writes], names, _TYPES[names])
    events = _columns([e for w in writes for e in w.events], _EVENT_COLUMNS, _EVENT_TYPES)
    params.update({f"e_{name}": column for name, column in events.items()})
    return params


def commit_params(writes: Sequence[Write]) -> dict[str, list[Any]]:
    """The parameters of ``commit_runs``: the commits, their events and the mail they read."""
    params = batch_params(writes, _COMMIT_COLUMNS)
    reads = _columns([r for w in writes for r in w.reads], ("run_id", "id"), (Texts, Int8s))
    params.update({f"m_{name}": column for name, column in reads.items()})
    return params


def commit_write(commit: Commit, *, change: JSON | None = None, clears: bool = True) -> Write:
    """A commit as ``commit_runs`` takes it (shared by group commit and local transactions).

    Args:
        commit: The commit.
        change: Add this to the run's state changes instead of writing its
            state: the top-level keys the commit sets (keyed by the seq of
            its last event: empty if it has none, and then nothing is
            added). None: write the whole state.
        clears: Delete the run's state changes. False only when the caller
            knows it has none, or when ``change`` adds to them.

    Raises:
        StateError: the state, the change, the error or an event's data is not JSON.
        ValueError: a change with no event to key it by.
    """
    run_id = commit.run_id
    events = commit.events
    if change and not events:
        raise ValueError(f"a state change of run {run_id!r} written without events")
    big: list[tuple[str, tuple[Any, ...]]] = []
    last_seq = events[-1].seq if events else None
    part = encode_json(commit.state if change is None else change, "state", run_id)
    size = utf8_size(part)
    if change is None:
        state, change_text = _big(part, big, "big_state", run_id), None
    else:
        state, change_text = None, _big(part, big, "big_change", run_id, last_seq)
    del part
    row = (
        run_id,
        commit.lease.owner,
        commit.lease.epoch,
        str(commit.status),
        state,
        None if commit.error is None else encode_json(commit.error, "error", run_id),
        commit.at,
        commit.wake_at,
        commit.release,
        events[0].seq if events else None,
        last_seq,
        # Handing an active run back wakes idle workers to take it (the query
        # adds: handing back a run that has mail).
        commit.release and commit.status in _ACTIVE and commit.wake_at is None,
        commit.status in _FINISHED,
        change_text,
        clears,
    )
    del state, change_text
    reads = [(run_id, mail_id) for mail_id in commit.mail_read]
    return Write(run_id, row, event_rows(run_id, events, big), False, reads, big, size)


RUN_COLUMNS = (
    "id",
    "saga",
    "version",
    "status",
    "state",
    "error",
    "created_at",
    "updated_at",
    "owner",
    "lease_epoch",
    "lease_until",
    "wake_at",
    "last_seq",
)
_COMMIT_COLUMNS = (
    "id",
    "owner",
    "epoch",
    "status",
    "state",
    "error",
    "at",
    "wake_at",
    "release",
    "first_seq",
    "last_seq",
    "notify",
    "finished",
    "change",
    "clears",
)
_EVENT_COLUMNS = ("run_id", "seq", "kind", "step", "attempt", "at", "data")
# Each column's type, in the order above: the SQL type its array is sent as.
_RUN_TYPES = (
    Texts, Texts, Texts, Texts, Texts, Texts, Float8s, Float8s, Texts, Int8s, Float8s, Float8s,
    Int8s,
)  # fmt: skip
_COMMIT_TYPES = (
    Texts, Texts, Int8s, Texts, Texts, Texts, Float8s, Float8s, Bools, Int8s, Int8s, Bools,
    Bools, Texts, Bools,
)  # fmt: skip
_EVENT_TYPES = (Texts, Int8s, Texts, Texts, Int4s, Float8s, Texts)
_TYPES: Final[dict[Sequence[str], Sequence[type[list[Any]]]]] = {
    RUN_COLUMNS: _RUN_TYPES,
    _COMMIT_COLUMNS: _COMMIT_TYPES,
}


def verdict(write: Write, row: Sequence[Any] | None) -> object:
    """Why the batch did not write a commit.

    ``row`` is the run's ``(owner, lease_epoch, last_seq, mail)``, read after the batch.

    Returns:
        `LOST`, an error, or a bool when the commit had been applied already
        (whether mail waits for the run now).
    """
    if row is None:
        return LOST
    owner, epoch, last_seq, mail = row
    _, want_owner, want_epoch = write.row[:3]
    if (owner, epoch) != (want_owner, want_epoch):
        return LOST
    first, last = (write.events[0][1], write.events[-1][1]) if write.events else (0, 0)
    if write.events and last <= last_seq:
        # This very commit landed before and its acknowledgement was lost with
        # the connection: the lease is still the committer's, so nobody else
        # wrote those seqs. Writing nothing now makes the retry harmless (its
        # mail_read were deleted then, and runs.mail lowered, once).
        return mail > 0
    if write.events and first != last_seq + 1:
        return StoreError(
            f"run {write.run_id!r}: journal events {first}..{last} do not follow "
            f"the last recorded event {last_seq}"
        )
    return StoreError(f"run {write.run_id!r}: the commit was not applied; try again")


@dataclass(slots=True)
class Write:
    """One write: a commit (fenced update) or a new run (insert).

    ``reads`` are a commit's ``(run_id, mail id)`` pairs of `Commit.mail_read`.
    """

    run_id: str
    row: tuple[Any, ...]
    events: list[tuple[Any, ...]]
    create: bool
    reads: list[tuple[str, int]] = field(default_factory=list)
    big: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)
    """The statements (a query's name, its parameters) that put the write's
    big parts in place (`BIG`): run once it is written, in its transaction,
    each let go once run (`write_big`)."""
    size: int = 0
    """Bytes of the state's JSON text the write holds (of its change, if it has one)."""


def event_rows(
    run_id: str,
    events: Sequence[Event],
    big: list[tuple[str, tuple[Any, ...]]] | None = None,
    state: Any = None,
) -> list[tuple[Any, ...]]:
    """Rows ``(run_id, seq, kind, step, attempt, at, data)`` of a run's new events.

    With ``big``, an event's big data is left out (a placeholder in its
    place), and its statement added there. With ``state`` too (a new run's,
    whose text is the first of ``big``), an event whose data holds it first
    has its data put together around that text in the database.

    Raises:
        ValueError: an event belongs to another run (a bug in the caller).
        StateError: an event's data is not JSON.
    """
    rows = []
    for e in events:
        if e.run_id != run_id:
            raise ValueError(f"event of run {e.run_id!r} written to run {run_id!r}")
        around = None if state is None else around_state(e.data, state)
        if around is not None and big and big[0][0] == "big_state":
            # Right after the state, whose pieces are still in the database.
            big.insert(1, ("big_event_data_around", (None, *around, run_id, e.seq)))
            state = None
            rows.append((run_id, e.seq, str(e.kind), e.step, e.attempt, e.at, _PLACEHOLDER))
            continue
        data = encode_json(e.data, f"event {e.seq} data", run_id)
        if big is not None:
            data = _big(data, big, "big_event_data", run_id, e.seq)
        rows.append((run_id, e.seq, str(e.kind), e.step, e.attempt, e.at, data))
    return rows


PIECE: Final = 512 * 1024
"""A big part is sent in pieces of at most this many bytes in UTF-8 (`write_big`)."""


def _pieces(text: str) -> list[tuple[int, str]]:
    """``text`` cut into numbered pieces of `PIECE` bytes at most.

    Cut by characters, as many as its widest character allows: a piece of
    `PIECE` characters that are not ASCII would be up to four times bigger
    in the buffer libpq sends it in.
    """
    step = PIECE
    if not text.isascii():
        widest = ord(max(text))
        step //= 2 if widest < 0x800 else 3 if widest < 0x10000 else 4
    return [(n, text[i : i + step]) for n, i in enumerate(range(0, len(text), step))]


async def write_big(conn: Any, queries: dict[str, str], write: Write) -> None:
    """Put ``write``'s big parts in place, in its transaction (it took effect).

    Each part is sent in pieces (`PIECE`) into a temporary table of the
    session, and its statement puts the pieces together in the database:
    libpq sends a statement's parameters in one buffer, which it keeps at
    its largest for as long as the connection lives (16 MiB for a 10 MB
    state, in each connection of the pool that ever sent one), and psycopg
    makes a copy of a text parameter as bytes. A role that may not create
    temporary tables (``TEMPORARY`` revoked from ``PUBLIC`` on the database,
    as hardening guides advise) sends each part whole instead. Each
    statement is let go once run (a write is written once), so that the
    next one's buffers are not added to it.
    """
    if not write.big:
        return
    cur = await conn.execute(queries["big_pieces_allowed"])
    row = await cur.fetchone()
    for query, params in _big_statements(queries, write, pieces=bool(row[0])):
        await conn.execute(query, params)


def write_big_now(conn: Any, queries: dict[str, str], write: Write) -> None:
    """`write_big` on a blocking connection (a local transaction)."""
    if not write.big:
        return
    row = conn.execute(queries["big_pieces_allowed"]).fetchone()
    for query, params in _big_statements(queries, write, pieces=bool(row[0])):
        conn.execute(query, params)


def _big_statements(
    queries: dict[str, str], write: Write, *, pieces: bool
) -> Iterator[tuple[str, Any]]:
    """The statements that put ``write``'s big parts in place, one at a time.

    With ``pieces``, through the session's temporary table; else each part
    whole, by the ``_whole`` form of its statement (which names its
    parameters: ``text``, then ``w0``, ``w1``... for the rest).
    """
    big = write.big
    if pieces:
        yield queries["big_pieces_table"], None
    last: str | None = None  # without pieces: the part before, for one that reuses it
    while big:
        name, (text, *where) = big.pop(0)
        if not pieces:
            text = last if text is None else text
            last = text if name == "big_state" else None
            named = {f"w{i}": value for i, value in enumerate(where)}
            yield queries[f"{name}_whole"], {"text": text, **named}
            del text
            continue
        if text is not None:  # None: the pieces of the part before it, again
            yield queries["big_pieces_clear"], None
            for piece in _pieces(text):
                yield queries["big_piece"], piece
            del text
        yield queries[name], where
    if pieces:
        yield queries["big_pieces_clear"], None
