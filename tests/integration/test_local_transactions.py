"""Local transactions: a step's writes to the store's own database commit
together with the step's success record (SQLite and PostgreSQL), and the
memory store refuses such a step with a clear error.

Crashes inside and right after a local step are in
``tests/acceptance/test_local_transaction_crash.py``.
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sagakit import Engine, EventKind, PermanentError, RetryPolicy, RunStatus, Saga, StepContext
from sagakit.store.postgresql import parse_url

State = dict[str, Any]


def ph(conn: Any) -> str:
    """The parameter placeholder of a DB-API connection: sqlite3 ``?``, psycopg ``%s``."""
    return "?" if isinstance(conn, sqlite3.Connection) else "%s"


@dataclass
class LocalDb:
    """A store URL, and a user table ``orgs_<hex>`` in the same database."""

    kind: str
    url: str
    table: str
    connect: Callable[[], Any]
    """A new autocommit connection of the test's own (not the step's)."""

    def rows(self) -> list[tuple[Any, ...]]:
        conn = self.connect()
        try:
            return [tuple(r) for r in conn.execute(f"SELECT name, run_id FROM {self.table}")]
        finally:
            conn.close()


def make_local_db(kind: str, store_url: str) -> LocalDb:
    """Create the ``orgs`` table where a local-transaction step on ``store_url`` sees it."""
    table = f"orgs_{uuid.uuid4().hex[:10]}"
    if kind == "sqlite":
        path = store_url.removeprefix("sqlite:///")

        def connect() -> Any:
            return sqlite3.connect(path, timeout=10, isolation_level=None)

    else:
        import psycopg

        conninfo = parse_url(store_url)[0]  # without ?schema=: the default search_path

        def connect() -> Any:
            return psycopg.connect(conninfo, autocommit=True)

    conn = connect()
    try:
        conn.execute(f"CREATE TABLE {table} (name TEXT NOT NULL, run_id TEXT NOT NULL)")
    finally:
        conn.close()
    return LocalDb(kind, store_url, table, connect)


def drop(db: LocalDb) -> None:
    conn = db.connect()
    try:
        conn.execute(f"DROP TABLE IF EXISTS {db.table}")
    finally:
        conn.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LocalDb]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'runs.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    local = make_local_db(request.param, url)
    yield local
    drop(local)  # PostgreSQL: the table is in the shared public schema


def insert_org(ctx: StepContext, table: str, name: str) -> None:
    conn = ctx.connection
    p = ph(conn)
    conn.execute(f"INSERT INTO {table} (name, run_id) VALUES ({p}, {p})", (name, ctx.run_id))


def kinds(engine: Engine, run_id: str) -> list[str]:
    return [
        f"{e.kind}:{e.step}:{e.attempt}" if e.step else str(e.kind) for e in engine.history(run_id)
    ]


def test_a_local_step_commits_its_row_with_its_success_record(db: LocalDb) -> None:
    seen: dict[str, Any] = {}
    saga: Saga[Any] = Saga("signup")

    @saga.step(local_transaction=True)
    def create_org(state: State, ctx: StepContext) -> State:
        seen["connection"] = type(ctx.connection).__module__
        insert_org(ctx, db.table, state["org"])
        # Not visible outside the transaction until the step's record commits.
        seen["outside"] = db.rows()
        return {"created": True}

    @saga.step
    def welcome(state: State, ctx: StepContext) -> None:
        seen["welcome"] = ctx.connection  # an ordinary step has no connection
        seen["rows_after"] = db.rows()

    with Engine(db.url, lease_seconds=5.0) as engine:
        run = engine.run(saga, {"org": "acme"}, run_id="ok")
        assert run.status is RunStatus.COMPLETED
        assert run.state == {"org": "acme", "created": True}
        assert kinds(engine, "ok") == [
            "run_started",
            "step_started:create_org:1",
            "step_succeeded:create_org:1",
            "step_started:welcome:1",
            "step_succeeded:welcome:1",
            "run_finished",
        ]
    assert db.rows() == [("acme", "ok")]
    assert seen["connection"] == ("sqlite3" if db.kind == "sqlite" else "psycopg")
    assert seen["outside"] == []
    assert seen["welcome"] is None
    assert seen["rows_after"] == [("acme", "ok")]


def test_a_local_step_that_raises_leaves_no_row_and_the_run_rolls_back(db: LocalDb) -> None:
    undone: list[str] = []
    saga: Saga[Any] = Saga("signup-fails")

    @saga.step
    def prepare(state: State, ctx: StepContext) -> None:
        return None

    @prepare.compensate
    def unprepare(state: State, ctx: StepContext) -> None:
        undone.append("prepare")

    @saga.step(local_transaction=True)
    def create_org(state: State, ctx: StepContext) -> None:
        insert_org(ctx, db.table, "acme")
        raise PermanentError("the org name is taken")

    with Engine(db.url, lease_seconds=5.0) as engine:
        run = engine.run(saga, {}, run_id="bad")
        assert run.status is RunStatus.ROLLED_BACK
        assert run.error is not None
        assert run.error.message == "the org name is taken"
        assert "step_failed:create_org:1" in kinds(engine, "bad")
    assert undone == ["prepare"]
    assert db.rows() == []


def test_a_later_failure_runs_the_compensation_outside_any_local_transaction(
    db: LocalDb,
) -> None:
    seen: list[Any] = []
    saga: Saga[Any] = Saga("signup-undone")

    @saga.step(local_transaction=True)
    def create_org(state: State, ctx: StepContext) -> None:
        insert_org(ctx, db.table, "acme")

    @create_org.compensate
    def delete_org(state: State, ctx: StepContext) -> None:
        seen.append(ctx.connection)  # compensations get no local transaction
        seen.append(db.rows())  # the row the step committed is there to undo
        conn = db.connect()  # so the compensation brings its own connection
        try:
            p = ph(conn)
            conn.execute(f"DELETE FROM {db.table} WHERE run_id = {p}", (ctx.run_id,))
        finally:
            conn.close()

    @saga.step
    def charge(state: State, ctx: StepContext) -> None:
        raise PermanentError("card declined")

    with Engine(db.url, lease_seconds=5.0) as engine:
        run = engine.run(saga, {}, run_id="undo")
        assert run.status is RunStatus.ROLLED_BACK
        assert run.error is not None
        assert run.error.message == "card declined"
        events = kinds(engine, "undo")
        assert events.index("step_succeeded:create_org:1") < events.index("step_failed:charge:1")
        assert "compensation_succeeded:create_org:1" in events
    assert seen == [None, [("acme", "undo")]]
    assert db.rows() == []


def test_a_retried_local_step_leaves_exactly_one_row(db: LocalDb) -> None:
    attempts: list[int] = []
    saga: Saga[Any] = Saga("signup-retried")

    @saga.step(
        local_transaction=True,
        retry=RetryPolicy(max_attempts=3, initial_delay=0.0, jitter=0.0),
    )
    def create_org(state: State, ctx: StepContext) -> State:
        attempts.append(ctx.attempt)
        insert_org(ctx, db.table, "acme")
        if ctx.attempt == 1:
            raise ConnectionError("the mail server hung up after the insert")
        return {"attempt": ctx.attempt}

    with Engine(db.url, lease_seconds=5.0) as engine:
        run = engine.run(saga, {}, run_id="retry")
        assert run.status is RunStatus.COMPLETED
        assert run.state == {"attempt": 2}
        events = kinds(engine, "retry")
        assert events[1:5] == [
            "step_started:create_org:1",
            "step_failed:create_org:1",
            "step_started:create_org:2",
            "step_succeeded:create_org:2",
        ]
        failed = next(e for e in engine.history("retry") if e.kind is EventKind.STEP_FAILED)
        assert failed.error is not None
        assert "hung up" in failed.error.message
    assert attempts == [1, 2]
    assert db.rows() == [("acme", "retry")]


def test_a_local_step_may_not_reserve_and_says_so(db: LocalDb) -> None:
    saga: Saga[Any] = Saga("signup-reserving")

    # A misuse: it fails the same at every attempt, so it is tried once.
    @saga.step(local_transaction=True, retry=RetryPolicy(max_attempts=1))
    def create_org(state: State, ctx: StepContext) -> None:
        insert_org(ctx, db.table, "acme")
        ctx.reserve("org:acme", ttl=30)  # on SQLite this would wait for its own lock

    with Engine(db.url, lease_seconds=5.0) as engine:
        started = time.monotonic()
        run = engine.run(saga, {}, run_id="reserving")
        assert time.monotonic() - started < 3  # refused at once, not after a lock timeout
        assert run.status is RunStatus.FAILED
        assert run.error is not None
        assert "inside a local-transaction step: reserve in the step before it" in (
            run.error.message
        )
    assert db.rows() == []  # the step's insert was rolled back with it


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (
            "memory://",
            "needs a local transaction, which the store memory:// cannot run; "
            "use a SQLite or PostgreSQL store",
        ),
        (
            "sqlite:///:memory:",
            "is an in-memory SQLite database, which another connection cannot share",
        ),
    ],
)
def test_a_store_without_a_shareable_database_fails_the_step_clearly(
    url: str, message: str
) -> None:
    called: list[str] = []
    undone: list[str] = []
    saga: Saga[Any] = Saga("signup-nowhere")

    @saga.step
    def prepare(state: State, ctx: StepContext) -> None:
        return None

    @prepare.compensate
    def unprepare(state: State, ctx: StepContext) -> None:
        undone.append("prepare")

    # Tried once: the refusal is the same at every attempt (an in-memory SQLite
    # store's StoreError would otherwise be retried, as any StoreError is).
    @saga.step(local_transaction=True, retry=RetryPolicy(max_attempts=1))
    def create_org(state: State, ctx: StepContext) -> None:
        called.append(ctx.run_id)

    with Engine(url, lease_seconds=5.0) as engine:
        run = engine.run(saga, {}, run_id="nowhere")
        assert run.status is RunStatus.ROLLED_BACK
        assert run.error is not None
        assert run.error.type in ("sagakit.errors.StoreError", "sagakit.errors.PermanentError")
        assert message in run.error.message
        failed = [e for e in engine.history("nowhere") if e.kind is EventKind.STEP_FAILED]
        assert [(e.step, e.attempt) for e in failed] == [("create_org", 1)]
    assert called == []  # the action never ran
    assert undone == ["prepare"]


def test_many_local_steps_in_a_row_reuse_pooled_connections(db: LocalDb) -> None:
    # Each return to the pool resets the connection; statements psycopg had
    # prepared (after five uses) must not be assumed to survive that.
    saga: Saga[State] = Saga(f"many-{db.kind}")

    @saga.step(local_transaction=True)
    def add_org(state: State, ctx: StepContext) -> None:
        insert_org(ctx, db.table, ctx.run_id)

    with Engine(db.url) as engine:
        runs = [engine.run(saga, {}, run_id=f"org-{n}") for n in range(15)]
    assert [run.status for run in runs] == [RunStatus.COMPLETED] * 15
    assert sorted(name for name, _ in db.rows()) == sorted(f"org-{n}" for n in range(15))
