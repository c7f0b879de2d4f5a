"""A saga application run as a real subprocess by the reservation expiry test.

Its one step reserves ``seat:1`` for ``ttl`` seconds, writes a marker file
(JSON: the run id and the reservation's expiry) so the test knows it holds
the name, then blocks until the test SIGKILLs the process.

Usage: python reserveapp.py STORE_URL RUN_ID MARKER_FILE [TTL]
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from sagakit import Engine, Saga, StepContext

SEAT = "seat:1"

saga: Saga[Any] = Saga("seat-hog")


@saga.step
def hold(state: dict[str, Any], ctx: StepContext) -> None:
    held = ctx.reserve(SEAT, ttl=float(state["ttl"]))
    marker = Path(state["marker"])
    partial = marker.with_suffix(".partial")
    partial.write_text(json.dumps({"run_id": held.run_id, "expires_at": held.expires_at}))
    partial.rename(marker)  # the test never reads half a file
    time.sleep(3600)


def main() -> None:
    url, run_id, marker = sys.argv[1:4]
    ttl = float(sys.argv[4]) if len(sys.argv) > 4 else 2.0
    with Engine(url, lease_seconds=30.0) as engine:
        engine.run(saga, {"marker": marker, "ttl": ttl}, run_id=run_id)


if __name__ == "__main__":
    main()
