"""An order service: FastAPI starts sagas, workers drive them, the dashboard is mounted.

- ``POST /orders`` records an order saga's run and answers 202 with its id
  at once; a ``sagakit worker`` process drives it.
- ``GET /orders/{order_id}`` answers the run's public view: its status, the
  step it is on, its timeline (`sagakit.run_view`), the card masked.
- ``/sagas/`` is the operators' dashboard (`sagakit.dashboard.create_app`).

Serve it from this folder, with the store in ``SAGAKIT_DB`` (see README.md)::

    uvicorn app:app --port 8000
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException
from fastapi.concurrency import run_in_threadpool
from order_saga import Order, order

from sagakit import Engine, InvalidRunId, RunIdConflict, RunNotFound, run_view
from sagakit.dashboard import auth_from_environment, create_app

DB = os.environ.get("SAGAKIT_DB")
if not DB:
    raise SystemExit("set SAGAKIT_DB to the store's URL, e.g. postgresql://app@localhost/orders")

# One engine for the process. Its calls block, so the routes below are plain
# `def`s, which FastAPI runs on its thread pool rather than its event loop.
engine = Engine(DB)
engine.register(order)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # A mounted application's lifespan is not run: the engine it was given is
    # this application's to close.
    yield
    await run_in_threadpool(engine.close)


app = FastAPI(title="orders", lifespan=lifespan)
app.mount(
    "/sagas",
    create_app(engine=engine, sagas=[order], auth=auth_from_environment()),
)


@app.post("/orders", status_code=202)
def place_order(body: Order) -> dict[str, Any]:
    """Record the order's saga and return at once; a worker drives it."""
    try:
        run = engine.start(order, body, run_id=body.order_id)
    except InvalidRunId as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from None
    except RunIdConflict as exc:  # the same id with another input
        raise HTTPException(status_code=409, detail=str(exc)) from None
    return {"run_id": run.id, "status": run.status.value, "created": run.created}


@app.get("/orders/{order_id}")
def order_progress(order_id: str) -> dict[str, Any]:
    """The run's public view: status, current step, pending requests, timeline."""
    try:
        return run_view(engine, order_id).to_json()
    except RunNotFound:
        raise HTTPException(status_code=404, detail=f"no order {order_id!r}") from None
