"""Writing a big state by its changes: what a store remembers of each run's state.

A step changes a few top-level keys of the state, however big the state is.
A store that writes the whole state at each commit writes (and encodes, and
holds in memory) the whole state at every step. Instead, a store that has
somewhere to keep changes (SQLite: the ``state_changes`` table) writes, for
a run whose state is big, only the keys a commit sets, and the whole state
(a snapshot) again only once the changes written since it outweigh it; the
state is read back as the snapshot with its changes applied in order.

`StateChanges` decides, commit by commit, which of the two to write. It
compares the commit's state with the state of the run's last commit that
this store wrote, key by key, by identity: the engine builds each commit's
state as a new dict whose values it replaces, never edits in place (a step's
result, a signal's payload), so a key whose value is the same object is
unchanged. It knows a run only while it writes it under one lease, commit
after commit: after a restart, a claim, or a commit that failed, it knows
nothing, and the next commit writes the whole state (and clears the run's
changes, which another process may have written).

The choice only changes how much is written: what is read back is the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from sagakit import jsonutil
from sagakit.journal import JSON, Event
from sagakit.store.base import Commit

SMALLEST: Final = 16_384
"""A state whose snapshot is smaller than this many bytes is always written
whole: one more row to write, and to read back, costs more than it saves."""

_ABSENT: Final = object()

_PIECE: Final = 256 * 1024
"""Characters encoded at a time by `utf8_size` (a text is never copied whole)."""


def utf8_size(text: str) -> int:
    """``text``'s size in bytes of UTF-8, as every store counts a state's size.

    A state's size decides how it is written (`StateChanges`), and a change's
    is counted in bytes: in characters, a state that is not ASCII would count
    up to four times smaller than it is, and be written whole at every commit.
    A text that is not ASCII is encoded a piece at a time, not copied whole.
    """
    if text.isascii():
        return len(text)
    return sum(len(text[i : i + _PIECE].encode()) for i in range(0, len(text), _PIECE))


# How many runs a store remembers at most (a worker drives far fewer at once).
_MOST: Final = 100_000


@dataclass(slots=True)
class _Known:
    """A run as this store last wrote it."""

    epoch: int
    last_seq: int
    state: JSON
    """The state of the last commit (its dict, not a copy: never changed)."""
    snapshot: int
    """Bytes of the last write of the whole state."""
    pending: int
    """Bytes of the changes written since (0: none)."""
    inline: bool
    """The whole state was last written in the run's row (not as a change)."""


