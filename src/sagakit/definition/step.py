"""Steps: one action of a saga, its optional compensation and its handlers.

A `Step` is created by `Saga.step` and stays callable, so decorated functions
can be unit-tested as they are. Its functions' signatures are checked as they
are declared.
"""

from __future__ import annotations

import inspect
import math
import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, overload

from sagakit.definition.kinds import StepKind
from sagakit.definition.retry import (
    DEFAULT_COMPENSATION_RETRY,
    DEFAULT_RETRIABLE_RETRY,
    DEFAULT_STEP_RETRY,
    RetryPolicy,
)
from sagakit.errors import DefinitionError

StepFunction = Callable[..., Any]
Handler = Callable[..., Any]
F = TypeVar("F", bound=StepFunction)


class StepOwner(Protocol):
    """What a step needs of the saga it belongs to; `Saga` is the one implementation.

    A step declares its compensation after it was added to its saga, and only
    the saga sees where the step stands among the others, so the step asks it.
    """

    @property
    def name(self) -> str:
        """The saga's name, for error messages."""
        ...

    def check_compensation(self, step: Step) -> None:
        """Raise `DefinitionError` if ``step`` may not have a compensation where it stands."""
        ...

    def changed(self) -> None:
        """Forget what was derived from the steps (one of them changed)."""
        ...


@dataclass(frozen=True, slots=True)
class Reserve:
    """Reservations a step takes before its action runs (``@saga.step(reserve=...)``).

    Every name is taken, or none, as `StepContext.reserve_all` takes them,
    before each attempt of the action; they are then held as if the action
    had reserved them itself: its success is recorded only if the run still
    holds them, and they are freed when the run finishes (or when a step
    calls ``ctx.release``).

    Attributes:
        names: The names to reserve (kept as a tuple). Each may use the state's fields as
            ``str.format`` does (``"seat:{seat}"``); a field the state does
            not have fails the step for good, with a message naming it.
        ttl: Seconds until the reservations expire by themselves.
        wait: Seconds to wait for another run to free them before the attempt
            fails with `ReservationBusy` (the step's retry policy decides
            what follows).
    """

    names: Sequence[str]
    ttl: float
    wait: float = 0.0

    def __post_init__(self) -> None:
        names = self.names
        if isinstance(names, str) or not isinstance(names, Sequence) or not names:
            raise DefinitionError(f"reserve: give a list of one or more names, not {names!r}")
        if not isinstance(names, tuple):
            object.__setattr__(self, "names", tuple(names))
        for name in self.names:
            _check_name(name)
        for key, value, least in (("ttl", self.ttl, None), ("wait", self.wait, 0.0)):
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or (value <= 0 if least is None else value < least)
            ):
                what = "a positive number" if least is None else "a number, 0 or more,"
                raise DefinitionError(f"reserve: {key} must be {what} of seconds, not {value!r}")

    def fields(self) -> set[str]:
        """The state's fields the names use."""
        return {field for name in self.names for field in _fields(name)}

    def names_for(self, state: Mapping[str, object]) -> list[str]:
        """The names with the state's fields filled in.

        Raises:
            KeyError: a name uses a field ``state`` does not have (its name is the key).
        """
        return [
            name.format_map(state) if "{" in name or "}" in name else name for name in self.names
        ]


def _fields(name: str) -> list[str]:
    return [field for _, field, _, _ in string.Formatter().parse(name) if field is not None]


def _check_name(name: object) -> None:
    if not isinstance(name, str) or not name.strip():
        raise DefinitionError(f"reserve: every name must be a non-empty string, not {name!r}")
    try:
        fields = _fields(name)
    except ValueError as exc:  # an unmatched brace
        raise DefinitionError(
            f"reserve: {name!r} is not a valid name template ({exc}); write {{{{ and }}}} "
            "for a brace"
        ) from None
    for field_name in fields:
        if not field_name.isidentifier():
            raise DefinitionError(
                f"reserve: {name!r} must name state fields in braces, like 'seat:{{seat}}', "
                f"not {{{field_name}}}"
            )


def check_callable(fn: object, what: str) -> None:
    """Check that ``fn`` is a function taking ``(state, ctx)``; ``what`` names it in the error."""
    if not callable(fn):
        raise DefinitionError(f"{what} must be a function, got {fn!r}")
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # builtins without a signature: let them be
        return
    params = list(sig.parameters.values())
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if any(p.kind is p.VAR_POSITIONAL for p in params) or len(positional) >= 2:
        keyword_only = [p for p in params if p.kind is p.KEYWORD_ONLY]
        required = [p for p in positional[2:] + keyword_only if p.default is p.empty]
        if required:
            raise DefinitionError(
                f"{what} takes (state, ctx) but also requires {required[0].name!r}; "
                "give it a default value"
            )
        return
    raise DefinitionError(f"{what} must accept two arguments (state, ctx), its signature is {sig}")


