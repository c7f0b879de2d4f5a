"""Saga definitions: `Saga`, its steps, their kinds and retry policies.

A definition is plain data plus the user's functions. The rules between step
kinds are checked as the saga is written (each decorator checks what it can
see) and once more when the saga is registered with an engine, so a broken
definition never starts a run.
"""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from typing import Any, Generic, TypeVar, overload

from pydantic import BaseModel, ValidationError

from sagakit.core import Plan, StepPlan
from sagakit.errors import DefinitionError, PermanentError, StateError
from sagakit.jsonutil import dumps, loads

StepFunction = Callable[..., Any]
Handler = Callable[..., Any]
F = TypeVar("F", bound=StepFunction)
S = TypeVar("S")


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


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """When and how often a failed attempt is tried again.

    Args:
        max_attempts: Attempts in all, the first included; ``None`` means
            unlimited. A crash of the process does not use up an attempt.
        initial_delay: Seconds before the second attempt.
        backoff: Factor applied to the delay after each failure.
        max_delay: Cap on any single delay, in seconds (jitter included).
        jitter: Fraction of the delay added or removed at random (0.1 = ±10 %),
            so that many runs failing together do not retry in lockstep.
        permanent: Exception types that fail the attempt for good, as
            `PermanentError` does.
    """

    max_attempts: int | None = 1
    initial_delay: float = 1.0
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
DEFAULT_STEP_RETRY = RetryPolicy()


def _check_callable(fn: object, what: str) -> None:
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
    saga: Saga[Any] = field(repr=False)
    declared_kind: StepKind | None = None
    retry: RetryPolicy | None = None
    timeout: float | None = None
    compensate_on_failure: bool = False
    compensation: StepFunction | None = None
    compensation_retry: RetryPolicy = DEFAULT_COMPENSATION_RETRY
    compensation_timeout: float | None = None
    wait_for: str | None = None
    local_transaction: bool = False
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
    def compensate(self, fn: F, /) -> F: ...

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
        _check_callable(func, where)
        if self.compensation is not None:
            raise DefinitionError(f"step {self.name!r} already has a compensation")
        self.saga._check_compensatable_position(self)
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
        self.saga._changed()


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


def version_key(version: str) -> tuple[tuple[int, int, str], ...]:
    """A sort key for version strings: numbers compare as numbers.

    ``"1.10.0"`` sorts after ``"1.9.2"``, and ``"2"`` after ``"1.99"``. Parts
    are split at ``.``, ``-``, ``+`` and ``_``; a text part (``rc1``) sorts
    before a number, so ``"2.0.rc1"`` comes before ``"2.0.0"``.
    """
    parts = re.split(r"[.\-+_]", version)
    return tuple((1, int(p), "") if p.isdigit() else (0, 0, p) for p in parts)


def _seconds(value: float | timedelta, what: str) -> float:
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if not (seconds > 0 and math.isfinite(seconds)):
        raise DefinitionError(f"{what} must be a positive duration, got {value!r}")
    return seconds


