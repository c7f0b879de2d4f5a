"""What `sagakit.testing.explore` costs: a five-step saga, every single fault and pairs.

The saga has five compensatable steps; each talks to an in-process fake
that keys its effects by the idempotency key. For each store (memory, a
SQLite file) and each bound on pairs, the whole plan is explored with a
check after every scenario. Prints scenarios run, wall time and time per
scenario; not a timed test (nothing is asserted of speed).

    .venv/bin/python benchmarks/bench_explore.py
    .venv/bin/python benchmarks/bench_explore.py --pairs 0 100 1000 --repeat 3
"""

from __future__ import annotations

import argparse
import threading
from typing import Any

from sagakit import Run, RunStatus, Saga, StepContext
from sagakit.testing import explore

STEPS = 5


class Service:
    """Effects by idempotency key; undoing one twice changes nothing."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.done: dict[str, str] = {}
        self.undone: set[str] = set()

    def do(self, key: str) -> str:
        with self.lock:
            return self.done.setdefault(key, f"ref-{len(self.done) + 1}")

    def undo(self, key: str) -> None:
        with self.lock:
            if key in self.done:
                self.undone.add(key)

    def standing(self, run_id: str) -> list[str]:
        with self.lock:
            return [k for k in self.done if k.startswith(f"{run_id}/") and k not in self.undone]


def five_steps(service: Service) -> Saga[Any]:
    saga: Saga[Any] = Saga("bench-explore")
    for i in range(STEPS):

        def action(state: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
            return {ctx.step: service.do(ctx.idempotency_key)}

        def undo(state: dict[str, Any], ctx: StepContext) -> None:
            service.undo(ctx.action_key)

        saga.add_step(action, name=f"step{i}", compensation=undo)
    return saga


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, nargs="+", default=[0, 100, 500])
    parser.add_argument("--stores", nargs="+", default=["memory", "sqlite"])
    parser.add_argument("--repeat", type=int, default=1, help="keep the fastest of N runs")
    args = parser.parse_args()
    service = Service()
    saga = five_steps(service)

    def setup() -> Service:
        # Every exploration names its runs alike (explore-SEED-NNNN): forget the last one's.
        with service.lock:
            service.done.clear()
            service.undone.clear()
        return service

    def check(run: Run, world: Service) -> None:
        left = world.standing(run.id)
        if run.status is RunStatus.COMPLETED:
            assert len(left) == STEPS, left
        if run.status in (RunStatus.ROLLED_BACK, RunStatus.CANCELLED, RunStatus.FAILED):
            assert not left, left

    print(f"{'store':<8} {'pairs':>12} {'scenarios':>10} {'wall':>9} {'per scenario':>13}  result")
    for store in args.stores:
        for pairs in args.pairs:
            best = None
            for _ in range(args.repeat):
                report = explore(
                    saga, {}, check=check, setup=setup, store=store, pairs=pairs or False
                )
                if best is None or report.seconds < best.seconds:
                    best = report
            assert best is not None
            shown = f"{best.pairs_run}/{best.pairs_possible}"
            per = best.seconds / len(best.results) * 1000
            verdict = "ok" if best.ok else f"{len(best.failed)} failed"
            print(
                f"{store:<8} {shown:>12} {len(best.results):>10} {best.seconds:>8.2f}s "
                f"{per:>10.1f} ms  {verdict}"
            )


if __name__ == "__main__":
    main()
