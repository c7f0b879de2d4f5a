"""How the SQLite store writes new runs and commits: as JSON, in batches.

Each write is encoded once, on the event loop, into one JSON array: the run's
row with its new events nested in it (`encode_create`, `encode_commit`). The
state, the error and the events' data are JSON values inside that array, not
strings in it, so nothing is encoded twice. A batch is then those texts
joined into one JSON array, which one statement unpacks with ``json_each``
(an INSERT into a TEMP view whose trigger writes the lot: see
``batch_trigger`` in ``sql/sqlite/queries.sql``), whatever the batch's size.
Few statements matter as much as fast ones: sqlite3 gives up the GIL around
every statement and must win it back from a busy event loop afterwards, and
what the store's thread does while it holds the GIL (a JSON encoder, a list
per batch) the event loop waits for.

A write the event loop writes there and then, alone (a saga run alone),
with one or two events, is instead bound value by value, each as a parameter
of its own (`encode_lone`, `encode_lone_create`): one statement still, and
SQLite takes no JSON apart (a third of such a statement's work).

A queued write holds only its text, a few flags and its future: with a
thousand runs stepping at once, thousands of writes wait in the queue, and
every object they keep alive is one more for the garbage collector to visit.

The functions that take a cursor run on whichever thread holds the store's
connection, inside an open transaction.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from sagakit import jsonutil
from sagakit.errors import StoreError
from sagakit.journal import JSON, Event, RunStatus
from sagakit.jsonutil import encode_json
from sagakit.store.base import FINISHED_STATUSES, Commit, RunRecord
from sagakit.store.changes import around_state, started_over, utf8_size

# The result of a write refused by fencing (no exception object per refusal).
LOST: Final = object()

# Where the events are in a commit's array and in a new run's array (the last
# element of each); `insert_events` takes the path.
_COMMIT_EVENTS: Final = "$[12]"
_CREATE_EVENTS: Final = "$[13]"

BIG: Final = 256 * 1024
"""A write whose JSON is at least this many bytes is written with its big
parts (`Big`) bound as parameters of their own. SQLite's JSON functions
parse, and copy, the whole text they are given, at each call: unpacked from
one array, a 10 MB state made the process grow by some 350 MB."""

_BIG_PART: Final = 4096
"""Of a big write, an event's data at least this long is bound on its own."""

# A placeholder in a big write's array for a part bound on its own (a JSON
# object, as the part's column holds, so that the statements that unpack the
# array decide as they would with the part in it).
_PLACEHOLDER: Final[JSON] = {}


@dataclass(slots=True)
class Big:
    """The big parts of a write, each bound as a parameter of its own.

    Its array holds a placeholder in their place; once the array is written,
    in the same transaction, each part replaces its placeholder, and is let
    go (`_write_big`).

    Attributes:
        state: The state of the run's row (a new run's; a commit's written whole).
        change: The seq and the state change a commit adds (or a new run starts with).
        data: The seq and data of each event whose data is big.
        first: A new run's first event's seq and data, which holds the run's
            state: its first state change names the event (`encode_create`).
    """

    state: str | None = None
    change: tuple[int, str] | None = None
    data: list[tuple[int, str]] = field(default_factory=list)
    first: tuple[int, str] | None = None
    moved: int | None = None
    """A new run's ``state`` is written as a state change keyed by this seq
    (its first event's), its row's state left empty: SQLite writes a row
    whole at each update, so a big state in it would be written again by
    the run's next commit (`sagakit.store.changes.StateChanges`, ``moves_out``)."""
    size: int = 0
    """The parts' bytes (counted once they are all here: they are let go as written)."""

    def counted(self) -> Big:
        """Count the parts' bytes into `size`; return self."""
        self.size = (
            utf8_size(self.state or "")
            + utf8_size(self.change[1] if self.change else "")
            + sum(utf8_size(text) for _, text in self.data)
        )
        if self.first is not None:
            self.size += utf8_size(self.first[1])
        return self