class Saga(Generic[S]):
    """A saga definition: a name, a version, a state model and ordered steps.

    Args:
        name: The saga's name, recorded with every run.
        state: A pydantic model class for the state, or ``None`` for a plain dict.
        version: Recorded with every run; runs are only driven by the same version.
        continue_on_compensation_error: Go on with earlier compensations when
            one fails for good, instead of halting the undo there. The run
            still ends in ``needs_attention``.
        deadline: How long a run may take going forward (seconds or a
            ``timedelta``), unless ``run``/``start`` gives its own. When it
            passes, the run compensates (before the pivot) or needs attention.

    Example:
        >>> saga = Saga("order")
        >>> @saga.step
        ... def validate(state, ctx): ...
    """

    def __init__(
        self,
        name: str,
        *,
        state: type[S] | None = None,
        version: str = "1",
        continue_on_compensation_error: bool = False,
        deadline: float | timedelta | None = None,
    ) -> None:
        if not isinstance(name, str) or not name.strip():
            raise DefinitionError(f"a saga needs a non-empty name, got {name!r}")
        if state is not None and not (isinstance(state, type) and issubclass(state, BaseModel)):
            raise DefinitionError(
                f"saga {name!r}: state must be a pydantic BaseModel subclass or None "
                f"(a plain dict), got {state!r}"
            )
        self.name = name
        self.version = str(version)
        self.state_type = state
        self.continue_on_compensation_error = continue_on_compensation_error
        self.deadline = None if deadline is None else _seconds(deadline, f"saga {name!r}: deadline")
        self._steps: dict[str, Step] = {}
        self._stages: list[list[str]] = []
        self._compensation_order: tuple[tuple[str, ...], ...] | None = None
        self._plan: Plan | None = None

    def __repr__(self) -> str:
        return f"Saga({self.name!r}, version={self.version!r}, steps={list(self._steps)})"

    @property
    def steps(self) -> tuple[Step, ...]:
        """The steps in the order they run."""
        return tuple(self._steps.values())

    def __iter__(self) -> Iterator[Step]:
        return iter(self._steps.values())

    def __getitem__(self, name: str) -> Step:
        return self._steps[name]

    @overload
    def step(self, fn: StepFunction, /) -> Step: ...

    @overload
    def step(
        self,
        *,
        name: str | None = None,
        kind: StepKind | str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        compensate_on_failure: bool = False,
        wait_for: str | None = None,
        local_transaction: bool = False,
    ) -> Callable[[StepFunction], Step]: ...

    def step(
        self,
        fn: Any = None,
        *,
        name: str | None = None,
        kind: StepKind | str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        compensate_on_failure: bool = False,
        wait_for: str | None = None,
        local_transaction: bool = False,
    ) -> Any:
        """Add a step; use as ``@saga.step`` or ``@saga.step(retry=..., timeout=...)``.

        Args:
            name: The step's name; defaults to the function's name.
            kind: ``"compensatable"``, ``"plain"``, ``"pivot"`` or ``"retriable"``;
                by default implied by whether a compensation is declared.
            retry: The action's retry policy (default: one attempt; retriable
                steps: unlimited).
            timeout: Seconds an attempt may take; a timed-out attempt's outcome
                is unknown, so the step is compensated if the saga rolls back.
            compensate_on_failure: Compensate this step even when its action
                failed, because a failure may leave partial effects.
            wait_for: The name of a signal the step waits for: the run pauses
                until `Engine.signal` delivers it (at once if it came
                earlier), then the action runs with the payload in the state
                and in ``ctx.signal``.
            local_transaction: The action gets ``ctx.connection``, a
                connection to the store's own database inside a transaction
                that commits together with the step's success record, so
                its local writes happen exactly once. Synchronous actions
                only; no ``timeout`` (use the database's own).

        Raises:
            DefinitionError: the step breaks a rule; the message names it.
        """

        def add(func: StepFunction) -> Step:
            return self.add_step(
                func,
                name=name,
                kind=kind,
                retry=retry,
                timeout=timeout,
                compensate_on_failure=compensate_on_failure,
                wait_for=wait_for,
                local_transaction=local_transaction,
            )

        return add(fn) if fn is not None else add

    def add_step(
        self,
        action: StepFunction,
        *,
        name: str | None = None,
        kind: StepKind | str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        compensate_on_failure: bool = False,
        compensation: StepFunction | None = None,
        compensation_retry: RetryPolicy | None = None,
        compensation_timeout: float | None = None,
        wait_for: str | None = None,
        local_transaction: bool = False,
    ) -> Step:
        """Add a step without decorators (for definitions built from data)."""
        step_name = name if name is not None else getattr(action, "__name__", None)
        if not isinstance(step_name, str) or not step_name or step_name == "<lambda>":
            raise DefinitionError(f"saga {self.name!r}: every step needs a name (pass name=...)")
        where = f"step {step_name!r} of saga {self.name!r}"
        _check_callable(action, where)
        if step_name in self._steps:
            raise DefinitionError(f"saga {self.name!r} already has a step named {step_name!r}")
        try:
            declared = StepKind(kind) if kind is not None else None
        except ValueError:
            kinds = ", ".join(k.value for k in StepKind)
            raise DefinitionError(f"{where}: unknown kind {kind!r}; use one of {kinds}") from None
        if timeout is not None and not (timeout > 0 and math.isfinite(timeout)):
            raise DefinitionError(f"{where}: timeout must be a positive number of seconds")
        if wait_for is not None and (not isinstance(wait_for, str) or not wait_for.strip()):
            raise DefinitionError(f"{where}: wait_for must name a signal, got {wait_for!r}")
        if local_transaction:
            if timeout is not None:
                raise DefinitionError(
                    f"{where}: a local-transaction step cannot have a timeout (a thread "
                    "cannot be stopped mid-transaction); use the database's statement timeout"
                )
            if inspect.iscoroutinefunction(action):
                raise DefinitionError(
                    f"{where}: a local-transaction step must be a synchronous function "
                    "(it is handed a blocking DB-API connection)"
                )
        pivot = self._pivot()
        if pivot is not None and declared is None:
            declared = StepKind.RETRIABLE  # after the pivot the saga can only go forward
        step = Step(
            name=step_name,
            action=action,
            saga=self,
            declared_kind=declared,
            retry=retry,
            timeout=timeout,
            compensate_on_failure=compensate_on_failure,
            wait_for=wait_for,
            local_transaction=local_transaction,
        )
        self._check_kind_position(step, pivot)
        self._steps[step_name] = step
        self._stages.append([step_name])
        if compensation is not None:
            step.set_compensation(
                compensation, retry=compensation_retry, timeout=compensation_timeout
            )
        self._changed()
        return step

    def wait_for(self, signal: str, *, name: str | None = None) -> Step:
        """Add a step that only waits for a signal (an approval, a payment notice).

        The run pauses there until `Engine.signal` delivers ``signal``; its
        payload is merged into the state and the run goes on.
        """

        def received(state: Any, ctx: Any) -> None:
            return None

        return self.add_step(received, name=name or f"wait_for_{signal}", wait_for=signal)

    def parallel(self, *steps: Step | str) -> tuple[Step, ...]:
        """Make steps defined one after another run at the same time, as one stage.

        If one fails for good, the others are awaited, and every member that
        succeeded (or whose outcome is unknown) is compensated.

        Example:
            >>> trip = Saga("trip")
            >>> @trip.step
            ... def book_flight(state, ctx): ...
            >>> @trip.step
            ... def book_hotel(state, ctx): ...
            >>> _ = trip.parallel(book_flight, book_hotel)

        Raises:
            DefinitionError: fewer than two steps, an unknown or repeated step,
                steps not defined one after another or already grouped, or a
                pivot or local-transaction step among them.
        """
        names = [s.name if isinstance(s, Step) else str(s) for s in steps]
        where = f"saga {self.name!r}: parallel({', '.join(names)})"
        if len(names) < 2 or len(set(names)) != len(names):
            raise DefinitionError(f"{where} needs two or more different steps")
        index = {stage[0]: i for i, stage in enumerate(self._stages) if len(stage) == 1}
        for name in names:
            if name not in self._steps:
                raise DefinitionError(f"{where}: no step named {name!r}")
            if name not in index:
                raise DefinitionError(f"{where}: step {name!r} is already in a parallel group")
            step = self._steps[name]
            if step.kind is StepKind.PIVOT:
                raise DefinitionError(
                    f"{where}: the pivot {name!r} cannot run in parallel; the point of "
                    "no return must be one step"
                )
            if step.local_transaction:
                raise DefinitionError(
                    f"{where}: the local-transaction step {name!r} cannot run in parallel"
                )
        positions = sorted(index[n] for n in names)
        if positions[-1] - positions[0] != len(positions) - 1:
            raise DefinitionError(
                f"{where}: the steps must be defined one after another, with no other "
                "step between them"
            )
        first = positions[0]
        self._stages[first : positions[-1] + 1] = [[self._stages[i][0] for i in positions]]
        self._changed()
        return tuple(self._steps[n] for n in self._stages[first])

    def compensation_order(self, *groups: str | Step | Sequence[str | Step]) -> None:
        """Declare the order compensations run in, instead of reverse completion.

        Each argument is a step, or a list of steps whose compensations run at
        the same time. Every compensatable step must be named exactly once.
        Only the steps that took effect are compensated, in this order.

        Example:
            ``trip.compensation_order(cancel_hotels_group, "cancel_flight")``
            where a group is ``["hotel_a", "hotel_b"]``.

        Raises:
            DefinitionError: an unknown, repeated or non-compensatable step, or
                a compensatable step left out (checked at registration).
        """
        order: list[tuple[str, ...]] = []
        seen: set[str] = set()
        for group in groups:
            members = [group] if isinstance(group, str | Step) else list(group)
            names = tuple(m.name if isinstance(m, Step) else str(m) for m in members)
            if not names:
                raise DefinitionError(f"saga {self.name!r}: an empty group in compensation_order")
            for name in names:
                if name in seen:
                    raise DefinitionError(
                        f"saga {self.name!r}: step {name!r} appears twice in compensation_order"
                    )
                seen.add(name)
            order.append(names)
        self._compensation_order = tuple(order)
        self._changed()

    def _pivot(self) -> Step | None:
        return next((s for s in self._steps.values() if s.kind is StepKind.PIVOT), None)

    def _check_kind_position(self, step: Step, pivot: Step | None) -> None:
        where = f"step {step.name!r} of saga {self.name!r}"
        if step.kind is StepKind.PIVOT and pivot is not None:
            raise DefinitionError(
                f"{where} is a second pivot; a saga has at most one (the first is {pivot.name!r})"
            )
        if step.kind is StepKind.RETRIABLE and pivot is None:
            raise DefinitionError(
                f"{where} is retriable but no pivot step comes before it; retriable steps "
                "follow the pivot (declare one with kind='pivot') or make it compensatable"
            )
        if pivot is not None and step.kind is not StepKind.RETRIABLE:
            raise DefinitionError(
                f"{where} is {step.kind.value!r} but comes after the pivot {pivot.name!r}; "
                "every step after the pivot must be retriable"
            )

    def _check_compensatable_position(self, step: Step) -> None:
        pivot = self._pivot()
        if pivot is None or step.name not in self._steps:
            return
        names = list(self._steps)
        if names.index(step.name) > names.index(pivot.name):
            raise DefinitionError(
                f"step {step.name!r} of saga {self.name!r} comes after the pivot "
                f"{pivot.name!r}, so it is retriable and cannot have a compensation"
            )

    def _changed(self) -> None:
        self._plan = None

    def validate(self) -> None:
        """Check the whole definition; called when the saga is registered.

        Raises:
            DefinitionError: naming the saga and the step at fault.
        """
        if not self._steps:
            raise DefinitionError(f"saga {self.name!r} has no steps")
        pivot: Step | None = None
        for step in self._steps.values():
            self._check_kind_position(step, pivot)
            if step.kind is StepKind.PIVOT:
                pivot = step
            if step.compensation is not None and step.kind is not StepKind.COMPENSATABLE:
                raise DefinitionError(
                    f"step {step.name!r} of saga {self.name!r} is {step.kind.value!r} "
                    "and so cannot have a compensation"
                )
            if step.kind is StepKind.COMPENSATABLE and step.compensation is None:
                raise DefinitionError(
                    f"step {step.name!r} of saga {self.name!r} is compensatable but has no "
                    f"compensation; add one with @{step.name}.compensate"
                )
            if step.compensate_on_failure and step.compensation is None:
                raise DefinitionError(
                    f"step {step.name!r} of saga {self.name!r} sets compensate_on_failure "
                    "but has no compensation"
                )
        self._validate_compensation_order()

    def _validate_compensation_order(self) -> None:
        if self._compensation_order is None:
            return
        named = [n for group in self._compensation_order for n in group]
        for name in named:
            step = self._steps.get(name)
            if step is None:
                raise DefinitionError(
                    f"saga {self.name!r}: compensation_order names {name!r}, which is not a step"
                )
            if step.compensation is None:
                raise DefinitionError(
                    f"saga {self.name!r}: compensation_order names step {name!r}, "
                    "which has no compensation"
                )
        missing = [s.name for s in self._steps.values() if s.compensation and s.name not in named]
        if missing:
            raise DefinitionError(
                f"saga {self.name!r}: compensation_order leaves out the compensatable "
                f"step(s) {', '.join(map(repr, missing))}; name every one"
            )

    def plan(self) -> Plan:
        """The definition as the pure core sees it (validated, cached)."""
        if self._plan is None:
            self.validate()
            self._plan = Plan(
                steps=tuple(
                    StepPlan(
                        name=s.name,
                        kind=s.kind.value,
                        compensable=s.compensation is not None,
                        max_attempts=s.retry_policy.max_attempts,
                        compensation_max_attempts=s.compensation_retry.max_attempts,
                        compensate_on_failure=s.compensate_on_failure,
                        wait_for=s.wait_for,
                    )
                    for s in self._steps.values()
                ),
                stages=tuple(tuple(stage) for stage in self._stages),
                continue_on_compensation_error=self.continue_on_compensation_error,
                compensation_order=self._compensation_order,
            )
        return self._plan

    # -- state --------------------------------------------------------------

    def load_state(self, data: dict[str, Any]) -> Any:
        """The state object handed to steps: a model instance or a dict copy."""
        if self.state_type is None:
            # A deep copy: a step that changes a nested list in place must not
            # change the recorded state behind the journal's back. The state
            # is JSON, and a JSON round trip copies it faster than deepcopy.
            copied: dict[str, Any] = loads(dumps(data))
            return copied
        model: type[BaseModel] = self.state_type  # type: ignore[assignment]
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            raise StateError(
                f"saga {self.name!r}: state is invalid for {model.__name__}: {exc}"
            ) from exc

    def dump_state(self, value: Any) -> dict[str, Any]:
        """Validate ``value`` against the state model and return it as JSON data.

        Raises:
            StateError: the value does not fit the model or is not JSON.
        """
        from sagakit.jsonutil import to_jsonable

        if isinstance(value, BaseModel):
            value = value.model_dump(mode="json")
        if not isinstance(value, dict):
            raise StateError(
                f"saga {self.name!r}: state must be a dict or a pydantic model, "
                f"got {type(value).__name__}"
            )
        if self.state_type is not None:
            model: type[BaseModel] = self.state_type  # type: ignore[assignment]
            try:
                return model.model_validate(value).model_dump(mode="json")
            except ValidationError as exc:
                raise StateError(
                    f"saga {self.name!r}: state is invalid for {model.__name__}: {exc}"
                ) from exc
        data: dict[str, Any] = to_jsonable(value, f"state of saga {self.name!r}")
        return data
