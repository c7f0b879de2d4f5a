"""Saga definitions written in YAML: sagakit's own format and Ruvon's ``workflow.yaml``.

A file is read with PyYAML's safe loader (no Python objects are ever built
from it), checked against the format's schema (the pydantic models of
`sagakit.yaml_formats`; the JSON Schema shipped as
``sagakit/schema/saga.schema.json`` is generated from them), and its
function paths are resolved only inside the modules the application allows.
Then it is built into an ordinary `Saga`, so the rules between step kinds
are the same as in Python. Every problem is reported with the file, the line
and the step it concerns.

sagakit's format::

    saga: PaymentProcessing
    version: "1.0.0"
    state: payment_processor.models.PaymentState
    steps:
      - name: create_order
        function: payment_processor.steps.create_order
        compensate: payment_processor.steps.cancel_order
        retry: {max_attempts: 3, initial_delay: 0.5}
      - parallel:
          - {name: reserve_stock, function: ..., compensate: ...}
          - {name: reserve_courier, function: ..., compensate: ...}
      - name: ship
        function: payment_processor.steps.ship
        kind: pivot

Ruvon's format (``workflow_type``, ``workflow_version``,
``initial_state_model``, steps with ``type``, ``function``,
``compensate_function``, ``automate_next``) is read as well; what it can say
that sagakit cannot do is refused with a message that says what to use.
"""

from __future__ import annotations

import builtins
import importlib
import json
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ValidationError

from sagakit.definition import Saga
from sagakit.errors import DefinitionError
from sagakit.retry import RetryPolicy
from sagakit.step_kinds import StepKind
from sagakit.yaml_formats import (
    ParallelSpec,
    RetrySpec,
    RuvonWorkflow,
    SagaSpec,
    StepSpec,
    json_schema,
)

__all__ = [
    "DefinitionFileError",
    "Problem",
    "YamlReport",
    "json_schema",
    "load_yaml",
    "validate_yaml",
]

Path_ = tuple[str | int, ...]


# -- problems -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong (or worth knowing) about a definition file.

    Attributes:
        file: The file, as it was named.
        line: The line it concerns (from 1), or None for the file as a whole.
        step: The step it concerns, if any.
        message: What is wrong and, where possible, what to do instead.
    """

    file: str
    line: int | None
    step: str | None
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        named = self.step and f"step {self.step!r}" not in self.message
        step = f" step {self.step!r}:" if named else ""
        return f"{where}:{step} {self.message}"


class DefinitionFileError(DefinitionError):
    """A definition file cannot be loaded; ``problems`` says every reason found."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


@dataclass(slots=True)
class YamlReport:
    """What `validate_yaml` found.

    Attributes:
        file: The file.
        format: ``"sagakit"`` or ``"ruvon"`` (None if the file could not be read).
        saga: The saga built from it, or None if there were errors.
        errors: Why it cannot be used; empty when it can.
        notes: Things that work, but differently from what the file may expect.
    """

    file: str
    format: str | None = None
    saga: Saga[Any] | None = None
    errors: list[Problem] = field(default_factory=list)
    notes: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when the file defines a usable saga."""
        return self.saga is not None and not self.errors


# -- reading YAML with line numbers ---------------------------------------------------


_Duplicate = tuple[Path_, str]


def _compose(text: str, file: str) -> tuple[Any, dict[Path_, int], list[Problem], list[_Duplicate]]:
    """Parse YAML safely: the data, the line of every key and item, problems, duplicate keys."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        return None, {}, [Problem(file, line, None, f"not valid YAML: {problem}")], []
    if node is None:
        return None, {}, [Problem(file, None, None, "the file is empty")], []
    lines: dict[Path_, int] = {}
    duplicates: list[_Duplicate] = []
    _walk(node, (), lines, duplicates)
    loader = yaml.SafeLoader("")
    try:
        data = loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        return None, lines, [Problem(file, line, None, f"not valid YAML: {problem}")], []
    finally:
        loader.dispose()
    return data, lines, [], duplicates


def _walk(node: yaml.Node, path: Path_, lines: dict[Path_, int], dup: list[_Duplicate]) -> None:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value)
            line = key_node.start_mark.line + 1
            if key in seen:
                # PyYAML keeps the last silently; a second `compensate:` is a mistake.
                dup.append(((*path, key), f"key {key!r} appears twice (first at line {seen[key]})"))
            seen[key] = line
            _walk(value_node, (*path, key), lines, dup)
            lines[(*path, key)] = line
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _walk(item, (*path, index), lines, dup)


