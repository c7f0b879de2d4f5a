"""Saga definitions: `Saga`, its steps in stages, its state, and how versions compare.

A definition is plain data plus the user's functions. The rules between step
kinds are checked as the saga is written (each decorator checks what it can
see) and once more when the saga is registered with an engine, so a broken
definition never starts a run (see `sagakit.definition.kinds`).
"""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Annotated, Any, Generic, get_args, get_origin, overload

from typing_extensions import TypeVar

from sagakit.core import IMMUTABLE, Plan, StepPlan
from sagakit.definition.kinds import StepKind
from sagakit.definition.reconciler import ListResources, Reconciler, RemoveResource
from sagakit.definition.retry import RetryPolicy
from sagakit.definition.rules import (
    check_compensatable_position,
    check_kind_position,
    check_steps,
)
from sagakit.definition.step import Reserve, Step, StepFunction, check_callable
from sagakit.errors import DefinitionError, StateError
from sagakit.jsonutil import ValidationError, dumps, is_model, is_model_class, loads, to_jsonable
from sagakit.redaction import Redactor, Sensitive

if TYPE_CHECKING:
    # pydantic's models are imported by the application that defines one; a
    # saga whose state is a plain dict never needs them (see `is_model`).
    from pydantic import BaseModel

# A saga without a state model keeps its state as a dict, so `Saga("order")`
# type-checks as it is written, without `Saga[dict[str, Any]]`.
S = TypeVar("S", default=dict[str, Any])


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


def _sensitive(saga: str, names: Iterable[str], state: type[BaseModel] | None) -> frozenset[str]:
    if isinstance(names, str):  # a lone name would be read as its letters
        names = [names]
    chosen = list(names)
    for name in chosen:
        if not isinstance(name, str) or not name:
            raise DefinitionError(
                f"saga {saga!r}: sensitive takes field names (non-empty strings), got {name!r}"
            )
    if state is not None:
        chosen.extend(_sensitive_names(state))
    return frozenset(chosen)


def _secret_fields(
    model: type[BaseModel], path: str, seen: frozenset[type] = frozenset()
) -> Iterator[str]:
    """The dotted paths of the fields of ``model`` whose type holds a pydantic secret."""
    for name, field in model.model_fields.items():
        yield from _secrets_in(field.annotation, f"{path}.{name}", seen | {model})


def _secrets_in(annotation: Any, path: str, seen: frozenset[type]) -> Iterator[str]:
    # Only reached from a model's fields: pydantic is imported already.
    from pydantic import Secret, SecretBytes, SecretStr

    origin = get_origin(annotation)
    kind = origin if isinstance(origin, type) else annotation
    if isinstance(kind, type):
        if issubclass(kind, SecretStr | SecretBytes | Secret):
            yield path
            return
        if is_model_class(kind) and kind not in seen:
            yield from _secret_fields(kind, path, seen)
    for argument in get_args(annotation):  # list[SecretStr], SecretStr | None, Annotated[...]
        yield from _secrets_in(argument, path, seen)


def _sensitive_names(model: type[BaseModel], seen: frozenset[type] = frozenset()) -> Iterator[str]:
    """The names (and aliases) of the fields marked `Sensitive` in ``model``, at any depth."""
    for name, field in model.model_fields.items():
        if _is_marker(field.metadata) or _marked_in(field.annotation):
            yield name
            if field.alias:
                yield field.alias
        yield from _sensitive_in(field.annotation, seen | {model})


def _is_marker(metadata: Sequence[Any]) -> bool:
    return any(item is Sensitive or isinstance(item, Sensitive) for item in metadata)


def _marked_in(annotation: Any) -> bool:
    """Whether ``Annotated[..., Sensitive]`` sits inside ``annotation`` (``... | None``, lists)."""
    arguments = get_args(annotation)
    if get_origin(annotation) is Annotated and _is_marker(arguments[1:]):
        return True
    return any(_marked_in(argument) for argument in arguments)


def _sensitive_in(annotation: Any, seen: frozenset[type]) -> Iterator[str]:
    if is_model_class(annotation):
        if annotation not in seen:
            yield from _sensitive_names(annotation, seen)
        return
    for argument in get_args(annotation):  # list[Card], Card | None, dict[str, Card]
        yield from _sensitive_in(argument, seen)


# Values a step cannot change in place: handed to it without a copy.
_IMMUTABLE = IMMUTABLE
_ABSENT = object()

