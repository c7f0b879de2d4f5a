"""Ruvon's ``workflow.yaml`` converted to sagakit's format.

`from_ruvon` turns a validated `RuvonWorkflow` into the data of sagakit's
format, pointing each converted key at the line of its original, and
refuses what Ruvon can say that sagakit cannot do with a message that says
what to use instead.
"""

from __future__ import annotations

from typing import Any

from sagakit.yamlfile.formats import RuvonWorkflow, StepSpec
from sagakit.yamlfile.reading import Located, Path_, Problem

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
