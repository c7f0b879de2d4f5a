"""One run, driven: ask the core what to do, call the user's code, journal the outcome.

A `Driver` owns one run while its process holds the run's lease: it folds
the journal, asks `sagakit.core.decide` what to do next, makes the calls,
and commits what they return under the lease.
"""

from __future__ import annotations

from sagakit.driver.driver import Driver
from sagakit.driver.writer import RunExists

__all__ = ["Driver", "RunExists"]