@dataclass(slots=True)
class Write:
    """One queued write: a commit (a fenced update) or a new run (an insert).

    Attributes:
        run_id: The run written.
        text: The write as one JSON array (`encode_commit`, `encode_create`).
        create: A new run rather than a commit.
        events: How many events the write inserts.
        kept: The commit keeps the run's status and timer (`Commit.keeps_status`)
            and its lease (it does not release the run): it leaves the
            columns of the run's indexes as they are.
        change: The commit adds a state change to the run's (see `encode_commit`).
        clears: The commit deletes the run's state changes (it may have some).
        finished: The commit's status frees the run's reservations.
        release: The commit lets the run's lease go.
        mail_read: The ids of the mail the commit read.
        owner: The commit's lease holder (as in ``text``; empty for a new run).
        epoch: The commit's lease epoch (as in ``text``).
        big: The write's big parts, bound on their own (None: all in ``text``).
        lone: Every value of the write, bound each as a parameter of its own
            by `write_alone`, `write_finish_alone` or `write_new_alone`
            (`encode_lone`, `encode_lone_create`; ``text`` is then empty);
            None: the write is its ``text``.
        lone_size: The bytes of JSON (UTF-8) of a ``lone`` write's values.
        source: What a ``lone`` write was made from (a commit, or a new
            run and its events), to encode it as text should it be queued
            after all (`as_text`).
        future: Set once the write is queued, and answered once its
            transaction is over: for a commit, whether mail waits (or
            `LOST`); for a new run, None, or the record of the run that holds
            its id already.
    """

    run_id: str
    text: str
    create: bool = False
    events: int = 1
    kept: bool = False
    change: bool = False
    clears: bool = False
    finished: bool = False
    release: bool = False
    mail_read: tuple[int, ...] = ()
    owner: str = ""
    epoch: int = 0
    big: Big | None = None
    lone: tuple[Any, ...] | None = None
    lone_size: int = 0
    source: Commit | tuple[RunRecord, Sequence[Event]] | None = None
    future: asyncio.Future[Any] | None = None

    @property
    def alone(self) -> bool:
        """Whether `write_alone` may write it: a step's usual commit.

        It keeps its run's status, timer and lease, adds events, writes its
        state whole in the run's row, and neither reads mail nor finishes
        the run.
        """
        return (
            self.kept
            and self.events > 0
            and not (self.create or self.change or self.clears or self.finished)
            and not self.mail_read
            and self.big is None
        )

    @property
    def finish_alone(self) -> bool:
        """Whether `write_finish_alone` may write it: the commit that finishes a run.

        It finishes the run and lets its lease go, adds events, writes its
        state whole in the run's row, and reads no mail.
        """
        return (
            self.finished
            and not self.kept
            and self.events > 0
            and not (self.create or self.change or self.clears)
            and not self.mail_read
            and self.release
            and self.big is None
        )

    @property
    def new_alone(self) -> bool:
        """Whether `write_new_alone` may write it: a new run with no big part."""
        return self.create and self.big is None

    def as_text(self) -> Write:
        """A ``lone`` write as one JSON array (`encode_commit`, `encode_create`), to queue it.

        The same future answers it.
        """
        source = self.source
        if isinstance(source, Commit):
            write = encode_commit(source, clears=False)
        else:
            assert source is not None
            write = encode_create(*source)
        write.future = self.future
        return write

    @property
    def size(self) -> int:
        """The bytes of JSON (UTF-8) the write hands SQLite."""
        if self.lone is not None:
            return self.lone_size
        return utf8_size(self.text) + (0 if self.big is None else self.big.size)


def encode_commit(
    commit: Commit, *, change: JSON | None = None, clears: bool = True, part: str | None = None
) -> Write:
    """``commit`` as a queued write (its array is laid out as commit_run reads it).

    Args:
        commit: The commit.
        change: Add this to the run's state changes instead of writing its
            state in its row: the top-level keys the commit sets (keyed by
            the seq of its last event: empty if it has none, and then
            nothing is added), or with ``clears`` the whole state (the
            row's state is emptied). The run's state is read as its row's
            with its changes applied in order (`records`). None: write the
            whole state in the run's row.
        clears: Delete the run's state changes first. False only when the
            caller knows it has none, or when ``change`` adds to them.
        part: The state (``change`` None) or the change, already encoded
            (`encode_json`) by a caller that expected it big: if it is
            (`BIG`), it is bound on its own, without being encoded again.

    Raises:
        StateError: the state, the error or an event's data is not JSON.
        ValueError: an event belongs to another run (a bug in the caller).
    """
    run_id = commit.run_id
    events = commit.events
    if change and not events:
        raise ValueError(f"a state change of run {run_id!r} written without events")
    state = commit.state if change is None else None
    # A release empties the owner, which runs_owner indexes: such a commit
    # is written as one that moves its run, whatever its status.
    kept = commit.keeps_status and not commit.release
    value = (
        run_id,
        commit.lease.owner,
        commit.lease.epoch,
        kept,
        commit.release,
        commit.status in FINISHED_STATUSES,
        # Plain strings, not the enums: pydantic-core encodes an enum member
        # several times slower than a str.
        str(commit.status),
        state,
        commit.error,
        commit.at,
        commit.wake_at,
        events[-1].seq if events else None,
        _events(run_id, events),
        change,
        clears,
    )
    where = 7 if change is None else 13
    big = None
    if part is not None and len(part) >= BIG:
        raw, big = _split(value, where, 12, run_id, part)
    else:
        del part
        raw = _encode(value, run_id, state if change is None else change, commit.error, events)
        if len(raw) >= BIG:  # big events
            del raw  # not held while the parts are encoded
            raw, big = _split(value, where, 12, run_id)
    return Write(
        run_id,
        raw.decode(),
        events=len(events),
        kept=kept,
        change=change is not None and bool(events),
        clears=clears,
        finished=value[5],
        release=commit.release,
        # dict.fromkeys: an id listed twice must not lower the count twice.
        mail_read=tuple(dict.fromkeys(commit.mail_read)) if commit.mail_read else (),
        owner=commit.lease.owner,
        epoch=commit.lease.epoch,
        big=big,
    )


