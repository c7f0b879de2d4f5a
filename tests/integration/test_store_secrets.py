"""The stores keep secrets and refuse nonsense (issue 23, items 2, 4 and 7).

No password in any message a store raises or logs, whatever form the URL
takes (``user:PW@``, ``?password=``, a libpq keyword string, a mistyped
scheme); new SQLite files and their -wal/-shm files are 0600; URL options
that make no sense (NaN, negative, infinite, absurdly large, an option on a
memory URL) are refused with one line.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sagakit.errors import StoreError
from sagakit.store import open_store, redact_url
from sagakit.store.testing import new_run, opened

SECRET = "S3cretPW"


def _sagakit(cwd: Path, *args: str, umask: int = -1) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    env.pop("PYTHONPATH", None)
    return subprocess.run(
        [sys.executable, "-m", "sagakit", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        umask=umask,
    )


def _one_line_error(done: subprocess.CompletedProcess[str]) -> str:
    """The single error line of a command that failed cleanly."""
    assert done.returncode == 1, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    assert "Traceback" not in done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


# -- passwords (item 2) -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresq://user:PW@host/db", "postgresq://user:***@host/db"),
        ("postgresql://u:pa?ss@h/db", "postgresql://u:***@h/db"),
        ("postgresql://u:p@ss@h/db", "postgresql://u:***@h/db"),
        (
            "postgresql://u@h/db?password=PW&sslmode=off",
            "postgresql://u@h/db?password=***&sslmode=off",
        ),
        ("postgresql://h/db?pass%77ord=PW", "postgresql://h/db?pass%77ord=***"),
        ("postgresql://h/db?sslpassword=PW", "postgresql://h/db?sslpassword=***"),
        ("host=h password=PW dbname=x", "host=h password=*** dbname=x"),
        ("host=h password = 'P W' dbname=x", "host=h password = *** dbname=x"),
        ("postgresql://u@h/db?sslmode=require", "postgresql://u@h/db?sslmode=require"),
        ("sqlite:///runs.db", "sqlite:///runs.db"),
    ],
)
def test_redact_url_masks_every_form_of_password(url: str, shown: str) -> None:
    assert redact_url(url) == shown


@pytest.mark.parametrize(
    "url",
    [
        f"postgresq://user:{SECRET}@host/db",
        f"postgres_ql://host/db?password={SECRET}",
        f"host=127.0.0.1 password={SECRET} dbname=test",
        f"sqlite://user:{SECRET}@host/runs.db",
        f"sqlite:///runs.db?password={SECRET}",
        f"memory://user:{SECRET}@x",
    ],
)
def test_a_mistyped_url_is_refused_without_its_password(tmp_path: Path, url: str) -> None:
    with pytest.raises(StoreError) as caught:
        open_store(url)
    assert SECRET not in str(caught.value)
    if "://" not in url:
        return  # the CLI takes a --db without a scheme for a SQLite file's path
    for command in ("migrate", "list"):
        line = _one_line_error(_sagakit(tmp_path, command, "--db", url))
        assert SECRET not in line


@pytest.mark.parametrize(
    "url",
    [
        # Nothing listens on port 1: connection refused.
        f"postgresql://postgres@127.0.0.1:1/test?password={SECRET}",
        # The server answers, and refuses the role.
        f"postgresql://sagakit_no_such_role@127.0.0.1:5432/test?password={SECRET}",
        f"postgresql://sagakit_no_such_role:{SECRET}@127.0.0.1:5432/test",
        # libpq quotes a badly percent-encoded password whole in its error.
        f"postgresql://postgres:x%zz{SECRET}@127.0.0.1:5432/test",
        f"postgresql://postgres@127.0.0.1:5432/test?password=x%zz{SECRET}",
    ],
)
@pytest.mark.usefixtures("postgres_url")  # the server must answer (or the test is skipped)
def test_a_failed_connection_never_shows_the_password(tmp_path: Path, url: str) -> None:

    async def connect() -> None:
        async with opened(url):
            pass

    with pytest.raises(StoreError) as caught:
        asyncio.run(connect())
    message = str(caught.value)
    assert SECRET not in message
    assert "\n" not in message
    assert "cannot connect to PostgreSQL" in message
    for command in ("migrate", "list"):
        line = _one_line_error(_sagakit(tmp_path, command, "--db", url))
        assert SECRET not in line
        assert "cannot connect to PostgreSQL" in line


def test_a_password_in_the_query_still_reaches_the_server(postgres_url: str) -> None:
    from sagakit.store.postgresql import parse_url

    url = f"{postgres_url}&password=a+b%20c"
    # The query goes to libpq as written: a "+" in a password stays a "+".
    conninfo, options = parse_url(url)
    assert conninfo.endswith("/test?password=a+b%20c")
    assert list(options) == ["schema"]

    async def go() -> None:
        async with opened(url) as store:
            await new_run(store, "r1")
            assert await store.get_run("r1") is not None

    asyncio.run(go())


def test_the_listener_logs_no_password(caplog: pytest.LogCaptureFixture) -> None:
    from sagakit.store.postgresql.listen import Listener

    listener = Listener(f"postgresql://postgres:x%zz{SECRET}@127.0.0.1:1/test", channel="c")
    with caplog.at_level(logging.WARNING, logger="sagakit"):
        assert asyncio.run(listener._listening()) is None
    assert "cannot LISTEN" in caplog.text
    assert SECRET not in caplog.text


# -- SQLite files are 0600 (item 4) ---------------------------------------------------------


def _modes(path: Path) -> dict[str, int]:
    return {
        suffix: stat.S_IMODE(os.stat(f"{path}{suffix}").st_mode)
        for suffix in ("", "-wal", "-shm")
        if os.path.exists(f"{path}{suffix}")
    }


@pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")
@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077, 0o277], ids=oct)
def test_a_new_sqlite_file_and_its_side_files_are_private(tmp_path: Path, umask: int) -> None:
    path = tmp_path / "runs.db"
    seen: dict[str, int] = {}

    async def go() -> None:
        async with opened(f"sqlite:///{path}") as store:
            await new_run(store, "r1")  # a commit: the -wal and -shm files exist now
            seen.update(_modes(path))

    old = os.umask(umask)
    try:
        asyncio.run(go())
    finally:
        os.umask(old)
    assert set(seen) == {"", "-wal", "-shm"}
    assert seen == dict.fromkeys(seen, 0o600 & ~umask)


@pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")
def test_the_cli_creates_a_private_sqlite_file(tmp_path: Path) -> None:
    done = _sagakit(tmp_path, "migrate", "--db", "sqlite:///runs.db", umask=0o022)
    assert done.returncode == 0, done.stderr
    assert _modes(tmp_path / "runs.db")[""] == 0o600


@pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")
def test_an_existing_sqlite_file_keeps_its_mode(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    path.touch()
    path.chmod(0o640)  # shared with a group on purpose

    async def go() -> None:
        async with opened(f"sqlite:///{path}") as store:
            await new_run(store, "r1")
            assert _modes(path) == {"": 0o640, "-wal": 0o640, "-shm": 0o640}

    asyncio.run(go())


# -- options that make no sense (item 7) ---------------------------------------------------


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("value", ["-1", "nan", "NaN", "inf", "-inf", "1e308", "", "abc", "5s"])
def test_a_nonsense_busy_timeout_is_refused(tmp_path: Path, value: str) -> None:
    path = tmp_path / "runs.db"
    asyncio.run(_make(f"sqlite:///{path}"))
    before = _digest(path)
    with pytest.raises(StoreError, match=r"^busy_timeout must be a number of seconds from 0 to"):
        open_store(f"sqlite:///{path}?busy_timeout={value}")
    line = _one_line_error(
        _sagakit(tmp_path, "list", "--db", f"sqlite:///runs.db?busy_timeout={value}")
    )
    assert line == f"Error: busy_timeout must be a number of seconds from 0 to 86400, got {value!r}"
    assert _digest(path) == before


async def _make(url: str) -> None:
    async with opened(url) as store:
        await new_run(store, "r1")


@pytest.mark.parametrize("value", [math.nan, math.inf, -1.0, -math.inf, 1e308, True, "x", [1]])
def test_a_nonsense_busy_timeout_keyword_is_refused(value: Any) -> None:
    with pytest.raises(StoreError, match=r"^busy_timeout must be a number of seconds"):
        open_store("sqlite:///runs.db", busy_timeout=value)


def test_sensible_busy_timeouts_are_taken() -> None:
    assert open_store("sqlite:///runs.db?busy_timeout=0").busy_timeout == 0  # type: ignore[attr-defined]
    assert open_store("sqlite:///runs.db?busy_timeout=2.5").busy_timeout == 2.5  # type: ignore[attr-defined]
    assert open_store("sqlite:///runs.db", busy_timeout=60).busy_timeout == 60  # type: ignore[attr-defined]


def test_an_option_given_twice_is_refused() -> None:
    with pytest.raises(StoreError, match="'busy_timeout' is given twice"):
        open_store("sqlite:///runs.db?busy_timeout=1&busy_timeout=2")
    with pytest.raises(StoreError, match="'pool_size' is given twice"):
        open_store("postgresql://h/db?pool_size=4&pool_size=5")


@pytest.mark.parametrize(
    "url", ["memory://?x=1", "memory://?", "memory://name?x=1", "memory://a#b"]
)
def test_a_memory_url_takes_no_options(tmp_path: Path, url: str) -> None:
    with pytest.raises(StoreError, match=r"^the memory store takes no options"):
        open_store(url)
    line = _one_line_error(_sagakit(tmp_path, "list", "--db", url))
    assert "the memory store takes no options" in line


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("pool_size=nan", "pool_size must be a whole number, got 'nan'"),
        ("pool_size=-3", "pool_size must be a whole number, got '-3'"),
        ("pool_size=2.5", "pool_size must be a whole number, got '2.5'"),
        ("pool_size=inf", "pool_size must be a whole number, got 'inf'"),
        ("pool_size=1", "pool_size must be at least 2 and at most 1000, got 1"),
        ("pool_size=100000000", "pool_size must be at least 2 and at most 1000, got 100000000"),
        ("migrate=maybe", "migrate must be true or false, got 'maybe'"),
        ("schema=Bad", "schema must be a lower-case SQL name"),
        ("schema=x;drop", "schema must be a lower-case SQL name"),
    ],
)
def test_nonsense_postgresql_options_are_refused(tmp_path: Path, query: str, message: str) -> None:
    url = f"postgresql://postgres@127.0.0.1:5432/test?{query}&password={SECRET}"
    with pytest.raises(StoreError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        open_store(url)
    line = _one_line_error(_sagakit(tmp_path, "migrate", "--db", url))
    assert message in line
    assert SECRET not in line


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"pool_size": math.nan}, "pool_size must be a whole number"),
        ({"pool_size": 2.5}, "pool_size must be a whole number"),
        ({"pool_size": True}, "pool_size must be a whole number"),
        ({"pool_size": -1}, "pool_size must be at least 2 and at most 1000"),
        ({"pool_size": 10**9}, "pool_size must be at least 2 and at most 1000"),
        ({"migrate": "false"}, "migrate must be True or False"),
        ({"schema": 7}, "schema must be a lower-case SQL name"),
    ],
)
def test_nonsense_postgresql_keywords_are_refused(options: dict[str, Any], message: str) -> None:
    with pytest.raises(StoreError, match="^" + message):
        open_store("postgresql://postgres@127.0.0.1:5432/test", **options)


# -- least-privilege roles (docs/postgresql.md) ----------------------------------------------


def test_the_documented_roles_suffice_and_the_worker_role_cannot_change_the_schema(
    postgres_url: str,
) -> None:
    import uuid

    import psycopg

    from sagakit import Engine, PermanentError, RunStatus, Saga, StepContext

    base, _, query = postgres_url.partition("?")
    schema = dict(p.split("=", 1) for p in query.split("&"))["schema"]
    tag = uuid.uuid4().hex[:8]
    migrator, worker = f"sk_migrator_{tag}", f"sk_worker_{tag}"
    admin = psycopg.connect(base, autocommit=True)
    try:
        # As docs/postgresql.md says, an administrator runs these once.
        for statement in (
            f"CREATE ROLE {migrator} LOGIN",
            f"CREATE ROLE {worker} LOGIN",
            f"GRANT CONNECT ON DATABASE {base.rsplit('/', 1)[-1]} TO {migrator}, {worker}",
            f"CREATE SCHEMA {schema} AUTHORIZATION {migrator}",
            f"GRANT USAGE ON SCHEMA {schema} TO {worker}",
            f"ALTER DEFAULT PRIVILEGES FOR ROLE {migrator} IN SCHEMA {schema} "
            f"GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {worker}",
            f"ALTER DEFAULT PRIVILEGES FOR ROLE {migrator} IN SCHEMA {schema} "
            f"GRANT USAGE ON SEQUENCES TO {worker}",
        ):
            admin.execute(statement)
        host = base.removeprefix("postgresql://").split("@", 1)[-1]

        def url(role: str, *extra: str) -> str:
            return f"postgresql://{role}@{host}?schema={schema}" + "".join(f"&{e}" for e in extra)

        # The worker cannot migrate: its open says so, in one line, and changes nothing.
        with pytest.raises(
            StoreError,
            match=r"^could not migrate PostgreSQL database .*: permission denied for schema",
        ):
            asyncio.run(_make(url(worker)))
        assert asyncio.run(open_store(url(migrator)).migrate())[1] >= 1

        saga: Saga[dict[str, object]] = Saga("least")
        undone: list[str] = []

        @saga.step
        def pay(state: dict[str, object], ctx: StepContext) -> dict[str, object]:
            return {"paid": True}

        @pay.compensate
        def refund(state: dict[str, object], ctx: StepContext) -> None:
            undone.append("pay")

        @saga.step
        def ship(state: dict[str, object], ctx: StepContext) -> None:
            if state["n"] == 2:
                raise PermanentError("no stock")

        with Engine(url(worker, "migrate=false"), lease_seconds=5.0) as engine:
            run = engine.run(saga, {"n": 1}, run_id="r1")
            assert run.status == RunStatus.COMPLETED
            assert run.state == {"n": 1, "paid": True}
            assert engine.run(saga, {"n": 2}, run_id="r2").status == RunStatus.ROLLED_BACK
            assert undone == ["pay"]
        with psycopg.connect(f"postgresql://{worker}@{host}", autocommit=True) as conn:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(f"CREATE TABLE {schema}.x (a int)")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(f"DROP TABLE {schema}.events")
            # The mail table's id is an identity column: the worker may use its sequence.
            conn.execute(f"SELECT nextval(pg_get_serial_sequence('{schema}.mail', 'id'))")
    finally:
        admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        for role in (worker, migrator):
            admin.execute(f"DROP OWNED BY {role}")
            admin.execute(f"DROP ROLE {role}")
        admin.close()
