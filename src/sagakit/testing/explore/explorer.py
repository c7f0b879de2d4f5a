"""`explore`: run a saga once per fault of a systematic plan, and report what broke.

The plan (`sagakit.testing.explore.plan`) crashes the process before and
after every record, fails and times out every action, fails every
compensation once and for good, cancels at every step boundary, delivers
every call twice with the same idempotency key, and pairs these, bounded.
Each scenario runs on the same store, with a clock of its own that skips
every wait (`sagakit.testing.explore.runner`); after each, sagakit's own
promises are checked (`sagakit.testing.explore.invariants`), then yours.
"""

from __future__ import annotations

import asyncio
import inspect
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

from sagakit.definition import Saga
from sagakit.journal import RunStatus
from sagakit.run import Run
from sagakit.store import redact_url
from sagakit.testing.explore.invariants import check_invariants
from sagakit.testing.explore.plan import build_plan
from sagakit.testing.explore.report import Report, ScenarioResult
from sagakit.testing.explore.runner import DAY, Runner

EPOCH = 1_735_689_600.0
"""Where the first scenario's clock starts: 2025-01-01 00:00 UTC (each next one a day after)."""

Check = Callable[..., object]
"""``check(run, world)`` (or ``check(run)``): raise `AssertionError`, return False or a
non-empty message for a violation; anything else passes."""

StoreChoice = Literal["memory", "sqlite"] | str


def explore(
    saga: Saga[Any],
    input: Any = None,
    *,
    check: Check | None = None,
    setup: Callable[[], Any] | None = None,
    store: StoreChoice = "memory",
    seed: int = 0,
    pairs: bool | int = True,
    on_pause: Literal["cancel", "leave"] = "cancel",
) -> Report:
    """Run ``saga`` once per fault of a systematic plan and report what broke.

    Each scenario starts one run of a copy of the saga whose functions inject
    the scenario's faults (yours are never changed), drives it until it
    settles with a clock that skips every wait, then checks sagakit's own
    promises and ``check``. Scenarios run one after another on one store, so
    ``setup`` must reset the outside systems your steps talk to.

    Args:
        saga: The saga to explore.
        input: The input of every run (a dict or an instance of the state model).
        check: Called after every scenario with the run as it ended (a `Run`)
            and what ``setup`` returned (None without it); one-argument
            checks get the run only. It fails the scenario by raising
            `AssertionError`, returning False, or returning a message.
            Without it only sagakit's invariants are checked.
        setup: Called before every scenario, before its run starts: reset
            the fakes of your outside systems and return them (the "world"
            the check looks at).
        store: ``"memory"`` (the default), ``"sqlite"`` (a new SQLite file,
            deleted afterwards), or a store URL to use as it is (a fresh one:
            run ids are ``explore-SEED-NNNN``), for sagas whose steps need
            it (local transactions write to the store's own database).
        seed: Chooses the sample of pairs; the same seed gives the same plan.
        pairs: ``True`` for a sample of 100 pairs of faults, a number for
            that many, ``False`` or 0 for single faults only.
        on_pause: What a person answers when a run pauses for a decision:
            ``"cancel"`` (the default: the run is cancelled and compensates)
            or ``"leave"`` (it stays paused, and the scenario ends there).

    Returns:
        The `Report`; ``report.ok`` says whether everything passed,
        ``report.assert_ok()`` raises with the smallest failing scenarios.

    Raises:
        DefinitionError: the saga breaks a rule.
        StateError: ``input`` does not fit the saga's state.
        ValueError: a bad ``store``, ``pairs`` or ``on_pause``.
    """
    work = explore_async(
        saga,
        input,
        check=check,
        setup=setup,
        store=store,
        seed=seed,
        pairs=pairs,
        on_pause=on_pause,
    )
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(work)
    # Called from a coroutine (an async test): a loop of its own, on a thread.
    with ThreadPoolExecutor(1, thread_name_prefix="sagakit-explore") as pool:
        return pool.submit(asyncio.run, work).result()


