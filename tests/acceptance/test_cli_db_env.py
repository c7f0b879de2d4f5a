"""``SAGAKIT_DB``: one store setting for every command, as real processes.

Every command reads its store from ``SAGAKIT_DB`` when not given ``--db``;
``--db`` wins. The worker says at start which store it serves and where
that setting came from (a password in it masked).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sagakit import Engine, RunStatus, Saga

from .helpers import fails, ok, sagakit

pytestmark = pytest.mark.slow

APP = """
from sagakit import Saga

greet = Saga("envdb-greet")


@greet.step
def hello(state, ctx):
    return {"said": "hello " + state["name"]}
"""


def _saga() -> Saga[dict[str, str]]:
    saga: Saga[dict[str, str]] = Saga("envdb-greet")

    @saga.step
    def hello(state: dict[str, str], ctx: object) -> dict[str, str]:
        return {"said": "hello " + state["name"]}

    return saga


def _record(db: Path, run_id: str) -> None:
    with Engine(f"sqlite:///{db}") as engine:
        assert engine.run(_saga(), {"name": run_id}, run_id=run_id).status == RunStatus.COMPLETED


def test_list_show_and_history_read_the_store_sagakit_db_names(tmp_path: Path) -> None:
    _record(tmp_path / "env.db", "from-env")
    environ: dict[str, str | None] = {"SAGAKIT_DB": str(tmp_path / "env.db")}
    # Run from another directory: no sagakit.db there, only the variable.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert "from-env" in ok(sagakit(elsewhere, "list", environ=environ))
    assert "completed" in ok(sagakit(elsewhere, "show", "from-env", environ=environ))
    assert "hello" in ok(sagakit(elsewhere, "history", "from-env", environ=environ))
    # A URL works too.
    url: dict[str, str | None] = {"SAGAKIT_DB": f"sqlite:///{tmp_path / 'env.db'}"}
    assert "from-env" in ok(sagakit(elsewhere, "list", environ=url))


def test_db_wins_over_sagakit_db(tmp_path: Path) -> None:
    _record(tmp_path / "env.db", "from-env")
    _record(tmp_path / "flag.db", "from-flag")
    environ: dict[str, str | None] = {"SAGAKIT_DB": str(tmp_path / "env.db")}
    listed = ok(sagakit(tmp_path, "list", "--db", str(tmp_path / "flag.db"), environ=environ))
    assert "from-flag" in listed
    assert "from-env" not in listed
    assert "completed" in ok(
        sagakit(tmp_path, "show", "from-flag", "--db", str(tmp_path / "flag.db"), environ=environ)
    )
    # A store that does not exist, named by the variable, is the usual one-line error.
    missing: dict[str, str | None] = {"SAGAKIT_DB": str(tmp_path / "nothere.db")}
    error = fails(sagakit(tmp_path, "list", environ=missing))
    assert "nothere.db" in error
    assert not (tmp_path / "nothere.db").exists()


NOTE = "using sqlite:///sagakit.db (no --db or SAGAKIT_DB)"


@pytest.mark.parametrize(
    "command", [["list"], ["reservations"], ["migrate"], ["purge", "--older-than", "1d"]]
)
def test_a_command_on_the_default_store_names_it_on_stderr(
    tmp_path: Path, command: list[str]
) -> None:
    _record(tmp_path / "sagakit.db", "here")
    done = sagakit(tmp_path, *command, environ={"SAGAKIT_DB": None})
    ok(done)
    assert done.stderr.splitlines() == [NOTE]
    given = sagakit(tmp_path, *command, "--db", "sagakit.db", environ={"SAGAKIT_DB": None})
    ok(given)
    assert given.stderr == ""
    from_env = sagakit(tmp_path, *command, environ={"SAGAKIT_DB": "sagakit.db"})
    ok(from_env)
    assert from_env.stderr == ""


def test_with_json_the_line_goes_to_stderr_and_stdout_stays_one_document(tmp_path: Path) -> None:
    _record(tmp_path / "sagakit.db", "here")
    done = sagakit(tmp_path, "list", "--json", environ={"SAGAKIT_DB": None})
    assert [run["id"] for run in json.loads(ok(done))["runs"]] == ["here"]
    assert done.stderr.splitlines() == [NOTE]


def test_the_old_default_file_is_pointed_to_not_silently_left_behind(tmp_path: Path) -> None:
    _record(tmp_path / "sagakit-demo.db", "old")
    done = sagakit(tmp_path, "list", environ={"SAGAKIT_DB": None})
    err = fails(done)
    assert err.splitlines()[0] == (
        f"{NOTE}; sagakit-demo.db here is the default store of earlier versions: "
        "pass --db sagakit-demo.db, or rename it to sagakit.db"
    )
    assert "no sagakit database at" in err.splitlines()[1]
    assert not (tmp_path / "sagakit.db").exists()
    assert "old" in ok(sagakit(tmp_path, "list", "--db", "sagakit-demo.db"))
    # Once sagakit.db exists, the old file is no longer the user's store: no hint.
    _record(tmp_path / "sagakit.db", "new")
    again = sagakit(tmp_path, "list", environ={"SAGAKIT_DB": None})
    assert "new" in ok(again)
    assert again.stderr.splitlines() == [NOTE]


def test_help_names_the_variable(tmp_path: Path) -> None:
    assert "SAGAKIT_DB" in ok(sagakit(tmp_path, "list", "--help"))


def _start_worker(tmp_path: Path, *args: str, environ: dict[str, str]) -> subprocess.Popen[str]:
    (tmp_path / "envdbapp.py").write_text(textwrap.dedent(APP))
    env = {**os.environ, "NO_COLOR": "1", "PYTHONPATH": str(tmp_path)}
    env.pop("SAGAKIT_DB", None)
    env.update(environ)
    return subprocess.Popen(
        [sys.executable, "-m", "sagakit", "worker", "--app", "envdbapp", "--poll", "0.05", *args],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _serve_one_and_stop(proc: subprocess.Popen[str], store: str) -> tuple[str, str]:
    """Has the worker drive one run on ``store``, then SIGTERMs it; its first line, stderr.

    The run proves the worker serves that store, and that it is past its
    start-up (its signal handlers are in place) before it is told to stop.
    """
    try:
        with Engine(store) as engine:
            engine.start(_saga(), {"name": "ada"}, run_id="ada")
            run = engine.wait("ada", timeout=30.0)
        assert run.status == RunStatus.COMPLETED
        assert run.state == {"name": "ada", "said": "hello ada"}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            out, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise AssertionError("the worker did not stop on SIGTERM") from None
    assert proc.returncode == 0, err
    return (out.splitlines() or [""])[0], err


def test_the_worker_serves_the_store_sagakit_db_names_and_says_so(tmp_path: Path) -> None:
    db = tmp_path / "env.db"
    proc = _start_worker(tmp_path, environ={"SAGAKIT_DB": f"sqlite:///{db}"})
    line, _ = _serve_one_and_stop(proc, f"sqlite:///{db}")
    assert f"from sqlite:///{db} (from SAGAKIT_DB)" in line


def test_the_worker_says_it_serves_the_default_store(tmp_path: Path) -> None:
    proc = _start_worker(tmp_path, environ={})
    line, _ = _serve_one_and_stop(proc, f"sqlite:///{tmp_path / 'sagakit.db'}")
    assert "from sqlite:///sagakit.db (the default; set --db or SAGAKIT_DB) (up to" in line


def test_the_worker_points_to_the_old_default_file_it_does_not_serve(tmp_path: Path) -> None:
    _record(tmp_path / "sagakit-demo.db", "old")
    proc = _start_worker(tmp_path, environ={})
    assert proc.stdout is not None
    # Read before the run below creates sagakit.db (which ends the hint).
    line = proc.stdout.readline()
    _serve_one_and_stop(proc, f"sqlite:///{tmp_path / 'sagakit.db'}")
    assert (
        "from sqlite:///sagakit.db (the default; set --db or SAGAKIT_DB; sagakit-demo.db here "
        "is the default store of earlier versions: pass --db sagakit-demo.db, or rename it to "
        "sagakit.db)"
    ) in line


def test_db_wins_over_sagakit_db_for_the_worker(tmp_path: Path) -> None:
    flag = tmp_path / "flag.db"
    environ = {"SAGAKIT_DB": str(tmp_path / "env.db")}
    proc = _start_worker(tmp_path, "--db", str(flag), environ=environ)
    line, _ = _serve_one_and_stop(proc, f"sqlite:///{flag}")
    assert f"from sqlite:///{flag} (up to" in line
    assert not (tmp_path / "env.db").exists()


def test_the_worker_masks_the_password_sagakit_db_holds(tmp_path: Path, postgres_url: str) -> None:
    # The test server trusts its clients, so it ignores a password in the URL.
    url = postgres_url.replace("://postgres@", "://postgres:hunter2@", 1)
    if url == postgres_url:
        pytest.skip("the test server's URL names no user 'postgres' to give a password")
    line, err = _serve_one_and_stop(_start_worker(tmp_path, environ={"SAGAKIT_DB": url}), url)
    assert "serving envdb-greet v1 from postgresql://postgres:***@" in line
    assert "(from SAGAKIT_DB)" in line
    assert "hunter2" not in line + err
