"""sagakit: durable compensating transactions (sagas) for Python.

Define a saga with decorators, run it on a SQLite file (or in memory, or on
PostgreSQL with many workers), and trust that every step and every undo is recorded
before and after it happens.
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Any

from sagakit.alerts import WebhookSink
from sagakit.context import StepContext
from sagakit.control import Next, Pause, Signal
from sagakit.definition import Reconciler, Reserve, Resource, RetryPolicy, Saga, Step, StepKind
from sagakit.engine import (
    AsyncEngine,
    CheckReport,
    Engine,
    Misfit,
    MisfitKind,
    Worker,
    WorkerStats,
)
from sagakit.errors import (
    DefinitionError,
    EncryptionError,
    InvalidRunId,
    InvalidRunState,
    JournalMismatch,
    LeaseLost,
    PermanentError,
    ReservationBusy,
    ReservationLapsed,
    RunBusy,
    RunIdConflict,
    RunInputConflict,
    RunNotFound,
    RunTimeout,
    SagaError,
    SagaNotRegistered,
    SchemaVersionError,
    StateError,
    StoreError,
)
from sagakit.journal import ErrorInfo, Event, EventKind, Phase, RunStatus
from sagakit.observe import AttemptOutcome, ObservedEvent, Observer
from sagakit.reconcile import Finding, Outcome, Reason, ReconcileReport, Verdict
from sagakit.redaction import Redactor, Sensitive
from sagakit.run import AttentionReport, Run, RunFailed
from sagakit.runlog import JsonLogFormatter, RunLogFilter
from sagakit.store import Reservation, RunCursor

if TYPE_CHECKING:
    from sagakit.views import RunView, run_view
    from sagakit.yamlfile import DefinitionFileError, Problem, YamlReport, load_yaml, validate_yaml

__version__ = "0.1.0"

# A library leaves logging configuration to the application (logging HOWTO).
logging.getLogger("sagakit").addHandler(logging.NullHandler())
# sagakit's own records carry the run's fields and have its sensitive values
# masked, whatever handlers the application attaches.
logging.getLogger("sagakit").addFilter(RunLogFilter())

# Names imported on first use (PEP 562), by the module that defines them: the
# YAML loader and the run view pull in PyYAML, rich and the timeline, which a
# process that only runs sagas (a worker restarting to take back its runs)
# does not need and should not wait for.
_LAZY: dict[str, str] = {
    "DefinitionFileError": "sagakit.yamlfile",
    "Problem": "sagakit.yamlfile",
    "YamlReport": "sagakit.yamlfile",
    "load_yaml": "sagakit.yamlfile",
    "validate_yaml": "sagakit.yamlfile",
    "RunView": "sagakit.views",
    "run_view": "sagakit.views",
}


def __getattr__(name: str) -> Any:
    """Import a lazily exported name on first use, and keep it (PEP 562)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'sagakit' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups find it without coming here
    return value


def __dir__() -> list[str]:
    """The module's names, the lazily exported ones included."""
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "AsyncEngine",
    "AttemptOutcome",
    "AttentionReport",
    "CheckReport",
    "DefinitionError",
    "DefinitionFileError",
    "EncryptionError",
    "Engine",
    "ErrorInfo",
    "Event",
    "EventKind",
    "Finding",
    "InvalidRunId",
    "InvalidRunState",
    "JournalMismatch",
    "JsonLogFormatter",
    "LeaseLost",
    "Misfit",
    "MisfitKind",
    "Next",
    "ObservedEvent",
    "Observer",
    "Outcome",
    "Pause",
    "PermanentError",
    "Phase",
    "Problem",
    "Reason",
    "ReconcileReport",
    "Reconciler",
    "Redactor",
    "Reservation",
    "ReservationBusy",
    "ReservationLapsed",
    "Reserve",
    "Resource",
    "RetryPolicy",
    "Run",
    "RunBusy",
    "RunCursor",
    "RunFailed",
    "RunIdConflict",
    "RunInputConflict",
    "RunLogFilter",
    "RunNotFound",
    "RunStatus",
    "RunTimeout",
    "RunView",
    "Saga",
    "SagaError",
    "SagaNotRegistered",
    "SchemaVersionError",
    "Sensitive",
    "Signal",
    "StateError",
    "Step",
    "StepContext",
    "StepKind",
    "StoreError",
    "Verdict",
    "WebhookSink",
    "Worker",
    "WorkerStats",
    "YamlReport",
    "__version__",
    "load_yaml",
    "run_view",
    "validate_yaml",
]
