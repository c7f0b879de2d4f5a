"""Fields marked sensitive, and the one way sagakit masks them in what it shows.

A saga names its sensitive fields (`Sensitive` on a state model's field, or
``Saga(sensitive=[...])``); the names are journaled with each run when it
starts, so every reader of the store masks them, with or without the
application's code: ``show``, ``history``, ``list`` and ``run`` on the command
line, and whatever else renders a run. The engine itself keeps the real
values: steps and compensations need them.

A `Redactor` masks twice over:

- by key: the value under a sensitive key, at any depth of a state, an
  input, a step's result or a signal's payload, prints as `MASK`;
- by value: every text sagakit prints of the run (error messages,
  tracebacks, notes) has each sensitive value it holds replaced by `MASK`,
  because an exception's message often quotes the input it refused.

Values shorter than `MIN_MASKED_LENGTH` characters are masked under their
keys only: masking ``"7"`` in every text would garble the text and hide
nothing.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Sequence
from typing import Any, Final, overload

from sagakit.journal import ErrorInfo, Event, EventKind

__all__ = ["MASK", "MIN_MASKED_LENGTH", "Redactor", "Sensitive"]

MASK: Final = "***"
"""What a sensitive value is shown as."""

MIN_MASKED_LENGTH: Final = 4
"""The shortest sensitive value that is also masked inside texts."""

SENSITIVE_KEY: Final = "sensitive"
"""The key of a ``run_started`` event's data that lists the run's sensitive names."""


class Sensitive:
    """Marks a state model's field as sensitive: ``Annotated[str, Sensitive()]``.

    Its value is stored as it is (steps need it; encrypt the store to protect
    it at rest) and shown as ``***`` everywhere sagakit shows the run. The
    bare class works too: ``Annotated[str, Sensitive]``.

    Example:
        >>> from typing import Annotated
        >>> from pydantic import BaseModel
        >>> class Payment(BaseModel):
        ...     order_id: str
        ...     card_number: Annotated[str, Sensitive()]
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return "Sensitive()"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sensitive)

    def __hash__(self) -> int:
        return hash(Sensitive)


@dataclasses.dataclass(frozen=True, slots=True)
class Redactor:
    """Masks a run's sensitive fields in what is shown of it.

    Attributes:
        names: The sensitive keys, matched exactly at any depth.
        values: The sensitive values found so far, as text, longest first
            (so a value that contains another is masked whole).
    """

    names: frozenset[str] = frozenset()
    values: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.names)

    @classmethod
    def for_run(cls, events: Sequence[Event], names: Iterable[str] = (), *data: Any) -> Redactor:
        """The redactor of one run, from its journal.

        Args:
            events: The run's journal (or its start): the names its
                ``run_started`` event lists are added to ``names``, and the
                values under any of them, in any event, are collected.
            names: More sensitive names, e.g. the saga's, when it is loaded.
            data: More JSON to collect values from, e.g. the run's state.
        """
        found = set(names)
        for event in events[:1]:
            if event.kind is EventKind.RUN_STARTED:
                listed = event.data.get(SENSITIVE_KEY)
                if isinstance(listed, list):
                    found.update(name for name in listed if isinstance(name, str))
        redactor = cls(frozenset(found))
        if not redactor:
            return redactor
        return redactor.collect(*(event.data for event in events), *data)

    def collect(self, *data: Any) -> Redactor:
        """This redactor, knowing also the sensitive values held in ``data``."""
        if not self.names:
            return self
        values = set(self.values)
        for item in data:
            _collect(item, self.names, values, inside=False)
        longest_first = sorted(
            (value for value in values if len(value) >= MIN_MASKED_LENGTH),
            key=lambda value: (-len(value), value),
        )
        return dataclasses.replace(self, values=tuple(longest_first))

    def json(self, value: Any) -> Any:
        """``value`` with sensitive keys' values, and sensitive values in texts, masked."""
        if not self.names:
            return value
        return _masked(value, self.names, self._pattern())

    def text(self, text: str) -> str:
        """``text`` with every sensitive value it holds masked."""
        pattern = self._pattern()
        return text if pattern is None else pattern.sub(MASK, text)

    @overload
    def error(self, error: ErrorInfo) -> ErrorInfo: ...

    @overload
    def error(self, error: None) -> None: ...

    def error(self, error: ErrorInfo | None) -> ErrorInfo | None:
        """An error with its message and traceback masked."""
        if error is None or self._pattern() is None:
            return error
        return dataclasses.replace(
            error, message=self.text(error.message), traceback=self.text(error.traceback)
        )

    def event(self, event: Event) -> Event:
        """An event with its data masked."""
        if not self.names or not event.data:
            return event
        return dataclasses.replace(event, data=self.json(event.data))

    def events(self, events: Sequence[Event]) -> list[Event]:
        """Every event masked."""
        return [self.event(event) for event in events]

    def _pattern(self) -> re.Pattern[str] | None:
        # Built on demand: a redactor is made per shown run, used a few times.
        if not self.values:
            return None
        return re.compile("|".join(map(re.escape, self.values)))


def _collect(value: Any, names: frozenset[str], into: set[str], *, inside: bool) -> None:
    """Add to ``into`` the scalars under ``names`` in ``value`` (all of them when ``inside``)."""
    if isinstance(value, dict):
        for key, item in value.items():
            _collect(item, names, into, inside=inside or key in names)
    elif isinstance(value, list):
        for item in value:
            _collect(item, names, into, inside=inside)
    elif inside and value is not None and not isinstance(value, bool):
        into.add(str(value))


def _masked(value: Any, names: frozenset[str], pattern: re.Pattern[str] | None) -> Any:
    if isinstance(value, dict):
        return {
            key: MASK if key in names else _masked(item, names, pattern)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_masked(item, names, pattern) for item in value]
    if isinstance(value, str) and pattern is not None:
        return pattern.sub(MASK, value)
    return value
