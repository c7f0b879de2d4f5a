"""Read commands never create or migrate a store (issue 23, item 6).

``list``, ``show`` and ``history`` on a database that holds no sagakit store
(another application's SQLite file, an empty file, a PostgreSQL schema that
does not exist) say so in one line and exit 1, leaving the database as it
was: the file byte for byte, with no side file left beside it; no schema on
the server. A store older than this sagakit is not migrated by them: they
say to run ``sagakit migrate``. A store on a read-only file is read.

Run as root (as here), chmod stops nobody; the read-only case runs the
command as the user nobody (``setpriv``), and is skipped where that cannot
be done. A read-only mount is not tested (it needs privileges a test does
not have); SQLite answers it as it answers a read-only file.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pytest

from sagakit.store.sql import migrations

from .helpers import fails, ok, sagakit

READS = [
    ("list",),
    ("show", "trip-1"),
    ("history", "trip-1"),
    ("reservations",),
    ("check", "--app", "sagakit.cli.demo"),  # the demo's sagas: importable from anywhere
]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def side_files(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir() if p.name != path.name)


def one_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, text
    return lines[0]


@pytest.fixture
def other_app(tmp_path: Path) -> Path:
    """Another application's SQLite database, with a table of its own."""
    path = tmp_path / "other_app.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
    conn.execute("INSERT INTO customers (name) VALUES ('Ada')")
    conn.commit()
    conn.close()
    return path


@pytest.mark.parametrize("command", READS, ids=lambda c: c[0])
def test_a_read_command_leaves_another_applications_database_alone(
    tmp_path: Path, other_app: Path, command: tuple[str, ...]
) -> None:
    before = digest(other_app)
    message = one_line(fails(sagakit(tmp_path, *command, "--db", str(other_app))))
    assert "no sagakit store" in message
    assert str(other_app) in message
    assert digest(other_app) == before
    assert side_files(other_app) == []
    tables = sqlite3.connect(other_app).execute("SELECT name FROM sqlite_master").fetchall()
    assert tables == [("customers",)]


@pytest.mark.parametrize("command", READS, ids=lambda c: c[0])
def test_a_read_command_leaves_a_wal_database_of_another_application_alone(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    path = tmp_path / "wal_app.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY)")
    conn.commit()
    conn.close()
    before = digest(path)
    assert side_files(path) == []
    message = one_line(fails(sagakit(tmp_path, *command, "--db", str(path))))
    assert "no sagakit store" in message
    assert digest(path) == before
    assert side_files(path) == []


