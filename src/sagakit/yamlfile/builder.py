"""Building a `Saga` from a definition file's validated data.

`Builder` resolves the functions and classes each step names and adds the
steps, stages and compensation order to an ordinary `Saga`, so the rules
between step kinds are the same as in Python; every problem is collected
with its line and step.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Literal

from sagakit.definition import Reserve, RetryPolicy, Saga, StepKind
from sagakit.errors import DefinitionError
from sagakit.yamlfile.formats import ParallelSpec, ReserveSpec, RetrySpec, SagaSpec, StepSpec
from sagakit.yamlfile.reading import Located, Path_, Problem
from sagakit.yamlfile.resolver import Resolver

# -- building the saga ----------------------------------------------------------------


_Kind = Literal["function", "model", "exception"]


class Builder:
    """Turns validated data into a `Saga`, collecting every problem on the way."""

    def __init__(self, located: Located, resolver: Resolver) -> None:
        self.at = located
        self.resolver = resolver
        self.errors: list[Problem] = []
        self.state: Any = None
        """The state model, if the file names one (what ``reserve`` names may use)."""

    def _get(self, kind: _Kind, path: str, loc: Path_, step: str | None) -> Any:
        try:
            return getattr(self.resolver, kind)(path)
        except ValueError as exc:
            self.errors.append(self.at.problem(loc, str(exc), step))
            return None

    def _retry(self, spec: RetrySpec | None, loc: Path_, step: str) -> RetryPolicy | None:
        if spec is None:
            return None
        options = spec.model_dump(exclude={"permanent"})
        permanent = tuple(
            self._get("exception", path, (*loc, "permanent", i), step)
            for i, path in enumerate(spec.permanent)
        )
        try:
            return RetryPolicy(**options, permanent=tuple(p for p in permanent if p))
        except DefinitionError as exc:
            self.errors.append(self.at.problem(loc, str(exc), step))
            return None

    def _reserve(self, spec: ReserveSpec | None, loc: Path_, step: str) -> Reserve | None:
        if spec is None:
            return None
        try:
            reserve = Reserve(tuple(spec.names), ttl=spec.ttl, wait=spec.wait)
        except DefinitionError as exc:
            self.errors.append(self.at.problem((*loc, "names"), str(exc), step))
            return None
        fields = getattr(self.state, "model_fields", None)
        if isinstance(fields, dict):
            # A declared model says which fields a run's state can have.
            for index, name in enumerate(spec.names):
                missing = sorted(set(Reserve((name,), ttl=1).fields()) - set(fields))
                if missing:
                    self.errors.append(
                        self.at.problem(
                            (*loc, "names", index),
                            f"reserve: {name!r} uses {missing[0]!r}, which the state model "
                            f"{self.state.__name__} has no field for",
                            step,
                        )
                    )
        return reserve

    def build(self, spec: SagaSpec) -> Saga[Any] | None:
        """The saga ``spec`` describes, or None when a problem was found (see `problems`)."""
        state = self._get("model", spec.state, ("state",), None) if spec.state else None
        self.state = state
        try:
            saga: Saga[Any] = Saga(
                spec.saga,
                state=state,
                version=spec.version,
                continue_on_compensation_error=spec.continue_on_compensation_error,
                deadline=spec.deadline,
                sensitive=spec.sensitive,
            )
        except DefinitionError as exc:
            self.errors.append(self.at.problem(("saga",), str(exc)))
            return None
        for index, stage in enumerate(spec.steps):
            if isinstance(stage, ParallelSpec):
                names = [
                    self._add(saga, member, ("steps", index, "parallel", j))
                    for j, member in enumerate(stage.parallel)
                ]
                if all(names) and not self.errors:
                    self._define(saga.parallel, ("steps", index), *names)
            else:
                self._add(saga, stage, ("steps", index))
        if spec.compensation_order is not None and not self.errors:
            self._define(saga.compensation_order, ("compensation_order",), *spec.compensation_order)
        if not self.errors:
            self._define(saga.validate, ("steps",))
        return None if self.errors else saga

    def _define(self, action: Callable[..., object], loc: Path_, *args: Any) -> None:
        try:
            action(*args)
        except DefinitionError as exc:
            self.errors.append(self._definition_problem(exc, loc))

    def _definition_problem(self, exc: DefinitionError, loc: Path_) -> Problem:
        # The definition's own message names the step; point at its line.
        match = re.search(r"step '([^']+)'", str(exc))
        if "compensation_order" in str(exc) and "compensation_order" in self.at.data:
            return self.at.problem(("compensation_order",), str(exc))
        if match:
            line = self.at.step_line(match.group(1))
            if line is not None:
                return Problem(self.at.file, line, match.group(1), str(exc))
        return self.at.problem(loc, str(exc))

    def _add(self, saga: Saga[Any], spec: StepSpec, loc: Path_) -> str | None:
        name = spec.name
        errors = len(self.errors)
        if spec.function is None and spec.wait_for is None:
            self.errors.append(
                self.at.problem(
                    loc, "'function' is required (unless the step only waits, with wait_for)", name
                )
            )
            return None
        set_keys = spec.model_fields_set - {"name", "wait_for", "description"}
        if spec.function is None and set_keys:
            for key in sorted(set_keys):
                self.errors.append(
                    self.at.problem(
                        (*loc, key),
                        f"{key}: a step without 'function' only waits for its signal; "
                        "give it a function to use this",
                        name,
                    )
                )
            return None
        if spec.compensate is None:
            for key in ("compensation_retry", "compensation_timeout"):
                if key in spec.model_fields_set:
                    self.errors.append(
                        self.at.problem(
                            (*loc, key), f"{key}: there is no 'compensate' to apply it to", name
                        )
                    )
        action = (
            self._get("function", spec.function, (*loc, "function"), name)
            if spec.function
            else None
        )
        compensation = (
            self._get("function", spec.compensate, (*loc, "compensate"), name)
            if spec.compensate
            else None
        )
        handlers = {
            key: self._get("function", path, (*loc, key), name)
            for key in ("on_failure", "on_signal")
            if (path := getattr(spec, key)) is not None
        }
        retry = self._retry(spec.retry, (*loc, "retry"), name)
        compensation_retry = self._retry(
            spec.compensation_retry, (*loc, "compensation_retry"), name
        )
        reserve = self._reserve(spec.reserve, (*loc, "reserve"), name)
        if reserve is not None and spec.local_transaction:
            self.errors.append(
                self.at.problem(
                    (*loc, "reserve"),
                    "reserve: a local-transaction step cannot reserve; reserve in the step "
                    "before it",
                    name,
                )
            )
        if len(self.errors) > errors:
            return None
        try:
            if action is None:
                step = saga.wait_for(str(spec.wait_for), name=name)
            else:
                step = saga.add_step(
                    action,
                    name=name,
                    kind=StepKind(spec.kind) if spec.kind else None,
                    retry=retry,
                    timeout=spec.timeout,
                    compensate_on_failure=spec.compensate_on_failure,
                    compensation=compensation,
                    compensation_retry=compensation_retry,
                    compensation_timeout=spec.compensation_timeout,
                    wait_for=spec.wait_for,
                    local_transaction=spec.local_transaction,
                    reserve=reserve,
                )
            if "on_failure" in handlers:
                step.on_failure(handlers["on_failure"])
            if "on_signal" in handlers:
                step.on_signal(handlers["on_signal"])
        except DefinitionError as exc:
            self.errors.append(self.at.problem((*loc, "name"), str(exc), name))
            return None
        return name