def encode_lone(commit: Commit) -> Write | None:
    """``commit`` as a write whose values are bound each on its own (`Write.lone`), or None.

    For a commit the event loop is about to write there and then
    (`sagakit.store.sqlite.group_commit.GroupCommit.writes_here`): a step's
    usual commit (`Write.alone`) or the one that finishes a run
    (`Write.finish_alone`), with one or two events and its state written
    whole in the run's row (the caller's part: it writes no state change).
    SQLite then takes no JSON array apart, which cost a third of such a
    statement's work (json_each, and json_extract at each column). A commit
    queued with others is one JSON array instead (`encode_commit`): the
    batch statement binds one parameter for all of them.

    None when the commit is not such a one, or when any part is big or
    not JSON (`encode_commit` then writes it, or names what is wrong).
    """
    events = commit.events
    if not events or len(events) > 2 or commit.mail_read or commit.requires:
        return None
    release = commit.release
    kept = commit.keeps_status and not release
    finished = commit.status in FINISHED_STATUSES
    if not (kept and not finished) and not (finished and release):
        return None  # neither a step's usual commit nor a finishing one
    run_id = commit.run_id
    lease = commit.lease
    at = commit.at
    wake_at = commit.wake_at
    # The timer is checked even where it is not written (a step's usual
    # commit keeps the run's): such a commit is refused as one JSON array is.
    bound = _bound(run_id, (commit.state, commit.error), events, (at, wake_at))
    if bound is None:
        return None
    (state, error, *slots), size = bound
    last_seq = events[-1].seq
    if kept:
        row: tuple[Any, ...] = (run_id, lease.owner, lease.epoch, state, error, at, last_seq)
    else:
        status = str(commit.status)
        row = (run_id, lease.owner, lease.epoch, status, state, error, at, wake_at, last_seq)
    return Write(
        run_id,
        "",
        events=len(events),
        kept=kept,
        finished=finished,
        release=release,
        owner=lease.owner,
        epoch=lease.epoch,
        lone=(*row, *slots),
        lone_size=size,
        source=commit,
    )


def encode_lone_create(run: RunRecord, events: Sequence[Event]) -> Write | None:
    """A new run as a write whose values are bound each on its own (`Write.lone`), or None.

    As `encode_lone`, for a new run the event loop is about to write there
    and then, with one or two events (`write_new_alone`). None when it has
    other events, or when any part is big or not JSON (`encode_create`
    then writes it, or names what is wrong).
    """
    if not events or len(events) > 2:
        return None
    times = (run.created_at, run.updated_at, run.lease_until, run.wake_at)
    bound = _bound(run.id, (run.state, run.error), events, times)
    if bound is None:
        return None
    (state, error, *slots), size = bound
    row = (
        run.id,
        run.saga,
        run.version,
        str(run.status),
        state,
        error,
        *times[:2],
        run.owner,
        run.lease_epoch,
        *times[2:],
        events[-1].seq,
    )
    return Write(
        run.id,
        "",
        create=True,
        events=len(events),
        lone=(*row, *slots),
        lone_size=size,
        source=(run, events),
    )


def _bound(
    run_id: str, values: tuple[JSON | None, ...], events: Sequence[Event], times: Sequence[Any]
) -> tuple[list[Any], int] | None:
    """A lone write's values as its parameters, and their bytes of JSON; None if it cannot be.

    Returns ``values`` as JSON texts (None kept as it is), then each of the
    one or two ``events``'s columns (the second's all None when there is
    one). None when an event is another run's, a value is big (`BIG`), is
    not JSON, or may hold NaN or Infinity, or a time (``times``, the
    events' ``at``) is not a finite number, which SQLite would store as
    NULL: the write is then encoded as a JSON array, which writes it or
    names what is wrong.
    """
    texts: list[Any] = list(values)
    for e in events:
        if e.run_id != run_id:
            return None
        texts.append(e.data)
    size = 0
    for i, value in enumerate(texts):
        if value is None:
            continue
        if type(value) is dict and not value:
            texts[i] = "{}"
            size += 2
            continue
        try:
            raw = jsonutil.to_json(value)
        except (ValueError, TypeError):
            return None
        size += len(raw)
        if size >= BIG or b"NaN" in raw or b"Infinity" in raw:
            return None
        texts[i] = raw.decode()
    # x - x is 0.0 for a finite float alone (NaN and the infinities give NaN).
    for at in (*times, *(e.at for e in events)):
        if at is not None and at - at != 0.0:
            return None
    first = events[0]
    slots = [*texts[: len(values)], first.seq, str(first.kind), first.step, first.attempt]
    slots += (first.at, texts[len(values)])
    if len(events) == 2:
        second = events[1]
        slots += (second.seq, str(second.kind), second.step, second.attempt, second.at, texts[-1])
    else:
        slots += (None, None, None, None, None, None)
    return slots, size


