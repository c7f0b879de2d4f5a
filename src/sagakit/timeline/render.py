"""Drawing timelines and journals with rich, for the command line."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime

from rich.console import Group, RenderableType
from rich.padding import Padding
from rich.text import Text

from sagakit.journal import RESERVATION_KINDS, Event, EventKind, Phase, RunStatus
from sagakit.timeline.build import (
    Alert,
    AlertStatus,
    Mark,
    Outcome,
    Row,
    Timeline,
    control_text,
    orphan_text,
    reservation_text,
)
from sagakit.timeline.text import format_duration, printable, short_error

_OUTCOME_STYLE = {
    Outcome.SUCCEEDED: "green",
    Outcome.COMPENSATED: "yellow",
    Outcome.FAILED: "bold red",
    Outcome.RETRYING: "blue",
    Outcome.RUNNING: "blue",
    Outcome.NEEDS_ATTENTION: "bold magenta",
    Outcome.RESOLVED: "cyan",
    Outcome.PAUSED: "bold cyan",
}
_STATUS_STYLE = {
    RunStatus.COMPLETED: "bold green",
    RunStatus.ROLLED_BACK: "bold yellow",
    RunStatus.CANCELLED: "bold yellow",
    RunStatus.FAILED: "bold red",
    RunStatus.NEEDS_ATTENTION: "bold magenta",
    RunStatus.PAUSED: "bold cyan",
}
_MARK_LABEL = {
    EventKind.ROLLBACK_STARTED: ("rollback started", "yellow"),
    EventKind.NEEDS_ATTENTION: ("needs attention", "bold magenta"),
    EventKind.RETRIED: ("retried by operator", "cyan"),
    EventKind.RESOLVED: ("resolved by operator", "cyan"),
    EventKind.CANCEL_REQUESTED: ("cancel requested", "yellow"),
    EventKind.CANCEL_REFUSED: ("cancel refused", "red"),
    EventKind.PAUSED: ("paused", "bold cyan"),
    EventKind.SIGNAL_RECEIVED: ("signal received", "cyan"),
    EventKind.DEADLINE_PASSED: ("deadline passed", "yellow"),
    EventKind.ALERT_SENT: ("alert sent", "green"),
    EventKind.ALERT_FAILED: ("alert failed", "red"),
    EventKind.RESERVATION_TAKEN: ("reserved", "cyan"),
    EventKind.RESERVATION_REFRESHED: ("refreshed", "cyan"),
    EventKind.RESERVATION_RELEASED: ("released", "dim"),
    EventKind.RESERVATION_LAPSED: ("lapsed", "bold red"),
    EventKind.ORPHAN_REMOVED: ("orphan removed", "yellow"),
}


_CONTROL_MARKS = (
    EventKind.CANCEL_REQUESTED,
    EventKind.CANCEL_REFUSED,
    EventKind.PAUSED,
    EventKind.SIGNAL_RECEIVED,
    EventKind.DEADLINE_PASSED,
)


def status_style(status: RunStatus | str) -> str:
    """The rich style for a run status (green done, yellow undone, red, magenta)."""
    try:
        return _STATUS_STYLE.get(RunStatus(status), "bold blue")
    except ValueError:
        return "bold"


Cell = str | Text
Line = tuple[Sequence[Cell], Text | None]


def aligned(
    headers: Sequence[str], lines: Sequence[Line], *, right: Sequence[int] = (), under: int = 0
) -> RenderableType:
    """Lines of aligned columns, each optionally followed by a wrapped details line.

    Tables squeeze a details column to nothing in an 80-column terminal;
    here the details get the whole width below their line instead.

    Args:
        headers: The column titles.
        lines: Per line, its cells and its details (or ``None``).
        right: Indexes of right-aligned columns.
        under: The column the details line starts under.
    """
    rows = [[c if isinstance(c, Text) else Text(printable(c)) for c in cells] for cells, _ in lines]
    widths = [len(h) for h in headers]
    for row in rows:
        for index, cell in enumerate(row):
            widths[index] = max(widths[index], cell.cell_len)
    last = len(headers) - 1

    def join(cells: Sequence[Text]) -> Text:
        out = Text(no_wrap=False)
        for index, cell in enumerate(cells):
            gap = " " * (widths[index] - cell.cell_len)
            if index:
                out.append("  ")
            if index in right:
                out.append(gap)
            out.append_text(cell)
            if index not in right and index != last:
                out.append(gap)
        out.rstrip()  # marks leave their last cells empty
        return out

    indent = sum(widths[:under]) + 2 * under
    parts: list[RenderableType] = [join([Text(h, style="bold") for h in headers])]
    for row, (_, details) in zip(rows, lines, strict=True):
        parts.append(join(row))
        if details is not None and details.plain:
            parts.append(Padding(details, (0, 0, 0, indent), expand=False))
    return Group(*parts)


def _offset(at: float | None, origin: float | None) -> str:
    if at is None or origin is None:
        return ""
    return "+" + format_duration(at - origin)


def _row_details(row: Row, origin: float | None) -> Text:
    text = Text()
    if row.note is not None:
        text.append(f"done by hand: {printable(row.note)}", style="cyan")
    elif row.outcome in (Outcome.SUCCEEDED, Outcome.COMPENSATED) and row.error is not None:
        text.append(f"recovered from {short_error(row.error)}", style="dim")
        if row.retry_waits:
            text.append(f" (waited {format_duration(sum(row.retry_waits))})", style="dim")
    elif row.outcome is Outcome.RETRYING:
        text.append(short_error(row.error), style="red")
        text.append(f"; next attempt at {_offset(row.attempts[-1].retry_at, origin)}")
    elif row.error is not None:
        text.append(short_error(row.error), style="red")
        if any(a.unknown for a in row.attempts):
            text.append(" (it may have taken effect)", style="dim")
    return text


def _mark_details(mark: Mark) -> Text:
    text = Text()
    step = printable(mark.step) if mark.step is not None else None
    note = printable(mark.text) if mark.text is not None else None
    where = f"{mark.phase.value} of {step}" if mark.phase and step else step
    if mark.kind is EventKind.ROLLBACK_STARTED:
        if mark.text == "cancel":
            text.append("cancelled; undoing what took effect")
        elif mark.text == "deadline":
            text.append("the deadline passed; undoing what took effect")
        else:
            text.append(f"{step} failed for good; undoing what took effect")
    elif mark.kind in _CONTROL_MARKS:
        text.append(f"{step}: {note}" if step else note or "")
    elif mark.kind in RESERVATION_KINDS:
        # Under the step that reserved: its name only, unless a compensation did.
        by = f"undo {step}" if mark.phase is Phase.COMPENSATION else step
        text.append(f"{by}: {note}" if by else note or "")
    elif mark.kind is EventKind.NEEDS_ATTENTION:
        text.append(f"{where}: {note or 'halted'}")
    elif mark.kind is EventKind.ORPHAN_REMOVED:
        text.append(f"{step}: {note}" if step else note or "")
    elif mark.kind is EventKind.ALERT_SENT:
        text.append(f"to {note or '?'}")
    elif mark.kind is EventKind.ALERT_FAILED:
        text.append(f"to {note or '?'}: ")
        text.append(short_error(mark.error), style="red")
    else:
        text.append(where or "")
        text.append(f": {note}" if note else " (no note)")
    return text


def mark_label(mark: Mark) -> str:
    """What a mark is, in a few words, as `render_timeline` labels it: ``"retried by X"``.

    A mark that names who acted (`Mark.by`: sagakit itself, or the
    dashboard's user) says so; one that does not is by an operator.
    """
    if mark.by is not None:
        return f"{mark.kind.value.replace('_', ' ')} by {printable(mark.by)}"
    return _MARK_LABEL[mark.kind][0]


def mark_details(mark: Mark) -> str:
    """What follows a mark's label in `render_timeline`, as plain text (escaped)."""
    return _mark_details(mark).plain


def render_timeline(timeline: Timeline) -> RenderableType:
    """The run's steps, compensations and operator actions in order, then its status.

    Outcomes are coloured: succeeded green, failed red, compensated yellow,
    needs attention magenta, resolved cyan. Each line's errors or notes
    follow it, indented.
    """
    origin = timeline.started_at
    lines: list[Line] = []
    for entry in timeline.entries:
        if isinstance(entry, Row):
            name = Text(printable(entry.step))
            if entry.is_compensation:
                name = Text.assemble(("undo ", "yellow"), printable(entry.step))
            cells: list[Cell] = [
                _offset(entry.started_at, origin),
                name,
                str(len(entry.attempts)),
                format_duration(entry.duration),
                Text(entry.outcome.value, style=_OUTCOME_STYLE[entry.outcome]),
            ]
            lines.append((cells, _row_details(entry, origin)))
        else:
            label, style = mark_label(entry), _MARK_LABEL[entry.kind][1]
            mark_cells: list[Cell] = [_offset(entry.at, origin), Text(label, style=style)]
            lines.append(([*mark_cells, "", "", ""], _mark_details(entry)))
    title = Text.assemble(("run ", "bold"), (printable(timeline.run_id), "bold"))
    if timeline.saga:
        title.append(f"  saga {printable(timeline.saga)}", style="dim")
    body = aligned(["at", "step", "tries", "took", "outcome"], lines, right=(0, 2, 3), under=1)
    return Group(title, body, _status_line(timeline))


def _status_line(timeline: Timeline) -> Text:
    line = Text("status ")
    line.append(timeline.status.value, style=status_style(timeline.status))
    line.append(f" after {format_duration(timeline.duration)}")
    undos = [r.outcome for r in timeline.rows if r.is_compensation]
    by_hand = undos.count(Outcome.RESOLVED)
    undone = undos.count(Outcome.COMPENSATED) + by_hand
    steps = sum(1 for r in timeline.rows if not r.is_compensation)
    hand = f", {by_hand} by hand" if by_hand else ""
    line.append(f"  ({steps} steps run, {undone} undone{hand})", style="dim")
    if timeline.error is not None and timeline.status is not RunStatus.COMPLETED:
        line.append("\ncause: ", style="bold")
        line.append(printable(str(timeline.error)), style="red")
    if timeline.alert is not None:
        line.append("\nalert: ", style="bold")
        line.append_text(_alert_text(timeline.alert, timeline.started_at))
    return line


def _alert_text(alert: Alert, origin: float | None) -> Text:
    """Where the alert of the latest halt stands, in one line."""
    sink = printable(alert.sink or "?")
    if alert.status is AlertStatus.SENT:
        return Text(f"sent to {sink} at {_offset(alert.at, origin)} (attempt {alert.attempts})")
    if alert.status is AlertStatus.FAILED:
        text = Text(f"failed {alert.attempts} time(s), last to {sink}: ", style="red")
        text.append(short_error(alert.error))
        text.append(f"; retrying at {_offset(alert.retry_at, origin)}", style="")
        return text
    if alert.status is AlertStatus.MOOT:
        return Text("not sent: the run was acted on first", style="dim")
    return Text(
        f"owed since {_offset(alert.owed_since, origin)}, not sent yet (a worker, or an "
        "engine with an on_attention hook, delivers it)",
        style="magenta",
    )


# -- raw history ------------------------------------------------------------------

_KIND_STYLE = {
    EventKind.STEP_SUCCEEDED: "green",
    EventKind.COMPENSATION_SUCCEEDED: "yellow",
    EventKind.STEP_FAILED: "red",
    EventKind.COMPENSATION_FAILED: "red",
    EventKind.ROLLBACK_STARTED: "yellow",
    EventKind.NEEDS_ATTENTION: "bold magenta",
    EventKind.RETRIED: "cyan",
    EventKind.RESOLVED: "cyan",
}


def _compact(value: object, limit: int = 200) -> str:
    # Spaces after separators let a long value wrap between its items.
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def event_details(event: Event) -> str:
    """A one-line summary of an event's data, for `render_history`."""
    kind, data = event.kind, event.data
    if kind is EventKind.RUN_STARTED:
        return f"state {_compact(data.get('state', {}))}"
    if kind in (EventKind.STEP_SUCCEEDED, EventKind.COMPENSATION_SUCCEEDED):
        result = data.get("result")
        return f"result {_compact(result)}" if result else ""
    if kind in (EventKind.STEP_FAILED, EventKind.COMPENSATION_FAILED):
        retry_at = data.get("retry_at")
        if isinstance(retry_at, int | float):
            then = f"retry in {format_duration(retry_at - event.at)}"
        else:
            then = "for good" if data.get("permanent") else "no attempts left"
        unknown = ", outcome unknown" if data.get("unknown") else ""
        return f"{short_error(event.error)}; {then}{unknown}"
    if kind is EventKind.ROLLBACK_STARTED:
        return f"reason {data.get('reason', 'failure')}: {short_error(event.error)}"
    if kind is EventKind.NEEDS_ATTENTION:
        return f"{data.get('phase', 'action')}: {data.get('reason', '')}"
    if kind in (EventKind.RETRIED, EventKind.RESOLVED):
        phase = data.get("phase")
        where = f"phase {phase}; " if phase else ""
        return f"{where}note {event.note!r}" if event.note else where.rstrip("; ")
    if kind in _CONTROL_MARKS:
        return control_text(event)
    if kind in RESERVATION_KINDS:
        return reservation_text(event)
    if kind is EventKind.STEP_WITHDRAWN:
        return "journaled, then withdrawn before the call: a cancel came first"
    if kind is EventKind.ALERT_SENT:
        return f"alert of seq {data.get('seq')} sent to {data.get('sink')}"
    if kind is EventKind.ALERT_FAILED:
        retry_at = data.get("retry_at")
        then = (
            f"; retry in {format_duration(retry_at - event.at)}"
            if isinstance(retry_at, int | float)
            else ""
        )
        why = short_error(event.error)
        return f"alert of seq {data.get('seq')} to {data.get('sink')}: {why}{then}"
    if kind is EventKind.ORPHAN_REMOVED:
        return f"{orphan_text(event)} by {data.get('by')}"
    if kind is EventKind.RUN_FINISHED:
        status = str(data.get("status", ""))
        return f"status {status}: {short_error(event.error)}" if event.error else f"status {status}"
    return ""


def render_history(events: Sequence[Event]) -> RenderableType:
    """The raw journal: one line per event, its details below it.

    Each line shows the seq, local time, kind, step and attempt.
    """
    if not events:
        return Text("the journal is empty")
    first = datetime.fromtimestamp(events[0].at)
    title = Text.assemble(
        ("journal of run ", "bold"),
        (printable(events[0].run_id), "bold"),
        (f"  {first:%Y-%m-%d}, local time", "dim"),
    )
    lines: list[Line] = []
    for event in events:
        style = _KIND_STYLE.get(event.kind, "")
        if event.kind is EventKind.RUN_FINISHED:
            style = status_style(str(event.data.get("status", "")))
        cells: list[Cell] = [
            str(event.seq),
            Text(datetime.fromtimestamp(event.at).strftime("%H:%M:%S.%f")[:-3], style="dim"),
            Text(event.kind.value, style=style),
            event.step or "",
            str(event.attempt) if event.attempt is not None else "",
        ]
        details = printable(event_details(event))
        lines.append((cells, Text(details, style="dim") if details else None))
    body = aligned(["seq", "time", "kind", "step", "try"], lines, right=(0, 4), under=2)
    return Group(title, body)
