"""Ruvon's ``workflow.yaml`` converted to sagakit's format.

`from_ruvon` turns a validated `RuvonWorkflow` into the data of sagakit's
format, pointing each converted key at the line of its original, and
refuses what Ruvon can say that sagakit cannot do with a message that says
what to use instead.
"""

from __future__ import annotations

from typing import Any

from sagakit.yamlfile.formats import RuvonStep, RuvonWorkflow, StepSpec
from sagakit.yamlfile.reading import Located, Path_, Problem
from sagakit.yamlfile.ruvon_keys import (
    CUSTOM_STEP_TYPE,
    RUVON_PARALLEL,
    RUVON_REFUSED,
    RUVON_STEP_TYPES,
    RUVON_TYPES_SAME,
)

# The keys a task may have; Ruvon's loader reads only name and function.
_TASK_KEYS = {"name", "function", "function_path", "compensate_function"}


def from_ruvon(
    flow: RuvonWorkflow, at: Located, errors: list[Problem]
) -> tuple[dict[str, Any], list[Problem]]:
    """Ruvon's workflow as sagakit's format, with errors for what has no equal."""
    notes: list[Problem] = []
    for key in ("saga_enabled", "saga_mode"):  # Ruvon's docs say one, its loader reads the other
        if getattr(flow, key) is False:
            errors.append(
                at.problem(
                    (key,), f"sagakit always compensates a run that fails; remove {key}: false"
                )
            )
    if flow.automate_start is False:
        notes.append(
            at.problem(
                ("automate_start",),
                "automate_start: false — a sagakit run starts at once; to wait for a "
                "person, give the first step wait_for: SIGNAL",
            )
        )
    for key in flow.model_extra or {}:
        refused = RUVON_REFUSED.get(("workflow", key))
        if refused is not None:
            message = f"{key!r} has no equivalent in sagakit: {refused}"
        else:
            message = f"unknown key {key!r} in a Ruvon workflow"
        errors.append(at.problem((key,), message))
    steps: list[dict[str, Any]] = []
    last = len(flow.steps) - 1
    for index, step in enumerate(flow.steps):
        loc: Path_ = ("steps", index)
        kind = step.type.upper()
        _step_keys(step, loc, at, errors)
        if step.automate_next is False and index < last:
            notes.append(
                at.problem(
                    (*loc, "automate_next"),
                    "automate_next: false — sagakit goes on to the next step at once; "
                    "to wait for a person, give the next step wait_for: SIGNAL",
                    step.name,
                )
            )
        if kind == RUVON_PARALLEL:
            steps.append(_parallel(step, loc, at, errors, notes))
            continue
        if step.tasks is not None:
            errors.append(
                at.problem(
                    (*loc, "tasks"), f"tasks belong to a PARALLEL step, not {kind}", step.name
                )
            )
        if kind not in RUVON_TYPES_SAME:
            if "." in kind:
                instead: str | None = CUSTOM_STEP_TYPE
            else:
                instead = RUVON_STEP_TYPES.get(kind)
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
            if kind == "ASYNC":
                notes.append(
                    at.problem(
                        (*loc, "compensate_function"),
                        "Ruvon never compensates an ASYNC step (its loader ignores "
                        "compensate_function there); sagakit will, if the run rolls back",
                        step.name,
                    )
                )
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


def _step_keys(step: RuvonStep, loc: Path_, at: Located, errors: list[Problem]) -> None:
    """Refuse the keys of a step that sagakit reads nothing for, and unequal merges."""
    for key in step.model_extra or {}:
        instead = RUVON_REFUSED.get(("step", key))
        if instead is not None:
            message = f"{key!r} has no equivalent in sagakit: {instead}"
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


def _parallel(
    step: RuvonStep, loc: Path_, at: Located, errors: list[Problem], notes: list[Problem]
) -> dict[str, Any]:
    """A PARALLEL step as a parallel stage: each task a step, with its compensation."""
    for key in ("function", "compensate_function"):
        if getattr(step, key) is not None:
            errors.append(
                at.problem(
                    (*loc, key),
                    f"a PARALLEL step runs its tasks, not a {key}; give each task its own "
                    "function and compensate_function",
                    step.name,
                )
            )
    members: list[dict[str, str]] = []
    for j, task in enumerate(step.tasks or []):
        where: Path_ = (*loc, "tasks", j)
        extra = sorted(set(task) - _TASK_KEYS)
        if extra:
            errors.append(
                at.problem(
                    where,
                    f"task keys {', '.join(map(repr, extra))} have no equivalent; a task is "
                    "a name, a function (or function_path) and a compensate_function",
                    step.name,
                )
            )
        path = task.get("function") or task.get("function_path")
        compensate = task.get("compensate_function")
        if (
            not isinstance(task.get("name"), str)
            or not isinstance(path, str)
            or not isinstance(compensate, str | None)
        ):
            errors.append(
                at.problem(
                    where,
                    "a task needs a name and a function (or function_path); its "
                    "compensate_function, if any, is a dotted path",
                    step.name,
                )
            )
            continue
        member = {"name": task["name"], "function": path}
        at_member: Path_ = (*loc, "parallel", len(members))
        original = "function" if "function" in task else "function_path"
        at.alias((*at_member, "function"), (*where, original))
        if compensate is not None:
            member["compensate"] = compensate
            at.alias((*at_member, "compensate"), (*where, "compensate_function"))
            notes.append(
                at.problem(
                    (*where, "compensate_function"),
                    f"task {task['name']!r}: Ruvon never compensates a PARALLEL step's "
                    "tasks (its loader ignores compensate_function there); sagakit will, "
                    "if the run rolls back",
                    step.name,
                )
            )
        members.append(member)
    if len(step.tasks or []) < 2:
        errors.append(
            at.problem((*loc, "tasks"), "a PARALLEL step needs two or more tasks", step.name)
        )
    return {"parallel": members}
