"""The runs list: its query string read and checked, and one page read by keyset cursor.

A page is named by where it starts (``?after=`` the last run of the page
before it, or ``?before=`` the first run of the page after it), an opaque
`RunCursor` token, so a page deep in a million runs is read from an index as
fast as the first (`Store.page_runs`); runs started meanwhile do not shift
the pages. Everything a request names is checked here, and refused with a
one-line `ListingError` the page shows with status 400.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sagakit.dashboard import views
from sagakit.dashboard.views import PAGE_SIZE
from sagakit.engine import Engine
from sagakit.journal import RunStatus
from sagakit.run import Run
from sagakit.store import RunCursor
from sagakit.timeline import printable

MAX_TEXT = 2000
"""The longest saga name, version or run id a filter takes."""


class ListingError(ValueError):
    """A query string the runs list refuses; its message is one line, safe to show (escaped)."""


@dataclass(frozen=True, slots=True)
class Listing:
    """What the runs list shows: its filters, as the request named them, checked.

    Attributes:
        saga: Only runs of this saga.
        version: Only runs of this saga version.
        status: Only runs in this status.
        since: Only runs created at or after this time (local time, as typed).
        until: Only runs created before this time.
        search: A run id to find (the filters are then ignored).
        after: Show the page after this cursor (older runs).
        before: Show the page before this cursor (newer runs).
    """

    saga: str | None = None
    version: str | None = None
    status: RunStatus | None = None
    since: str | None = None
    until: str | None = None
    search: str | None = None
    after: RunCursor | None = None
    before: RunCursor | None = None

    @property
    def filters(self) -> dict[str, str]:
        """The filters as query parameters (set ones only), for the page's links."""
        found = {
            "saga": self.saga,
            "version": self.version,
            "status": self.status.value if self.status else None,
            "since": self.since,
            "until": self.until,
        }
        return {name: value for name, value in found.items() if value}

    @property
    def filtered(self) -> bool:
        """Whether any filter is set."""
        return bool(self.filters)


@dataclass(frozen=True, slots=True)
class RunsPage:
    """One page of the runs list and the cursors of its neighbours.

    Attributes:
        runs: The runs, newest first.
        older: The token of the page after this one (``?after=``), if any.
        newer: The token of the page before this one (``?before=``), if any.
    """

    runs: list[Run]
    older: str | None = None
    newer: str | None = None


def parse(query: Mapping[str, str]) -> Listing:
    """The runs list's query string, checked.

    Raises:
        ListingError: a value is too long, an unknown status, a time that is
            not one, a cursor that is not one, or both ``after`` and ``before``.
    """
    status_text = _text(query, "status")
    status: RunStatus | None = None
    if status_text is not None:
        try:
            status = RunStatus(status_text)
        except ValueError:
            known = ", ".join(s.value for s in RunStatus)
            raise ListingError(
                f"unknown status {printable(status_text)[:40]!r}; use one of {known}"
            ) from None
    since = _text(query, "since")
    until = _text(query, "until")
    for name, value in (("since", since), ("until", until)):
        if value is not None:
            _time(name, value)
    listing = Listing(
        saga=_text(query, "saga"),
        version=_text(query, "version"),
        status=status,
        since=since,
        until=until,
        search=_text(query, "q"),
        after=_cursor(query, "after"),
        before=_cursor(query, "before"),
    )
    if listing.after is not None and listing.before is not None:
        raise ListingError("a page is after= one cursor or before= one, not both")
    return listing


def read_page(engine: Engine, listing: Listing, *, size: int = PAGE_SIZE) -> RunsPage:
    """One page of runs as ``listing`` names it, newest first, and its neighbours' cursors.

    One more run than the page holds is read, to know whether another page
    follows. Errors are masked as ``sagakit list`` masks them.
    """
    options: dict[str, Any] = {
        "saga": listing.saga,
        "version": listing.version,
        "status": listing.status,
        "since": None if listing.since is None else _time("since", listing.since),
        "until": None if listing.until is None else _time("until", listing.until),
        "limit": size + 1,
    }
    if listing.before is not None:
        found = engine.page_runs(before=listing.before, **options)
        runs = found[-size:]  # the runs nearest the cursor; the one more is newer still
        newer = len(found) > size
        older = True
    else:
        found = engine.page_runs(after=listing.after, **options)
        runs = found[:size]
        newer = listing.after is not None
        older = len(found) > size
    if not runs:
        # Nothing on this side of the cursor (purged, or a filter changed):
        # offer the way back to the first page only.
        return RunsPage([], newer=None, older=None)
    return RunsPage(
        [views.masked_errors(engine, run) for run in runs],
        older=RunCursor.of(runs[-1]).token() if older else None,
        newer=RunCursor.of(runs[0]).token() if newer else None,
    )


def _text(query: Mapping[str, str], name: str) -> str | None:
    value = (query.get(name) or "").strip() or None
    if value is not None and len(value) > MAX_TEXT:
        raise ListingError(f"{name} is longer than {MAX_TEXT} characters")
    return value


def _time(name: str, value: str) -> float:
    """A date, or a date and time, in this machine's local time (as the pages show times)."""
    try:
        return datetime.fromisoformat(value).timestamp()
    except (ValueError, OverflowError, OSError):
        raise ListingError(
            f"{name} must be a date or a date and time, such as 2026-01-31 or 2026-01-31T14:30"
        ) from None


def _cursor(query: Mapping[str, str], name: str) -> RunCursor | None:
    token = (query.get(name) or "").strip()
    if not token:
        return None
    try:
        return RunCursor.from_token(token)
    except ValueError:
        raise ListingError(
            f"{name} is not a cursor of the runs list; start again from the first page"
        ) from None
