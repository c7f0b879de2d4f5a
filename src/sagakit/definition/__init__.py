"""What a user declares: sagas, their steps, step kinds and retry policies.

A `Saga` holds its steps in order; each `Step` has an action, an optional
compensation, a `StepKind` and `RetryPolicy`s. The rules between kinds
(`rules`) are checked as the saga is written and again when it is
registered. Nothing here starts a run.
"""

from __future__ import annotations

from sagakit.definition.kinds import StepKind
from sagakit.definition.reconciler import Reconciler, Resource
from sagakit.definition.retry import DEFAULT_COMPENSATION_RETRY, RetryPolicy
from sagakit.definition.saga import Saga, version_key
from sagakit.definition.step import Handler, Reserve, Step

__all__ = [
    "DEFAULT_COMPENSATION_RETRY",
    "Handler",
    "Reconciler",
    "Reserve",
    "Resource",
    "RetryPolicy",
    "Saga",
    "Step",
    "StepKind",
    "version_key",
]