def encode_create(run: RunRecord, events: Sequence[Event]) -> Write:
    """A new run with its first events as a queued write (laid out as insert_run reads it).

    Raises:
        StateError: the state, the error or an event's data is not JSON.
        ValueError: an event belongs to another run (a bug in the caller).
    """
    value = (
        run.id,
        run.saga,
        run.version,
        str(run.status),
        run.state,
        run.error,
        run.created_at,
        run.updated_at,
        run.owner,
        run.lease_epoch,
        run.lease_until,
        run.wake_at,
        events[-1].seq if events else run.last_seq,
        _events(run.id, events),
    )
    # The state alone first: if it is big, the write is split without the
    # whole (twice the state, with the run_started event) ever encoded.
    text = encode_json(run.state, "state", run.id)
    first = events[0].data if events else None
    if len(text) >= BIG or (type(first) is dict and first.get("state", run.state) is not run.state):
        # Maybe written from the run_started event's state (`_started`),
        # which encodes it its own way: a small state (most) goes no further.
        del text
        started = _started(run, events, value)
        if started is not None:
            return Write(run.id, started[0].decode(), create=True, big=started[1])
        text = encode_json(run.state, "state", run.id)
    part: str | None = text
    del text
    big = None
    if part is not None and len(part) >= BIG:
        raw, big = _split(value, 4, 13, run.id, part)
        if events:
            big.moved = events[0].seq
    else:
        part = None
        raw = _encode(value, run.id, run.state, run.error, events)
        if len(raw) >= BIG:  # big events
            del raw  # not held while the parts are encoded
            raw, big = _split(value, 4, 13, run.id)
    return Write(run.id, raw.decode(), create=True, events=len(events), big=big)


def _started(
    run: RunRecord, events: Sequence[Event], value: tuple[Any, ...]
) -> tuple[bytes, Big] | None:
    """A big new run whose ``run_started`` event holds its state, written from one text.

    The event's data is encoded once (`Big.first`) and written once: the
    run's first state change names the event rather than copy its state
    (migration 0007), its row's state is empty (`Big.moved`), and a first
    commit's keys are a change over it (`started_over`). One big text is
    made and written, not two: while SQLite copies it, nothing else big is
    held, nor was just let go.

    ``value`` is the run's row as `encode_create` lays it out.

    None if the first event holds no state first, the state is small, or
    anything is not JSON (written as before, to name what is not).
    """
    if not events:
        return None
    data = events[0].data
    if not isinstance(data, dict) or next(iter(data), None) != "state":
        return None
    state = data["state"]
    if not isinstance(state, dict):
        return None
    try:
        pieces = _pieces(state)  # first: a small state (most) goes no further
    except (ValueError, TypeError):
        return None
    if pieces is None or sum(map(len, pieces)) < BIG:
        return None
    changed: JSON | None = None
    if run.state is not state:
        split = started_over(run.state, events) if events[-1].seq != events[0].seq else None
        if split is None:
            return None
        changed = split[1]
    around = around_state(data, state)
    if around is None:
        return None
    head, tail = around
    # One text of exactly its size, made at once from pieces of a few keys
    # each: pydantic-core's encoder doubles its buffer as it grows (16 MiB
    # for a 10 MB state), then copies it into bytes, which are decoded.
    parts = [head, "{"]
    for piece in pieces:
        if piece:
            parts += (piece, ",")
    if parts[-1] == ",":
        parts.pop()
    parts += ("}", tail)
    del pieces
    text = "".join(parts)
    del parts
    big = Big(first=(events[0].seq, text), moved=events[0].seq)
    del text
    if changed is not None:
        big.change = (events[-1].seq, encode_json(changed, "state", run.id))
    first_row, *later = value[13]
    rows = [(*first_row[:-1], _PLACEHOLDER)]
    for row in later:
        seq, text = row[0], encode_json(row[-1], f"event {row[0]} data", run.id)
        if len(text) >= _BIG_PART:
            big.data.append((seq, text))
            rows.append((*row[:-1], _PLACEHOLDER))
        else:
            rows.append(row)
        del text
    # The row, its state and each big event's data replaced by placeholders.
    row_value = (*value[:4], _PLACEHOLDER, *value[5:13], rows)
    return _encode(row_value, run.id, {}, run.error, events[1:]), big.counted()


_KEYS_PER_PIECE: Final = 64


