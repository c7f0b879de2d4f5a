"""Saga definitions written in YAML: sagakit's own format and Ruvon's ``workflow.yaml``.

A file is read with PyYAML's safe loader (no Python objects are ever built
from it), checked against the format's schema (the pydantic models of
`sagakit.yamlfile.load.formats`; the JSON Schema shipped as
``sagakit/schema/saga.schema.json`` is generated from them), and its
function paths are resolved only inside the modules the application allows.
Then it is built into an ordinary `Saga`, so the rules between step kinds
are the same as in Python. Resolving a path imports its module, which runs
that module's code; ``validate_yaml(path, resolve=False)`` checks everything
else and imports nothing. Every problem is reported with the file, the line
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

The entry points are here; reading with line numbers is in
`sagakit.yamlfile.load.reading`, resolving function paths in `sagakit.yamlfile.load.resolver`,
building the saga in `sagakit.yamlfile.load.builder` and Ruvon's conversion in
`sagakit.yamlfile.load.ruvon`.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from sagakit.definition import Saga
from sagakit.errors import DefinitionError
from sagakit.yamlfile.builder import Builder
from sagakit.yamlfile.formats import RuvonWorkflow, SagaSpec, json_schema
from sagakit.yamlfile.reading import (
    MAX_FILE_BYTES,
    Located,
    Problem,
    compose,
    too_large,
    validation_problems,
)
from sagakit.yamlfile.resolver import PathChecker, Resolver, modules_beside
from sagakit.yamlfile.ruvon import from_ruvon

__all__ = [
    "DefinitionFileError",
    "Outline",
    "Problem",
    "YamlReport",
    "json_schema",
    "load_yaml",
    "validate_yaml",
]


class DefinitionFileError(DefinitionError):
    """A definition file cannot be loaded; ``problems`` says every reason found."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


@dataclass(frozen=True, slots=True)
class Outline:
    """The shape of the saga a file defines: its name, version and stages.

    Attributes:
        name: The saga's name.
        version: Its version.
        stages: The step names of each stage, in order; a parallel stage
            has two or more.
    """

    name: str
    version: str
    stages: tuple[tuple[str, ...], ...]

    @property
    def steps(self) -> int:
        """How many steps the saga has."""
        return sum(len(stage) for stage in self.stages)


@dataclass(slots=True)
class YamlReport:
    """What `validate_yaml` found.

    Attributes:
        file: The file.
        format: ``"sagakit"`` or ``"ruvon"`` (None if the file could not be read).
        saga: The saga built from it, or None if there were errors, or if
            the file was checked with ``resolve=False``.
        outline: The saga's name, version and stages, when there is no error
            (with or without ``resolve``).
        errors: Why it cannot be used; empty when it can.
        notes: Things that work, but differently from what the file may expect.
        resolved: False when the file was checked with ``resolve=False``:
            nothing was imported, and there is no ``saga``.
    """

    file: str
    format: str | None = None
    saga: Saga[Any] | None = None
    outline: Outline | None = None
    errors: list[Problem] = field(default_factory=list)
    notes: list[Problem] = field(default_factory=list)
    resolved: bool = True

    @property
    def ok(self) -> bool:
        """True when no problem was found.

        With ``resolve=True`` (the default) this means the file defines a
        usable saga; with ``resolve=False``, that it passed every check that
        needs no import.
        """
        if self.errors or self.outline is None:
            return False
        return self.saga is not None or not self.resolved


# -- entry points ---------------------------------------------------------------------


def validate_yaml(
    path: str | Path, *, allowed_modules: Sequence[str] | None = None, resolve: bool = True
) -> YamlReport:
    """Check a definition file and build its saga, collecting every problem.

    To resolve the paths the file names, the allowed modules they start with
    are imported, which runs their top-level code; the file's directory and
    the current directory are put on the import path for that. With
    ``resolve=False`` nothing is imported and the import path is left alone:
    the YAML, the schema, the step rules and the form of every path (public,
    dotted, inside an allowed module; a bare exception name a builtin one)
    are checked, but not whether the paths exist, nor the functions'
    signatures or the state model.

    Args:
        path: The YAML file (sagakit's format or Ruvon's ``workflow.yaml``).
        allowed_modules: The modules (and their submodules) whose functions
            and classes the file may name. By default: the modules and
            packages beside the file or in the current directory. Nothing
            else is ever imported, so a path like ``os.system`` is refused.
        resolve: Import the allowed modules to resolve the paths and build
            the saga (the default); False for a file that is only checked,
            such as one you do not trust.

    Returns:
        A report; ``report.saga`` is set only when there is no error and
        ``resolve`` is true, ``report.outline`` whenever there is no error.
    """
    file = str(path)
    report = YamlReport(file, resolved=resolve)
    try:
        # Read no more than the limit allows: the file may be huge, or endless (a FIFO).
        with Path(path).open("rb") as stream:
            raw = stream.read(MAX_FILE_BYTES + 1)
        if len(raw) > MAX_FILE_BYTES:
            report.errors.append(too_large(file))
            return report
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        report.errors.append(Problem(file, None, None, f"cannot read the file: {exc}"))
        return report
    data, lines, problems, duplicates = compose(text, file)
    report.errors.extend(problems)
    if data is None:
        return report
    at = Located(file, data, lines)
    report.errors.extend(at.problem(path, message) for path, message in duplicates)
    if not isinstance(data, dict):
        report.errors.append(at.problem((), "the file must hold a mapping (saga:, steps:, ...)"))
        return report
    if "workflow_type" in data:
        report.format = "ruvon"
        try:
            flow = RuvonWorkflow.model_validate(data)
        except ValidationError as exc:
            report.errors.extend(validation_problems(at, exc))
            return report
        data, report.notes = from_ruvon(flow, at, report.errors)
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
        report.errors.extend(validation_problems(at, exc))
        return report
    here = Path(path).resolve().parent
    default = allowed_modules is None
    allowed = modules_beside(here, Path.cwd()) if default else list(allowed_modules or ())
    if resolve:
        for directory in (str(here), str(Path.cwd())):
            if directory not in sys.path:
                sys.path.insert(0, directory)
        resolver = Resolver(allowed, default)
    else:
        resolver = PathChecker(allowed, default)
    builder = Builder(at, resolver)
    saga = builder.build(spec)
    report.errors.extend(builder.errors)
    if saga is not None and not report.errors:
        stages = tuple(tuple(stage) for stage in saga.plan().stages)
        report.outline = Outline(saga.name, saga.version, stages)
        # Without resolve the saga's functions are stand-ins that cannot run:
        # it is never handed out, so it can never be registered or started.
        report.saga = saga if resolve else None
    return report


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