class _Located:
    """Finds the line and step of a place in the file's data."""

    def __init__(self, file: str, data: Any, lines: dict[Path_, int]) -> None:
        self.file = file
        self.data = data
        self.lines = lines

    def problem(self, loc: Sequence[str | int], message: str, step: str | None = None) -> Problem:
        path = self._path(loc)
        line = None
        for end in range(len(path), -1, -1):
            line = self.lines.get(path[:end])
            if line is not None:
                break
        return Problem(self.file, line, step or self._step(path), message)

    def alias(self, path: Path_, *originals: Path_) -> None:
        """Let ``path`` of a converted file point at the line of its original key."""
        for original in originals:
            if original in self.lines:
                self.lines[path] = self.lines[original]
                return

    def _path(self, loc: Sequence[str | int]) -> Path_:
        # pydantic's locations name union members ("step", "parallel"); keep only
        # the parts that are keys or indexes of the data itself.
        path: list[str | int] = []
        for part in loc:
            if (*path, part) in self.lines:
                path.append(part)
        return tuple(path)

    def _step(self, path: Path_) -> str | None:
        value: Any = self.data
        name: str | None = None
        for part in path:
            try:
                value = value[part]
            except (KeyError, IndexError, TypeError):
                break
            if isinstance(value, dict) and isinstance(value.get("name"), str):
                name = value["name"]
        return name

    def step_line(self, name: str) -> int | None:
        for path, line in self.lines.items():
            if path and path[-1] == "name" and self._step(path[:-1]) == name:
                return line
        return None


def _message(error: Any) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        return f"unknown key {error['loc'][-1]!r}"
    if kind == "missing":
        return f"{error['loc'][-1]!r} is required"
    if kind == "string_pattern_mismatch":
        return f"{error['input']!r} is not a dotted path such as package.module.function"
    text = str(error["msg"]).removeprefix("Value error, ")
    keys = [part for part in error["loc"] if isinstance(part, str) and part not in _TAGS]
    return f"{keys[-1]}: {text}" if keys else text


_TAGS = ("step", "parallel-stage", "str", "list[str]")


# -- resolving function paths ---------------------------------------------------------


class _Resolver:
    """Imports ``module.attribute`` paths, only inside the allowed modules."""

    def __init__(self, allowed: Sequence[str], default: bool) -> None:
        self.allowed = tuple(allowed)
        self.default = default

    def _allows(self, module: str) -> bool:
        return any(module == a or module.startswith(a + ".") for a in self.allowed)

    def _refusal(self, path: str) -> str:
        if self.default:
            scope = (
                "only modules beside the file or in the current directory are allowed "
                f"({', '.join(self.allowed) or 'none found'}); allow others with "
                "allowed_modules= or --app MODULE"
            )
        else:
            scope = f"the allowed modules are {', '.join(self.allowed)}"
        return f"{path!r} is outside the allowed modules: {scope}"

    def resolve(self, path: str) -> Any:
        """The object ``path`` names. Raises ValueError with a readable reason."""
        parts = path.split(".")
        if any(p.startswith("_") for p in parts):
            raise ValueError(f"{path!r} names a private attribute; name a public one")
        if len(parts) < 2:
            raise ValueError(f"{path!r} is not a dotted path such as package.module.function")
        for end in range(len(parts) - 1, 0, -1):
            module_name = ".".join(parts[:end])
            if not self._allows(module_name):
                continue
            try:
                module = importlib.import_module(module_name)
            except ModuleNotFoundError as exc:
                missing = exc.name or ""
                if module_name == missing or module_name.startswith(missing + "."):
                    continue  # not a module: perhaps an attribute of a shorter one
                raise ValueError(f"importing {module_name!r} failed: {exc}") from exc
            except Exception as exc:
                raise ValueError(
                    f"importing {module_name!r} failed: {type(exc).__name__}: {exc}"
                ) from exc
            value: Any = module
            for i, attr in enumerate(parts[end:], start=end):
                if not hasattr(value, attr):
                    where = ".".join(parts[:i])
                    raise ValueError(f"{where!r} has no attribute {attr!r}")
                value = getattr(value, attr)
            origin = getattr(value, "__module__", None)
            if isinstance(origin, str) and not self._allows(origin):
                # e.g. `from os import system` re-exported by an allowed module
                raise ValueError(
                    f"{path!r} is {origin}.{getattr(value, '__qualname__', parts[-1])}, "
                    f"defined outside the allowed modules; {self._refusal(path).split(': ', 1)[1]}"
                )
            return value
        if not any(self._allows(".".join(parts[:end])) for end in range(1, len(parts))):
            raise ValueError(self._refusal(path))
        raise ValueError(f"cannot import a module from {path!r}")

    def function(self, path: str) -> Any:
        value = self.resolve(path)
        if isinstance(value, type) or not callable(value):
            raise ValueError(f"{path!r} is {type(value).__name__}, not a function")
        return value

    def model(self, path: str) -> Any:
        value = self.resolve(path)
        if not (isinstance(value, type) and issubclass(value, BaseModel)):
            raise ValueError(f"{path!r} is not a pydantic model class")
        return value

    def exception(self, path: str) -> type[BaseException]:
        name = path.removeprefix("builtins.")
        builtin = getattr(builtins, name, None)
        if isinstance(builtin, type) and issubclass(builtin, BaseException):
            return builtin
        if "." not in path:
            raise ValueError(
                f"{path!r} is not a builtin exception; name one (ValueError) or give "
                "module.ExceptionClass"
            )
        value = self.resolve(path)
        if not (isinstance(value, type) and issubclass(value, BaseException)):
            raise ValueError(f"{path!r} is not an exception class")
        return value