async def explore_async(
    saga: Saga[Any],
    input: Any = None,
    *,
    check: Check | None = None,
    setup: Callable[[], Any] | None = None,
    store: StoreChoice = "memory",
    seed: int = 0,
    pairs: bool | int = True,
    on_pause: Literal["cancel", "leave"] = "cancel",
) -> Report:
    """`explore`, as a coroutine (the same arguments, the same report)."""
    if on_pause not in ("cancel", "leave"):
        raise ValueError(f"on_pause must be 'cancel' or 'leave', got {on_pause!r}")
    saga.plan()  # DefinitionError before anything runs
    saga.dump_state(input if input is not None else {})  # StateError likewise
    plan = build_plan(saga, pairs=pairs, seed=seed)
    url, shown, cleanup = _store(store)
    call_check = _caller(check) if check is not None else None
    runner = Runner(saga=saga, input=input, url=url, setup=setup, on_pause=on_pause)
    began = time.perf_counter()
    results: list[ScenarioResult] = []
    baseline: RunStatus | None = None
    start = EPOCH
    try:
        for scenario in plan.scenarios:
            run_id = f"explore-{seed}-{scenario.number:04d}"
            outcome = await runner.run(scenario, run_id, start)
            start = outcome.ended_at + DAY
            problems = check_invariants(saga, scenario, outcome, baseline)
            run = outcome.run
            if scenario.number == 0 and run is not None:
                baseline = RunStatus(run.status)
            verdict = None
            if call_check is not None and run is not None:
                verdict = call_check(run, outcome.world)
            results.append(
                ScenarioResult(
                    scenario=scenario,
                    run_id=run_id,
                    status="unknown" if run is None else RunStatus(run.status).value,
                    reached=all(fault in outcome.fired for fault in scenario.injected),
                    problems=tuple(problems),
                    check=verdict,
                    crashes=outcome.crashes,
                    run=run,
                    events=tuple(outcome.events),
                    calls=tuple(outcome.calls),
                )
            )
    finally:
        await runner.close()
        cleanup()
    return Report(
        saga=saga.name,
        version=saga.version,
        store=shown,
        seed=seed,
        results=tuple(results),
        singles=plan.singles,
        pairs_possible=plan.pairs_possible,
        pairs_run=plan.pairs_chosen,
        checked=check is not None,
        seconds=time.perf_counter() - began,
    )


def _store(store: str) -> tuple[str, str, Callable[[], None]]:
    """The URL every engine opens, the store as the report names it, and its cleanup."""
    if store == "memory":
        name = f"memory://sagakit-explore-{uuid.uuid4().hex}"

        def forget() -> None:
            from sagakit.store.memory import forget_shared

            forget_shared(name.removeprefix("memory://"))

        return name, "memory", forget
    if store == "sqlite":
        folder = Path(tempfile.mkdtemp(prefix="sagakit-explore-"))
        return (
            f"sqlite:///{folder / 'explore.db'}",
            "sqlite",
            lambda: shutil.rmtree(folder, ignore_errors=True),
        )
    if isinstance(store, str) and "://" in store:
        return store, redact_url(store), lambda: None
    raise ValueError(f"store must be 'memory', 'sqlite' or a store URL, got {store!r}")


def _caller(check: Check) -> Callable[[Run, Any], str | None]:
    """``check`` called as it takes its arguments; its verdict as a message, or None."""
    try:
        inspect.signature(check).bind(None, None)
        two = True
    except TypeError:
        two = False
    except ValueError:  # a callable without a signature: give it both
        two = True

    def call(run: Run, world: Any) -> str | None:
        try:
            verdict = check(run, world) if two else check(run)
        except AssertionError as exc:
            # The message only: pytest adds its own explanation on the lines after it.
            lines = [line for line in str(exc).splitlines() if line.strip()]
            return lines[0].strip() if lines else "an assertion failed"
        except Exception as exc:
            return f"the check raised {type(exc).__name__}: {exc}"
        if verdict is False:
            return "the check returned False"
        if isinstance(verdict, str) and verdict:
            return verdict
        return None

    return call
