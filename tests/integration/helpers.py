"""Sagas and moves shared by the engine tests."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sagakit import (
    AsyncEngine,
    Engine,
    PermanentError,
    RetryPolicy,
    Run,
    RunStatus,
    Saga,
    StepContext,
    Worker,
)


def halting_saga(name: str = "halts") -> Saga[Any]:
    """book → pay (declined); undoing book fails for good at once: needs attention."""
    saga: Saga[Any] = Saga(name)

    @saga.step
    def book(state: dict[str, Any], ctx: StepContext) -> None:
        return None

    @book.compensate(retry=RetryPolicy(max_attempts=1))
    def unbook(state: dict[str, Any], ctx: StepContext) -> None:
        raise RuntimeError("provider down")

    @saga.step
    def pay(state: dict[str, Any], ctx: StepContext) -> None:
        raise PermanentError("declined")

    return saga


def crash(engine: AsyncEngine, *drives: asyncio.Future[Any]) -> None:
    """Simulate the death of ``engine``'s process: stop driving and renewing, release nothing."""
    for drive in drives:
        drive.cancel()
    assert engine.drives.heartbeat.task is not None
    engine.drives.heartbeat.task.cancel()


# -- a worker beside the test, and waiting for a run ---------------------------------


@contextmanager
def serving(store_url: str, *sagas: Saga[Any]) -> Iterator[None]:
    """A worker on its own engine and event loop (as in another process) for the block."""
    stop = threading.Event()
    ready = threading.Event()
    failed: list[BaseException] = []

    async def body() -> None:
        async with AsyncEngine(store_url, lease_seconds=5.0) as engine:
            engine.register(*sagas)
            worker = Worker(engine, poll_interval=0.05)
            task = asyncio.ensure_future(worker.run())
            ready.set()
            while not stop.is_set():
                await asyncio.sleep(0.02)
            worker.stop(grace=5.0)
            await asyncio.wait_for(task, 10.0)

    def main() -> None:
        try:
            asyncio.run(body())
        except BaseException as exc:  # reported by the test, not lost on the thread
            failed.append(exc)
            ready.set()

    thread = threading.Thread(target=main, name="test-worker")
    thread.start()
    assert ready.wait(10)
    try:
        yield
    finally:
        stop.set()
        thread.join(20)
        assert not failed, failed


def wait_for_status(engine: Engine, run_id: str, status: RunStatus, timeout: float = 15) -> Run:
    give_up = time.monotonic() + timeout
    while (run := engine.get(run_id)).status is not status:
        assert time.monotonic() < give_up, f"run {run_id} stayed {run.status}, not {status}"
        time.sleep(0.02)
    return run


def wait_for_event(engine: Engine, run_id: str, kind: str, step: str, timeout: float = 10) -> None:
    give_up = time.monotonic() + timeout
    while time.monotonic() < give_up:
        try:
            if any(e.kind == kind and e.step == step for e in engine.history(run_id)):
                return
        except Exception:
            pass
        time.sleep(0.01)
    raise AssertionError(f"{kind} of {step} never happened in run {run_id}")


def on_local_clock(url: str) -> str:
    """``url``, with PostgreSQL's leases on the callers' clock (``lease_clock=local``).

    For tests that make a lease lapse by claiming at a later time of their
    own: on the database's clock (the default) that lease is still live.
    """
    return f"{url}&lease_clock=local" if url.startswith("postgresql") else url


def in_child(body: Callable[[], str], *, alarm: int = 20) -> str:
    """Fork; the child runs ``body`` and reports what it returns (or what it
    raised); the parent waits for it and returns the report.

    A hung child is ended by an alarm after ``alarm`` seconds, reporting
    nothing; the child must end by itself (exit code 0).
    """
    read, write = os.pipe()
    with warnings.catch_warnings():
        # Python 3.12 warns of forking a process that has threads: the point here.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:
        try:
            signal.signal(signal.SIGALRM, signal.SIG_DFL)
            signal.alarm(alarm)  # bounds a hang only
            os.write(write, body().encode())
        except BaseException as exc:
            os.write(write, f"raised {type(exc).__name__}: {exc}".encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        reported = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, f"the child ended by {status}: {reported!r}"
    return reported


def migrated_schema(url: str) -> tuple[str, str]:
    """Open and close a store at ``url`` (a PostgreSQL URL naming a schema), which
    makes its tables; return the server's connection string and the schema."""
    from sagakit.store import open_store
    from sagakit.store.postgresql import parse_url

    async def migrate() -> None:
        store = open_store(url)
        await store.open()
        await store.close()

    asyncio.run(migrate())
    conninfo, options = parse_url(url)
    return conninfo, options["schema"]