def _pieces(state: dict[str, Any]) -> list[str] | None:
    """``state``'s members as JSON text, a few keys a piece (None: a value is not finite)."""
    items = list(state.items())
    pieces = []
    for i in range(0, len(items), _KEYS_PER_PIECE):
        raw = jsonutil.to_json(dict(items[i : i + _KEYS_PER_PIECE]))
        if b"NaN" in raw or b"Infinity" in raw:
            return None
        # Decoded from a view of the bytes between the braces: ``raw[1:-1]``
        # would copy them first (a 10 MB value held three times at once).
        pieces.append(str(memoryview(raw)[1:-1], "utf-8"))
        del raw
    return pieces


def _split(
    value: tuple[Any, ...], where: int, rows: int, run_id: str, part: str | None = None
) -> tuple[bytes, Big]:
    """A big write's array, and its big parts, each encoded once.

    Args:
        value: The write's array, as `_encode` was given it.
        where: Where the state, or the change (13, a commit's), is in ``value``.
        rows: Where the events' rows are in ``value``.
        run_id: The run written.
        part: What is at ``where``, encoded already (None: encoded here).
    """
    big = Big()
    items = list(value)
    whole = items[where]
    if part is None:
        part = encode_json(whole, "state", run_id)
    if where == 13:  # a commit's change, keyed by its last event's seq
        big.change = (items[11], part)
    else:
        big.state = part
    items[where] = _PLACEHOLDER
    events = []
    for row in items[rows]:
        seq, data = row[0], row[-1]
        text = encode_json(data, f"event {seq} data", run_id)
        if len(text) >= _BIG_PART:
            big.data.append((seq, text))
            events.append((*row[:-1], _PLACEHOLDER))
        else:
            events.append(row)
        del text
    items[rows] = events
    # What is left is small, and was encoded once already (so it is JSON).
    return jsonutil.to_json(tuple(items)), big.counted()


def _events(run_id: str, events: Sequence[Event]) -> list[tuple[Any, ...]]:
    rows = []
    for e in events:
        if e.run_id != run_id:
            raise ValueError(f"event of run {e.run_id!r} written to run {run_id!r}")
        rows.append((e.seq, str(e.kind), e.step, e.attempt, e.at, e.data))
    return rows


def _encode(
    value: tuple[Any, ...], run_id: str, state: Any, error: Any, events: Sequence[Event]
) -> bytes:
    """``value`` as JSON (UTF-8), or the error that names the part that is not JSON."""
    try:
        text = jsonutil.to_json(value)
    except (ValueError, TypeError):  # pydantic's serialisation error is a ValueError
        _name_the_culprit(run_id, state, error, events)
        raise
    if b"NaN" in text or b"Infinity" in text:
        try:  # the strict parse runs only when such a value could be there
            jsonutil.loads_strict(text)
        except ValueError:
            _name_the_culprit(run_id, state, error, events)
            raise StoreError(
                f"could not write run {run_id!r}: one of its times is not a finite number"
            ) from None
    return text


def _name_the_culprit(run_id: str, state: Any, error: Any, events: Sequence[Event]) -> None:
    # Encode each part on its own: the first that fails raises the StateError
    # that says which part it is, as every store words it.
    encode_json(state, "state", run_id)
    if error is not None:
        encode_json(error, "error", run_id)
    for e in events:
        encode_json(e.data, f"event {e.seq} data", run_id)


def _array(writes: Sequence[Write]) -> str:
    """The writes as the one JSON array a batch statement unpacks with json_each."""
    return "[" + ",".join([write.text for write in writes]) + "]"


# -- writing, on the thread that holds the connection ------------------------------


def write_one(cur: sqlite3.Cursor, q: dict[str, str], write: Write) -> object:
    """Write one commit or new run in the open transaction.

    Returns:
        What its caller is answered (see `Write.future`).
    """
    if write.create:
        return _insert_run(cur, q, write)
    rows = cur.execute(q["commit_run_kept" if write.kept else "commit_run"], (write.text,))
    found = rows.fetchall()
    if not found:
        return LOST  # fenced out: nothing was written
    unread: int = found[0][0]
    if write.events:
        cur.execute(q["insert_events_of"], (write.text, _COMMIT_EVENTS, write.run_id))
    if write.clears:
        cur.execute(q["clear_state_changes"], (write.run_id,))
    if write.change:
        cur.execute(q["insert_state_change"], (write.text,))
    if write.big is not None:
        _write_big(cur, q, write.run_id, write.big)
    if write.mail_read:
        unread = _read_mail(cur, q, write, unread)
    if write.finished:
        cur.execute(q["free_reservations"], (write.run_id,))
    return unread > 0