def _modules_beside(*directories: Path) -> list[str]:
    """The top-level modules and packages in ``directories``."""
    found: list[str] = []
    for directory in directories:
        if not directory.is_dir():
            continue
        for entry in sorted(directory.iterdir()):
            if entry.suffix == ".py" and entry.stem.isidentifier():
                found.append(entry.stem)
            elif entry.is_dir() and (entry / "__init__.py").is_file() and entry.name.isidentifier():
                found.append(entry.name)
    return list(dict.fromkeys(found))


# -- building the saga ----------------------------------------------------------------


_Kind = Literal["function", "model", "exception"]


class _Builder:
    """Turns validated data into a `Saga`, collecting every problem on the way."""

    def __init__(self, located: _Located, resolver: _Resolver) -> None:
        self.at = located
        self.resolver = resolver
        self.errors: list[Problem] = []

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

    def build(self, spec: SagaSpec) -> Saga[Any] | None:
        state = self._get("model", spec.state, ("state",), None) if spec.state else None
        try:
            saga: Saga[Any] = Saga(
                spec.saga,
                state=state,
                version=spec.version,
                continue_on_compensation_error=spec.continue_on_compensation_error,
                deadline=spec.deadline,
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
                )
            if "on_failure" in handlers:
                step.on_failure(handlers["on_failure"])
            if "on_signal" in handlers:
                step.on_signal(handlers["on_signal"])
        except DefinitionError as exc:
            self.errors.append(self.at.problem((*loc, "name"), str(exc), name))
            return None
        return name


# Ruvon step types, and what to use in sagakit instead of those it has no equal for.
_RUVON_TYPES_SAME = {"STANDARD", "ASYNC", "COMPENSATABLE"}
_RUVON_INSTEAD = {
    "HUMAN_IN_LOOP": "a step with wait_for: SIGNAL (sagakit format), or raise sagakit.Pause",
    "DECISION": "branching inside a step function; a saga's stages run in a fixed order",
    "LOOP": "a loop inside a step function, or a parallel stage",
    "HTTP": "a step function that makes the call (with ctx.idempotency_key)",
    "SUB_WORKFLOW": "starting another run from a step, with a run id derived from this one",
    "FIRE_AND_FORGET": "engine.start() from a step, with a run id derived from this one",
    "CRON_SCHEDULER": "your scheduler calling engine.start()",
}
_RUVON_UNSUPPORTED_KEYS = {
    "input_model": "a step's input comes from the state; validate it with the state model",
    "required_input": "a step's input comes from the state; validate it with the state model",
    "dependencies": "stages run in the order written; group independent steps in parallel",
    "dynamic_injection": "a saga's steps are fixed; branch inside a step function",
    "routes": "a saga's steps are fixed; branch inside a step function",
    "iterate_over": "list the parallel steps, or loop inside one step",
    "task_function": "list the parallel steps, or loop inside one step",
    "allow_partial_success": "a parallel stage fails as a whole and compensates its members",
    "timeout_seconds": "give each step its own timeout (sagakit's format)",
    "http_config": "make the call in a step function, with ctx.idempotency_key",
}


