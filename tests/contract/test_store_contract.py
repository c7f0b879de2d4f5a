"""The store contract (`sagakit.store.testing.StoreContract`), run against
every store sagakit ships, each test on fresh storage.

PostgreSQL's storage is a schema of its own on the test server (see
``tests/conftest.py``): its tests are skipped where no server answers, and
fail under ``CI=true``. What only one backend has is tested in
``tests/integration/test_{memory,sqlite,postgresql}_store.py``.
"""

from __future__ import annotations

import functools
import uuid
from pathlib import Path

import pytest

from sagakit.store import Store, memory, open_store
from sagakit.store.postgresql import writes as postgresql_writes
from sagakit.store.sqlite import SQLiteStore
from sagakit.store.sqlite import store as sqlite_store
from sagakit.store.sqlite import writes as sqlite_writes
from sagakit.store.testing import StoreContract, StoreFactory


class TestMemoryStore(StoreContract):
    local_transactions = False

    @pytest.fixture
    def make_store(self) -> StoreFactory:
        # A named memory store: every store of that name in this process shares it.
        return functools.partial(open_store, f"memory://test-{uuid.uuid4().hex}")


class TestMemoryStoreKept(StoreContract):
    """The contract again, every value of 64 characters or more of JSON kept as data.

    The memory store keeps a big value as a copy of its dicts and lists that
    shares its strings and numbers (`sagakit.store.memory._Kept`), not as
    its JSON text: here nearly every state and event's data is kept so.
    """

    local_transactions = False

    @pytest.fixture
    def make_store(self, monkeypatch: pytest.MonkeyPatch) -> StoreFactory:
        monkeypatch.setattr(memory, "_BIG", 64)
        return functools.partial(open_store, f"memory://test-{uuid.uuid4().hex}")


class TestMemoryStoreKeyed(StoreContract):
    """The contract again, every dict state kept key by key (`sagakit.store.memory._Keyed`).

    The memory store keeps a big dict state as its keys' texts and encodes,
    at a commit under the same lease, only the keys whose value changed:
    here every state but ``{}`` is kept so, and big values as data too, and
    the parts of keys set are put in place once there are more than two.
    """

    local_transactions = False

    @pytest.fixture
    def make_store(self, monkeypatch: pytest.MonkeyPatch) -> StoreFactory:
        monkeypatch.setattr(memory, "_KEYED", 1)
        monkeypatch.setattr(memory, "_OVER", 2)
        monkeypatch.setattr(memory, "_BIG", 64)
        return functools.partial(open_store, f"memory://test-{uuid.uuid4().hex}")


class TestSQLiteStore(StoreContract):
    @pytest.fixture
    def make_store(self, tmp_path: Path) -> StoreFactory:
        return functools.partial(open_store, f"sqlite:///{tmp_path / 'runs.db'}")

    def flushes(self, store: Store) -> int | None:
        assert isinstance(store, SQLiteStore)
        return store.flushes


class TestSQLiteStoreBigWrites(StoreContract):
    """The contract again, every write of a state of 2 KB or more split.

    A big write binds its state, its change and its events' big data as
    parameters of their own (`sagakit.store.sqlite.writes.Big`), in place of
    placeholders in its array: here every state the contract writes but the
    smallest is big, and a part of 1,000 characters or more is written in
    pieces (`sagakit.store.sqlite.writes._fill`).
    """

    @pytest.fixture
    def make_store(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> StoreFactory:
        monkeypatch.setattr(sqlite_writes, "BIG", 2048)
        monkeypatch.setattr(sqlite_writes, "_BIG_PART", 256)
        monkeypatch.setattr(sqlite_store, "BIG", 2048)
        monkeypatch.setattr(sqlite_writes, "_PIECE", 1000)
        return functools.partial(open_store, f"sqlite:///{tmp_path / 'runs.db'}")

    def flushes(self, store: Store) -> int | None:
        assert isinstance(store, SQLiteStore)
        return store.flushes


class TestPostgresStore(StoreContract):
    @pytest.fixture
    def make_store(self, postgres_url: str) -> StoreFactory:
        # The contract passes times of its own (1970): leases on the callers'
        # clock. The database's clock, the default, is tested in
        # tests/integration/test_lease_clock.py.
        return functools.partial(open_store, f"{postgres_url}&lease_clock=local")


class TestPostgresStoreBigWrites(StoreContract):
    """The contract again, every state, change and event data of 2 KB or more sent on its own.

    A big part is not sent in the arrays a batch unnests but by a statement
    of its own, in the write's transaction
    (`sagakit.store.postgresql.writes.BIG`): here every state the contract
    writes but the smallest is big.
    """

    @pytest.fixture
    def make_store(self, postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> StoreFactory:
        monkeypatch.setattr(postgresql_writes, "BIG", 2048)
        return functools.partial(open_store, f"{postgres_url}&lease_clock=local")