def write_alone(conn: sqlite3.Connection, q: dict[str, str], write: Write) -> object:
    """Write a commit that `Write.alone` allows as one statement, a transaction of its own.

    Call it outside a transaction. One statement rather than BEGIN, two
    writes and COMMIT: a saga run alone pays each statement's round through
    sqlite3 at every step. What the statement did is read from the rows it
    changed (see ``lone_trigger`` in ``sql/sqlite/queries.sql``).

    Returns:
        What its caller is answered (see `Write.future`).

    Raises:
        sqlite3.Error: the statement failed, and wrote nothing.
    """
    changed = _changed_by(conn, q["write_lone"], q["write_lone_slots"], write, write.owner)
    if changed == 0:
        return LOST  # fenced out: nothing was written
    return changed > 1 + write.events  # the run's row, its events, and mail waiting


def write_finish_alone(conn: sqlite3.Connection, q: dict[str, str], write: Write) -> object:
    """Write a commit that `Write.finish_alone` allows as one statement, a transaction of its own.

    Call it outside a transaction. One statement rather than BEGIN, the
    fenced update, the events, the reservations' delete and COMMIT, as
    `write_alone` for a step's commit (see ``lone_finish_trigger`` in
    ``sql/sqlite/queries.sql``).

    Returns:
        What its caller is answered (see `Write.future`).

    Raises:
        sqlite3.Error: the statement failed, and wrote nothing.
    """
    query, bound = q["write_lone_finish"], q["write_lone_finish_slots"]
    changed = _changed_by(conn, query, bound, write, write.owner)
    if changed == 0:
        return LOST  # fenced out: nothing was written
    if changed == 1 + write.events:
        return False  # the run's row and its events: no reservation freed, no mail
    # Reservations freed, mail waiting, or both: the count does not tell
    # which, and an answer of mail that is not there would have the engine
    # claim the finished run again. Read after the commit, the count may
    # include mail posted since, which is mail waiting as well.
    try:
        row = conn.execute(q["run_mail"], (write.run_id,)).fetchone()
    except sqlite3.Error:
        # The commit stands: it must not be taken as unwritten (and written
        # again, fenced out). Mail may wait, then: the engine looks.
        return True
    return row is not None and row[0] > 0


def write_new_alone(conn: sqlite3.Connection, q: dict[str, str], write: Write) -> bool:
    """Write a new run that `Write.new_alone` allows as one statement, a transaction of its own.

    Call it outside a transaction. One statement rather than BEGIN, two
    inserts and COMMIT, as `write_alone` for a step's commit (see
    ``lone_new_trigger`` in ``sql/sqlite/queries.sql``).

    Returns:
        Whether the run was written: False if its id is taken, and then
        nothing was (the caller reads the run that holds it, in a
        transaction of its own: it may be gone by now).

    Raises:
        sqlite3.Error: the statement failed, and wrote nothing.
    """
    return _changed_by(conn, q["write_lone_new"], q["write_lone_new_slots"], write) != 0


def _changed_by(
    conn: sqlite3.Connection, query: str, bound: str, write: Write, owner: str | None = None
) -> int:
    """Run a write alone's one statement; return the rows it changed.

    ``query`` takes the write as its JSON array (after its run's id and, for
    a commit, its ``owner`` and epoch); ``bound`` takes its values one by
    one (`Write.lone`).
    """
    before = conn.total_changes
    if write.lone is not None:
        conn.execute(bound, write.lone)
    elif owner is None:
        conn.execute(query, (write.run_id, write.text))
    else:
        conn.execute(query, (write.run_id, owner, write.epoch, write.text))
    # sqlite3_total_changes is a C int, which wraps after 2**31 rows: a
    # long-lived connection may pass that, so the difference is taken modulo.
    return (conn.total_changes - before) % 2**32


def _insert_run(cur: sqlite3.Cursor, q: dict[str, str], write: Write) -> RunRecord | None:
    """Insert a new run; return the existing one instead if its id is taken."""
    cur.execute(q["insert_run"], (write.text,))
    if cur.rowcount == 0:  # the run exists: nothing was written
        return _existing(cur, q, write.run_id)
    if write.events:
        cur.execute(q["insert_events_of"], (write.text, _CREATE_EVENTS, write.run_id))
    big = write.big
    if big is not None:
        if big.change is not None:  # the run starts with a change (`started_over`)
            (seq, text), big.change = big.change, None
            rowid = _fill(cur, q, "created_change", (write.run_id, seq), text)
            del text
            _as_text(cur, q, "created_change", rowid)
            cur.execute(q["created_changes"], (write.run_id,))
        _write_big(cur, q, write.run_id, big)
    return None


