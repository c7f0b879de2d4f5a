"""The memory store's own behaviour: private stores, and no local transactions.

The shared contract runs on the memory store in ``tests/contract``.
"""

from __future__ import annotations

import asyncio

import pytest

from sagakit.errors import StoreError
from sagakit.store.testing import new_run, opened


def test_private_memory_stores_share_nothing() -> None:
    async def body() -> None:
        async with opened("memory://") as a, opened("memory://") as b:
            await new_run(a, "r1")
            assert await b.get_run("r1") is None

    asyncio.run(body())


def test_the_memory_store_has_no_local_transactions() -> None:
    async def body() -> None:
        async with opened("memory://") as store:
            with pytest.raises(StoreError, match=r"memory://.*cannot run local transactions"):
                store.local_transaction()

    asyncio.run(body())