class StateChanges:
    """What one store remembers of the runs it writes, to write their changes.

    A commit writes the state one of three ways (`change` tells which):

    - whole, in the run's row (a small state; or a run this store does not
      know, whose size it learns from this write: the SQLite store writes
      such a state as the run's one change instead when, encoded, it is big);
    - as a change: the keys the commit sets, added to the run's changes;
    - whole again, replacing the run's changes, once the changes written
      since it was last written whole would outweigh it: in the run's row,
      or, with ``moves_out``, as a change that replaces the others (the
      row then holds an empty state).

    Args:
        moves_out: Keep a big state out of the run's row. For a store that
            writes a row whole at each update (SQLite rewrites every column
            of it); PostgreSQL keeps a big value that an update leaves as it
            is where it was.

    Used on the event loop only (each run's commits come one at a time from
    the drive that holds its lease).
    """

    __slots__ = ("_known", "_moves_out")

    def __init__(self, *, moves_out: bool) -> None:
        self._known: dict[str, _Known] = {}
        self._moves_out = moves_out

    def change(self, commit: Commit) -> tuple[JSON | None, bool]:
        """What ``commit`` should write of the state.

        Returns:
            The change to write (the top-level keys the commit sets; with
            ``moves_out``, the whole state when it replaces the run's
            changes), or None to write the whole state in the run's row; and
            whether the run's changes must be deleted first (it may have
            some, and they are replaced).
        """
        known = self._known.get(commit.run_id)
        events = commit.events
        if (
            known is None
            or known.epoch != commit.lease.epoch
            or (events and events[0].seq != known.last_seq + 1)
        ):
            return None, True
        if known.snapshot < SMALLEST:
            return None, known.pending > 0 or not known.inline
        after = commit.state
        whole: tuple[JSON | None, bool] = (after, True) if self._moves_out else (None, True)
        if not events:
            # No event, so nothing set: the state is as the last commit left
            # it (an empty change writes nothing), unless it is not (written whole).
            same = after.keys() == known.state.keys() and all(
                known.state[key] is value for key, value in after.items()
            )
            if same and not (known.inline and self._moves_out):
                return {}, False
            return None, True
        if known.inline and self._moves_out:
            return whole  # big: moved out of the run's row
        before = known.state
        sets = commit.sets
        if sets is not None and len(after) == len(before):
            # The committer named the keys it set (`Commit.sets`): the others
            # are the objects of the commit this store wrote last (or of one
            # before it), so those keys alone are looked at.
            change = {}
            for key in sets:
                value = after.get(key, _ABSENT)
                if value is _ABSENT:
                    return whole  # named but gone: the state is not what it says
                if before.get(key, _ABSENT) is not value:
                    change[key] = value
        else:
            change = {
                key: value for key, value in after.items() if before.get(key, _ABSENT) is not value
            }
        added = sum(key not in before for key in change)
        if len(before) + added != len(after) or len(change) * 2 > len(after):
            # A key removed (a change only sets keys), or most of the state
            # changed: written whole.
            return whole
        return change, False

    def whole(self, commit: Commit) -> tuple[JSON | None, bool]:
        """How to write ``commit``'s state whole, in place of the run's changes."""
        return (commit.state, True) if self._moves_out else (None, True)

    def may_exceed(self, run_id: str, size: int) -> bool:
        """Whether the run's state may be ``size`` bytes or more (it is unknown, or was)."""
        known = self._known.get(run_id)
        return known is None or known.snapshot >= size

    def affords(self, run_id: str, size: int) -> bool:
        """Whether a change of ``size`` bytes keeps the run's changes within its snapshot's size.

        Past it, the whole state is written instead: what is written for a
        run's state is then at most twice its changes, and what is read is
        at most twice the state.
        """
        known = self._known[run_id]
        return known.pending + size <= known.snapshot

    def written(self, commit: Commit, size: int, *, change: JSON | None, clears: bool) -> None:
        """``commit`` is durable, written as `change` said, its state in ``size`` bytes."""
        run_id = commit.run_id
        if commit.release:
            # Released: the next commit comes after a claim, which this store
            # may not be the one to see. Nothing of the run is kept.
            self._known.pop(run_id, None)
            return
        known = self._known.get(run_id)
        last_seq = commit.events[-1].seq if commit.events else None
        if last_seq is None:
            if known is None or known.epoch != commit.lease.epoch:
                self._known.pop(run_id, None)
                return
            last_seq = known.last_seq
        if change is not None and not clears:
            assert known is not None
            known.pending += size
            known.last_seq = last_seq
            known.state = commit.state
            return
        if known is not None:
            # Written over in place: a new one at every commit of a small
            # state (most commits) cost its __init__ and the dict's insert.
            known.epoch = commit.lease.epoch
            known.last_seq = last_seq
            known.state = commit.state
            known.snapshot = size
            known.pending = 0
            known.inline = change is None
            return
        known = _Known(commit.lease.epoch, last_seq, commit.state, size, 0, change is None)
        self._remember(run_id, known)

    def created(
        self,
        run_id: str,
        epoch: int,
        last_seq: int,
        state: JSON,
        size: int,
        *,
        pending: int = 0,
        inline: bool = True,
    ) -> None:
        """A run was created, owned under ``epoch``, its state written whole in ``size`` bytes.

        Args:
            run_id: The run.
            epoch: The epoch of its lease.
            last_seq: The seq of its last event.
            state: Its state.
            size: Bytes of the state written whole.
            pending: Bytes of a change written over it (the keys its first
                commit set, when the whole is the state its first event holds).
            inline: The whole is in the run's row (False: a change, as
                ``moves_out`` writes it).
        """
        self._remember(run_id, _Known(epoch, last_seq, state, size, pending, inline))

    def _remember(self, run_id: str, known: _Known) -> None:
        known_runs = self._known
        if run_id not in known_runs and len(known_runs) >= _MOST:
            # A drive that ended without releasing its run (its lease lost)
            # leaves its entry: the oldest goes, and its run's next commit,
            # if any, writes the whole state.
            del known_runs[next(iter(known_runs))]
        known_runs[run_id] = known

    def forget(self, run_id: str) -> None:
        """Know nothing of the run (a commit failed: what it wrote is unknown)."""
        self._known.pop(run_id, None)


def started_over(state: JSON, events: Sequence[Event]) -> tuple[JSON, JSON] | None:
    """A new run's ``state`` as the state its ``run_started`` event holds, and the keys set over it.

    A run is created with its first commit (its first step's result merged
    into its state): its state is then not the one its ``run_started``
    event holds, and the two would be written as two texts, each the
    state's size. None if the first event holds no state, the same state,
    or a state the run's lacks a key of (a change only sets keys).
    """
    data = events[0].data if events else None
    if not isinstance(data, dict):
        return None
    before = data.get("state")
    after = state
    if before is after or not isinstance(before, dict) or not isinstance(after, dict):
        return None
    # By identity, as `StateChanges.change` compares: the engine builds a
    # commit's state as a new dict and never edits a value in place.
    change = {key: value for key, value in after.items() if before.get(key, _ABSENT) is not value}
    added = sum(key not in before for key in change)
    if len(before) + added != len(after) or len(change) * 2 > len(after):
        return None
    return before, change


def around_state(data: Any, state: Any) -> tuple[str, str] | None:
    """The text of a ``run_started`` event's data that holds ``state``, before and after it.

    The state in it is not encoded again (10 MB more to hold at once, for
    a 10 MB state): the data's text is the state's put between these two
    (SQLite's ``Big.around``; PostgreSQL's ``big_event_data_around``).
    None if ``data`` does not hold ``state`` first.
    """
    if (
        not isinstance(data, dict)
        or next(iter(data), None) != "state"
        or data["state"] is not state
    ):
        return None
    try:
        rest = jsonutil.to_json({**data, "state": 0}).decode()
    except (ValueError, TypeError):
        return None  # encoded whole, to name what is not JSON
    head = '{"state":0'
    if not rest.startswith(head) or "NaN" in rest or "Infinity" in rest:
        return None
    return '{"state":', rest[len(head) :]
