"""An `Engine` nobody closed: the garbage collector's finaliser never blocks.

The collector may finalise an engine in any thread, at any moment: for
instance inside ``ThreadPoolExecutor.submit``, which holds the lock of
``concurrent.futures`` that closing the store needs to hand work to its
thread. A finaliser that waited for the close would wait for itself. The
subprocess test below holds that very lock while it collects an unclosed
engine: the process hung forever before the fix; a timeout bounds the test.
"""

from __future__ import annotations

import gc
import json
import logging
import subprocess
import sys
import textwrap
import threading
import warnings
from typing import Any

import pytest

from sagakit import Engine, Saga, SagaError, StepContext

# Run in a process of its own: a hang there is seen as a timeout, not a stuck suite.
COLLECT_UNDER_THE_LOCK = textwrap.dedent(
    """
    import concurrent.futures.thread as futures_thread
    import gc, json, sys, threading, time, warnings

    from sagakit import Engine, Saga

    saga = Saga("gc")

    @saga.step
    def step(state, ctx):
        return {"done": True}

    engine = Engine(sys.argv[1])
    status = engine.run(saga, {}, run_id="before-gc").status
    gc.collect()  # everything else first: below, the engine is all there is to collect
    engine.itself = engine  # a cycle: only the collector frees it, when it runs
    del engine
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with futures_thread._global_shutdown_lock:  # as inside ThreadPoolExecutor.submit
            gc.collect()
    # The engine lets go in the background: its loop thread ends once closed.
    give_up = time.monotonic() + 20
    while time.monotonic() < give_up and any(
        t.name == "sagakit-loop" for t in threading.enumerate()
    ):
        time.sleep(0.02)
    print(json.dumps({
        "status": status,
        "warnings": [f"{w.category.__name__}: {w.message}" for w in caught],
        "loop_threads": [t.name for t in threading.enumerate() if t.name == "sagakit-loop"],
    }))
    """
)


def test_an_engine_collected_while_the_futures_lock_is_held_does_not_hang(
    store_url: str,
) -> None:
    try:
        done = subprocess.run(
            [sys.executable, "-c", COLLECT_UNDER_THE_LOCK, store_url],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except subprocess.TimeoutExpired as hung:
        pytest.fail(f"the finaliser of an unclosed Engine hung the process: {hung.stderr!r}")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["status"] == "completed"
    assert len(report["warnings"]) == 1
    assert report["warnings"][0].startswith("ResourceWarning: an Engine on ")
    assert "was never closed" in report["warnings"][0]
    assert report["loop_threads"] == []  # closed, and its thread gone
    assert "Traceback" not in done.stderr


def _saga() -> Saga[Any]:
    saga: Saga[Any] = Saga("lifecycle")

    @saga.step
    def step(state: dict[str, Any], ctx: StepContext) -> None:
        return None

    return saga


def _let_go(held: list[Engine]) -> None:
    """Drop the last reference to an engine and collect."""
    held.clear()
    gc.collect()


def test_an_unclosed_engine_warns_and_is_closed_in_the_background(
    store_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    held = [Engine(store_url)]
    held[0].run(_saga(), run_id="left")
    loop_thread = held[0]._portal.thread  # the thread it must let go of
    with caplog.at_level(logging.WARNING, logger="sagakit"):
        with pytest.warns(ResourceWarning, match="was never closed"):
            _let_go(held)
        loop_thread.join(timeout=20)
    assert not loop_thread.is_alive()
    assert "closing an Engine that was never closed failed" not in caplog.text
    # What it wrote is all there for the next engine.
    with Engine(store_url) as again:
        assert again.get("left").status == "completed"


def test_a_closed_engine_warns_nothing_and_closing_twice_is_harmless(store_url: str) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        engine = Engine(store_url)
        engine.run(_saga(), run_id="closed")
        loop_thread = engine._portal.thread
        engine.close()
        assert not loop_thread.is_alive()  # close() waits for it, unlike the finaliser
        engine.close()
        with Engine(store_url) as managed:
            managed.get("closed")
        del engine, managed
        gc.collect()
    assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []


def test_an_engine_whose_loop_died_is_still_let_go_of_when_collected(store_url: str) -> None:
    saga: Saga[Any] = Saga("exits")

    @saga.step
    async def leave(state: dict[str, Any], ctx: StepContext) -> None:
        raise SystemExit(3)

    engine = Engine(store_url)
    with pytest.raises(SagaError, match="event loop stopped"):
        engine.run(saga, run_id="bye")
    before = {t.ident for t in threading.enumerate()}
    # What the collector calls, called here: the dead loop's tasks may hold the
    # engine a while longer, which would make a test that waits for it flaky.
    finalize = engine._finalizer
    with pytest.warns(ResourceWarning, match="was never closed"):
        finalize()
    # The store is closed on a short-lived thread of its own, which ends.
    closers = [t for t in threading.enumerate() if t.ident not in before]
    for thread in closers:
        thread.join(timeout=20)
        assert not thread.is_alive()
