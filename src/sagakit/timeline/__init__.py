"""A run's journal as a timeline: built as plain rows (`build`), drawn for a terminal (`render`).

The names are imported on first use (PEP 562): drawing pulls in rich, which
what only needs `printable` (the worker's command line, its logs) should not
wait for. The text helpers themselves are in `sagakit.timeline.text`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sagakit.timeline.build import Alert, AlertStatus, Mark, Outcome, build_timeline
    from sagakit.timeline.render import (
        Cell,
        Line,
        aligned,
        event_details,
        mark_details,
        mark_label,
        render_history,
        render_timeline,
        status_style,
    )
    from sagakit.timeline.text import format_duration, printable, short_error

_LAZY: dict[str, str] = {
    **dict.fromkeys(
        ("Alert", "AlertStatus", "Mark", "Outcome", "build_timeline"), "sagakit.timeline.build"
    ),
    **dict.fromkeys(
        (
            "Cell",
            "Line",
            "aligned",
            "event_details",
            "mark_details",
            "mark_label",
            "render_history",
            "render_timeline",
            "status_style",
        ),
        "sagakit.timeline.render",
    ),
    **dict.fromkeys(("format_duration", "printable", "short_error"), "sagakit.timeline.text"),
}


def __getattr__(name: str) -> Any:
    """Import a name of the package on first use, and keep it (PEP 562)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'sagakit.timeline' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups find it without coming here
    return value


def __dir__() -> list[str]:
    """The package's names, those not imported yet included."""
    return sorted(set(globals()) | set(_LAZY))


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
