"""The in-memory store: dicts in this process, for fast tests.

It keeps the SQLite store's semantics to the letter (fencing, idempotent
starts, claim rules, JSON round trips), so a test that passes here means the
same thing there. States and event data are encoded as JSON, as a database
encodes them: what goes in must be JSON, and what comes out is a fresh copy.
A small value is kept as its JSON text; a big one (`_BIG`) as a copy of its
lists and dicts that shares its strings and numbers (`_Kept`), which cannot
change in place: each run of a 10 MB state would otherwise hold its own
texts of it, where a database holds them on disk.

A big dict state (`_KEYED`) is kept key by key (`_Keyed`) from the write
that finds it big (the run's creation, or a commit), and so is each next
dict state of the run, whatever its size: each top-level key's value apart
(its text, a string as itself, or `_Kept`), with, while the writer's lease
holds the run, the values they were made from. A commit under that lease
encodes only the keys whose value is not the same object as the one kept:
as the SQL stores' `StateChanges` does, it relies on the engine building
each commit's state as a new dict whose values it replaces, never edits in
place (a value changed in place under the same key would be missed, as the
SQL stores would miss it). One that names the keys it set (`Commit.sets`)
looks at those alone, and holds their parts apart from the lists it
shares with the state before it (`_OVER`). Any other commit (one after a
claim or a release, one whose state is not a dict) encodes every key, or
the whole state, as a small state's always is. What is refused and what
is read back are the same either way.

``memory://`` is a private store; ``memory://NAME`` shares its data with every
other store of that name in the process, so two engines in one test can share
runs (and a second engine sees what the first one left).
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from itertools import compress, count, repeat
from operator import is_not
from typing import Any, Final

from sagakit import jsonutil
from sagakit.errors import LeaseLost, ReservationLapsed, StoreError
from sagakit.journal import Event, EventKind, RunStatus
from sagakit.jsonutil import encode_json, to_json
from sagakit.store import redact_url
from sagakit.store.base import (
    ACTIVE_STATUSES,
    FINISHED_STATUSES,
    Backlog,
    Commit,
    DataRewrite,
    Lease,
    Mail,
    Purged,
    Reservation,
    Rewritten,
    RunCounts,
    RunCursor,
    RunFilter,
    RunRecord,
    Store,
    newest_first,
    purge_statuses,
)
from sagakit.store.changes import SMALLEST

_SCHEME = "memory:"
_ABSENT: Final = object()


_BIG = 256 * 1024
"""A value whose JSON is this long or longer (bytes of UTF-8) may be kept as `_Kept`."""


class _Kept:
    """A big value as stored: its own dicts and lists, its strings and numbers shared.

    The strings, numbers, booleans and None of a value cannot change in place,
    so a copy of its dicts and lists isolates it from the caller as its JSON
    text would, without a text of its size per value stored (the run's state,
    its ``run_started`` data, each run's again). Only a value whose JSON text
    gives back the same data is kept so (`_keep`): what JSON would change (a
    tuple aside, which it makes a list, as the copy does) keeps its text.
    """

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


class _Dear(Exception):
    """The copy would hold more than the text, or JSON would change the value."""


# Values JSON gives back as they are, once `encode_json` took them (a float is
# then finite, a string has no lone surrogate): shared, not copied.
_SHARED: frozenset[type] = frozenset({str, int, float, bool, type(None)})


def _copy_in(value: Any, budget: list[int], depth: int = 1) -> Any:
    """``value``'s dicts and lists copied, the rest shared; raises `_Dear`."""
    kind = type(value)
    if (kind is dict or kind is list or kind is tuple) and depth > jsonutil.DEEPEST:
        # Kept as text, so that it is refused when read, as a database's
        # store refuses it (and as this one does a small value).
        raise _Dear
    if kind is dict:
        for key in value:
            if type(key) is not str:
                raise _Dear  # JSON makes it a string (and may merge two keys)
        copied: Any = {
            key: item if type(item) in _SHARED else _copy_in(item, budget, depth + 1)
            for key, item in value.items()
        }
    elif kind is list or kind is tuple:
        copied = [
            item if type(item) in _SHARED else _copy_in(item, budget, depth + 1) for item in value
        ]
    elif kind in _SHARED:
        return value
    else:
        raise _Dear  # a model, a date, a subclass: JSON changes it
    budget[0] -= sys.getsizeof(copied)
    if budget[0] < 0:
        raise _Dear
    return copied


def _keep(value: Any, raw: bytes) -> str | _Kept:
    """What the store keeps of ``value``, whose JSON (checked) is ``raw``.

    Its text when it is small, or when a copy of the value's dicts and lists
    would take more memory than the text (a value made of many small dicts),
    or when JSON would change the value.
    """
    if len(raw) >= _BIG:
        try:
            return _Kept(_copy_in(value, [len(raw)]))
        except (_Dear, RecursionError):
            pass
    return raw.decode()


def _copy_out(value: Any) -> Any:
    """A kept value's fresh copy: its dicts and lists made again."""
    kind = type(value)
    if kind is dict:
        return {
            key: item if type(item) in _SHARED else _copy_out(item) for key, item in value.items()
        }
    if kind is list:
        return [item if type(item) in _SHARED else _copy_out(item) for item in value]
    return value


_KEYED: Final = SMALLEST
"""A dict state whose JSON is this long or longer (bytes) is kept by `_Keyed`.

The SQL stores' threshold for writing a state by its changes. At 16 KiB, a
commit that changes one key costs less key by key than whole already (some
1 µs against 5 with 16 values of 1 KB; 45 against 52 with 1,600 numbers,
the dearest shape to compare); below it, the whole state is encoded in a few
µs, and a small state keeps the one path the instruction budget counts.
"""


_OVER = 64
"""How many keys' parts a `_Keyed` holds apart from ``parts`` before it puts them in place.

A commit that names the keys it set (`Commit.sets`) adds their parts to
those held apart, and shares the rest: with 1,000 keys, copying the lists
of parts and values at every commit, and making each key's place at a
run's first, cost more than the step that set one key.
"""


class _Keyed:
    """A big dict state as stored: each key's value apart, and the state it was made from.

    ``parts`` follows ``keys``: a value's JSON text as bytes; a string as
    itself (it cannot change in place, and its text would be a second copy
    of it: a state of many 1 KB strings would double); a big value as
    `_Kept`. The texts are decoded as one JSON array, in which each is as
    deep as it is in the state, so that what the decoder refuses as too
    deep is refused as it is in the state's whole text. ``over`` holds the
    parts of keys set since ``parts`` was made (at most `_OVER` of them),
    which replace theirs in ``parts``: the lists are shared, never changed.

    ``values`` is the committed state, for the lease ``epoch``: a commit
    under it whose value for a key is the same object reuses the key's
    part. It is a dict the store never changes: its own copy, or a commit's
    state (which its committer never changes, see `Commit.state`). None
    once the run is released or claimed: what a driver no longer holds is
    not kept alive here.
    """

    __slots__ = ("_index", "epoch", "keys", "over", "parts", "values")

    def __init__(
        self,
        keys: tuple[str, ...],
        parts: list[bytes | str | _Kept],
        values: dict[str, Any] | None,
        epoch: int,
        *,
        index: dict[str, int] | None = None,
        over: dict[str, bytes | str | _Kept] | None = None,
    ) -> None:
        self.keys = keys
        self.parts = parts
        self.values = values
        self.epoch = epoch
        self._index = index
        self.over = over

    def index(self) -> dict[str, int]:
        """Each key's place in ``keys``: made once, shared by the states that keep the keys."""
        if self._index is None:
            self._index = {key: at for at, key in enumerate(self.keys)}
        return self._index

    def flat(self) -> tuple[tuple[str, ...], list[bytes | str | _Kept]]:
        """The keys and their parts, those held apart put in place (``parts`` itself if none)."""
        over = self.over
        if not over:
            return self.keys, self.parts
        keys, parts, index = self.keys, self.parts.copy(), self.index()
        added: list[str] = []
        for key, part in over.items():
            at = index.get(key)
            if at is None:
                # Only if a committer named a key its state gained while
                # another went unnamed (see `Commit.sets`): kept, not lost.
                added.append(key)
                parts.append(part)
            else:
                parts[at] = part
        return (keys + tuple(added) if added else keys), parts

    def without_values(self) -> _Keyed:
        """The same state without the values of the lease that wrote it."""
        return _Keyed(self.keys, self.parts, None, self.epoch, index=self._index, over=self.over)

    def load(self) -> dict[str, Any]:
        """The state as data: a fresh copy, in its key order."""
        keys, parts = self.flat()
        texts = [part for part in parts if type(part) is bytes]
        decoded = iter(jsonutil.loads(b"[" + b",".join(texts) + b"]") if texts else ())
        return {
            key: next(decoded)
            if isinstance(part, bytes)
            else part
            if isinstance(part, str)
            else _copy_out(part.value)
            for key, part in zip(keys, parts, strict=True)
        }


def _part(key: str, value: Any) -> bytes | str | _Kept | None:
    """What a big state keeps of ``key``'s ``value`` (see `_Keyed`).

    None if the key or the value is not JSON, or the value's text may hold
    NaN or Infinity: the caller then has the whole state refused as
    `encode_json` refuses it.
    """
    try:
        # A string is refused only for a lone surrogate, which ASCII has not.
        if not key.isascii():
            to_json(key)
        if type(value) is str:
            if not value.isascii():
                to_json(value)
            return value  # (its text holds no bare NaN)
        raw: bytes = to_json(value)
    except (ValueError, TypeError):
        return None
    if len(raw) >= _BIG:
        # As `_big`: a byte looked for with memchr before a word.
        if (raw.find(b"N") >= 0 and raw.find(b"NaN") >= 0) or (
            raw.find(b"I") >= 0 and raw.find(b"Infinity") >= 0
        ):
            return None
        try:
            # Depth 2: the value is in the state, as it would be kept whole.
            return _Kept(_copy_in(value, [len(raw)], 2))
        except (_Dear, RecursionError):
            pass
    if b"NaN" in raw or b"Infinity" in raw:
        return None
    return raw


def _named(
    state: dict[Any, Any], prev: _Keyed, run_id: str, sets: tuple[str, ...]
) -> _Keyed | None:
    """`_keyed` when the committer named the keys it set: those alone are looked at.

    The others are the objects ``prev`` holds (`Commit.sets`): with 1,000
    keys, comparing every value cost more than the rest of the step. The
    parts of the keys that changed are held apart (`_Keyed.over`) until
    there are more than `_OVER`. None if a named key is new or gone, or the
    state has more or fewer keys: then every value is compared.
    """
    before = prev.values
    assert before is not None
    if len(state) != len(before):
        return None
    over: dict[str, bytes | str | _Kept] | None = None
    for key in sets:
        value = state.get(key, _ABSENT)
        if value is _ABSENT or (old := before.get(key, _ABSENT)) is _ABSENT:
            return None
        if value is not old:
            part = _part(key, value)
            if part is None:
                encode_json(state, "state", run_id)  # raises, naming the state
                part = encode_json(value, "state", run_id).encode()
            if over is None:
                over = prev.over.copy() if prev.over else {}
            over[key] = part
    if over is None:
        return prev  # never changed once stored: shared
    kept = _Keyed(prev.keys, prev.parts, state, prev.epoch, index=prev._index, over=over)
    if len(over) <= _OVER:
        return kept
    # Put in place now, in a list of their own: a copy of the parts, once
    # for every `_OVER` keys set (and the keys' places, once for the run).
    keys, parts = kept.flat()
    index = kept._index if keys is prev.keys else None  # (a key added: places anew)
    return _Keyed(keys, parts, state, prev.epoch, index=index)


def _keyed(
    state: dict[Any, Any],
    prev: _Keyed | None,
    epoch: int,
    run_id: str,
    sets: tuple[str, ...] | None = None,
) -> _Keyed | None:
    """``state`` kept key by key, reusing what ``prev`` keeps of the values it shares.

    Only the keys whose value is not the object ``prev`` holds for ``epoch``
    are encoded; with ``sets`` (`Commit.sets`), only those keys are looked
    at. None if a key is not a string (JSON would make it one).

    Raises:
        StateError: a value is refused, as `encode_json` refuses the whole state.
    """
    if sets is not None and prev is not None and prev.values is not None and prev.epoch == epoch:
        named = _named(state, prev, run_id, sets)
        if named is not None:
            return named
    keys = tuple(state)
    values = tuple(state.values())
    parts: list[bytes | str | _Kept]
    if prev is not None and (before := prev.values) is not None and prev.epoch == epoch:
        known_keys, known_parts = prev.flat()
        # The values ``prev`` was made from, in its keys' order.
        was_values = map(before.get, known_keys, repeat(_ABSENT))
        known = len(known_keys)
        if keys[:known] == known_keys:
            # The same keys in the same order, maybe more after them: only
            # the values that are not the same objects are encoded.
            parts = known_parts.copy() if known_parts is prev.parts else known_parts
            todo = [*compress(count(), map(is_not, values, was_values)), *range(known, len(keys))]
        else:  # a key removed or moved: the parts put in the state's order
            was = dict(zip(known_keys, zip(was_values, known_parts, strict=True), strict=True))
            parts = []
            todo = []
            for at, (key, value) in enumerate(state.items()):
                old = was.get(key)
                if old is not None and old[0] is value:
                    parts.append(old[1])
                else:
                    parts.append(b"")
                    todo.append(at)
    else:
        parts = [b""] * len(keys)
        todo = list(range(len(keys)))
    for at in todo:
        key = keys[at]
        if type(key) is not str:
            return None
        part = _part(key, values[at])
        if part is None:
            encode_json(state, "state", run_id)  # raises, naming the state
            part = encode_json(values[at], "state", run_id).encode()
        if at < len(parts):
            parts[at] = part
        else:
            parts.append(part)
    # The store's own copy: the caller may change the dict it gave (a
    # commit's state never changes once committed, a new run's may).
    return _Keyed(keys, parts, dict(state), epoch)


def _load(stored: str | _Kept | _Keyed) -> Any:
    """A stored value as data: a fresh copy, as a database's would be."""
    if type(stored) is str:
        return jsonutil.loads(stored)
    if type(stored) is _Keyed:
        return stored.load()
    assert isinstance(stored, _Kept)
    return _copy_out(stored.value)


@dataclass(slots=True)
class _Run:
    """A stored run: `RunRecord`'s fields, with JSON kept as text (or, big, `_Kept`, `_Keyed`)."""

    id: str
    saga: str
    version: str
    status: RunStatus
    state: str | _Kept | _Keyed
    error: str | None
    created_at: float
    updated_at: float
    owner: str | None
    lease_epoch: int
    lease_until: float | None
    wake_at: float | None
    last_seq: int
    mail: int = 0
    # The journal by seq; a dict so a duplicate seq is refused as a primary key would.
    events: dict[int, tuple[str, float, str | None, int | None, str | _Kept]] = field(
        default_factory=dict
    )

    def record(self) -> RunRecord:
        # Positional, in field order: keywords cost a dict, for every run.
        return RunRecord(
            self.id,
            self.saga,
            self.version,
            self.status,
            jsonutil.loads(state) if type(state := self.state) is str else _load(state),
            None if self.error is None else jsonutil.loads(self.error),
            self.created_at,
            self.updated_at,
            self.owner,
            self.lease_epoch,
            self.lease_until,
            self.wake_at,
            self.last_seq,
            self.mail,
        )

    def claimable(self, now: float) -> bool:
        return self.owner is None or self.lease_until is None or self.lease_until < now

    def unheld(self, now: float) -> bool:
        # Owned with a live lease, or released with a hold (see `Store.release`).
        return self.lease_until is None or self.lease_until < now

    def holds(self, lease: Lease) -> bool:
        return self.owner == lease.owner and self.lease_epoch == lease.epoch

    def due(self, now: float) -> bool:
        if self.mail > 0:
            return True
        if self.wake_at is not None:
            return self.wake_at <= now
        return self.status in ACTIVE_STATUSES


@dataclass(slots=True)
class _Data:
    """The runs of one store; the lock lets engines on other threads share it."""

    runs: dict[str, _Run] = field(default_factory=dict)
    # Mail by id (JSON kept as text, as a database keeps it), and reservations by name.
    mail: dict[int, tuple[str, str, str, float]] = field(default_factory=dict)
    next_mail: int = 1
    reservations: dict[str, Reservation] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    keyed: bool = False
    """A run's state was kept key by key (`_Keyed`) once: commits look for it."""


_shared: dict[str, _Data] = {}
_shared_lock = threading.Lock()


def forget_shared(name: str | None = None) -> None:
    """Drop the data of the shared store ``memory://NAME`` (all of them if None).

    Stores already holding it keep their reference; new ones start empty.
    """
    with _shared_lock:
        if name is None:
            _shared.clear()
        else:
            _shared.pop(name, None)


def _encode(value: Any, run_id: str, seq: int | None = None) -> str | _Kept:
    """What is kept of a state (``seq`` None) or of event ``seq``'s data: `encode_json`'s text.

    A big value is kept by `_keep`, from the encoder's bytes: its text, as
    big, is made only if it is kept as text. The part is named only for an
    error: naming it (``f"event {seq} data"``) costs about as much as the
    rest of a small value's encoding, for every event written.
    """
    if type(value) is dict and not value:
        return "{}"  # most events' data, as `encode_json` says it
    try:
        raw: bytes = to_json(value)
    except (ValueError, TypeError):
        raw = b"NaN"  # to `encode_json` below, which refuses it naming the part
    if len(raw) >= _BIG:
        return _big(value, raw, run_id, seq)
    text = raw.decode()
    # (`in` on bytes is some ten times slower than on text: it asks first
    # whether the needle is an int, and clears the error.)
    if "NaN" in text or "Infinity" in text:
        # What `encode_json` refuses, it refuses with the part named; what
        # it takes (a string that says "NaN"), it gives back as it is.
        return encode_json(value, "state" if seq is None else f"event {seq} data", run_id)
    return text


def _big(value: Any, raw: bytes, run_id: str, seq: int | None) -> str | _Kept:
    """`_encode`'s end for a value whose JSON, ``raw``, is `_BIG` or more."""
    # A byte is looked for with memchr, a hundred times faster than a word
    # (1 ms a MB): most big texts have no capital N or I at all.
    if (raw.find(b"N") < 0 or raw.find(b"NaN") < 0) and (
        raw.find(b"I") < 0 or raw.find(b"Infinity") < 0
    ):
        return _keep(value, raw)
    return encode_json(value, "state" if seq is None else f"event {seq} data", run_id)


def _reused(data: _Data, state: Any, commit: Commit) -> _Keyed | None:
    """``commit``'s state kept key by key, if its run's is: only its changed keys encoded.

    None if the run's state is not kept so (or ``state`` is not a dict).
    """
    # Read without the lock: a stored `_Keyed` is never changed, only
    # replaced, and the commit's lease is checked under the lock.
    run = data.runs.get(commit.run_id)
    if run is None or type(prev := run.state) is not _Keyed or type(state) is not dict:
        return None
    return _keyed(state, prev, commit.lease.epoch, commit.run_id, commit.sets)


def _big_state(
    data: _Data, state: Any, raw: bytes, run_id: str, epoch: int | None
) -> str | _Kept | _Keyed:
    """What is kept of a run's state, whose JSON, ``raw``, is `_KEYED` or more.

    A dict is kept key by key, for the commits under lease ``epoch`` to
    reuse (None: no lease holds the run), each key's value checked as
    `encode_json` checks the whole state; another state, or one with a key
    that is not a string, is kept whole.
    """
    if type(state) is dict and (keyed := _first_keyed(data, state, run_id, epoch)) is not None:
        return keyed
    if len(raw) >= _BIG:
        return _big(state, raw, run_id, None)
    text = raw.decode()
    if "NaN" in text or "Infinity" in text:
        return encode_json(state, "state", run_id)
    return text


def _first_keyed(
    data: _Data, state: dict[Any, Any], run_id: str, epoch: int | None
) -> _Keyed | None:
    """``state`` kept key by key (`_keyed`), with its values while lease ``epoch`` holds.

    None if a key is not a string. Raises `StateError` as `_keyed` does.
    """
    keyed = _keyed(state, None, epoch or 0, run_id)
    if keyed is None:
        return None
    data.keyed = True
    return keyed if epoch is not None else keyed.without_values()


def _strings_reach(state: dict[Any, Any], size: int) -> bool:
    """Whether the strings among ``state``'s values hold ``size`` characters or more.

    Their JSON takes at least as many bytes, so the state's does too.
    """
    total = 0
    for value in state.values():
        if type(value) is str:
            total += len(value)
            if total >= size:
                return True
    return False


def _create_state(data: _Data, run: RunRecord) -> str | _Kept | _Keyed:
    """What is kept of a new run's state: `_encode`'s, or `_big_state`'s when big.

    A big state is kept key by key from the start: the run's first commit
    then encodes only what its first step changed, not the whole state again.
    """
    value = run.state
    if type(value) is dict and not value:
        return "{}"
    epoch = None if run.owner is None else run.lease_epoch
    if type(value) is dict and len(value) > 16 and _strings_reach(value, _KEYED):
        # Big by its strings alone: kept key by key without the whole
        # state's text, made only to be measured (some 2 ms a MB, a third of
        # a 1 MB run's start). Each value is checked as the text would be.
        keyed = _first_keyed(data, value, run.id, epoch)
        if keyed is not None:
            return keyed
    try:
        raw: bytes = to_json(value)
    except (ValueError, TypeError):
        raw = b"NaN"  # to `encode_json` below, which refuses it naming the state
    if len(raw) >= _KEYED:
        return _big_state(data, value, raw, run.id, epoch)
    text = raw.decode()
    if "NaN" in text or "Infinity" in text:
        return encode_json(value, "state", run.id)
    return text


def _encode_events(run_id: str, events: Sequence[Event]) -> dict[int, tuple[Any, ...]]:
    encoded: dict[int, tuple[Any, ...]] = {}
    for event in events:
        if event.run_id != run_id:
            raise ValueError(f"event of run {event.run_id!r} written to run {run_id!r}")
        if event.seq in encoded:
            raise StoreError(f"run {run_id!r}: journal seq {event.seq} is written twice")
        data = _encode(event.data, run_id, event.seq)
        encoded[event.seq] = (str(event.kind), event.at, event.step, event.attempt, data)
    return encoded


class MemoryStore(Store):
    """A store in this process's memory. Nothing survives the process.

    Args:
        url: ``memory://`` for a private store, ``memory://NAME`` for the
            store shared by that name within the process.
    """

    def __init__(self, url: str = "memory://") -> None:
        if not url.startswith(_SCHEME):
            raise StoreError(
                f"not a memory store URL: {redact_url(url)!r}; use memory:// or memory://NAME"
            )
        # It takes no options, and a query or user part would be silently
        # taken as part of the name.
        if any(mark in url for mark in "?#@"):
            raise StoreError(
                f"the memory store takes no options or credentials, got {redact_url(url)!r}; "
                "use memory:// or memory://NAME"
            )
        self.url = url
        self.name = url.removeprefix(_SCHEME).removeprefix("//") or None
        self._data: _Data | None = None
        self._open = False

    async def open(self) -> None:
        """Attach to the named data (created on first use) or a private one."""
        if self._data is None:
            if self.name is None:
                self._data = _Data()
            else:
                with _shared_lock:
                    self._data = _shared.setdefault(self.name, _Data())
        self._open = True

    async def close(self) -> None:
        """Detach. The data of a named store stays for the next store of that name."""
        self._open = False

    def _runs(self) -> _Data:
        if not self._open or self._data is None:
            raise StoreError(f"the store {self.url} is not open; call `await store.open()` first")
        return self._data

    async def create_run(self, run: RunRecord, events: Sequence[Event]) -> tuple[RunRecord, bool]:
        """See `Store.create_run`."""
        data = self._runs()
        # Positional, in field order (mail: 0): keywords cost a dict, for every run.
        stored = _Run(
            run.id,
            run.saga,
            run.version,
            run.status if type(run.status) is RunStatus else RunStatus(run.status),
            _create_state(data, run),
            None if run.error is None else encode_json(run.error, "error", run.id),
            run.created_at,
            run.updated_at,
            run.owner,
            run.lease_epoch,
            run.lease_until,
            run.wake_at,
            events[-1].seq if events else run.last_seq,
            0,  # mail
            _encode_events(run.id, events),
        )
        with data.lock:
            existing = data.runs.get(run.id)
            if existing is not None:
                return existing.record(), False
            data.runs[run.id] = stored
        # The run as given (its state and error too), as the SQL stores return
        # it, rather than read back from its JSON: a decode and a `RunRecord`
        # more, for every run. (The engine's states are JSON data already.)
        if type(run.status) is RunStatus and run.last_seq == stored.last_seq and run.mail == 0:
            return run, True
        return replace(run, status=stored.status, last_seq=stored.last_seq, mail=0), True

    async def commit(self, commit: Commit) -> bool:
        """See `Store.commit`."""
        data = self._data
        if not self._open or data is None:
            data = self._runs()  # raises
        run_id = commit.run_id
        # `_encode` written out: this runs at every step.
        value = commit.state
        state: str | _Kept | _Keyed
        if type(value) is dict and not value:
            state = "{}"
        elif data.keyed and (keyed := _reused(data, value, commit)) is not None:
            # (A store that never kept a state key by key looks nothing up.)
            state = keyed
        else:
            try:
                raw: bytes = to_json(value)
            except (ValueError, TypeError):
                raw = b"NaN"  # to `encode_json` below, which refuses it naming the state
            if len(raw) >= _KEYED:
                state = _big_state(data, value, raw, run_id, commit.lease.epoch)
            else:
                state = raw.decode()
                if "NaN" in state or "Infinity" in state:
                    state = encode_json(value, "state", run_id)
        error = None if commit.error is None else encode_json(commit.error, "error", run_id)
        # `_encode_events` written out: this runs at every step.
        events: dict[int, tuple[Any, ...]] = {}
        for event in commit.events:
            if event.run_id != run_id:
                raise ValueError(f"event of run {event.run_id!r} written to run {run_id!r}")
            seq = event.seq
            if seq in events:
                raise StoreError(f"run {run_id!r}: journal seq {seq} is written twice")
            value = event.data
            stored = (
                "{}"  # most events' data, as `encode_json` says it
                if type(value) is dict and not value
                else _encode(value, run_id, seq)
            )
            events[seq] = (str(event.kind), event.at, event.step, event.attempt, stored)
        with data.lock:
            run = data.runs.get(run_id)
            lease = commit.lease
            # `_Run.holds` written out: this runs at every step.
            if run is None or run.owner != lease.owner or run.lease_epoch != lease.epoch:
                raise LeaseLost(run_id)
            # Each of the commit's few seqs looked up (a plain loop: this runs
            # at every step): `isdisjoint` would walk the whole journal, which
            # grows with the saga.
            taken = run.events
            for seq in events:
                if seq in taken:
                    raise StoreError(f"run {run_id!r}: journal seq {seq} is already taken")
            for name in commit.requires:
                held = data.reservations.get(name)
                holder = None if held is None or held.expires_at <= commit.at else held.run_id
                if holder != run_id:
                    raise ReservationLapsed(run_id, name, holder)
            run.events.update(events)
            status = commit.status
            # A RunStatus already, unless a caller passed its string; the
            # enum's call is slow enough to show at every step.
            run.status = status if type(status) is RunStatus else RunStatus(status)
            run.state = state
            run.error = error
            run.updated_at = commit.at
            run.wake_at = commit.wake_at
            if commit.release:
                run.owner = None
                run.lease_until = None
                if type(state) is _Keyed:
                    run.state = state.without_values()  # the driver's values: not kept alive
            if commit.events:
                run.last_seq = commit.events[-1].seq
            for mail_id in set(commit.mail_read) if commit.mail_read else ():
                if data.mail.get(mail_id, ("",))[0] == run_id:  # only the run's own mail
                    del data.mail[mail_id]
                    run.mail -= 1
            # (Most stores hold no reservation: then no list is made to say so.)
            if data.reservations and run.status in FINISHED_STATUSES:
                for name in [n for n, r in data.reservations.items() if r.run_id == run_id]:
                    del data.reservations[name]
            return run.mail > 0

    async def get_run(self, run_id: str) -> RunRecord | None:
        """See `Store.get_run`."""
        data = self._runs()
        with data.lock:
            run = data.runs.get(run_id)
            return None if run is None else run.record()

    async def list_runs(
        self,
        *,
        status: RunStatus | None = None,
        saga: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[RunRecord]:
        """See `Store.list_runs`. Newest first: by ``created_at``, then id, descending."""
        data = self._runs()
        if limit <= 0:
            return []
        with data.lock:
            found = [
                run
                for run in data.runs.values()
                if (status is None or run.status == status) and (saga is None or run.saga == saga)
            ]
            found.sort(key=lambda run: (run.created_at, run.id), reverse=True)
            return [run.record() for run in found[offset : offset + limit]]

    async def page_runs(
        self,
        *,
        after: RunCursor | None = None,
        before: RunCursor | None = None,
        limit: int = 50,
        where: RunFilter | None = None,
    ) -> list[RunRecord]:
        """See `Store.page_runs`."""
        if after is not None and before is not None:
            raise ValueError("page_runs takes after= or before=, not both")
        data = self._runs()
        if limit <= 0:
            return []
        where = where or RunFilter()
        with data.lock:
            found = [run.record() for run in data.runs.values()]
        found = [run for run in found if where.matches(run)]
        return newest_first(found, after=after, before=before, limit=limit)

    async def count_runs(self) -> RunCounts:
        """See `Store.count_runs`."""
        data = self._runs()
        counts: RunCounts = {}
        with data.lock:
            for run in data.runs.values():
                per = counts.setdefault(run.saga, {})
                per[run.status] = per.get(run.status, 0) + 1
        return counts

    async def backlog(self, *, now: float) -> Backlog:
        """See `Store.backlog`."""
        data = self._runs()
        attention: dict[str, int] = {}
        owed = due = 0
        oldest: float | None = None
        with data.lock:
            for run in data.runs.values():
                if run.status is RunStatus.NEEDS_ATTENTION:
                    attention[run.saga] = attention.get(run.saga, 0) + 1
                    owed += run.wake_at is not None
                if run.unheld(now) and run.due(now):
                    due += 1
                    since = run.created_at if run.wake_at is None else run.wake_at
                    oldest = since if oldest is None else min(oldest, since)
        return Backlog(attention, owed, due, oldest)

    async def journal(self, run_id: str, *, after_seq: int = 0) -> list[Event]:
        """See `Store.journal`."""
        data = self._runs()
        with data.lock:
            run = data.runs.get(run_id)
            if run is None:
                return []
            rows = sorted((seq, row) for seq, row in run.events.items() if seq > after_seq)
        return [
            Event(run_id, seq, EventKind(kind), at, step, attempt, _load(payload))
            for seq, (kind, at, step, attempt, payload) in rows
        ]

    async def claim(
        self, run_id: str, *, owner: str, now: float, lease_until: float
    ) -> RunRecord | None:
        """See `Store.claim`."""
        data = self._runs()
        with data.lock:
            run = data.runs.get(run_id)
            if run is None or not run.claimable(now):
                return None
            self._take(run, owner, lease_until)
            return run.record()

    async def claim_due(
        self,
        *,
        owner: str,
        now: float,
        lease_until: float,
        limit: int,
        sagas: Sequence[tuple[str, str]] | None = None,
    ) -> list[RunRecord]:
        """See `Store.claim_due`. Ordered by ``wake_at``, or ``created_at`` when unset."""
        data = self._runs()
        wanted = None if sagas is None else {(name, version) for name, version in sagas}
        with data.lock:
            due = [
                run
                for run in data.runs.values()
                if run.unheld(now)
                and run.due(now)
                and (wanted is None or (run.saga, run.version) in wanted)
            ]
            due.sort(key=lambda run: run.created_at if run.wake_at is None else run.wake_at)
            claimed = []
            for run in due[: max(limit, 0)]:
                self._take(run, owner, lease_until)
                claimed.append(run.record())
            return claimed

    async def owners(self) -> set[str]:
        """See `Store.owners`."""
        data = self._runs()
        with data.lock:
            return {run.owner for run in data.runs.values() if run.owner is not None}

    async def claim_held(
        self,
        owners: Sequence[str],
        *,
        owner: str,
        now: float,
        lease_until: float,
        limit: int,
        sagas: Sequence[tuple[str, str]] | None = None,
    ) -> list[RunRecord]:
        """See `Store.claim_held`."""
        data = self._runs()
        held = set(owners)
        wanted = None if sagas is None else {(name, version) for name, version in sagas}
        with data.lock:
            found = [
                run
                for run in data.runs.values()
                if run.owner is not None
                and run.owner in held
                and run.due(now)
                and (wanted is None or (run.saga, run.version) in wanted)
            ]
            found.sort(key=lambda run: (run.created_at, run.id))
            claimed = []
            for run in found[: max(limit, 0)]:
                self._take(run, owner, lease_until)
                claimed.append(run.record())
            return claimed

    @staticmethod
    def _take(run: _Run, owner: str, lease_until: float) -> None:
        if type(state := run.state) is _Keyed and state.values is not None:
            run.state = state.without_values()  # the last holder's values: not kept alive
        run.owner = owner
        run.lease_epoch += 1
        run.lease_until = lease_until
        if run.status is not RunStatus.NEEDS_ATTENTION:  # its timer is its owed alert
            run.wake_at = None

    async def renew(
        self, leases: dict[str, Lease], *, lease_until: float, now: float | None = None
    ) -> set[str]:
        """See `Store.renew`."""
        data = self._runs()
        lost: set[str] = set()
        with data.lock:
            for run_id, lease in leases.items():
                run = data.runs.get(run_id)
                if run is None or not run.holds(lease):
                    lost.add(run_id)
                else:
                    run.lease_until = lease_until
        return lost

    async def release(self, run_id: str, lease: Lease, *, hold_until: float | None = None) -> None:
        """See `Store.release`."""
        data = self._runs()
        with data.lock:
            run = data.runs.get(run_id)
            if run is not None and run.holds(lease):
                if type(state := run.state) is _Keyed and state.values is not None:
                    run.state = state.without_values()
                run.owner = None
                run.lease_until = hold_until
                if hold_until is not None:
                    run.wake_at = hold_until

    async def post(self, run_id: str, kind: str, data: Any, *, at: float) -> Mail | None:
        """See `Store.post`."""
        store = self._runs()
        payload = encode_json(data, f"{kind} mail", run_id)
        with store.lock:
            run = store.runs.get(run_id)
            if run is None:
                return None
            mail_id = store.next_mail
            store.next_mail += 1
            store.mail[mail_id] = (run_id, kind, payload, at)
            run.mail += 1
        return Mail(mail_id, run_id, kind, jsonutil.loads(payload), at)

    async def mail(self, run_id: str) -> list[Mail]:
        """See `Store.mail`."""
        store = self._runs()
        with store.lock:
            found = sorted((i, m) for i, m in store.mail.items() if m[0] == run_id)
        return [Mail(i, run, kind, jsonutil.loads(raw), at) for i, (run, kind, raw, at) in found]

    async def reserve(
        self, name: str, *, run_id: str, now: float, expires_at: float
    ) -> Reservation:
        """See `Store.reserve`."""
        store = self._runs()
        with store.lock:
            held = store.reservations.get(name)
            if held is None or held.expires_at <= now or held.run_id == run_id:
                held = store.reservations[name] = Reservation(name, run_id, expires_at)
            return held

    async def reserve_all(
        self, names: Sequence[str], *, run_id: str, now: float, expires_at: float
    ) -> list[Reservation]:
        """See `Store.reserve_all`."""
        store = self._runs()
        wanted = list(dict.fromkeys(names))
        with store.lock:
            for name in wanted:
                held = store.reservations.get(name)
                if held is not None and held.expires_at > now and held.run_id != run_id:
                    return [held]
            for name in wanted:
                store.reservations[name] = Reservation(name, run_id, expires_at)
            return [store.reservations[name] for name in wanted]

    async def release_reservations(self, run_id: str, names: Sequence[str] | None = None) -> int:
        """See `Store.release_reservations`."""
        store = self._runs()
        with store.lock:
            mine = [
                n
                for n, r in store.reservations.items()
                if r.run_id == run_id and (names is None or n in names)
            ]
            for name in mine:
                del store.reservations[name]
            return len(mine)

    async def reservations(
        self, *, run_id: str | None = None, now: float | None = None
    ) -> list[Reservation]:
        """See `Store.reservations`."""
        store = self._runs()
        with store.lock:
            return [
                r
                for _, r in sorted(store.reservations.items())
                if (run_id is None or r.run_id == run_id) and (now is None or r.expires_at > now)
            ]

    async def rewrite_data(self, rewrite: DataRewrite, *, batch_size: int = 500) -> Rewritten:
        """See `Store.rewrite_data`. Each batch of runs (with their events) under the lock."""
        store = self._runs()
        if batch_size < 1:
            raise StoreError(f"batch_size must be at least 1, got {batch_size}")
        with store.lock:
            run_ids = sorted(store.runs)
            mail_ids = sorted(store.mail)
        runs = events = mails = 0
        for start in range(0, len(run_ids), batch_size):
            with store.lock:
                # Worked out whole before anything is written: an error leaves the batch as it was.
                states: list[tuple[_Run, str | _Kept | _Keyed]] = []
                rows: list[tuple[_Run, int, str | _Kept]] = []
                for run_id in run_ids[start : start + batch_size]:
                    run = store.runs.get(run_id)
                    if run is None:
                        continue
                    new = rewrite("state", run_id, _load(run.state))
                    if new is not None:
                        text = encode_json(new, "state", run_id)
                        states.append((run, _keep(new, text.encode())))
                    for seq, (*_, payload) in sorted(run.events.items()):
                        new = rewrite("event", run_id, _load(payload))
                        if new is not None:
                            text = encode_json(new, f"event {seq} data", run_id)
                            rows.append((run, seq, _keep(new, text.encode())))
                for run, kept in states:
                    run.state = kept
                for run, seq, kept in rows:
                    kind, at, step, attempt, _ = run.events[seq]
                    run.events[seq] = (kind, at, step, attempt, kept)
                runs += len(states)
                events += len(rows)
        for start in range(0, len(mail_ids), batch_size):
            with store.lock:
                letters: list[tuple[int, str]] = []
                for mail_id in mail_ids[start : start + batch_size]:
                    letter = store.mail.get(mail_id)
                    if letter is None:
                        continue  # read meanwhile
                    new = rewrite("mail", letter[0], jsonutil.loads(letter[2]))
                    if new is not None:
                        letters.append((mail_id, encode_json(new, f"{letter[1]} mail", letter[0])))
                for mail_id, text in letters:
                    run_id, kind, _, at = store.mail[mail_id]
                    store.mail[mail_id] = (run_id, kind, text, at)
                mails += len(letters)
        return Rewritten(runs=runs, events=events, mail=mails)

    async def purge(
        self,
        *,
        before: float,
        statuses: Sequence[RunStatus] = FINISHED_STATUSES,
        limit: int = 500,
        archive: Callable[[Sequence[Purged]], None] | None = None,
    ) -> list[Purged]:
        """See `Store.purge`. One batch under the lock."""
        wanted = set(purge_statuses(statuses))
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        data = self._runs()
        with data.lock:
            found = sorted(
                (
                    run
                    for run in data.runs.values()
                    if run.status in wanted
                    and run.updated_at < before
                    and (run.owner is None or (run.lease_until or 0.0) < before)
                ),
                key=lambda run: (run.created_at, run.id),
            )[:limit]
            purged: list[Purged] = []
            for run in found:
                journal = None
                if archive is not None:
                    journal = tuple(
                        Event(run.id, seq, EventKind(kind), at, step, attempt, _load(raw))
                        for seq, (kind, at, step, attempt, raw) in sorted(run.events.items())
                    )
                purged.append(Purged(run.record(), journal))
            if archive is not None and purged:
                archive(purged)  # before anything is deleted: it may refuse the batch
            gone = {run.id for run in found}
            for run_id in gone:
                del data.runs[run_id]
            for mail_id in [i for i, letter in data.mail.items() if letter[0] in gone]:
                del data.mail[mail_id]
            for name in [n for n, r in data.reservations.items() if r.run_id in gone]:
                del data.reservations[name]
        return purged