def _write_big(cur: sqlite3.Cursor, q: dict[str, str], run_id: str, big: Big) -> None:
    """Put a big write's parts in place of their placeholders (it is written, in this transaction).

    Each part is let go once written (a write is written once: it fails,
    or it is written, never tried again), so that while SQLite copies it
    into its record (`_as_text`) the process no longer holds it, nor the
    next one.
    """
    first, big.first = big.first, None
    if first is not None:
        # The state is written once, in the event's data, which the run's
        # first state change names.
        (seq, text), first = first, None
        rowid = _fill(cur, q, "event_data", (run_id, seq), text)
        del text
        _as_text(cur, q, "event_data", rowid)
        cur.execute(q["created_from_event"], (run_id, seq))
        cur.execute(q["created_changes"], (run_id,))
    state, big.state = big.state, None
    if state is not None:
        if big.moved is None:
            rowid = _fill(cur, q, "state", (run_id,), state)
            del state
            _as_text(cur, q, "state", rowid)
        else:
            rowid = _fill(cur, q, "created_change", (run_id, big.moved), state)
            del state
            _as_text(cur, q, "created_change", rowid)
            cur.execute(q["created_changes"], (run_id,))
    if big.change is not None:
        (seq, text), big.change = big.change, None
        rowid = _fill(cur, q, "change", (run_id, seq), text)
        del text
        _as_text(cur, q, "change", rowid)
    data = big.data
    while data:
        seq, text = data.pop(0)
        rowid = _fill(cur, q, "event_data", (run_id, seq), text)
        del text
        _as_text(cur, q, "event_data", rowid)


_PIECE: Final = 256 * 1024
"""A big part at least this many characters long is written in pieces of this many (`_fill`)."""

# By part: the statement that binds it whole (a NULL changes nothing), and
# the table and column that incremental blob I/O opens.
_WHOLE: Final = {
    "event_data": "big_event_data",
    "state": "big_state",
    "change": "big_change",
    "created_change": "created_change",
}
_COLUMN: Final = {
    "event_data": ("events", "data"),
    "change": ("state_changes", "change"),
    "created_change": ("state_changes", "change"),
}


def _fill(
    cur: sqlite3.Cursor, q: dict[str, str], part: str, key: tuple[Any, ...], text: str
) -> int | None:
    """Write ``text`` as ``part`` of the row ``key``; the rowid `_as_text` then takes, or None.

    A part shorter than `_PIECE` is bound whole, and its statement run again
    with NULLs, which changes nothing: sqlite3 keeps a cached statement's
    parameters bound (a copy of each) until its next run. A longer one is
    written without SQLite holding a copy of it while Python holds it: a
    zero blob of its size is put in its place (SQLite writes its pages
    without making it in memory), and its pieces are written into it with
    incremental blob I/O.
    The value is then a BLOB, which `_as_text` makes TEXT, as the column
    holds every value, once the caller has let go of ``text``: that
    statement's two copies (the value read, the record made) are then all
    that is held of it, not three (Python's text, the bound parameter, the
    record).
    """
    # The run's row is written whole: incremental blob I/O cannot write a
    # column of a table with an index on an expression (runs_due), and a
    # value moved in from a scratch table was copied three times, not two.
    if len(text) < _PIECE or part == "state":
        whole = _WHOLE[part]
        cur.execute(q[whole], (*key, text))
        cur.execute(q[whole], (None,) * (len(key) + 1))
        return None
    pieces = range(0, len(text), _PIECE)
    # The size in UTF-8, without a second copy of a text that is not ASCII.
    size = utf8_size(text)
    found = cur.execute(q[f"zero_{part}"], (*key, size)).fetchall()
    if not found:  # no such row: nothing is written, as by the statement that binds it whole
        return None
    rowid: int = found[0][0]
    table, column = _COLUMN[part]
    with cur.connection.blobopen(table, column, rowid) as blob:
        for i in pieces:
            blob.write(text[i : i + _PIECE].encode())
    return rowid


def _as_text(cur: sqlite3.Cursor, q: dict[str, str], part: str, rowid: int | None) -> None:
    """Make the value `_fill` wrote in pieces (a BLOB) TEXT again, as the column holds it."""
    if rowid is not None:
        cur.execute(q["text_change" if part == "created_change" else f"text_{part}"], (rowid,))


def write_batch(cur: sqlite3.Cursor, q: dict[str, str], batch: Sequence[Write]) -> list[object]:
    """Write a batch of writes to distinct runs in one statement.

    One more statement reads back what its callers need to know.

    Outside a transaction the write is one of its own; inside one, it is part
    of it, and a batch that reads mail must be (the mail is deleted after).

    Returns:
        What each write's caller is answered, in batch order.

    Raises:
        sqlite3.Error: a statement failed. If it was the write, nothing of the
            batch was written; in a transaction, the caller rolls it back.
    """
    # One pass over the batch (the store's thread holds the GIL meanwhile,
    # which the event loop waits for).
    creates: list[Write] = []
    commits: list[Write] = []
    readers: list[Write] = []
    moves = keeps = finishes = changes = False
    for write in batch:
        if write.create:
            creates.append(write)
            continue
        commits.append(write)
        finishes |= write.finished
        changes |= write.change or write.clears
        if write.mail_read:
            readers.append(write)
        if write.kept:
            keeps = True
        else:
            moves = True
    cur.execute(
        q["write_batch"], (_array(creates), _array(commits), moves, keeps, finishes, changes)
    )
    taken, unusual = jsonutil.loads(cur.execute(q["batch_results"]).fetchone()[0])
    # Only what is not the usual answer is noted, by run (the runs are distinct).
    answers: dict[str, object] = {}
    for index in taken:
        answers[creates[index].run_id] = _existing(cur, q, creates[index].run_id)
    unread: dict[str, int] = {}
    for index, mail in unusual:
        run_id = commits[index].run_id
        if mail is None:
            answers[run_id] = LOST
        else:
            unread[run_id] = mail
            answers[run_id] = mail > 0
    for write in readers:
        if answers.get(write.run_id) is not LOST:
            left = _read_mail(cur, q, write, unread.get(write.run_id, 0))
            answers[write.run_id] = left > 0
    return [answers.get(write.run_id, None if write.create else False) for write in batch]


