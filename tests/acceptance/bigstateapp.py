"""A saga with a big state, driven as a real subprocess by the big-state crash test.

Its state starts as `KEYS` keys of 1 KB; each of its `STEPS` steps sets one
of them to a new value, so the store writes it by its changes and, every so
often, whole again: a SIGKILL lands in the middle of either.

With ``BIGSTATE_BIG=1`` in its environment, the state starts as `BIG_KEYS`
keys (some 280 KB, past what SQLite writes with its big parts bound on their
own: `sagakit.store.sqlite.writes.BIG`), and each step sets a 2 KB value, so
that the whole state is written again within the run.

Usage: python bigstateapp.py run DB_URL RUN_ID
       python bigstateapp.py recover DB_URL
"""

from __future__ import annotations

import os
import sys
from typing import Any

from sagakit import Engine, Saga, StepContext

KEYS = 64
BIG_KEYS = 280
STEPS = 240


def is_big() -> bool:
    """Whether this process runs the big variant (``BIGSTATE_BIG=1``)."""
    return os.environ.get("BIGSTATE_BIG") == "1"


def initial(big: bool = False) -> dict[str, Any]:
    """The state a run starts with: some 66 KB (big: some 280 KB)."""
    return {f"k{i:03d}": "v" * 1_000 for i in range(BIG_KEYS if big else KEYS)}


def result(step: int, big: bool = False) -> dict[str, Any]:
    """What step ``step`` sets."""
    keys, size = (BIG_KEYS, 2_000) if big else (KEYS, 1_000)
    return {f"k{step % keys:03d}": f"{step}:" + "w" * size}


def expected(steps_done: int, big: bool = False) -> dict[str, Any]:
    """The state once the first ``steps_done`` steps have succeeded."""
    state = initial(big)
    for step in range(steps_done):
        state.update(result(step, big))
    return state


saga: Saga[Any] = Saga("bigstate")


def make(step: int) -> None:
    def action(state: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        return result(step, is_big())

    saga.add_step(action, name=f"s{step:03d}")


for _step in range(STEPS):
    make(_step)


def main() -> None:
    command, url = sys.argv[1], sys.argv[2]
    # The killed run's lease is short, so that the test need not wait long
    # for it to lapse; the recovering process's is not, so that on a loaded
    # machine its renewals of 240 big commits never fall behind a lease.
    with Engine(url, lease_seconds=1.0 if command == "run" else 30.0) as engine:
        engine.register(saga)
        if command == "run":
            run = engine.run(saga, initial(is_big()), run_id=sys.argv[3])
            print(run.status)
        else:
            for run in engine.recover():
                print(run.id, run.status)


if __name__ == "__main__":
    main()