# Of those, the values that are JSON whatever they hold (`Saga.dump_state`).
_PLAIN: frozenset[type] = frozenset({int, bool, type(None)})


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
        sensitive: Names of fields whose values sagakit shows as ``***``
            wherever it shows a run: keys of the state, the input, step
            results and signal payloads, at any depth. Fields of the state
            model marked `Sensitive` are added to them.
        reconcilers: How to list and remove the external resources the
            steps create (`Reconciler`), for ``sagakit reconcile``; more can
            be added with `reconciler`.

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
        sensitive: Iterable[str] = (),
        reconcilers: Iterable[Reconciler] = (),
    ) -> None:
        if not isinstance(name, str) or not name.strip():
            raise DefinitionError(f"a saga needs a non-empty name, got {name!r}")
        if state is not None and not is_model_class(state):
            raise DefinitionError(
                f"saga {name!r}: state must be a pydantic BaseModel subclass or None "
                f"(a plain dict), got {state!r}"
            )
        if state is not None:
            secret = next(_secret_fields(state, state.__name__), None)
            if secret is not None:
                raise DefinitionError(
                    f"saga {name!r}: state field {secret} is a pydantic secret, which is "
                    "stored as '**********', so every later step and compensation would "
                    "see the mask; keep the secret outside the state (store a reference "
                    "to it, such as a vault path or a token id) and read it in the step"
                )
        self.name = name
        self.version = str(version)
        self.state_type = state
        self.continue_on_compensation_error = continue_on_compensation_error
        self.deadline = None if deadline is None else _seconds(deadline, f"saga {name!r}: deadline")
        self.sensitive = _sensitive(name, sensitive, state)
        self._steps: dict[str, Step] = {}
        self._stages: list[list[str]] = []
        # Kept as steps are added, so adding one checks its place in constant
        # time: a definition of n steps is checked in O(n), not O(n²).
        self._pivot: Step | None = None
        self._position: dict[str, int] = {}  # step name -> its index in `_steps`
        self._stage_of: dict[str, int] = {}  # step name -> its index in `_stages`
        self._compensation_order: tuple[tuple[str, ...], ...] | None = None
        self._plan: Plan | None = None
        self._reconcilers: list[Reconciler] = []
        for reconciler in reconcilers:
            self.add_reconciler(reconciler)

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
        reserve: Reserve | None = None,
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
        reserve: Reserve | None = None,
    ) -> Any:
        """Add a step; use as ``@saga.step`` or ``@saga.step(retry=..., timeout=...)``.

        Args:
            fn: The action, when used bare (``@saga.step``).
            name: The step's name; defaults to the function's name.
            kind: ``"compensatable"``, ``"plain"``, ``"pivot"`` or ``"retriable"``;
                by default implied by whether a compensation is declared.
            retry: The action's retry policy (default: 3 attempts, 0.5 s then
                1 s apart; retriable steps: unlimited).
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
            reserve: Reservations taken, all or none, before each attempt of
                the action (`Reserve`: names that may use the state's fields,
                ttl, wait); held until the run finishes, like those taken with
                ``ctx.reserve``. Not with ``local_transaction``.

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
                reserve=reserve,
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
        reserve: Reserve | None = None,
    ) -> Step:
        """Add a step without decorators (for definitions built from data)."""
        step_name = name if name is not None else getattr(action, "__name__", None)
        if not isinstance(step_name, str) or not step_name or step_name == "<lambda>":
            raise DefinitionError(f"saga {self.name!r}: every step needs a name (pass name=...)")
        where = f"step {step_name!r} of saga {self.name!r}"
        check_callable(action, where)
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
        if reserve is not None and not isinstance(reserve, Reserve):
            raise DefinitionError(
                f"{where}: reserve must be a Reserve(names, ttl=..., wait=...), got {reserve!r}"
            )
        if local_transaction:
            if reserve is not None:
                # Its success is committed in the step's own transaction, which
                # cannot also check the reservations (`Commit.requires`).
                raise DefinitionError(
                    f"{where}: a local-transaction step cannot reserve; reserve in the step "
                    "before it"
                )
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
        pivot = self._pivot
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
            reserve=reserve,
        )
        check_kind_position(self.name, step, pivot)
        self._position[step_name] = len(self._steps)
        self._steps[step_name] = step
        self._stage_of[step_name] = len(self._stages)
        self._stages.append([step_name])
        if step.kind is StepKind.PIVOT:  # a declared kind: it never changes afterwards
            self._pivot = step
        if compensation is not None:
            step.set_compensation(
                compensation, retry=compensation_retry, timeout=compensation_timeout
            )
        self.changed()
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
        for name in names:
            if name not in self._steps:
                raise DefinitionError(f"{where}: no step named {name!r}")
            if len(self._stages[self._stage_of[name]]) != 1:
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
        positions = sorted(self._stage_of[n] for n in names)
        if positions[-1] - positions[0] != len(positions) - 1:
            raise DefinitionError(
                f"{where}: the steps must be defined one after another, with no other "
                "step between them"
            )
        first = positions[0]
        self._stages[first : positions[-1] + 1] = [[self._stages[i][0] for i in positions]]
        # Only the stages from here on moved; a group of the last steps moves none.
        for index in range(first, len(self._stages)):
            for member in self._stages[index]:
                self._stage_of[member] = index
        self.changed()
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
        self.changed()

    @property
    def reconcilers(self) -> tuple[Reconciler, ...]:
        """The reconcilers declared, in order (see `Reconciler`)."""
        return tuple(self._reconcilers)

    def add_reconciler(self, reconciler: Reconciler) -> Reconciler:
        """Declare a `Reconciler`; its step, if named, is checked when the saga is registered.

        Raises:
            DefinitionError: it is not a `Reconciler`, or one of its kind is declared already.
        """
        if not isinstance(reconciler, Reconciler):
            raise DefinitionError(
                f"saga {self.name!r}: reconcilers must be Reconciler objects, got {reconciler!r}"
            )
        if any(r.kind == reconciler.kind for r in self._reconcilers):
            raise DefinitionError(
                f"saga {self.name!r} has a reconciler of kind {reconciler.kind!r} already"
            )
        self._reconcilers.append(reconciler)
        return reconciler

    def reconciler(
        self, kind: str, *, remove: RemoveResource, step: str | None = None
    ) -> Callable[[ListResources], ListResources]:
        """Declare a reconciler with its ``list`` function as the decorated one.

        Example:
            >>> @saga.reconciler("team", remove=proxy.delete_team_of, step="create_team")
            ... def teams(): return proxy.teams_with_keys()

        Raises:
            DefinitionError: as `add_reconciler`.
        """

        def add(lister: ListResources) -> ListResources:
            self.add_reconciler(Reconciler(kind, lister, remove, step))
            return lister

        return add

    def changed(self) -> None:
        """Forget the cached plan: a step or the compensation order changed."""
        self._plan = None

    def check_compensation(self, step: Step) -> None:
        """Check that ``step`` may have a compensation where it stands (not after the pivot).

        Raises:
            DefinitionError: the step comes after the pivot.
        """
        check_compensatable_position(self.name, self._position, self._pivot, step)

    def validate(self) -> None:
        """Check the whole definition; called when the saga is registered.

        Raises:
            DefinitionError: naming the saga and the step at fault.
        """
        check_steps(self.name, self._steps, self._compensation_order)
        for reconciler in self._reconcilers:
            if reconciler.step is not None and reconciler.step not in self._steps:
                raise DefinitionError(
                    f"saga {self.name!r}: reconciler {reconciler.kind!r} names step "
                    f"{reconciler.step!r}, which the saga does not have"
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

    def load_state(self, data: dict[str, Any], nested: Collection[str] | None = None) -> Any:
        """The state object handed to steps: a model instance or a dict copy.

        ``nested``, if given, holds every key of ``data`` whose value is not
        a string, number, boolean or None (it may hold more): only those
        values are copied (`sagakit.core.Progress.nested`).
        """
        if self.state_type is None:
            # A deep copy: a step that changes a nested list in place must not
            # change the recorded state behind the journal's back. Strings,
            # numbers, booleans and None cannot be changed in place, so they
            # are handed over as they are (a big state is mostly such values,
            # and copying it whole at every step cost more than the step);
            # the lists and dicts are copied in one JSON round trip, which is
            # faster than deepcopy.
            if nested is not None:
                # The driver knows where the lists and dicts are: the dict is
                # copied in C and only those values looked at (with 1,000
                # keys, looking at every value's type cost more than the step).
                shared = dict(data)
                inner = {
                    key: value
                    for key in nested
                    if type(value := data.get(key, _ABSENT)) not in _IMMUTABLE
                    and value is not _ABSENT
                }
                if inner:
                    shared.update(loads(dumps(inner)))
                return shared
            if len(data) > 16 and _IMMUTABLE.issuperset(map(type, data.values())):
                # Many keys and nothing nested (a state of many texts): the
                # dict copied in C, and its values checked without a Python
                # loop, took a third of the loop's time with 1,000 keys.
                return dict(data)
            copied: dict[str, Any] = {}
            deep: dict[str, Any] = {}
            for key, value in data.items():
                if type(value) in _IMMUTABLE:
                    copied[key] = value
                else:
                    copied[key] = None  # keeps the key's place in the order
                    deep[key] = value
            if deep:
                copied.update(loads(dumps(deep)))
            return copied
        model: type[BaseModel] = self.state_type  # type: ignore[assignment]
        # pydantic hands over as they are the lists and dicts of the fields
        # whose items it does not check (`Any`, the values of a
        # `dict[str, Any]`): the model is made from copies of them, so that a
        # step's in-place change is its own, as with a dict state.
        deep = {key: value for key, value in data.items() if type(value) not in _IMMUTABLE}
        if deep:
            data = {**data, **loads(dumps(deep))}
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            raise self._invalid(model, exc, data) from exc

    def check_signal(self, state: dict[str, Any], name: str, payload: dict[str, Any]) -> None:
        """Check that signal ``name``'s ``payload``, merged into ``state``, fits the state.

        With a state model, a payload key the model has no field for is
        refused (unless the model allows extra keys): merged into the stored
        state, it would be kept there unchecked.

        Raises:
            StateError: the payload has such keys, or the merged state does
                not fit the model or is not JSON.
        """
        model: type[BaseModel] | None = self.state_type  # type: ignore[assignment]
        allows_extra = model is not None and model.model_config.get("extra") == "allow"
        if model is not None and not allows_extra:
            unknown = sorted(set(payload) - set(model.model_fields))
            if unknown:
                raise StateError(
                    f"saga {self.name!r}: the payload of signal {name!r} has "
                    f"{'a key' if len(unknown) == 1 else 'keys'} the state model "
                    f"{model.__name__} does not have: {', '.join(map(repr, unknown))}"
                )
        self.dump_state({**state, **payload})

    def dump_state(self, value: Any) -> dict[str, Any]:
        """Validate ``value`` against the state model and return it as JSON data.

        Raises:
            StateError: the value does not fit the model or is not JSON.
        """
        # A plain dict (the usual input) is not a model: no module lookup.
        if type(value) is not dict and is_model(value):
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
                raise self._invalid(model, exc, value) from exc
        # The run's state is a copy of the value (the caller may change its
        # own afterwards), but strings, numbers, booleans and None as they
        # are: they cannot change in place, and are JSON as they stand. A
        # big state is mostly such values: its copy through JSON (every
        # string of it made again) cost as much memory as the state.
        # What may not be JSON as it stands (a key that is not an ASCII
        # string, a float that is not finite, a string that is not ASCII,
        # which may hold a lone surrogate) goes through JSON, as everything else.
        # A plain loop, not all() over a generator, and the place named for an
        # error only once needed: this runs for every run started.
        for key in value:
            if type(key) is not str or not key.isascii():
                # Keys made strings, as JSON does.
                data: dict[str, Any] = to_jsonable(value, f"state of saga {self.name!r}")
                return data
        kept: dict[str, Any] = {}
        nested: dict[str, Any] = {}
        for key, item in value.items():
            kind = type(item)
            if (
                (kind is str and item.isascii())
                or kind in _PLAIN
                or (kind is float and math.isfinite(item))
            ):
                kept[key] = item
            else:
                kept[key] = None  # keeps the key's place in the order
                nested[key] = item
        if nested:
            kept.update(to_jsonable(nested, f"state of saga {self.name!r}"))
        return kept

    def _invalid(self, model: type[BaseModel], exc: ValidationError, value: Any) -> StateError:
        """The error for a state that does not fit ``model``, sensitive values masked.

        pydantic quotes each input it refused; the message goes to logs, the
        journal and the terminal, where a sensitive value must not.
        """
        why = Redactor(self.sensitive).collect(value).text(str(exc))
        return StateError(f"saga {self.name!r}: state is invalid for {model.__name__}: {why}")
