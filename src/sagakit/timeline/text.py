"""Text helpers for whatever prints runs: escaping, durations, one-line errors.

Apart from `sagakit.timeline.render` so that what only needs them (the
worker's log set-up, its options) does not import rich.
"""

from __future__ import annotations

from sagakit.journal import ErrorInfo

__all__ = ["format_duration", "printable", "short_error"]


def printable(text: str) -> str:
    r"""``text`` with every character a terminal would act on written as a Python escape.

    Run ids, step names, notes and error messages come from users and
    applications: printed raw, an ESC could recolour or clear the terminal, a
    CR or LF forge a line, a bidirectional override reorder it. Such
    characters (``\x1b``, ``\r``, ``\n``, ``\u202e``...) show as their escape,
    as ``repr`` writes them; everything printable, any script, is kept.
    """
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)


def format_duration(seconds: float | None) -> str:
    """A short human duration: ``850us``, ``12ms``, ``1.25s``, ``3m 07s``, ``2h 05m``."""
    if seconds is None:
        return "-"
    seconds = max(seconds, 0.0)
    if seconds < 0.001:
        return f"{seconds * 1e6:.0f}us"
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.2f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h {minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours:02d}h"


def short_error(error: ErrorInfo | None, limit: int = 160) -> str:
    """One line for an error: the exception's bare class name and its message."""
    if error is None:
        return ""
    if error.timed_out:
        return "timed out (outcome unknown)"
    name = error.type.rsplit(".", 1)[-1] or "Error"
    lines = error.message.strip().splitlines()
    message = lines[0] if lines else ""
    text = printable(f"{name}: {message}" if message else name)
    return text if len(text) <= limit else text[: limit - 3] + "..."
