"""The warehouse's own database: stock levels, orders and a ledger of stock moves.

The three tables live in the database of sagakit's store (the SQLite file, or
on PostgreSQL the schema the store's URL names), so that a step declared with
``local_transaction=True`` changes them in the very transaction that records
the step's success: a stock decrement then happens exactly once, however
often the process crashes.

Every change of a stock level is *relative* (``qty = qty - n``,
``qty = qty + n``) and leaves one row in ``stock_moves``, keyed by an
idempotency key, with the level it produced. Relative changes commute, so
any number of orders, deliveries and returns may interleave and the level
still equals the opening count plus the sum of the moves. The ledger makes
that checkable, and its unique key makes a retried return add nothing twice.
"""

from __future__ import annotations

import re
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sagakit.store.sqlite import parse_url as parse_sqlite_url
from warehouse.models import Order

Connection = Any
"""A DB-API connection: ``sqlite3.Connection`` or ``psycopg.Connection``."""

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")

# {p} is the schema prefix; {seq} and {real} differ between the two databases.
_TABLES = (
    """CREATE TABLE IF NOT EXISTS {p}stock (
        sku TEXT PRIMARY KEY,
        qty INTEGER NOT NULL CHECK (qty >= 0)
    )""",
    """CREATE TABLE IF NOT EXISTS {p}orders (
        id TEXT PRIMARY KEY,
        sku TEXT NOT NULL,
        quantity INTEGER NOT NULL,
        customer TEXT NOT NULL,
        status TEXT NOT NULL,
        note TEXT
    )""",
    """CREATE TABLE IF NOT EXISTS {p}stock_moves (
        seq {seq},
        key TEXT NOT NULL UNIQUE,
        sku TEXT NOT NULL,
        delta INTEGER NOT NULL,
        qty_after INTEGER NOT NULL,
        order_id TEXT,
        at {real} NOT NULL
    )""",
)
_DIALECT = {
    "sqlite": {"seq": "INTEGER PRIMARY KEY AUTOINCREMENT", "real": "REAL"},
    "postgresql": {
        "seq": "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
        "real": "DOUBLE PRECISION",
    },
}


@dataclass(frozen=True, slots=True)
class Move:
    """One change of a stock level, as the ledger keeps it."""

    seq: int
    key: str
    sku: str
    delta: int
    qty_after: int
    order_id: str | None
    at: float


@dataclass(frozen=True, slots=True)
class OrderRow:
    """An order as the shop's own table shows it to the customer."""

    id: str
    sku: str
    quantity: int
    customer: str
    status: str
    """``placed``, ``confirmed``, ``rejected`` (undone by a failure) or ``cancelled``."""
    note: str | None