def write_each(cur: sqlite3.Cursor, q: dict[str, str], batch: Sequence[Write]) -> list[object]:
    """Write a batch one write at a time, each in a savepoint of its own.

    So a write that is wrong (a journal seq taken twice) fails alone.

    Returns:
        What each write's caller is answered, in batch order: the
        ``sqlite3.Error`` of a write that failed on its own.

    Raises:
        sqlite3.OperationalError: the database itself failed (I/O, a full
            disk): the whole batch fails.
    """
    answers: list[object] = []
    for write in batch:
        cur.execute("SAVEPOINT write")
        try:
            answers.append(write_one(cur, q, write))
            cur.execute("RELEASE write")
        except sqlite3.OperationalError:
            raise
        except sqlite3.Error as exc:
            cur.execute("ROLLBACK TO write")
            cur.execute("RELEASE write")
            answers.append(exc)
    return answers


def _read_mail(cur: sqlite3.Cursor, q: dict[str, str], write: Write, unread: int) -> int:
    """Delete the mail a commit read; return the run's unread mail count after."""
    cur.executemany(q["read_mail"], [(mail_id, write.run_id) for mail_id in write.mail_read])
    # executemany sums the rows each delete removed; ids that were already
    # read, or are not this run's, removed none and lower nothing.
    if cur.rowcount > 0:
        unread = cur.execute(q["lower_mail"], (cur.rowcount, write.run_id)).fetchall()[0][0]
    return unread


def _existing(cur: sqlite3.Cursor, q: dict[str, str], run_id: str) -> RunRecord:
    return records(cur, q, cur.execute(q["get_run"], (run_id,)).fetchall())[0]


def records(
    cur: sqlite3.Cursor, q: dict[str, str], rows: Sequence[tuple[Any, ...]]
) -> list[RunRecord]:
    """Runs' rows, as the queries select them, as `RunRecord` s.

    A run whose row counts state changes (a big state: see migration 0006)
    has its state read as its snapshot with its changes applied in order;
    one query reads the changes of every such run of ``rows``.
    """
    changed = [row[0] for row in rows if row[14]]
    if not changed:
        return [record(row) for row in rows]
    found = changes_of(cur, q, changed)
    return [record(row, found.get(row[0], ())) for row in rows]


def changes_of(
    cur: sqlite3.Cursor, q: dict[str, str], run_ids: list[str]
) -> dict[str, list[dict[str, Any]]]:
    """The state changes of the runs ``run_ids`` (in seq order), by run id.

    A change that names an event (a big new run's first state: migration
    0007) is the state that event's data holds. That data (big) is read
    with incremental blob I/O, straight from SQLite's pages into one bytes
    object, which is decoded and let go: read as a column, SQLite would make
    a copy of it first, held while sqlite3 made its own and while it was
    decoded (30 MiB at once for a 10 MB state, not 20).
    """
    found: dict[str, list[dict[str, Any]]] = {}
    rows = cur.execute(q["state_changes_of"], (jsonutil.dumps(run_ids),)).fetchall()
    for run_id, text, of_event, event in rows:
        if event is None:
            change = jsonutil.loads(text)
        else:
            with cur.connection.blobopen("events", "data", event, readonly=True) as blob:
                raw = blob.read()
            change = jsonutil.loads(raw)
            del raw
        found.setdefault(run_id, []).append(change["state"] if of_event else change)
    return found


def record(row: tuple[Any, ...], changes: Sequence[dict[str, Any]] = ()) -> RunRecord:
    """A run's row, as the queries select it, as a `RunRecord`.

    Args:
        row: The row.
        changes: The run's state changes (`changes_of`), in seq order: each
            sets top-level keys of the snapshot the row holds.
    """
    run_id, saga, version, status, state, error = row[:6]
    error = None if error is None else jsonutil.loads(error)
    state = jsonutil.loads(state)
    for change in changes:
        state.update(change)
    return RunRecord(run_id, saga, version, RunStatus(status), state, error, *row[6:14])
