"""The store contract suite, for any backend to run: what a `Store` must do.

Every store sagakit ships (memory, SQLite, PostgreSQL) passes these very
tests, and so can a store written elsewhere: subclass `StoreContract` in a
test module, and override its ``make_store`` fixture to return a function
that makes a new store of your backend, not yet opened, on fresh, empty
storage for the test under way. Two calls within one test must give two
stores on the same storage, as two processes would open it::

    import functools

    import pytest

    from sagakit.store.testing import StoreContract, StoreFactory


    class TestMyStore(StoreContract):
        @pytest.fixture
        def make_store(self, tmp_path) -> StoreFactory:
            return functools.partial(MyStore, f"mystore:///{tmp_path}/runs")

A store with no database to share sets ``local_transactions = False`` on the
class, and the local-transaction tests are skipped.

This module needs pytest, which sagakit itself does not depend on: it is
imported by test code only, where pytest is installed (it is in sagakit's
``dev`` extra). For pytest to explain a failed ``assert`` here, call
``pytest.register_assert_rewrite("sagakit.store.testing")`` in a
``conftest.py`` before the test modules import it.

The helpers the tests build their records with (`record`, `change`,
`steps`, `new_run`, ...) are exported too, for a backend's own tests.
"""

from __future__ import annotations

import pytest

from sagakit.store.testing.bigstate import BigStateContract
from sagakit.store.testing.local import LocalTransactionContract
from sagakit.store.testing.mail import MailContract
from sagakit.store.testing.paging import PagingContract
from sagakit.store.testing.purge import PurgeContract
from sagakit.store.testing.reservations import ReservationContract
from sagakit.store.testing.rewrite import RewriteContract
from sagakit.store.testing.runs import RunContract
from sagakit.store.testing.support import (
    FREE,
    T0,
    A,
    B,
    StoreFactory,
    change,
    claim_all,
    contract,
    due_ids,
    mail_count,
    new_run,
    opened,
    record,
    seqs,
    steps,
)
from sagakit.store.testing.takeover import TakeoverContract

__all__ = [
    "FREE",
    "T0",
    "A",
    "B",
    "BigStateContract",
    "LocalTransactionContract",
    "MailContract",
    "PagingContract",
    "PurgeContract",
    "ReservationContract",
    "RewriteContract",
    "RunContract",
    "StoreContract",
    "StoreFactory",
    "TakeoverContract",
    "change",
    "claim_all",
    "contract",
    "due_ids",
    "mail_count",
    "new_run",
    "opened",
    "record",
    "seqs",
    "steps",
]


class StoreContract(
    RunContract,
    PagingContract,
    MailContract,
    ReservationContract,
    LocalTransactionContract,
    RewriteContract,
    PurgeContract,
    TakeoverContract,
    BigStateContract,
):
    """The whole store contract; a backend's test class subclasses it.

    Each test opens the stores it needs from ``make_store`` and closes them;
    the storage behind them is the fixture's to make and clean up.
    """

    @pytest.fixture
    def make_store(self) -> StoreFactory:
        """Return a function making a new, unopened store on this test's fresh storage.

        Override it in the subclass; every call within one test must name the
        same storage.
        """
        raise NotImplementedError(f"{type(self).__name__} must override the make_store fixture")