class Warehouse:
    """The shop's tables, in the database of the sagakit store at ``url``.

    Args:
        url: The store's URL: ``sqlite:///path.db`` or
            ``postgresql://...?schema=NAME`` (the tables go into that schema,
            beside sagakit's, default ``sagakit``; dropping it drops the demo).
    """

    def __init__(self, url: str) -> None:
        self._lock = threading.Lock()
        self._pool: Any = None
        if url.startswith("sqlite:"):
            self.dialect = "sqlite"
            self._path, _ = parse_sqlite_url(url)
            self._prefix = ""
        elif url.startswith(("postgresql:", "postgres:")):
            # Imported here, not at load time: the PostgreSQL store needs
            # psycopg, which a SQLite-only install does not have.
            from sagakit.store.postgresql import parse_url as parse_postgresql_url

            self.dialect = "postgresql"
            self._conninfo, options = parse_postgresql_url(url)
            schema = options.get("schema", "sagakit")
            if not _IDENTIFIER.match(schema):
                raise ValueError(f"schema {schema!r} is not a plain SQL identifier")
            self._prefix = f"{schema}."
        else:
            raise ValueError(f"the warehouse needs a SQLite or PostgreSQL URL, got {url!r}")

    # -- plumbing ---------------------------------------------------------------------

    def _sql(self, query: str) -> str:
        """``query`` for this database: tables prefixed, and psycopg's ``%s`` for ``?``."""
        query = query.replace("{p}", self._prefix)
        return query if self.dialect == "sqlite" else query.replace("?", "%s")

    def _execute(self, conn: Connection, query: str, params: Sequence[Any] = ()) -> Any:
        return conn.execute(self._sql(query), tuple(params))

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        """A connection in autocommit mode, for the length of the block.

        SQLite connections are cheap: each block opens its own. On
        PostgreSQL a connection costs a server process, and orders waiting
        for a hold look at the shelf several times a second, so they come
        from a small pool (closed by `close`).
        """
        if self.dialect == "sqlite":
            conn = sqlite3.connect(self._path, timeout=30.0, isolation_level=None)
            try:
                yield conn
            finally:
                conn.close()
            return
        with self._postgresql_pool().connection() as conn:
            yield conn

    def _postgresql_pool(self) -> Any:
        with self._lock:
            if self._pool is None:
                from psycopg_pool import ConnectionPool

                self._pool = ConnectionPool(
                    self._conninfo,
                    min_size=1,
                    max_size=8,
                    kwargs={"autocommit": True},
                    name="warehouse",
                    open=True,
                )
            return self._pool

    def close(self) -> None:
        """Close the PostgreSQL connections (SQLite keeps none open)."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()

    def __enter__(self) -> Warehouse:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A connection inside a transaction that commits when the block ends
        (and rolls back if it raises). Compensations use it: unlike actions,
        they do not run in sagakit's local transaction."""
        with self.connection() as conn:
            if self.dialect != "sqlite":
                with conn.transaction():
                    yield conn
                return
            # IMMEDIATE takes SQLite's write lock at once, so a read-then-write
            # (the ledger check in `put_back`) cannot be overtaken by another writer.
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def _rows(self, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self.connection() as conn:
            return [tuple(row) for row in self._execute(conn, query, params).fetchall()]

    # -- setting up and looking ---------------------------------------------------------

    def create_tables(self) -> None:
        """Create the three tables if they do not exist yet."""
        with self.transaction() as conn:
            for ddl in _TABLES:
                conn.execute(ddl.format(p=self._prefix, **_DIALECT[self.dialect]))

    def count_stock(self, sku: str, qty: int) -> None:
        """Record a stock count: the shelf holds exactly ``qty`` units now.

        The one absolute write, and an operator's, not a saga's: it is only
        right when nothing else moves the stock at the same time.
        """
        with self.transaction() as conn:
            self._execute(conn, "DELETE FROM {p}stock WHERE sku = ?", (sku,))
            self._execute(conn, "INSERT INTO {p}stock (sku, qty) VALUES (?, ?)", (sku, qty))

    def level(self, sku: str) -> int:
        """The units of ``sku`` on the shelf now.

        Raises:
            KeyError: the warehouse does not stock ``sku``.
        """
        rows = self._rows("SELECT qty FROM {p}stock WHERE sku = ?", (sku,))
        if not rows:
            raise KeyError(f"the warehouse does not stock {sku!r}")
        return int(rows[0][0])

    def moves(self, sku: str) -> list[Move]:
        """Every change of ``sku``'s level, in the order they were committed."""
        rows = self._rows(
            "SELECT seq, key, sku, delta, qty_after, order_id, at FROM {p}stock_moves"
            " WHERE sku = ? ORDER BY seq",
            (sku,),
        )
        return [Move(*row) for row in rows]

    def orders(self, sku: str) -> dict[str, OrderRow]:
        """The orders for ``sku``, by id."""
        rows = self._rows(
            "SELECT id, sku, quantity, customer, status, note FROM {p}orders WHERE sku = ?",
            (sku,),
        )
        return {row[0]: OrderRow(*row) for row in rows}

    def receive(self, sku: str, qty: int, *, key: str, at: float) -> int | None:
        """A delivery: add ``qty`` units to the shelf, once per ``key``.

        Returns:
            The level after the delivery, or None if ``key`` was already received.
        """
        with self.transaction() as conn:
            return self.put_back(conn, sku, qty, key=key, order_id=None, at=at)

    # -- the writes the saga makes, on a connection it is given ---------------------------

    def insert_order(self, conn: Connection, order_id: str, order: Order) -> None:
        """Record a new order as ``placed``."""
        self._execute(
            conn,
            "INSERT INTO {p}orders (id, sku, quantity, customer, status) VALUES (?, ?, ?, ?, ?)",
            (order_id, order.sku, order.quantity, order.customer, "placed"),
        )

    def set_order_status(
        self, conn: Connection, order_id: str, status: str, note: str | None = None
    ) -> None:
        """Move an order to ``status``.

        An absolute write is right here, unlike on the stock: the row
        belongs to this one order, so no concurrent saga writes it.
        """
        self._execute(
            conn, "UPDATE {p}orders SET status = ?, note = ? WHERE id = ?", (status, note, order_id)
        )

    def take(
        self, conn: Connection, sku: str, qty: int, *, key: str, order_id: str, at: float
    ) -> int | None:
        """Take ``qty`` units off the shelf if they are there.

        The condition ``qty >= n`` in the same statement as the decrement is
        the last line of defence: whatever the callers do, the level cannot
        drop below zero (the table's CHECK says so too).

        Returns:
            The level afterwards, or None if fewer than ``qty`` units were there.
        """
        row = self._execute(
            conn,
            "UPDATE {p}stock SET qty = qty - ? WHERE sku = ? AND qty >= ? RETURNING qty",
            (qty, sku, qty),
        ).fetchone()
        if row is None:
            return None
        self._log_move(
            conn, key=key, sku=sku, delta=-qty, qty_after=int(row[0]), order_id=order_id, at=at
        )
        return int(row[0])

    def put_back(
        self, conn: Connection, sku: str, qty: int, *, key: str, order_id: str | None, at: float
    ) -> int | None:
        """Add ``qty`` units to the shelf, whatever the level is now; once per ``key``.

        Returns:
            The level afterwards, or None if ``key`` was already applied (an
            earlier attempt committed, but its success was never recorded).

        Raises:
            KeyError: the warehouse does not stock ``sku``.
        """
        seen = self._execute(conn, "SELECT 1 FROM {p}stock_moves WHERE key = ?", (key,))
        if seen.fetchone() is not None:
            return None
        row = self._execute(
            conn, "UPDATE {p}stock SET qty = qty + ? WHERE sku = ? RETURNING qty", (qty, sku)
        ).fetchone()
        if row is None:
            raise KeyError(f"the warehouse does not stock {sku!r}")
        # Two racing attempts with one key both pass the check above on
        # PostgreSQL; the key's UNIQUE constraint then fails the second one,
        # rolling its increment back, and its retry finds the key.
        self._log_move(
            conn, key=key, sku=sku, delta=qty, qty_after=int(row[0]), order_id=order_id, at=at
        )
        return int(row[0])

    def _log_move(
        self,
        conn: Connection,
        *,
        key: str,
        sku: str,
        delta: int,
        qty_after: int,
        order_id: str | None,
        at: float,
    ) -> None:
        # Written after the UPDATE, under the stock row's lock, so that on
        # PostgreSQL too the moves of one SKU get their seq in commit order.
        self._execute(
            conn,
            "INSERT INTO {p}stock_moves (key, sku, delta, qty_after, order_id, at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (key, sku, delta, qty_after, order_id, at),
        )
