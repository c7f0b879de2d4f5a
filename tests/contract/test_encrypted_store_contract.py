"""The store contract (`sagakit.store.testing.StoreContract`) run against
`EncryptedStore` over each store sagakit ships: encryption changes nothing a
store promises, and what it stores of the user's data is encrypted."""

from __future__ import annotations

import asyncio
import functools
import uuid
from pathlib import Path

import pytest

from sagakit.store import Store, memory, open_store
from sagakit.store.encrypted import EncryptedStore, generate_key, is_envelope
from sagakit.store.sqlite import SQLiteStore
from sagakit.store.testing import StoreContract, StoreFactory, new_run, opened

KEYS = [generate_key(), generate_key()]


def encrypted(url: str) -> Store:
    return EncryptedStore(open_store(url), KEYS)


class TestEncryptedMemoryStore(StoreContract):
    local_transactions = False

    @pytest.fixture
    def make_store(self) -> StoreFactory:
        return functools.partial(encrypted, f"memory://test-{uuid.uuid4().hex}")


class TestEncryptedMemoryStoreKeyed(StoreContract):
    """Over a memory store that keeps every dict state key by key (`memory._Keyed`)."""

    local_transactions = False

    @pytest.fixture
    def make_store(self, monkeypatch: pytest.MonkeyPatch) -> StoreFactory:
        monkeypatch.setattr(memory, "_KEYED", 1)
        return functools.partial(encrypted, f"memory://test-{uuid.uuid4().hex}")


class TestEncryptedSQLiteStore(StoreContract):
    @pytest.fixture
    def make_store(self, tmp_path: Path) -> StoreFactory:
        return functools.partial(encrypted, f"sqlite:///{tmp_path / 'runs.db'}")

    def flushes(self, store: Store) -> int | None:
        assert isinstance(store, EncryptedStore)
        assert isinstance(store.inner, SQLiteStore)
        return store.inner.flushes


class TestEncryptedPostgresStore(StoreContract):
    @pytest.fixture
    def make_store(self, postgres_url: str) -> StoreFactory:
        # Times of the contract's own: see TestPostgresStore.
        return functools.partial(encrypted, f"{postgres_url}&lease_clock=local")


def test_what_the_contract_writes_is_stored_encrypted(tmp_path: Path) -> None:
    """The inner store holds envelopes where the wrapper was handed plain state."""
    url = f"sqlite:///{tmp_path / 'runs.db'}"

    async def body() -> None:
        async with opened(encrypted(url)) as store:
            await new_run(store, "r1", state={"card": "4111"})
        async with opened(url) as raw:
            run = await raw.get_run("r1")
            assert run is not None
            assert is_envelope(run.state)
            (started,) = await raw.journal("r1")
            assert is_envelope(started.data["state"])

    asyncio.run(body())
