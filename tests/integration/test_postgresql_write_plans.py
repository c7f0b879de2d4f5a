"""The plans PostgreSQL prepares for claims and batched commits find runs by id.

A worker's statements are prepared once and then run with a generic plan
(psycopg prepares a statement run five times). On a runs table of a few
thousand rows the planner chose, for the claim, a hash join over a scan of
the whole table, and for a batch's fence a merge join reading every run
any worker holds (the partial index ``runs_owner``): work that grows with
the table, or with the runs in flight, for every claim and every batch.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from sagakit.store.sql import load_queries
from sagakit.store.testing import T0

from .helpers import migrated_schema

psycopg = pytest.importorskip("psycopg")

RUNS = 4000


def generic_plan(conn: Any, query: str, *, verbose: bool = False) -> str:
    """The generic plan of ``query``, its %(name)s / %(name)b placeholders made $n.

    With ``verbose``, each node's output columns too (a whole row copied shows as ``alias.*``).
    """
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        if match["name"] not in names:
            names.append(match["name"])
        return f"${names.index(match['name']) + 1}"

    text = re.sub(r"%\((?P<name>\w+)\)[sb]", number, query)
    conn.execute("SET plan_cache_mode = force_generic_plan")
    conn.execute(f"PREPARE planned AS {text}".encode())
    try:
        nulls = ", ".join("NULL" for _ in names)
        explain = "EXPLAIN (VERBOSE)" if verbose else "EXPLAIN"
        rows = conn.execute(f"{explain} EXECUTE planned({nulls})".encode()).fetchall()
    finally:
        conn.execute("DEALLOCATE planned")
    return "\n".join(row[0] for row in rows)


@pytest.fixture
def filled(postgres_url: str) -> Any:
    """A connection and the schema of a store holding RUNS runs, a tenth of them held."""
    conninfo, schema = migrated_schema(postgres_url)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(
            f"INSERT INTO {schema}.runs (id, saga, version, status, state, created_at, "
            f"updated_at) SELECT 'r' || i, 'order', '1', 'pending', '{{}}', {T0} + i, "
            f"{T0} + i FROM generate_series(0, {RUNS - 1}) AS i".encode()
        )
        # Analyzed as a backlog is (autovacuum's analyze after the inserts),
        # then a tenth claimed by four workers, as a busy store is.
        conn.execute(f"ANALYZE {schema}.runs".encode())
        conn.execute(
            f"UPDATE {schema}.runs SET status = 'running', owner = 'w' || (created_at::int8 % 4), "
            f"lease_epoch = 1, lease_until = {T0} + 10000 "
            f"WHERE created_at::int8 % 10 = 0".encode()
        )
        yield conn, schema


def _statement(name: str, schema: str) -> str:
    return load_queries("postgresql")[name].replace("{schema}", schema).replace("{channel}", "c")


def test_a_claim_finds_the_due_runs_by_their_ids(filled: Any) -> None:
    conn, schema = filled
    plan = generic_plan(conn, _statement("claim_due", schema))
    assert "Seq Scan on runs" not in plan, plan
    assert any("runs_pkey" in line for line in plan.splitlines()), plan


def test_a_batch_fences_its_runs_by_their_ids(filled: Any) -> None:
    conn, schema = filled
    plan = generic_plan(conn, _statement("commit_runs", schema))
    fence = plan.split("CTE fenced", 1)[1].split("CTE read", 1)[0]
    assert "runs_owner" not in fence, fence
    assert "Seq Scan on runs" not in fence, fence
    assert "runs_pkey" in fence, fence


def test_a_batch_copies_no_whole_rows_of_its_commits(filled: Any) -> None:
    # A lock (FOR UPDATE) or an UPDATE joined with other relations copies
    # each of their rows whole ("alias.*"), for the recheck of a row that
    # changed while it waited. The update joined the batch (u, fifteen
    # columns) with the fenced runs, which the generic plan guesses one row
    # long: in a four-worker drain it nested-looped, reading and copying the
    # whole batch again for each fenced run (2,500 copies for 50 commits, an
    # eighth of the server's CPU). The fence now joins only the four columns
    # it reads, the update finds the fenced runs by an array of their ids
    # and hash-joins the batch (whose size the plan guesses without
    # statistics), and the deletions of the runs updated take their ids as
    # an array too.
    conn, schema = filled
    plan = generic_plan(conn, _statement("commit_runs", schema), verbose=True)
    fence = plan.split("CTE fenced", 1)[1].split("CTE read", 1)[0]
    assert not re.search(r"\bu(_\d+)?\.\*", fence), fence
    update = plan.split("CTE updated", 1)[1].split("CTE cleared", 1)[0]
    assert not re.search(r"\b(fenced|c)(_\d+)?\.\*", update), update
    assert "Nested Loop" not in update, update
    after = plan.split("CTE cleared", 1)[1]
    assert not re.search(r"\bupdated(_\d+)?\.\*", after), after
