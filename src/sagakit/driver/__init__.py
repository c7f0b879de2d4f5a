"""One run, driven: ask the core what to do, call the user's code, journal the outcome.

A `Driver` owns one run while its process holds the run's lease: it asks
`sagakit.core.decide` what to do next, has its `StepCaller` make the calls
(`calls`), and its `RunWriter` journal and commit what they return under the
lease (`writer`); `outcomes` and `mail` say what to journal of a call's
outcome and of the run's mail; `Failures` remembers the exceptions of calls
that failed for good, for the caller to re-raise. None of these parts knows
the `Driver`.
"""

from __future__ import annotations

from sagakit.driver.driver import Driver
from sagakit.driver.failures import Failures
from sagakit.driver.writer import RunExists

__all__ = ["Driver", "Failures", "RunExists"]
