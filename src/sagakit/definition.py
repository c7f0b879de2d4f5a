"""Saga definitions: `Saga`, its steps, their kinds and retry policies.

A definition is plain data plus the user's functions. The rules between step
kinds are checked as the saga is written (each decorator checks what it can
see) and once more when the saga is registered with an engine, so a broken
definition never starts a run.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Generic, TypeVar, overload

from pydantic import BaseModel, ValidationError

from sagakit.core import Plan, StepPlan
from sagakit.errors import DefinitionError, PermanentError, StateError

StepFunction = Callable[..., Any]
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
# good while (about 17 minutes in all) before a person is asked to step in.
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


class Saga(Generic[S]):
    """A saga definition: a name, a version, a state model and ordered steps.

    Args:
        name: The saga's name, recorded with every run.
        state: A pydantic model class for the state, or ``None`` for a plain dict.
        version: Recorded with every run; runs are only driven by the same version.
        continue_on_compensation_error: Go on with earlier compensations when
            one fails for good, instead of halting the undo there. The run
            still ends in ``needs_attention``.

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
        self._steps: dict[str, Step] = {}
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
        )
        self._check_kind_position(step, pivot)
        self._steps[step_name] = step
        if compensation is not None:
            step.set_compensation(
                compensation, retry=compensation_retry, timeout=compensation_timeout
            )
        self._changed()
        return step

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
                    )
                    for s in self._steps.values()
                ),
                stages=tuple((s.name,) for s in self._steps.values()),
                continue_on_compensation_error=self.continue_on_compensation_error,
            )
        return self._plan

    # -- state --------------------------------------------------------------

    def load_state(self, data: dict[str, Any]) -> Any:
        """The state object handed to steps: a model instance or a dict copy."""
        if self.state_type is None:
            return dict(data)
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
