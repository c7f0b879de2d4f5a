"""A run's journal as a timeline: built as plain rows (`build`), drawn for a terminal (`render`)."""

from __future__ import annotations

from sagakit.timeline.build import Alert, AlertStatus, Mark, Outcome, build_timeline
from sagakit.timeline.render import (
    Cell,
    Line,
    aligned,
    event_details,
    format_duration,
    mark_details,
    mark_label,
    printable,
    render_history,
    render_timeline,
    short_error,
    status_style,
)

__all__ = [
    "Alert",
    "AlertStatus",
    "Cell",
    "Line",
    "Mark",
    "Outcome",
    "aligned",
    "build_timeline",
    "event_details",
    "format_duration",
    "mark_details",
    "mark_label",
    "printable",
    "render_history",
    "render_timeline",
    "short_error",
    "status_style",
]
