"""Many runs in one process: the engines and the worker.

`AsyncEngine` starts, drives and acts on runs with a store; `Engine` is its
synchronous twin for scripts and web handlers; `Worker` claims runs from a
shared store and drives them, for as many processes as you like. `CheckReport`
is what `AsyncEngine.check` finds: the runs in flight that the definitions
loaded do not fit (`Misfit`).
"""

from __future__ import annotations

from sagakit.engine.async_engine import AsyncEngine, AttentionHook
from sagakit.engine.checking import CheckReport, Misfit, MisfitKind
from sagakit.engine.sync_engine import Engine
from sagakit.engine.worker import Worker, WorkerStats

__all__ = [
    "AsyncEngine",
    "AttentionHook",
    "CheckReport",
    "Engine",
    "Misfit",
    "MisfitKind",
    "Worker",
    "WorkerStats",
]