def _from_ruvon(
    flow: RuvonWorkflow, at: _Located, errors: list[Problem]
) -> tuple[dict[str, Any], list[Problem]]:
    """Ruvon's workflow as sagakit's format, with errors for what has no equal."""
    notes: list[Problem] = []
    if flow.saga_enabled is False:
        errors.append(
            at.problem(
                ("saga_enabled",),
                "sagakit always compensates a run that fails; remove saga_enabled: false",
            )
        )
    for key in flow.model_extra or {}:
        errors.append(at.problem((key,), f"unknown key {key!r} in a Ruvon workflow"))
    steps: list[dict[str, Any]] = []
    last = len(flow.steps) - 1
    for index, step in enumerate(flow.steps):
        loc: Path_ = ("steps", index)
        kind = step.type.upper()
        for key in step.model_extra or {}:
            why = _RUVON_UNSUPPORTED_KEYS.get(key)
            if why is not None:
                message = f"{key!r} has no equivalent in sagakit: {why}"
            elif key in StepSpec.model_fields:
                message = (
                    f"{key!r} belongs to sagakit's format, not Ruvon's; to use it, write "
                    "the file in sagakit's format (saga:, version:, steps:)"
                )
            else:
                message = f"unknown key {key!r} in a Ruvon step"
            errors.append(at.problem((*loc, key), message, step.name))
        for key, default in (
            ("merge_strategy", "SHALLOW"),
            ("merge_conflict_behavior", "PREFER_NEW"),
        ):
            value = getattr(step, key)
            if value is not None and value.upper() != default:
                errors.append(
                    at.problem(
                        (*loc, key),
                        f"{key} {value} has no equivalent: sagakit merges each result's "
                        f"top-level keys into the state, the newest winning ({default})",
                        step.name,
                    )
                )
        if step.automate_next is False and index < last:
            notes.append(
                at.problem(
                    (*loc, "automate_next"),
                    "automate_next: false — sagakit goes on to the next step at once; "
                    "to wait for a person, give the next step wait_for: SIGNAL",
                    step.name,
                )
            )
        if kind == "PARALLEL":
            for key in ("function", "compensate_function"):
                if getattr(step, key) is not None:
                    errors.append(
                        at.problem(
                            (*loc, key),
                            f"a PARALLEL step runs its tasks, not a {key}; give each task "
                            "its own step (sagakit's format) if it needs one",
                            step.name,
                        )
                    )
            members = []
            for j, task in enumerate(step.tasks or []):
                extra = sorted(set(task) - {"name", "function_path", "function"})
                if extra:
                    errors.append(
                        at.problem(
                            (*loc, "tasks", j),
                            f"task keys {', '.join(map(repr, extra))} have no equivalent; a "
                            "task is a name and a function_path",
                            step.name,
                        )
                    )
                path = task.get("function_path") or task.get("function")
                if not isinstance(task.get("name"), str) or not isinstance(path, str):
                    errors.append(
                        at.problem(
                            (*loc, "tasks", j), "a task needs a name and a function_path", step.name
                        )
                    )
                    continue
                members.append({"name": task["name"], "function": path})
                original = "function_path" if "function_path" in task else "function"
                at.alias(
                    (*loc, "parallel", len(members) - 1, "function"), (*loc, "tasks", j, original)
                )
            if len(step.tasks or []) < 2:
                errors.append(
                    at.problem(
                        (*loc, "tasks"), "a PARALLEL step needs two or more tasks", step.name
                    )
                )
            steps.append({"parallel": members})
            continue
        if step.tasks is not None:
            errors.append(
                at.problem(
                    (*loc, "tasks"), f"tasks belong to a PARALLEL step, not {kind}", step.name
                )
            )
        if kind not in _RUVON_TYPES_SAME:
            instead = _RUVON_INSTEAD.get(kind)
            message = f"step type {step.type} has no equivalent in sagakit" + (
                f"; use {instead}" if instead else ""
            )
            errors.append(at.problem((*loc, "type"), message, step.name))
            continue
        if step.function is None:
            errors.append(at.problem(loc, "'function' is required", step.name))
            continue
        converted: dict[str, Any] = {"name": step.name, "function": step.function}
        if step.compensate_function:
            converted["compensate"] = step.compensate_function
            at.alias((*loc, "compensate"), (*loc, "compensate_function"))
        steps.append(converted)
    if flow.initial_state_model and flow.initial_state_model_path:
        errors.append(
            at.problem(
                ("initial_state_model_path",),
                "give initial_state_model or initial_state_model_path, not both",
            )
        )
    state = flow.initial_state_model or flow.initial_state_model_path
    at.alias(("saga",), ("workflow_type",))
    at.alias(("version",), ("workflow_version",))
    at.alias(("state",), ("initial_state_model",), ("initial_state_model_path",))
    spec: dict[str, Any] = {
        "saga": flow.workflow_type,
        "version": flow.workflow_version,
        "steps": steps,
    }
    if state:
        spec["state"] = state
    return spec, notes


