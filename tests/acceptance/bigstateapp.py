"""A saga with a big state, driven as a real subprocess by the big-state crash test.

Its state starts as `KEYS` keys of 1 KB; each of its `STEPS` steps sets one
of them to a new value, so the store writes it by its changes and, every so
often, whole again: a SIGKILL lands in the middle of either.

Usage: python bigstateapp.py run DB_URL RUN_ID
       python bigstateapp.py recover DB_URL
"""

from __future__ import annotations

import sys
from typing import Any

from sagakit import Engine, Saga, StepContext

KEYS = 64
STEPS = 240


def initial() -> dict[str, Any]:
    """The state a run starts with: some 66 KB."""
    return {f"k{i:03d}": "v" * 1_000 for i in range(KEYS)}


def result(step: int) -> dict[str, Any]:
    """What step ``step`` sets."""
    return {f"k{step % KEYS:03d}": f"{step}:" + "w" * 1_000}


def expected(steps_done: int) -> dict[str, Any]:
    """The state once the first ``steps_done`` steps have succeeded."""
    state = initial()
    for step in range(steps_done):
        state.update(result(step))
    return state


saga: Saga[Any] = Saga("bigstate")


def make(step: int) -> None:
    def action(state: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        return result(step)

    saga.add_step(action, name=f"s{step:03d}")


for _step in range(STEPS):
    make(_step)


def main() -> None:
    command, url = sys.argv[1], sys.argv[2]
    with Engine(url, lease_seconds=1.0) as engine:
        engine.register(saga)
        if command == "run":
            run = engine.run(saga, initial(), run_id=sys.argv[3])
            print(run.status)
        else:
            for run in engine.recover():
                print(run.id, run.status)


if __name__ == "__main__":
    main()
