"""Running many orders at once: a clock that can jump a day, and a pool of workers.

`WorkerPool` starts several sagakit workers, each with its own engine,
store connections and event loop on a thread of its own, as several worker
processes on several hosts would be; they share only the database. Orders
are recorded with `sagakit.Engine.start` and the workers race to drive them.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any

from sagakit import AsyncEngine, Engine, Run, RunStatus, RunTimeout, Saga, Worker
from warehouse.models import Order


class ShiftedClock:
    """The real time plus an offset that `advance` moves: "a day later" in an instant.

    Hand it to every engine (``clock=``): leases, reservations and the
    journal's times all read it, and so does ``ctx.since_step_finished``.
    Only move it while nothing is in flight, or leases held across the jump
    lapse at once.
    """

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        """Move the clock ``seconds`` ahead."""
        self.offset += seconds


class WorkerPool:
    """``workers`` sagakit workers, each driving up to ``concurrency`` runs at once.

    Use as a context manager: the workers run inside the ``with`` block, and
    leave it gracefully (the steps in flight finish and are recorded).

    Args:
        url: The store shared with whoever starts the runs.
        sagas: The sagas the workers serve.
        workers: How many workers (engines, each on its own thread).
        concurrency: Runs each worker drives at once.
        clock: The clock every engine reads.
    """

    def __init__(
        self,
        url: str,
        sagas: Sequence[Saga[Any]],
        *,
        workers: int = 3,
        concurrency: int = 8,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.url = url
        self.sagas = tuple(sagas)
        self.concurrency = concurrency
        self.clock = clock
        self._threads = [
            threading.Thread(target=self._serve, args=(n,), name=f"warehouse-worker-{n}")
            for n in range(1, workers + 1)
        ]
        self._ready = threading.Barrier(workers + 1)
        self._lock = threading.Lock()
        self._running: list[tuple[asyncio.AbstractEventLoop, Worker]] = []
        self._errors: list[BaseException] = []

    def __enter__(self) -> WorkerPool:
        for thread in self._threads:
            thread.start()
        try:
            self._ready.wait(timeout=30)  # every worker's engine is open
        except threading.BrokenBarrierError as broken:
            self._ready.abort()  # the workers that did start give up too
            for thread in self._threads:
                thread.join()
            raise (self._errors or [RuntimeError("the workers did not start")])[0] from broken
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with self._lock:
            for loop, worker in self._running:
                # Worker.stop belongs to the worker's own loop: call it there.
                loop.call_soon_threadsafe(worker.stop, 10.0)
        for thread in self._threads:
            thread.join()
        if self._errors and exc is None:
            raise self._errors[0]

    def _serve(self, number: int) -> None:
        try:
            asyncio.run(self._work(number))
        except BaseException as exc:  # reported by __exit__, on the caller's thread
            self._errors.append(exc)
            self._ready.abort()

    async def _work(self, number: int) -> None:
        engine = AsyncEngine(self.url, clock=self.clock, owner=f"warehouse-worker-{number}")
        async with engine:
            engine.register(*self.sagas)
            worker = Worker(engine, concurrency=self.concurrency, poll_interval=0.05)
            with self._lock:
                self._running.append((asyncio.get_running_loop(), worker))
            self._ready.wait()  # a blocking wait, but nothing runs on this loop yet
            await worker.run()


def start_orders(shop: Engine, saga: Saga[Order], orders: Sequence[tuple[str, Order]]) -> list[str]:
    """Record orders as pending runs, for the workers to drive; return at once.

    Args:
        shop: The shop's engine, on the workers' store.
        saga: The order saga.
        orders: ``(order id, order)`` pairs; the order id is the run id.

    Returns:
        The order ids.
    """
    for order_id, order in orders:
        shop.start(saga, order, run_id=order_id)
    return [order_id for order_id, _ in orders]


def settle(shop: Engine, order_ids: Sequence[str], *, timeout: float = 120) -> dict[str, Run]:
    """Wait until every order has settled; the runs as they ended, by order id."""
    return {order_id: shop.wait(order_id, timeout=timeout, poll=0.05) for order_id in order_ids}


def place_orders(
    shop: Engine, saga: Saga[Order], orders: Sequence[tuple[str, Order]], *, timeout: float = 120
) -> dict[str, Run]:
    """`start_orders`, then `settle` them."""
    return settle(shop, start_orders(shop, saga, orders), timeout=timeout)


def wait_for_undo(shop: Engine, run_id: str, *, timeout: float = 120) -> Run:
    """Wait until the cancel of a completed run has been carried out; the run then.

    `Engine.wait` alone is not enough: it returns as soon as a run is not
    pending, running or compensating, and a completed run whose cancel is
    still in its mail, for a worker that claimed it first, is ``completed``.

    Raises:
        RunTimeout: the undo had not finished after ``timeout`` seconds.
    """
    give_up = time.monotonic() + timeout
    while True:
        run = shop.wait(run_id, timeout=max(0.0, give_up - time.monotonic()), poll=0.05)
        if run.status is not RunStatus.COMPLETED:
            return run
        if time.monotonic() >= give_up:
            raise RunTimeout(run_id, timeout, run.status)
        time.sleep(0.02)
