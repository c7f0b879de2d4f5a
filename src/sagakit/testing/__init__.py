"""The testing kit: a clock that skips time, pytest fixtures, and `explore`.

- `SkippingClock`: every wait of the engine (retry backoff, deadlines,
  reservation waits, alerts tried again) completes at once when nothing else
  can run, with the clock moved by the wait; `SkippingClock.advance` moves it
  by hand ("cancel the next day").
- `drive` / `adrive`: drive a run until it settles or pauses.
- The pytest plugin (`sagakit.testing.plugin`, on by installing sagakit):
  the fixtures ``saga_clock``, ``saga_engine``, ``saga_engine_sqlite`` and
  ``saga_drive``.
- `explore` runs a saga once per fault of a systematic plan (crashes around
  every record, failures, timeouts, cancels, repeated deliveries, and pairs
  of them) and reports the smallest scenario that breaks sagakit's promises
  or your own check.

See docs/testing.md.
"""

from __future__ import annotations

from sagakit.testing.clock import SkippingClock
from sagakit.testing.driving import adrive, drive
from sagakit.testing.explore import Report, ScenarioResult, explore, explore_async

__all__ = [
    "Report",
    "ScenarioResult",
    "SkippingClock",
    "adrive",
    "drive",
    "explore",
    "explore_async",
]