# -- entry points ---------------------------------------------------------------------


def validate_yaml(path: str | Path, *, allowed_modules: Sequence[str] | None = None) -> YamlReport:
    """Check a definition file and build its saga, collecting every problem.

    The file's directory and the current directory are put on the import
    path, so the application's modules beside them can be imported.

    Args:
        path: The YAML file (sagakit's format or Ruvon's ``workflow.yaml``).
        allowed_modules: The modules (and their submodules) whose functions
            and classes the file may name. By default: the modules and
            packages beside the file or in the current directory. Nothing
            else is ever imported, so a path like ``os.system`` is refused.

    Returns:
        A report; ``report.saga`` is set only when there is no error.
    """
    file = str(path)
    report = YamlReport(file)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        report.errors.append(Problem(file, None, None, f"cannot read the file: {exc}"))
        return report
    data, lines, problems, duplicates = _compose(text, file)
    report.errors.extend(problems)
    if data is None:
        return report
    at = _Located(file, data, lines)
    report.errors.extend(at.problem(path, message) for path, message in duplicates)
    if not isinstance(data, dict):
        report.errors.append(at.problem((), "the file must hold a mapping (saga:, steps:, ...)"))
        return report
    if "workflow_type" in data:
        report.format = "ruvon"
        try:
            flow = RuvonWorkflow.model_validate(data)
        except ValidationError as exc:
            report.errors.extend(_problems(at, exc))
            return report
        data, report.notes = _from_ruvon(flow, at, report.errors)
        if report.errors:
            return report
    elif "saga" in data:
        report.format = "sagakit"
    else:
        report.errors.append(
            at.problem(
                (),
                "no 'saga:' (sagakit's format) or 'workflow_type:' (Ruvon's) "
                "at the top of the file",
            )
        )
        return report
    try:
        spec = SagaSpec.model_validate(data)
    except ValidationError as exc:
        report.errors.extend(_problems(at, exc))
        return report
    here = Path(path).resolve().parent
    for directory in (str(here), str(Path.cwd())):
        if directory not in sys.path:
            sys.path.insert(0, directory)
    default = allowed_modules is None
    allowed = _modules_beside(here, Path.cwd()) if default else list(allowed_modules or ())
    builder = _Builder(at, _Resolver(allowed, default))
    report.saga = builder.build(spec)
    report.errors.extend(builder.errors)
    return report


def _problems(at: _Located, exc: ValidationError) -> Iterator[Problem]:
    for error in exc.errors(include_url=False):
        yield at.problem(error["loc"], _message(error))


def load_yaml(path: str | Path, *, allowed_modules: Sequence[str] | None = None) -> Saga[Any]:
    """Load a saga from a YAML definition file.

    Args:
        path: The file: sagakit's format or Ruvon's ``workflow.yaml``.
        allowed_modules: The modules whose functions the file may name (see
            `validate_yaml`).

    Raises:
        DefinitionFileError: naming every problem with its file, line and step.
    """
    report = validate_yaml(path, allowed_modules=allowed_modules)
    if not report.ok or report.saga is None:
        raise DefinitionFileError(report.errors)
    return report.saga


def schema_text() -> str:
    """The shipped JSON Schema's text, as ``saga.schema.json`` holds it."""
    return json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"
