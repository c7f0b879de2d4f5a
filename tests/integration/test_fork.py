"""An engine or a store made before ``os.fork``, in the child (a preloading server, say).

The child has none of the parent's threads (the sync engine's loop, SQLite's
connection thread) and must not use its database connections: each call
refuses with an error that says why, closing returns at once and touches
nothing of the parent's, and the child's own engine or store works. The
parent carries on as if nothing happened.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

from sagakit import Engine, RunStatus, Saga, SagaError
from sagakit.errors import StoreError
from sagakit.store import open_store
from sagakit.store.testing import record

from .helpers import in_child

saga: Saga[Any] = Saga("forked")


@saga.step
def reserve(state: dict[str, Any], ctx: Any) -> dict[str, Any]:
    return {"reserved": True}


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Storage the parent and the child share (a memory store is each process's own)."""
    if request.param == "postgresql":
        found: str = request.getfixturevalue("postgres_url")
        return found
    return f"sqlite:///{tmp_path / 'runs.db'}"


def test_a_sync_engine_made_before_a_fork_refuses_work_in_the_child(store_url: str) -> None:
    engine = Engine(store_url)
    try:
        engine.register(saga)
        assert engine.run(saga, {}, run_id="r1").status is RunStatus.COMPLETED

        def child() -> str:
            try:
                engine.get("r1")
            except SagaError as exc:
                refused = str(exc)
            else:
                return "the parent's engine answered in the child"
            engine.close()  # returns at once, touching nothing of the parent's
            with Engine(store_url) as own:
                own.register(saga)
                status = own.run(saga, {}, run_id="r2").status
            return f"{status.value}|{refused}"

        status, refused = in_child(child).split("|", 1)
        assert status == "completed", refused
        assert f"made by process {os.getpid()}, which forked this one" in refused
        # The parent's engine, its loop and its connections are as they were.
        assert engine.get("r2").status is RunStatus.COMPLETED
        assert engine.run(saga, {}, run_id="r3").status is RunStatus.COMPLETED
    finally:
        engine.close()


def test_a_store_opened_before_a_fork_refuses_work_in_the_child(store_url: str) -> None:
    url = store_url

    async def parent() -> None:
        store = open_store(url)
        await store.open()
        try:
            await store.create_run(record("r1"), [])

            def child() -> str:
                async def body() -> str:
                    try:
                        await store.get_run("r1")
                    except StoreError as exc:
                        refused = str(exc)
                    else:
                        return "the parent's connection answered in the child"
                    await store.close()  # returns at once: no thread to wait for
                    own = open_store(url)
                    await own.open()
                    try:
                        await own.create_run(record("r2"), [])
                        found = await own.get_run("r1")
                    finally:
                        await own.close()
                    return f"{found is not None}|{refused}"

                return asyncio.run(body())

            found, refused = in_child(child).split("|", 1)
            assert found == "True", refused
            assert f"opened by process {os.getpid()}, which forked this one" in refused
            assert await store.get_run("r2") is not None  # the parent's store works on
            await store.create_run(record("r3"), [])
        finally:
            await store.close()

    asyncio.run(parent())


@pytest.mark.parametrize("stage", ["before", "after"])
def test_a_store_forked_before_it_was_opened_or_after_it_closed_opens_in_the_child(
    tmp_path: Path, stage: str
) -> None:
    # Nothing of the parent's is open: the child's store is its own.
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    store = open_store(url)
    if stage == "after":
        asyncio.run(store.open())
        asyncio.run(store.close())

    def child() -> str:
        async def body() -> str:
            await store.open()
            try:
                await store.create_run(record("r1"), [])
                return str(await store.get_run("r1") is not None)
            finally:
                await store.close()

        return asyncio.run(body())

    assert in_child(child) == "True"
