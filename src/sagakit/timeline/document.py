"""A run and its timeline as plain JSON values: the shapes ``--json`` prints and `RunView` returns.

Pure builders, no I/O: they take what was already read (and masked) —
a `Run`, its `Timeline`, its `Mail` — and return dicts and lists ready for
``json.dumps``. The command line's ``--json`` documents and the public run
view (`sagakit.RunView`) both build from here, so a run reads the same in
both. Timestamps stay seconds since the epoch, as the journal keeps them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from enum import Enum
from typing import Any

from sagakit.run import Run
from sagakit.store import Mail
from sagakit.timeline.build import Timeline

__all__ = ["pending_requests", "plain", "run_json", "timeline_json"]


def plain(value: Any) -> Any:
    """A dataclass, enum, tuple or mapping as plain JSON values, recursively."""
    if isinstance(value, Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def pending_requests(mails: Iterable[Mail]) -> list[dict[str, Any]]:
    """Requests recorded for a run and not acted on yet, as JSON.

    A signal's payload is left out: it may hold fields the saga marks
    sensitive, masked only once it is delivered and journaled.
    """
    requests = []
    for mail in mails:
        data = mail.data if isinstance(mail.data, dict) else {}
        request: dict[str, Any] = {"kind": mail.kind, "at": mail.at}
        if mail.kind == "cancel":
            request["reason"] = data.get("reason")
            request["force"] = bool(data.get("force"))
        else:
            request["name"] = data.get("name")
        requests.append(request)
    return requests


def run_json(run: Run, pending: list[dict[str, Any]], *, state: bool = True) -> dict[str, Any]:
    """A run (already masked) as JSON; without its state when ``state`` is False."""
    shown: dict[str, Any] = {
        "id": run.id,
        "saga": run.saga,
        "version": run.version,
        "status": run.status.value,
        "created_at": run.created_at,
        "updated_at": run.updated_at,
        "owner": run.owner,
        "error": plain(run.error),
        "compensation_errors": plain(run.compensation_errors),
        "pending": pending,
    }
    if state:
        shown["state"] = run.data
    return shown


def timeline_json(timeline: Timeline) -> dict[str, Any]:
    """A timeline (built from a masked journal) as JSON, with each row's and its own duration."""
    shown: dict[str, Any] = plain(timeline)
    shown["duration"] = timeline.duration
    for row, source in zip(shown["rows"], timeline.rows, strict=True):
        row["duration"] = source.duration
    return shown
