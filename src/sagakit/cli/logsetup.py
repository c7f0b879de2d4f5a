"""How the command line logs: ``--log-format text|json`` and the stderr handler.

Both formats give each record the run's fields and mask its sensitive
values (`sagakit.runlog.RunLogFilter`, on the handler, so the application's
own records logged during a drive get them too), and mask passwords in any
URL a message or traceback quotes (`sagakit.store.redact_url`).

- ``text``: one line per record, control characters escaped, as a person
  reads it; the run's fields are in the message (``run order-42: ...``).
- ``json``: one JSON object per line (`sagakit.runlog.JsonLogFormatter`):
  ``time``, ``level``, ``logger``, ``message``, the run's fields, and
  ``exception`` when there is one.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any, Final, TypeVar

import click

from sagakit.runlog import JsonLogFormatter, RunLogFilter
from sagakit.store import redact_url
from sagakit.timeline.text import printable

__all__ = [
    "FORMATS",
    "LOG_FORMAT_ENVVAR",
    "LOG_FORMAT_KEY",
    "log_format_option",
    "stderr_handler",
]

FORMATS: Final = ("text", "json")
"""The values of ``--log-format``."""

LOG_FORMAT_ENVVAR: Final = "SAGAKIT_LOG_FORMAT"
"""The environment variable that gives ``--log-format`` when the option is not given."""

LOG_FORMAT_KEY: Final = "sagakit.log_format"
"""Where the group's ``--log-format`` is kept in the context's ``meta``, for ``worker``."""

_F = TypeVar("_F", bound=Callable[..., Any])


def log_format_option(*, default: str | None) -> Callable[[_F], _F]:
    """The ``--log-format`` option (read from `LOG_FORMAT_ENVVAR` when not given)."""
    return click.option(
        "--log-format",
        "log_format",
        type=click.Choice(FORMATS, case_sensitive=False),
        envvar=LOG_FORMAT_ENVVAR,
        default=default,
        show_default=default is not None,
        show_envvar=True,
        help="Write log records on stderr as text lines or as JSON objects, one a line "
        "(time, level, logger, message, run_id, saga, version, step, phase, attempt, "
        "exception).",
    )


class _TextFormatter(logging.Formatter):
    """Log lines with URL passwords masked and every character a terminal acts on escaped.

    A run id, a step name or an error message comes from users: written raw, an
    ESC could recolour or clear the operator's terminal and a CR or LF forge a
    log line. Only the message is escaped; a traceback keeps its lines.
    """

    def formatMessage(self, record: logging.LogRecord) -> str:
        """The record's line, passwords masked, control characters written as escapes."""
        return printable(redact_url(super().formatMessage(record)))

    def format(self, record: logging.LogRecord) -> str:
        """The whole record, passwords in URLs masked in the traceback and stack too.

        Masked here, not in ``formatException``: a traceback another handler
        or the run filter already turned into ``record.exc_text`` is reused
        as it is, without ``formatException`` being called again.
        """
        return redact_url(super().format(record))


def stderr_handler(log_format: str, text_format: str) -> logging.Handler:
    """A handler writing records on stderr in ``log_format`` (``text`` lines use ``text_format``).

    A plain stream handler: the engine logs from its own threads, where
    rich's handler would turn a closed pipe into SystemExit.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RunLogFilter())
    if log_format.lower() == "json":
        handler.setFormatter(JsonLogFormatter(text=redact_url))
    else:
        handler.setFormatter(_TextFormatter(text_format))
    return handler
