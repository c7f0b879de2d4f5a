"""Log records that carry the run: its fields, masked values, JSON lines.

Every record sagakit writes about a run carries the run's fields as record
attributes (`RUN_FIELDS`: ``run_id``, ``saga``, ``version``, ``step``,
``phase``, ``attempt``; None where unknown), so a format string may name
``%(run_id)s`` and a JSON line holds them as keys. They come from two places:

- a `RunLogger` (the driver's, a step's ``ctx.log``) puts them in each
  record's ``extra``; what a call site passes in ``extra`` wins;
- while a run is driven, its fields are bound in a context variable (`bind`),
  and `RunLogFilter` fills in what a record lacks from it. Attached to a
  handler, the filter gives the run's fields to every record logged during
  the drive, the application's own and its libraries' included.

The filter also masks the run's sensitive values (see `sagakit.redaction`)
in the message, the exception and string extras of each record, as errors
are masked before they are journaled: an exception's message often quotes
the value it refused. sagakit attaches one to its own ``sagakit`` logger.

`JsonLogFormatter` writes one JSON object per record.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, Final, NamedTuple

from sagakit.redaction import Redactor

__all__ = [
    "RUN_FIELDS",
    "JsonLogFormatter",
    "RunFields",
    "RunLogFilter",
    "RunLogger",
    "at",
    "bind",
    "bound",
    "current",
    "extra",
    "unbind",
]

RUN_FIELDS: Final = ("run_id", "saga", "version", "step", "phase", "attempt")
"""The record attributes that say which run, step and attempt a record is about."""

_RUN_FIELDS: Final = frozenset(RUN_FIELDS)
# The record attribute holding how to mask a record's run (not written out).
_REDACTOR: Final = "_sagakit_redactor"
# Set when the filter masked an exception away: its type and masked message.
_EXCEPTION: Final = "_sagakit_exception"


class RunFields(NamedTuple):
    """Which run (and step, and attempt) the records logged now are about.

    A tuple, not a frozen dataclass: one is made for every call a run makes,
    and a tuple is made several times faster.

    Attributes:
        run_id: The run.
        saga: The saga's name.
        version: The saga's version.
        step: The step being called.
        phase: ``"action"`` or ``"compensation"``.
        attempt: The call's attempt, from 1.
        redactor: Makes the run's `Redactor` as the run stands when a
            record is logged (its values change as the state does); None when
            the saga marks nothing sensitive.
    """

    run_id: str
    saga: str | None = None
    version: str | None = None
    step: str | None = None
    phase: str | None = None
    attempt: int | None = None
    redactor: Callable[[], Redactor] | None = None

    def at(self, step: str, phase: str, attempt: int) -> RunFields:
        """These fields, about a call of ``step``."""
        # tuple.__new__ skips the generated __new__ and its defaults: made per call.
        return _new_tuple(RunFields, (self[0], self[1], self[2], step, phase, attempt, self[6]))

    def extra(self) -> dict[str, Any]:
        """The fields as a logging call's ``extra``."""
        return {
            "run_id": self.run_id,
            "saga": self.saga,
            "version": self.version,
            "step": self.step,
            "phase": self.phase,
            "attempt": self.attempt,
            _REDACTOR: self.redactor,
        }


_new_tuple = tuple.__new__

_current: contextvars.ContextVar[RunFields | None] = contextvars.ContextVar(
    "sagakit_run", default=None
)


# The context variable's own methods, for the engine's hot path: `current`,
# `bind` and `unbind` each cost a Python call more, at every call a run makes.
bound_fields = _current.get
bind_fields = _current.set
unbind_fields = _current.reset


def current() -> RunFields | None:
    """The fields bound in this context (this drive, this call), if any."""
    return _current.get()


def bind(fields: RunFields) -> contextvars.Token[RunFields | None]:
    """Bind ``fields`` in this context; pass the token to `unbind`."""
    return _current.set(fields)


def unbind(token: contextvars.Token[RunFields | None]) -> None:
    """Restore what was bound before the `bind` that gave ``token``."""
    _current.reset(token)


@contextmanager
def bound(fields: RunFields) -> Iterator[RunFields]:
    """Bind ``fields`` for the ``with`` block (tasks and threads started in it inherit them)."""
    token = _current.set(fields)
    try:
        yield fields
    finally:
        _current.reset(token)


def extra(
    run_id: str,
    saga: str | None = None,
    version: str | None = None,
    *,
    step: str | None = None,
    phase: str | None = None,
    attempt: int | None = None,
) -> dict[str, Any]:
    """A logging call's ``extra`` about a run, for a record logged outside its drive."""
    return {
        "run_id": run_id,
        "saga": saga,
        "version": version,
        "step": step,
        "phase": phase,
        "attempt": attempt,
    }


def at(step: str | None, phase: str | None = None, attempt: int | None = None) -> dict[str, Any]:
    """A `RunLogger` call's ``extra`` naming the step (and call) a record is about."""
    return {"step": step, "phase": phase, "attempt": attempt}


class RunLogger(logging.LoggerAdapter[logging.Logger]):
    """A logger whose records carry one run's fields (see `RunFields`).

    Unlike a plain `logging.LoggerAdapter`, what a call passes in ``extra``
    is kept, and wins over the run's fields (a driver's record about one
    step names it).

    Args:
        logger: The logger to write to.
        fields: The run's fields.
    """

    def __init__(self, logger: logging.Logger, fields: RunFields) -> None:
        # Not LoggerAdapter's: one is made for every call a run makes (its
        # ctx.log), seldom used, so its ``extra`` is made when a record is.
        self.logger = logger
        self.fields = fields

    @property
    def extra(self) -> Mapping[str, object]:  # type: ignore[override]
        """The run's fields, as each record's ``extra``."""
        return self.fields.extra()

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        """The message as it is, with the run's fields merged under the call's ``extra``."""
        given = kwargs.get("extra")
        kwargs["extra"] = {**self.fields.extra(), **given} if given else self.fields.extra()
        return msg, kwargs


