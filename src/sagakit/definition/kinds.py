"""Step kinds: how a step takes part in a saga (the rules between them are in `rules`)."""

from __future__ import annotations

from enum import StrEnum


class StepKind(StrEnum):
    """How a step takes part in the saga (Garcia-Molina & Salem; Richardson).

    - ``compensatable``: has a compensation, undone if the saga rolls back.
    - ``plain``: changes nothing that needs undoing (a validation, a read).
    - ``pivot``: the point of no return; once it succeeds the saga cannot roll back.
    - ``retriable``: after the pivot; retried until it succeeds, never compensated.
    """

    COMPENSATABLE = "compensatable"
    PLAIN = "plain"
    PIVOT = "pivot"
    RETRIABLE = "retriable"
