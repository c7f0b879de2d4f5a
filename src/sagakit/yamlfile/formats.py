"""The YAML formats sagakit reads, as pydantic models: its own and Ruvon's.

`SagaSpec` (with `StepSpec`, `ParallelSpec`, `RetrySpec`) is sagakit's
format; the JSON Schema shipped as ``sagakit/schema/saga.schema.json`` is
generated from it (`json_schema`). `RuvonWorkflow` is Ruvon's
``workflow.yaml``, converted to sagakit's format by `sagakit.yamlfile.load`. The
models check shape and types only; `sagakit.yamlfile.load` reads the file with
line numbers, resolves the function paths and builds the `Saga`.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StrictBool,
    Tag,
    field_validator,
)

SCHEMA_ID = "https://sagakit.dev/schema/saga.schema.json"
_DOTTED = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")

_FORBID = ConfigDict(extra="forbid", str_strip_whitespace=True)
DottedPath = Annotated[str, Field(pattern=_DOTTED.pattern, description="module.attribute")]
Seconds = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class RetrySpec(BaseModel):
    """A retry policy: the fields of `RetryPolicy`, with the same defaults."""

    model_config = _FORBID

    max_attempts: Annotated[int, Field(ge=1)] | None = Field(
        default=3, description="Attempts in all, the first included; null for unlimited."
    )
    initial_delay: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 0.5
    backoff: Annotated[float, Field(ge=1, allow_inf_nan=False)] = 2.0
    max_delay: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 60.0
    jitter: Annotated[float, Field(ge=0, le=1)] = 0.1
    permanent: list[DottedPath] = Field(
        default_factory=list,
        description="Exception classes that fail an attempt for good: a builtin "
        "name (ValueError) or a path inside an allowed module.",
    )


class ReserveSpec(BaseModel):
    """Reservations taken, all or none, before each attempt of the step's action."""

    model_config = _FORBID

    names: Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)] = Field(
        description='Names to reserve; "seat:{seat}" fills in the state\'s field seat.'
    )
    ttl: Seconds = Field(description="Seconds until they expire by themselves.")
    wait: Annotated[float, Field(ge=0, allow_inf_nan=False)] = Field(
        default=0.0, description="Seconds to wait for another run to free them."
    )


class StepSpec(BaseModel):
    """One step: every option of `Saga.step`, its compensation and handlers."""

    model_config = _FORBID

    name: Annotated[str, Field(min_length=1)]
    function: DottedPath | None = Field(
        default=None, description="The action; may be left out for a step that only waits."
    )
    compensate: DottedPath | None = None
    kind: Literal["compensatable", "plain", "pivot", "retriable"] | None = None
    retry: RetrySpec | None = None
    timeout: Seconds | None = None
    compensate_on_failure: StrictBool = False
    compensation_retry: RetrySpec | None = None
    compensation_timeout: Seconds | None = None
    wait_for: Annotated[str, Field(min_length=1)] | None = Field(
        default=None, description="A signal the step waits for before its action runs."
    )
    local_transaction: StrictBool = False
    reserve: ReserveSpec | None = Field(
        default=None,
        description="Names to reserve before the action runs, held until the run finishes.",
    )
    on_failure: DottedPath | None = Field(
        default=None, description="fn(state, ctx, error) -> Next | Pause | None"
    )
    on_signal: DottedPath | None = Field(
        default=None, description="fn(state, ctx, signal) -> Next | Pause | None"
    )
    description: str | None = None


class ParallelSpec(BaseModel):
    """Steps that run at the same time, as one stage."""

    model_config = _FORBID

    parallel: Annotated[list[StepSpec], Field(min_length=2)]


def _stage_tag(value: Any) -> str:
    return "parallel-stage" if isinstance(value, dict) and "parallel" in value else "step"


Stage = Annotated[
    Annotated[StepSpec, Tag("step")] | Annotated[ParallelSpec, Tag("parallel-stage")],
    Discriminator(_stage_tag),
]


class SagaSpec(BaseModel):
    """A saga definition in sagakit's YAML format."""

    model_config = ConfigDict(
        extra="forbid",
        str_strip_whitespace=True,
        title="sagakit saga definition",
        json_schema_extra={"$schema": "https://json-schema.org/draft/2020-12/schema"},
    )

    saga: Annotated[str, Field(min_length=1, description="The saga's name.")]
    version: Annotated[str, Field(min_length=1)] = Field(
        default="1", description='Quote it ("1.0"): YAML reads 1.10 as the number 1.1.'
    )
    description: str | None = None
    state: DottedPath | None = Field(
        default=None, description="A pydantic model class; leave out for a plain dict."
    )
    deadline: Seconds | None = Field(default=None, description="Seconds a run may take.")
    continue_on_compensation_error: StrictBool = False
    sensitive: list[Annotated[str, Field(min_length=1)]] = Field(
        default_factory=list,
        description="Field names shown as *** wherever a run is shown, at any depth of "
        "the state, the input, step results and signal payloads.",
    )
    compensation_order: list[str | list[str]] | None = Field(
        default=None, description="Step names; a list of names runs those at once."
    )
    steps: Annotated[list[Stage], Field(min_length=1)]

    @field_validator("version", mode="before")
    @classmethod
    def _version_text(cls, value: Any) -> Any:
        return _version_text(value)


class RuvonStep(BaseModel):
    """A step of Ruvon's ``workflow.yaml``; the keys sagakit cannot honour are refused."""

    model_config = ConfigDict(extra="allow", str_strip_whitespace=True)

    name: Annotated[str, Field(min_length=1)]
    type: str = "STANDARD"
    function: DottedPath | None = None
    compensate_function: DottedPath | None = None
    automate_next: StrictBool | None = None
    description: str | None = None
    tasks: list[dict[str, Any]] | None = None
    merge_strategy: str | None = None
    merge_conflict_behavior: str | None = None


class RuvonWorkflow(BaseModel):
    """Ruvon's ``workflow.yaml``."""

    model_config = ConfigDict(extra="allow", str_strip_whitespace=True)

    workflow_type: Annotated[str, Field(min_length=1)]
    workflow_version: str = "1"
    initial_state_model: DottedPath | None = None
    initial_state_model_path: DottedPath | None = None
    description: str | None = None
    saga_enabled: StrictBool | None = None
    saga_mode: StrictBool | None = None
    """What Ruvon's own loader reads to switch saga mode on (its docs say ``saga_enabled``)."""
    automate_start: StrictBool | None = None
    steps: Annotated[list[RuvonStep], Field(min_length=1)]

    @field_validator("workflow_version", mode="before")
    @classmethod
    def _version_text(cls, value: Any) -> Any:
        return _version_text(value)


def _version_text(value: Any) -> Any:
    # An integer is its own text; a float is not (1.10 would become "1.1").
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        raise ValueError(
            f"YAML read the version as the number {value!r}; quote it so that it "
            'stays as written (version: "1.10", not version: 1.10)'
        )
    return value


def json_schema() -> dict[str, Any]:
    """The JSON Schema of sagakit's YAML format (what ``saga.schema.json`` holds)."""
    schema = SagaSpec.model_json_schema()
    return {"$id": SCHEMA_ID, **schema}