class RunLogFilter(logging.Filter):
    """Gives every record the run fields, and masks the run's sensitive values.

    A record that lacks a field (or holds None) takes it from the fields
    bound in the context it is logged in (`bind`), provided they are about the
    same run. Every record leaves with all of `RUN_FIELDS` set, None where
    unknown. Then the message, the exception and the stack, and every string
    or JSON extra, have the run's sensitive values masked; an exception whose
    text held one is replaced by its masked text (``exc_text``), so no
    handler sees the original.

    Attach it to a handler to cover every logger (the application's too), or
    to a logger for that logger's own records. It never rejects a record, and
    never raises.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Fill in and mask ``record`` in place; always True."""
        with contextlib.suppress(Exception):  # a log record must never break a run
            _fill_and_mask(record)
        return True


def _fill_and_mask(record: logging.LogRecord) -> None:
    fields = _current.get()
    seen = record.__dict__
    if fields is not None and seen.get("run_id") in (None, fields.run_id):
        for name in RUN_FIELDS:
            if seen.get(name) is None:
                seen[name] = getattr(fields, name)
        if seen.get(_REDACTOR) is None:
            seen[_REDACTOR] = fields.redactor
    else:
        for name in RUN_FIELDS:
            seen.setdefault(name, None)
    make = seen.get(_REDACTOR)
    if make is None:
        return
    redactor: Redactor = make()
    if not redactor.values and not redactor.names:
        return
    _mask(record, redactor)


def _mask(record: logging.LogRecord, redactor: Redactor) -> None:
    """Mask ``redactor``'s values in ``record``'s texts, and its keys in JSON extras."""
    if redactor.values:
        message = record.getMessage()
        masked = redactor.text(message)
        if masked != message:
            record.msg, record.args = masked, ()
        if record.exc_info and record.exc_info[1] is not None:
            kind, value = record.exc_info[0], record.exc_info[1]
            text = record.exc_text or _PLAIN.formatException(record.exc_info)
            shown = redactor.text(text)
            if shown != text:
                setattr(record, _EXCEPTION, (_type_name(kind), redactor.text(str(value))))
                record.exc_info, record.exc_text = None, shown
        if record.stack_info:
            record.stack_info = redactor.text(record.stack_info)
    for key, value in list(record.__dict__.items()):
        if key in _STANDARD or key in _RUN_FIELDS or key.startswith("_"):
            continue
        if isinstance(value, str):
            record.__dict__[key] = redactor.text(value)
        elif isinstance(value, dict | list):
            record.__dict__[key] = redactor.json(value)


def _type_name(kind: type[BaseException] | None) -> str:
    if kind is None:
        return "Exception"
    module = kind.__module__
    return kind.__qualname__ if module == "builtins" else f"{module}.{kind.__qualname__}"


_PLAIN = logging.Formatter()

# The attributes every record has: the rest came in ``extra``.
_STANDARD: Final = frozenset(
    {
        *logging.LogRecord("", 0, "", 0, "", (), None).__dict__,
        "message",
        "asctime",
        "taskName",
    }
)


class JsonLogFormatter(logging.Formatter):
    """One JSON object per record, on one line.

    The keys: ``time`` (ISO 8601, UTC, milliseconds), ``level``, ``logger``,
    ``message``; the `RUN_FIELDS` that are known; ``exception`` (``type``,
    ``message``, ``traceback``) and ``stack`` when present; then whatever the
    call passed in ``extra`` (values that are not JSON written as text).
    Control characters are escaped by JSON itself, so a message cannot forge
    a line.

    Args:
        text: Applied to every text written (the message, the exception), e.g.
            to mask passwords in URLs; None leaves them as they are.
    """

    def __init__(self, text: Callable[[str], str] | None = None) -> None:
        super().__init__()
        self._text = text or (lambda shown: shown)

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        text = self._text
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": text(record.getMessage()),
        }
        seen = record.__dict__
        for name in RUN_FIELDS:
            value = seen.get(name)
            if value is not None:
                line[name] = value
        exception = self._exception(record)
        if exception is not None:
            line["exception"] = exception
        if record.stack_info:
            line["stack"] = text(record.stack_info)
        extras = {
            key: value
            for key, value in seen.items()
            if key not in _STANDARD
            and key not in _RUN_FIELDS
            and key not in line
            and not key.startswith("_")
        }
        try:
            return json.dumps({**line, **extras}, ensure_ascii=False, default=_shown)
        except (TypeError, ValueError):  # an extra JSON cannot hold (a dict keyed by tuples)
            shown = {key: _shown(value) for key, value in extras.items()}
            return json.dumps({**line, **shown}, ensure_ascii=False)

    def _exception(self, record: logging.LogRecord) -> Mapping[str, str] | None:
        text = self._text
        if record.exc_info and record.exc_info[1] is not None:
            kind, value = record.exc_info[0], record.exc_info[1]
            if not record.exc_text:
                record.exc_text = self.formatException(record.exc_info)
            return {
                "type": _type_name(kind),
                "message": text(str(value)),
                "traceback": text(record.exc_text),
            }
        if record.exc_text:  # masked by `RunLogFilter`
            kind_name, message = getattr(record, _EXCEPTION, ("Exception", ""))
            return {"type": kind_name, "message": text(message), "traceback": text(record.exc_text)}
        return None


def _shown(value: object) -> str:
    return str(value)
