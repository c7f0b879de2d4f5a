"""Tools to test your own sagas.

`explore` runs a saga once per fault of a systematic plan (crashes around
every record, failures, timeouts, cancels, repeated deliveries, and pairs of
them) and reports the smallest scenario that breaks sagakit's promises or
your own check. See docs/testing.md.
"""

from __future__ import annotations

from sagakit.testing.explore import Report, ScenarioResult, explore, explore_async

__all__ = ["Report", "ScenarioResult", "explore", "explore_async"]
