"""Every key of Ruvon's ``workflow.yaml``, what Ruvon does with it and what sagakit does.

`RUVON_KEYS` is the one table of the keys: `sagakit.yamlfile.ruvon` takes its
refusal messages from it, the Ruvon section of the YAML documentation shows
it, and a test compares it, key by key, with what ruvon-sdk's own loader
reads (so a key a new Ruvon version reads, and this table does not cover,
fails that test). `RUVON_STEP_TYPES` does the same for the values of a
step's ``type``.

The keys were read from ruvon-sdk 0.1.5: ``ruvon.builder.WorkflowBuilder``
(the loader every Ruvon engine uses), the ``ruvon start --config`` command
(which maps ``initial_state_model`` to the loader's
``initial_state_model_path``) and ``ruvon.testing`` (which reads
``workflow_type``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Where = Literal["workflow", "step", "task"]


@dataclass(frozen=True, slots=True)
class RuvonKey:
    """One key of a Ruvon file.

    Attributes:
        where: ``"workflow"`` (top level), ``"step"`` or ``"task"`` (a task
            of a ``PARALLEL`` step).
        key: The key.
        ruvon: What Ruvon's loader does with it.
        sagakit: What sagakit does with it.
        instead: For a key sagakit refuses: what to use instead, the end of
            the message ``'KEY' has no equivalent in sagakit: ...``. None
            for a key sagakit reads.
    """

    where: Where
    key: str
    ruvon: str
    sagakit: str
    instead: str | None = None


def _refused(where: Where, key: str, ruvon: str, instead: str) -> RuvonKey:
    return RuvonKey(where, key, ruvon, f"refused: {instead}", instead)


_TO_STATE = "a step's input comes from the state; validate it with the state model"
_BRANCH = "a saga's steps are fixed; branch inside a step function"
_FAN_OUT = "list the parallel steps, or loop inside one step"
_LOOP = "a loop inside a step function"
_START = "engine.start() from a step, with a run id derived from this one"
_SCHEDULE = "your scheduler calling engine.start()"
_MODEL = "call the model from a step function"

RUVON_KEYS: tuple[RuvonKey, ...] = (
    # -- the top level ------------------------------------------------------------------
    RuvonKey("workflow", "workflow_type", "the workflow's name", "`saga`"),
    RuvonKey(
        "workflow",
        "workflow_version",
        "recorded on each run",
        '`version` (default `"1"`; quote it)',
    ),
    RuvonKey(
        "workflow",
        "initial_state_model_path",
        "the state's pydantic model (required by its loader)",
        "`state`",
    ),
    RuvonKey(
        "workflow",
        "initial_state_model",
        "`ruvon start --config` passes it on as `initial_state_model_path`",
        "`state` (give this or `initial_state_model_path`, not both)",
    ),
    RuvonKey("workflow", "steps", "the steps, in order", "`steps`"),
    RuvonKey(
        "workflow",
        "saga_mode",
        "`true` switches rollback on; without it a failed run is left as it is",
        "`true`: accepted, sagakit always compensates; `false`: refused (remove it)",
    ),
    RuvonKey(
        "workflow",
        "automate_start",
        "`true` runs the first step when the run is created; else it waits for a call",
        "`true`: accepted, a run starts at once; `false`: a note, the run still starts at once",
    ),
    _refused(
        "workflow",
        "parameters",
        "values filled into every text of the file ({{ parameters.x }})",
        "write the values into the file, or fill them in before loading it",
    ),
    _refused(
        "workflow",
        "env",
        "`ruvon start --config` copies it into its registry; nothing reads it there",
        "set environment variables where the worker runs",
    ),
    _refused("workflow", "schedule", "starts the workflow on a cron schedule", _SCHEDULE),
    RuvonKey(
        "workflow",
        "saga_enabled",
        "not read (its documentation names it; its loader reads `saga_mode`)",
        "`true`: accepted, sagakit always compensates; `false`: refused (remove it)",
    ),
    RuvonKey("workflow", "description", "not read", "accepted, documentation only"),
    # -- a step ---------------------------------------------------------------------------
    RuvonKey("step", "name", "the step's name", "`name`"),
    RuvonKey(
        "step",
        "type",
        "the kind of step (the table below)",
        "`STANDARD`, `COMPENSATABLE`, `ASYNC`: a step; `PARALLEL`: a parallel stage; "
        "others refused",
    ),
    RuvonKey("step", "function", "the action, `fn(state, context)`", "`function`"),
    RuvonKey(
        "step",
        "compensate_function",
        "the compensation of a `STANDARD` or `COMPENSATABLE` step, run on rollback "
        "(`saga_mode`); ignored on the other types",
        "`compensate`; on an `ASYNC` step with a note (Ruvon would not run it); "
        "refused on a `PARALLEL` step (give its tasks one each)",
    ),
    RuvonKey(
        "step",
        "automate_next",
        "`true` runs the next step at once; `false` (its default) waits for a call",
        "`true`: accepted; `false`: a note, sagakit goes on at once",
    ),
    RuvonKey(
        "step",
        "merge_strategy",
        "how an `ASYNC` or `PARALLEL` result is merged (its lower-case values; an "
        "unknown value is taken as `shallow`)",
        "`SHALLOW` (any case): accepted, what sagakit does; others refused",
    ),
    RuvonKey(
        "step",
        "merge_conflict_behavior",
        "which value wins when a merge meets a key twice",
        "`PREFER_NEW` (any case): accepted, what sagakit does; others refused",
    ),
    RuvonKey(
        "step",
        "tasks",
        "the tasks of a `PARALLEL` step, run at the same time",
        "the steps of a parallel stage (two or more)",
    ),
    _refused("step", "input_model", "validates the step's input with this model", _TO_STATE),
    _refused("step", "required_input", "input keys the step needs", _TO_STATE),
    _refused("step", "routes", "jumps to another step when a condition holds", _BRANCH),
    _refused("step", "dynamic_injection", "inserts steps while the run goes on", _BRANCH),
    _refused(
        "step",
        "merge_function_path",
        "a function that merges a `PARALLEL` step's results",
        "sagakit merges each parallel step's result into the state; combine them in the next step",
    ),
    _refused("step", "iterate_over", "a `PARALLEL` or `LOOP` step's list in the state", _FAN_OUT),
    _refused("step", "task_function", "the function a `PARALLEL` step runs per item", _FAN_OUT),
    _refused("step", "item_var_name", "the name each item is passed under", _FAN_OUT),
    _refused(
        "step",
        "http_config",
        "the request of an `HTTP` step",
        "make the call in a step function, with ctx.idempotency_key",
    ),
    _refused("step", "ai_config", "an `AI_INFERENCE` step's model", _MODEL),
    _refused("step", "llm_config", "an `AI_LLM_INFERENCE` step's model and prompts", _MODEL),
    _refused("step", "edge_config", "an `EDGE_MODEL_CALL` step's local model", _MODEL),
    _refused(
        "step",
        "wasm_config",
        "a `WASM` step's WebAssembly module",
        "call the WebAssembly module from a step function",
    ),
    _refused(
        "step",
        "approval_config",
        "a `HUMAN_APPROVAL` step's approvers and timeout",
        "a step with wait_for: SIGNAL (sagakit's format) for the decision",
    ),
    _refused(
        "step",
        "audit_config",
        "an `AUDIT_EMIT` step's record",
        "write the audit record from a step function",
    ),
    _refused(
        "step",
        "compliance_config",
        "a `COMPLIANCE_CHECK` step's rules",
        "check the rules in a step function, and raise to fail the run",
    ),
    _refused(
        "step",
        "meta_config",
        "a `WORKFLOW_BUILDER_META` step's provenance; does nothing when run",
        "keep the provenance in a comment or a description",
    ),
    _refused(
        "step", "target_workflow_type", "the workflow a `FIRE_AND_FORGET` step starts", _START
    ),
    _refused("step", "initial_data_template", "the started workflow's input", _START),
    _refused("step", "loop_body", "a `LOOP` step's steps", _LOOP),
    _refused("step", "mode", "a `LOOP` step's `ITERATE` or `WHILE`", _LOOP),
    _refused("step", "while_condition", "a `WHILE` loop's condition", _LOOP),
    _refused("step", "max_iterations", "a `LOOP` step's bound", _LOOP),
    _refused("step", "schedule", "a `CRON_SCHEDULE` step's cron expression", _SCHEDULE),
    _refused("step", "schedule_name", "a `CRON_SCHEDULE` step's schedule name", _SCHEDULE),
    _refused(
        "step",
        "dependencies",
        "not read by its loader (`ruvon validate` checks the names exist)",
        "stages run in the order written; group independent steps in parallel",
    ),
    _refused(
        "step",
        "allow_partial_success",
        "not read from the file",
        "a parallel stage fails as a whole and compensates its members",
    ),
    _refused(
        "step",
        "timeout_seconds",
        "not read",
        "give each step its own timeout (sagakit's format)",
    ),
    RuvonKey("step", "description", "not read", "accepted, documentation only"),
    # -- a task of a PARALLEL step ----------------------------------------------------------
    RuvonKey("task", "name", "the task's name", "the name of a step of the parallel stage"),
    RuvonKey("task", "function", "the task's function (required)", "that step's `function`"),
    RuvonKey(
        "task",
        "function_path",
        "not read (its loader fails without `function`)",
        "read as `function`",
    ),
    RuvonKey(
        "task",
        "compensate_function",
        "not read: Ruvon never compensates a `PARALLEL` step's tasks",
        "that step's `compensate`, with a note: sagakit undoes the task on rollback",
    ),
)
"""Every key of Ruvon's format: what Ruvon's loader does, and what sagakit does."""

RUVON_REFUSED: dict[tuple[Where, str], str] = {
    (entry.where, entry.key): entry.instead for entry in RUVON_KEYS if entry.instead is not None
}
"""``(where, key)`` of each refused key, to what to use instead."""

# Step types that become an ordinary sagakit step, or a parallel stage.
RUVON_TYPES_SAME = frozenset({"STANDARD", "ASYNC", "COMPENSATABLE"})
RUVON_PARALLEL = "PARALLEL"

RUVON_STEP_TYPES: dict[str, str | None] = {
    "HUMAN_IN_LOOP": "a step with wait_for: SIGNAL (sagakit format), or raise sagakit.Pause",
    "HUMAN_APPROVAL": "a step with wait_for: SIGNAL (sagakit format) for the decision",
    "DECISION": "branching inside a step function; a saga's stages run in a fixed order",
    "LOOP": "a loop inside a step function, or a parallel stage",
    "HTTP": "a step function that makes the call (with ctx.idempotency_key)",
    "SUB_WORKFLOW": "starting another run from a step, with a run id derived from this one",
    "FIRE_AND_FORGET": "engine.start() from a step, with a run id derived from this one",
    "CRON_SCHEDULE": "your scheduler calling engine.start()",
    "CRON_SCHEDULER": "your scheduler calling engine.start()",
    "AI_INFERENCE": "a step function that calls the model",
    "AI_LLM_INFERENCE": "a step function that calls the model",
    "EDGE_MODEL_CALL": "a step function that calls the model",
    "WASM": "a step function that calls the WebAssembly module",
    "AUDIT_EMIT": "a step function that writes the audit record",
    "COMPLIANCE_CHECK": "a step function that checks the rules and raises to fail the run",
    "WORKFLOW_BUILDER_META": "a comment or a description: this step does nothing when run",
}
"""Ruvon step types sagakit refuses, and what to use instead (None: nothing to suggest)."""

CUSTOM_STEP_TYPE = "a step function (a custom step class has no equivalent)"
"""What to use instead of a ``type`` that is a dotted path to a Ruvon step class."""