@pytest.mark.parametrize("command", READS, ids=lambda c: c[0])
def test_a_read_command_leaves_an_empty_file_empty(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    path = tmp_path / "empty.db"
    path.touch()
    message = one_line(fails(sagakit(tmp_path, *command, "--db", str(path))))
    assert "no sagakit store" in message
    assert path.stat().st_size == 0
    assert side_files(path) == []


@pytest.mark.parametrize("command", READS, ids=lambda c: c[0])
def test_a_read_command_creates_no_missing_file(tmp_path: Path, command: tuple[str, ...]) -> None:
    path = tmp_path / "missing.db"
    message = one_line(fails(sagakit(tmp_path, *command, "--db", f"sqlite:///{path}")))
    assert "no sagakit database" in message
    assert list(tmp_path.iterdir()) == []


def test_a_file_that_is_not_a_database_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("not a database\n" * 100)
    before = digest(path)
    message = one_line(fails(sagakit(tmp_path, "list", "--db", str(path))))
    assert "not a database" in message
    assert digest(path) == before
    assert side_files(path) == []


@pytest.fixture
def demo_store(tmp_path: Path) -> Path:
    """A sagakit store with the demo's two runs, in a folder of its own."""
    folder = tmp_path / "store"
    folder.mkdir()
    path = folder / "runs.db"
    ok(sagakit(tmp_path, "demo", "--db", str(path)))
    assert side_files(path) == []  # the last connection took its -wal and -shm away
    return path


def test_an_older_store_is_not_migrated_by_a_read_command(demo_store: Path) -> None:
    # A store as the version before this one left it: every migration but the last.
    older = demo_store.parent / "older.db"
    steps = migrations("sqlite")
    conn = sqlite3.connect(older)
    for _, sql_text in steps[:-1]:
        conn.executescript(sql_text)
    conn.execute("UPDATE schema_version SET version = ?", (steps[-2][0],))
    conn.commit()
    conn.close()
    before = digest(older)
    for command in READS:
        message = one_line(fails(sagakit(older.parent, *command, "--db", str(older))))
        assert "older than this sagakit" in message
        assert "sagakit migrate" in message
        assert digest(older) == before
    # migrate (a command that writes) still brings it up to date.
    assert "schema version" in ok(sagakit(older.parent, "migrate", "--db", str(older)))


def test_read_commands_still_read_a_store(demo_store: Path) -> None:
    listing = ok(sagakit(demo_store.parent, "list", "--db", str(demo_store)))
    assert listing.count("trip-") >= 2
    run_id = next(word for word in listing.split() if word.startswith("trip-"))
    assert run_id in ok(sagakit(demo_store.parent, "show", run_id, "--db", str(demo_store)))
    assert ok(sagakit(demo_store.parent, "history", run_id, "--db", str(demo_store)))
    assert side_files(demo_store) == []


# -- a read-only store ------------------------------------------------------------------


SRC = Path(__file__).resolve().parents[2] / "src"


def _as_nobody() -> list[str]:
    """The command prefix that runs a process as the user nobody, or skip."""
    if os.geteuid() != 0:
        return []  # chmod already stops this user
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: chmod would stop nothing")
    prefix = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"]
    # The user nobody must be able to run this Python and import this checkout's
    # sagakit; a checkout under a private home folder is out of its reach.
    probe = subprocess.run(
        [*prefix, sys.executable, "-c", "import sagakit"],
        cwd="/",
        env={**os.environ, "HOME": "/", "PYTHONPATH": str(SRC)},
        capture_output=True,
        check=False,
    )
    if probe.returncode != 0:
        pytest.skip("the user nobody cannot run this Python or read this checkout")
    return prefix


@pytest.fixture
def read_only_store(tmp_path: Path) -> Iterator[Path]:
    """The demo's store as a 0444 file in a 0555 folder that the user nobody can reach."""
    folder = Path(tempfile.mkdtemp(prefix="sagakit-ro-"))
    try:
        path = folder / "runs.db"
        ok(sagakit(tmp_path, "demo", "--db", str(path)))
        path.chmod(0o444)
        folder.chmod(0o555)
        yield path
    finally:
        folder.chmod(0o755)
        shutil.rmtree(folder)


def _run_as_nobody(path: Path) -> subprocess.CompletedProcess[str]:
    """``sagakit list --db PATH`` as the user nobody (as this user when not root)."""
    prefix = _as_nobody()
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "HOME": "/"}
    # The user nobody may not see an editable install's .pth target.
    env["PYTHONPATH"] = str(SRC)
    return subprocess.run(
        [*prefix, sys.executable, "-m", "sagakit", "list", "--db", str(path)],
        cwd="/",
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_read_only_store_is_read(read_only_store: Path) -> None:
    folder = read_only_store.parent
    before = digest(read_only_store)
    out = ok(_run_as_nobody(read_only_store))
    assert out.count("trip-") >= 2, out
    assert digest(read_only_store) == before
    assert sorted(p.name for p in folder.iterdir()) == ["runs.db"]
    assert stat.S_IMODE(read_only_store.stat().st_mode) == 0o444


def test_a_read_only_store_sqlite_cannot_read_says_it_is_read_only(tmp_path: Path) -> None:
    # Commits still in the -wal, and no -shm: SQLite needs one to read them,
    # and cannot make it in a read-only folder.
    source = tmp_path / "runs.db"
    ok(sagakit(tmp_path, "demo", "--db", str(source)))
    folder = Path(tempfile.mkdtemp(prefix="sagakit-ro-"))
    try:
        conn = sqlite3.connect(source)
        conn.execute("PRAGMA wal_autocheckpoint = 0")
        conn.execute("CREATE TABLE notes (x)")
        conn.commit()
        shutil.copy(source, folder / "runs.db")
        shutil.copy(f"{source}-wal", folder / "runs.db-wal")
        conn.close()
        for file in folder.iterdir():
            file.chmod(0o444)
        folder.chmod(0o555)
        message = one_line(fails(_run_as_nobody(folder / "runs.db")))
        assert "read-only" in message
        assert sorted(p.name for p in folder.iterdir()) == ["runs.db", "runs.db-wal"]
    finally:
        folder.chmod(0o755)
        shutil.rmtree(folder)


# -- PostgreSQL ---------------------------------------------------------------------------


def _schemas(base: str) -> set[str]:
    import psycopg

    with psycopg.connect(base, autocommit=True) as conn:
        rows = conn.execute("SELECT schema_name FROM information_schema.schemata").fetchall()
    return {row[0] for row in rows}


@pytest.fixture
def fresh_schema(postgres_url: str) -> tuple[str, str]:
    """The test server's URL and a schema name it does not hold (dropped afterwards)."""
    parts = urlsplit(postgres_url)
    query = dict(parse_qsl(parts.query))
    schema = query.pop("schema")
    return urlunsplit(parts._replace(query=urlencode(query))), schema


@pytest.mark.parametrize("command", READS, ids=lambda c: c[0])
def test_a_read_command_creates_no_postgresql_schema(
    tmp_path: Path, fresh_schema: tuple[str, str], command: tuple[str, ...]
) -> None:
    base, schema = fresh_schema
    joiner = "&" if "?" in base else "?"
    url = f"{base}{joiner}schema={schema}"
    assert schema not in _schemas(base)
    message = one_line(fails(sagakit(tmp_path, *command, "--db", url)))
    assert "no sagakit store" in message
    assert schema in message
    # Only this schema: other tests may be making theirs meanwhile.
    assert schema not in _schemas(base)


def test_a_read_command_creates_no_tables_in_an_empty_postgresql_schema(
    tmp_path: Path, fresh_schema: tuple[str, str]
) -> None:
    import psycopg

    base, schema = fresh_schema
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    joiner = "&" if "?" in base else "?"
    message = one_line(fails(sagakit(tmp_path, "list", "--db", f"{base}{joiner}schema={schema}")))
    assert "no sagakit store" in message
    with psycopg.connect(base, autocommit=True) as conn:
        tables = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,)
        ).fetchall()
    assert tables == []


