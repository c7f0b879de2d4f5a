"""`explore`: every crash, failure, timeout and cancel of a saga, run and checked.

The plan of faults (`plan`), the faults in the user's functions (`faults`)
and in the process (`crash`), the run of one scenario (`runner`), sagakit's
own promises (`invariants`), and the report (`report`); `explorer` puts
them together.
"""

from __future__ import annotations

from sagakit.testing.explore.explorer import explore, explore_async
from sagakit.testing.explore.faults import Call
from sagakit.testing.explore.plan import Fault, FaultKind, FaultPlan, Scenario, build_plan
from sagakit.testing.explore.report import Failure, Report, ScenarioResult

__all__ = [
    "Call",
    "Failure",
    "Fault",
    "FaultKind",
    "FaultPlan",
    "Report",
    "Scenario",
    "ScenarioResult",
    "build_plan",
    "explore",
    "explore_async",
]
