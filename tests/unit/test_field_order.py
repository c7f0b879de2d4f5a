"""The field order that the engine's positional constructions rely on.

The hot path makes `Event`, `Commit`, `RunRecord`, `StepContext` and `Run`
with positional arguments (a keyword costs a frozen dataclass half as much
again), and each run's `Driver`, `StepCaller` and `RunWriter` too. A field
added or moved in one of them would shift every argument after it, silently
where the types agree; this test fails first, and names the constructions to
update (``sagakit.driver.writer``, ``sagakit.driver.calls``,
``sagakit.engine.starting``, ``sagakit.engine.registry``, ``sagakit.store.memory``,
``sagakit.driver.driver``, ``sagakit.engine.drives``).
"""

from __future__ import annotations

import inspect
from dataclasses import fields

from sagakit.context import StepContext
from sagakit.driver.calls import StepCaller
from sagakit.driver.driver import Driver
from sagakit.driver.writer import RunWriter
from sagakit.journal import Event
from sagakit.run import Run
from sagakit.store import Commit, RunRecord


def names(cls: type) -> list[str]:
    return [f.name for f in fields(cls)]


def parameters(cls: type) -> list[str]:
    """The parameters of ``cls`` (its ``__init__``'s after ``self``), each passable by position."""
    found = list(inspect.signature(cls).parameters.values())
    assert all(p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD for p in found)
    return [p.name for p in found]


def test_event_fields_are_in_the_order_the_writer_passes_them() -> None:
    assert names(Event) == ["run_id", "seq", "kind", "at", "step", "attempt", "data"]


def test_commit_fields_begin_in_the_order_the_writer_passes_them() -> None:
    assert names(Commit)[:11] == [
        "run_id",
        "lease",
        "events",
        "status",
        "state",
        "error",
        "at",
        "wake_at",
        "release",
        "mail_read",
        "keeps_status",
    ]


def test_run_record_fields_are_in_the_order_the_writer_passes_them() -> None:
    assert names(RunRecord) == [
        "id",
        "saga",
        "version",
        "status",
        "state",
        "error",
        "created_at",
        "updated_at",
        "owner",
        "lease_epoch",
        "lease_until",
        "wake_at",
        "last_seq",
        "mail",
    ]


def test_step_context_fields_are_in_the_order_the_caller_passes_them() -> None:
    assert names(StepContext) == [
        "run_id",
        "saga",
        "version",
        "step",
        "phase",
        "attempt",
        "idempotency_key",
        "started_at",
        "reason",
        "error",
        "cancel_reason",
        "step_result",
        "step_finished_at",
        "signal",
        "previous_step_result",
        "connection",
        "log",
        "clock",
        "reserver",
    ]


def test_run_fields_are_in_the_order_the_registry_passes_them() -> None:
    # `state` (Any) and `data` (JSON) swapped would pass the type check.
    assert names(Run) == [
        "id",
        "saga",
        "version",
        "status",
        "state",
        "data",
        "error",
        "compensation_errors",
        "created_at",
        "updated_at",
        "owner",
        "pending",
        "created",
        "exception",
    ]


def test_driver_parameters_are_in_the_order_the_drives_pass_them() -> None:
    # Several of the same type (floats, optional floats) would pass the type check swapped.
    assert parameters(Driver) == [
        "saga",
        "store",
        "record",
        "lease",
        "progress",
        "clock",
        "random",
        "executor",
        "commit_patience",
        "park_after",
        "lingering",
        "hang_grace",
        "failures",
        "lease_seconds",
        "leased_at",
        "observers",
    ]


def test_step_caller_parameters_are_in_the_order_the_driver_passes_them() -> None:
    assert parameters(StepCaller) == [
        "saga",
        "store",
        "run_id",
        "progress",
        "clock",
        "executor",
        "lingering",
    ]


def test_run_writer_parameters_are_in_the_order_the_driver_passes_them() -> None:
    assert parameters(RunWriter) == [
        "store",
        "record",
        "lease",
        "plan",
        "progress",
        "clock",
        "commit_patience",
        "in_thread",
        "observers",
        "sensitive",
    ]
