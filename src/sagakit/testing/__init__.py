"""The testing kit: a clock that skips time, and pytest fixtures.

- `SkippingClock`: every wait of the engine (retry backoff, deadlines,
  reservation waits, alerts tried again) completes at once when nothing else
  can run, with the clock moved by the wait; `SkippingClock.advance` moves it
  by hand ("cancel the next day").
- `drive` / `adrive`: drive a run until it settles or pauses.
- The pytest plugin (`sagakit.testing.plugin`, on by installing sagakit):
  the fixtures ``saga_clock``, ``saga_engine``, ``saga_engine_sqlite`` and
  ``saga_drive``.

See docs/testing.md.
"""

from __future__ import annotations

from sagakit.testing.clock import SkippingClock
from sagakit.testing.driving import adrive, drive

__all__ = ["SkippingClock", "adrive", "drive"]