def test_an_older_postgresql_store_is_not_migrated_by_a_read_command(
    tmp_path: Path, fresh_schema: tuple[str, str]
) -> None:
    import psycopg

    base, schema = fresh_schema
    joiner = "&" if "?" in base else "?"
    url = f"{base}{joiner}schema={schema}"
    ok(sagakit(tmp_path, "migrate", "--db", url))
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"UPDATE {schema}.schema_version SET version = version - 1")
        older = conn.execute(f"SELECT version FROM {schema}.schema_version").fetchone()
    message = one_line(fails(sagakit(tmp_path, "list", "--db", url)))
    assert "sagakit migrate" in message
    with psycopg.connect(base, autocommit=True) as conn:
        assert conn.execute(f"SELECT version FROM {schema}.schema_version").fetchone() == older


# -- the stores themselves ----------------------------------------------------------------


def test_a_read_only_sqlite_store_reads_and_writes_nothing(demo_store: Path) -> None:
    import asyncio

    from sagakit.errors import StoreError
    from sagakit.store import open_store
    from sagakit.store.sqlite import SQLiteStore

    before = digest(demo_store)

    async def go() -> None:
        store = open_store(f"sqlite:///{demo_store}", read_only=True)
        assert isinstance(store, SQLiteStore)
        await store.open()
        try:
            assert len(await store.list_runs()) == 2
            # query_only: even a statement sagakit never sends is refused.
            with pytest.raises(StoreError, match="readonly"):
                await store._connection.call("write", lambda cur: cur.execute("CREATE TABLE x (y)"))
        finally:
            await store.close()

    asyncio.run(go())
    assert digest(demo_store) == before
    assert side_files(demo_store) == []


def test_the_memory_store_ignores_read_only() -> None:
    import asyncio

    from sagakit.store import open_store

    async def go() -> None:
        store = open_store("memory://", read_only=True)
        await store.open()
        assert await store.list_runs() == []
        await store.close()

    asyncio.run(go())
