"""The application's own tables (`Org`, `OrgMember`) and how a saga step writes them.

The application's database is the sagakit store's database: a SQLite file,
or a PostgreSQL database. `create_tables` makes the tables there with an
ordinary SQLAlchemy engine. `session_in` gives a local-transaction step a
SQLAlchemy `Session` on the connection sagakit lends it (``ctx.connection``),
so the Org rows commit in the same transaction as the step's success record.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import URL, Engine, ForeignKey, String, create_engine, make_url, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship
from sqlalchemy.pool import NullPool

__all__ = [
    "Base",
    "Org",
    "OrgMember",
    "OrgSummary",
    "create_tables",
    "database_url",
    "read_orgs",
    "session_in",
]


class Base(DeclarativeBase):
    """The declarative base of the application's tables."""


class Org(Base):
    """An organisation, with the LLM-proxy team and key it was given.

    The name is unique: a second onboarding under the same name fails when
    its rows are flushed, which is what rolls that onboarding back.
    """

    __tablename__ = "orgs"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    llm_team_id: Mapped[str] = mapped_column(String(100))
    llm_key_id: Mapped[str] = mapped_column(String(100))
    onboarding_run: Mapped[str] = mapped_column(String(200))
    """The saga run that created it: where to look for its history."""
    members: Mapped[list[OrgMember]] = relationship(back_populates="org", order_by="OrgMember.id")


class OrgMember(Base):
    """A person in an organisation, with their role."""

    __tablename__ = "org_members"

    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("orgs.id"))
    email: Mapped[str] = mapped_column(String(320))
    role: Mapped[str] = mapped_column(String(50))
    org: Mapped[Org] = relationship(back_populates="members")


def database_url(store_url: str) -> URL:
    """The SQLAlchemy URL of the database a sagakit store URL names.

    Args:
        store_url: ``sqlite:///file.db`` or ``postgresql://user@host/db`` (sagakit's
            own options, such as ``?schema=``, are left out: they concern its tables).

    Raises:
        ValueError: the store keeps no database (``memory://``).
    """
    if store_url.startswith("sqlite:"):
        from sagakit.store.sqlite import parse_url as parse_sqlite

        path, _ = parse_sqlite(store_url)
        return URL.create("sqlite+pysqlite", database=path)
    if store_url.startswith(("postgresql:", "postgres:")):
        from sagakit.store.postgresql import parse_url as parse_postgres

        conninfo, _ = parse_postgres(store_url)
        return make_url(conninfo).set(drivername="postgresql+psycopg")
    raise ValueError(f"the store {store_url!r} has no database for the application's tables")


def _engine(url: URL, schema: str | None, **options: Any) -> Engine:
    if schema is not None:
        # schema_translate_map puts the tables in ``schema`` without naming it
        # in the models, so one set of models serves every deployment and test.
        options["execution_options"] = {"schema_translate_map": {None: schema}}
    return create_engine(url, **options)


def create_tables(store_url: str, *, schema: str | None = None) -> None:
    """Create the Org tables in the store's database, unless they exist.

    Args:
        store_url: The sagakit store's URL.
        schema: On PostgreSQL, the schema for the tables (default: the
            connection's ``search_path``, as the saga's step will see it).
    """
    engine = _engine(database_url(store_url), schema)
    try:
        Base.metadata.create_all(engine)
    finally:
        engine.dispose()


@dataclass(frozen=True, slots=True)
class OrgSummary:
    """An org as stored, with its members' emails."""

    name: str
    llm_team_id: str
    llm_key_id: str
    onboarding_run: str
    members: tuple[str, ...]


def read_orgs(store_url: str, *, schema: str | None = None) -> list[OrgSummary]:
    """Every org in the store's database, by name, read on a connection of its own."""
    engine = _engine(database_url(store_url), schema)
    try:
        with Session(engine) as session:
            return [
                OrgSummary(
                    org.name,
                    org.llm_team_id,
                    org.llm_key_id,
                    org.onboarding_run,
                    tuple(m.email for m in org.members),
                )
                for org in session.scalars(select(Org).order_by(Org.name))
            ]
    finally:
        engine.dispose()


class _Lent:
    """A DB-API connection lent to SQLAlchemy without its transaction control.

    sagakit owns the transaction of a local-transaction step: it commits it
    together with the step's success record, or rolls it back when the step
    raises. SQLAlchemy would end it early: closing a Session rolls its
    connection back, and disposing of a pool closes it. So ``rollback`` and
    ``close`` do nothing here, and ``commit`` is refused. Everything else
    goes to the real connection.
    """

    def __init__(self, connection: Any) -> None:
        self._connection = connection

    def commit(self) -> None:
        raise RuntimeError(
            "a local-transaction step must not commit: sagakit commits its writes "
            "together with the step's success; call session.flush() instead"
        )

    def rollback(self) -> None:
        # Only reached when the Session gives up (a failed flush), and the
        # error then leaves the step, so sagakit rolls everything back.
        pass

    def close(self) -> None:
        pass

    def add_notice_handler(self, handler: Any) -> None:
        # SQLAlchemy's psycopg dialect adds a logging handler on every connect;
        # sagakit's pooled connection outlives this engine, so they would pile up.
        pass

    def __getattr__(self, name: str) -> Any:
        return getattr(self._connection, name)


@contextmanager
def session_in(connection: Any, *, schema: str | None = None) -> Iterator[Session]:
    """A Session whose writes go through ``connection``, inside its open transaction.

    For a ``local_transaction`` step: pass it ``ctx.connection``, add the
    objects and ``flush()``; do not commit. sagakit commits the flushed rows
    with the step's success record, or rolls them back if the step raises.

    Args:
        connection: The step's DB-API connection (sqlite3 or psycopg).
        schema: The schema the tables were created in (see `create_tables`).
    """
    if isinstance(connection, sqlite3.Connection):
        url = URL.create("sqlite+pysqlite")
        options: dict[str, Any] = {}
    else:
        url = URL.create("postgresql+psycopg")
        # The dialect would look the hstore type up through psycopg, which
        # insists on its own connection class; the Org tables need no hstore.
        options = {"use_native_hstore": False}
    lent = _Lent(connection)
    engine = _engine(
        url,
        schema,
        creator=lambda: lent,
        poolclass=NullPool,  # the engine lives as long as this session and keeps nothing
        # A failed statement's error is journaled as it reads; without this it
        # would carry the row's values (names, emails) into the journal.
        hide_parameters=True,
        **options,
    )
    try:
        with Session(engine) as session:
            yield session
    finally:
        engine.dispose()