@dataclass(eq=False)
class Step:
    """One step of a saga: an action, its optional compensation and policies.

    Created by `Saga.step`; calling it calls the action, so decorated
    functions stay usable in plain unit tests.
    """

    name: str
    action: StepFunction
    saga: StepOwner = field(repr=False)
    declared_kind: StepKind | None = None
    retry: RetryPolicy | None = None
    timeout: float | None = None
    compensate_on_failure: bool = False
    compensation: StepFunction | None = None
    compensation_retry: RetryPolicy = DEFAULT_COMPENSATION_RETRY
    compensation_timeout: float | None = None
    wait_for: str | None = None
    local_transaction: bool = False
    reserve: Reserve | None = None
    failure_handler: Handler | None = field(default=None, repr=False)
    signal_handler: Handler | None = field(default=None, repr=False)

    @property
    def kind(self) -> StepKind:
        """The step's kind: as declared, else implied by a compensation."""
        if self.declared_kind is not None:
            return self.declared_kind
        return StepKind.COMPENSATABLE if self.compensation else StepKind.PLAIN

    @property
    def retry_policy(self) -> RetryPolicy:
        """The action's retry policy, with the default for its kind."""
        if self.retry is not None:
            return self.retry
        return DEFAULT_RETRIABLE_RETRY if self.kind is StepKind.RETRIABLE else DEFAULT_STEP_RETRY

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the action, so a decorated function can be tested as it is."""
        return self.action(*args, **kwargs)

    def on_failure(self, fn: F) -> F:
        """Declare what to do when this step's action fails for good.

        ``fn(state, ctx, error)`` gets the `ErrorInfo` of the last attempt and
        returns a `Next` (``RETRY`` with a fresh budget, ``COMPENSATE``, the
        default, or ``CONTINUE`` without the step), a `Pause` to ask a person
        (the hotel is full: offer another or let the customer cancel), or
        None for the default. It may be async. It must decide quickly and
        have no effects of its own: its answer is journaled, it is not retried.
        """
        _check_handler(fn, f"failure handler of step {self.name!r}")
        if self.failure_handler is not None:
            raise DefinitionError(f"step {self.name!r} already has a failure handler")
        self.failure_handler = fn
        return fn

    def on_signal(self, fn: F) -> F:
        """Declare how a signal answers a pause of this step.

        ``fn(state, ctx, signal)`` runs when a `Signal` reaches the run while
        this step is paused; the signal's payload is already in ``state``. It
        returns a `Next` (``RETRY`` is the default: run the step again with
        the new state), a `Pause` to keep waiting, or None. It may be async.
        """
        _check_handler(fn, f"signal handler of step {self.name!r}")
        if self.signal_handler is not None:
            raise DefinitionError(f"step {self.name!r} already has a signal handler")
        self.signal_handler = fn
        return fn

    @overload
    def compensate(
        self, fn: F, /, *, retry: RetryPolicy | None = None, timeout: float | None = None
    ) -> F: ...

    @overload
    def compensate(
        self, *, retry: RetryPolicy | None = None, timeout: float | None = None
    ) -> Callable[[F], F]: ...

    def compensate(
        self,
        fn: Any = None,
        *,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Declare the function that undoes this step.

        Use bare (``@charge.compensate``) or with options
        (``@charge.compensate(retry=RetryPolicy(max_attempts=50))``).

        Args:
            fn: The compensation, when used bare (``@charge.compensate``).
            retry: The compensation's retry policy (default: 20 attempts with
                capped exponential backoff).
            timeout: Seconds a compensation attempt may take.

        Raises:
            DefinitionError: the step cannot have a compensation (pivot,
                retriable, plain) or already has one.
        """

        def attach(func: F) -> F:
            self.set_compensation(func, retry=retry, timeout=timeout)
            return func

        return attach(fn) if fn is not None else attach

    def set_compensation(
        self,
        func: StepFunction,
        *,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
    ) -> None:
        """Declare the compensation without decorator syntax (see `compensate`)."""
        where = f"compensation of step {self.name!r} in saga {self.saga.name!r}"
        check_callable(func, where)
        if self.compensation is not None:
            raise DefinitionError(f"step {self.name!r} already has a compensation")
        self.saga.check_compensation(self)
        if self.declared_kind not in (None, StepKind.COMPENSATABLE):
            raise DefinitionError(
                f"step {self.name!r} is declared {self.declared_kind.value!r} and so "
                "cannot have a compensation; remove kind= or the compensation"
            )
        if timeout is not None and not (timeout > 0 and math.isfinite(timeout)):
            raise DefinitionError(f"{where}: timeout must be a positive number of seconds")
        self.compensation = func
        if retry is not None:
            self.compensation_retry = retry
        self.compensation_timeout = timeout
        self.saga.changed()


def _check_handler(fn: object, what: str) -> None:
    if not callable(fn):
        raise DefinitionError(f"{what} must be a function, got {fn!r}")
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return
    try:
        sig.bind(None, None, None)
    except TypeError:
        raise DefinitionError(
            f"{what} must accept three arguments (state, ctx, error or signal), "
            f"its signature is {sig}"
        ) from None
