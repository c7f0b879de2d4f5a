"""Retry policies: when and how often a failed attempt is tried again.

`RetryPolicy` computes the delay before the next attempt (capped exponential
backoff with jitter) and tells permanent errors apart; the defaults for a
step's action, a retriable step and a compensation live beside it.

An action is tried three times by default, 0.5 s and then 1 s apart (±10 %):
a passing fault (a dropped connection, a 503 while a service restarts, a
failover) usually lasts less than that, and compensating the whole saga for
it undoes work that one more try would have kept. Three attempts, not more,
so that a service that is really down makes the saga compensate within
about two seconds instead of holding it; a step whose error no retry can fix
raises `PermanentError` (or lists its exceptions in ``permanent``) and is
never retried.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sagakit.errors import DefinitionError, PermanentError

# The longest delay a policy may name: 30 days. A longer one is almost always a
# mistake (milliseconds taken for seconds, 1e308), and it would park a run
# where neither a worker nor `recover` ever gets back to it.
MAX_RETRY_DELAY = 30 * 24 * 3600.0


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """When and how often a failed attempt is tried again.

    The defaults are those of a step's action: 3 attempts, 0.5 s then 1 s
    apart. ``RetryPolicy(max_attempts=1)`` tries once.

    Args:
        max_attempts: Attempts in all, the first included; ``None`` means
            unlimited. A crash of the process does not use up an attempt.
        initial_delay: Seconds before the second attempt.
        backoff: Factor applied to the delay after each failure.
        max_delay: Cap on any single delay, in seconds (jitter included).
            Delays are at most `MAX_RETRY_DELAY` (30 days).
        jitter: Fraction of the delay added or removed at random (0.1 = ±10 %),
            so that many runs failing together do not retry in lockstep.
        permanent: Exception types that fail the attempt for good, as
            `PermanentError` does. Only subclasses of `Exception`:
            ``SystemExit``, ``KeyboardInterrupt`` and the like stop the
            worker and are never an attempt's failure.
    """

    max_attempts: int | None = 3
    initial_delay: float = 0.5
    backoff: float = 2.0
    max_delay: float = 60.0
    jitter: float = 0.1
    permanent: tuple[type[BaseException], ...] = ()

    def __post_init__(self) -> None:
        if self.max_attempts is not None and self.max_attempts < 1:
            raise DefinitionError(f"RetryPolicy.max_attempts must be >= 1, got {self.max_attempts}")
        for name in ("initial_delay", "max_delay", "backoff", "jitter"):
            value = getattr(self, name)
            if not math.isfinite(value):  # NaN would slip past every comparison below
                raise DefinitionError(f"RetryPolicy.{name} must be a finite number, got {value}")
        if self.initial_delay < 0 or self.max_delay < 0:
            raise DefinitionError("RetryPolicy delays must not be negative")
        for name in ("initial_delay", "max_delay"):
            if getattr(self, name) > MAX_RETRY_DELAY:
                raise DefinitionError(
                    f"RetryPolicy.{name} must be at most {MAX_RETRY_DELAY:g} seconds "
                    f"(30 days), got {getattr(self, name)}"
                )
        for kind in self.permanent:
            if not (isinstance(kind, type) and issubclass(kind, Exception)):
                raise DefinitionError(
                    f"RetryPolicy.permanent takes subclasses of Exception, got {kind!r}; "
                    "SystemExit, KeyboardInterrupt and the like stop the worker, not an attempt"
                )
        if self.backoff < 1:
            raise DefinitionError(f"RetryPolicy.backoff must be >= 1, got {self.backoff}")
        if not 0 <= self.jitter <= 1:
            raise DefinitionError(f"RetryPolicy.jitter must be within [0, 1], got {self.jitter}")

    def delay(self, failures: int, random: float) -> float:
        """Seconds to wait after the ``failures``-th failed attempt.

        Args:
            failures: Failed attempts so far (1 after the first failure).
            random: A number in [0, 1) that decides the jitter.
        """
        exponent = min(max(failures - 1, 0), 64)  # bounded: backoff**exponent must not overflow
        try:
            base = min(self.initial_delay * self.backoff**exponent, self.max_delay)
        except OverflowError:  # a huge backoff still overflows a float: only the cap is left
            base = self.max_delay if self.initial_delay > 0 else 0.0
        # Capped after the jitter: at the cap, delays spread below it, never above.
        return min(max(0.0, base * (1 + self.jitter * (2 * random - 1))), self.max_delay)

    def is_permanent(self, exc: BaseException) -> bool:
        """Whether ``exc`` fails the attempt for good, skipping retries."""
        return isinstance(exc, PermanentError) or (
            bool(self.permanent) and isinstance(exc, self.permanent)
        )


# Compensations must eventually succeed, so by default they are retried for a
# good while (about 13 minutes in all) before a person is asked to step in.
DEFAULT_COMPENSATION_RETRY = RetryPolicy(
    max_attempts=20, initial_delay=0.5, backoff=2.0, max_delay=60.0
)
# Retriable steps come after the pivot: the saga can only go forward.
DEFAULT_RETRIABLE_RETRY = RetryPolicy(max_attempts=None, initial_delay=0.5, max_delay=60.0)
# A passing fault should not undo the whole saga: a few quick tries first (see above).
DEFAULT_STEP_RETRY = RetryPolicy(max_attempts=3, initial_delay=0.5, backoff=2.0, max_delay=60.0)
