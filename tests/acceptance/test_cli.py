"""The real ``sagakit`` command line, run as a subprocess in a scratch directory."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType

import pytest

from sagakit import Engine, RunStatus

from .helpers import fails, ok, sagakit

pytestmark = pytest.mark.slow

# A saga whose compensation fails for good while a flag file exists: a run of
# it that rolls back ends up needing attention, until the flag is removed.
APP = """
from pathlib import Path

from sagakit import PermanentError, RetryPolicy, Saga

BROKEN = Path(__file__).with_name("undo-is-broken")

shaky = Saga("shaky-order")


@shaky.step
def reserve_stock(state, ctx):
    return {"reservation": ctx.idempotency_key}


@reserve_stock.compensate(retry=RetryPolicy(max_attempts=2, initial_delay=0.01, jitter=0))
def release_stock(state, ctx):
    if BROKEN.exists():
        raise RuntimeError("the stock service is down")


@shaky.step
def charge_card(state, ctx):
    raise PermanentError("card declined")
"""


def runs_in(db: Path) -> dict[str, RunStatus]:
    with Engine(f"sqlite:///{db}") as engine:
        return {run.id: run.status for run in engine.runs()}


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory where ``sagakit demo`` ran once, with its default database."""
    where = tmp_path_factory.mktemp("demo")
    out = ok(sagakit(where, "demo"))
    assert "completed" in out
    assert "rolled_back" in out
    assert str((where / "sagakit.db").resolve()) in out
    assert "sagakit list" in out
    return where


def demo_ids(where: Path) -> tuple[str, str]:
    runs = runs_in(where / "sagakit.db")
    ok_id = next(r for r, s in runs.items() if r.endswith("-ok") and s is RunStatus.COMPLETED)
    back = next(r for r, s in runs.items() if r.endswith("-rollback"))
    assert runs[back] is RunStatus.ROLLED_BACK
    return ok_id, back


def test_demo_books_one_trip_and_leaves_nothing_booked_for_the_other(demo_db: Path) -> None:
    ok_id, back = demo_ids(demo_db)
    out = ok(sagakit(demo_db, "list"))
    assert ok_id in out
    assert back in out
    assert "no rooms left" in out


def test_demo_runs_again_on_the_same_file_with_fresh_ids(tmp_path: Path) -> None:
    first = ok(sagakit(tmp_path, "demo", "--db", "trips.db"))
    second = ok(sagakit(tmp_path, "demo", "--db", "trips.db"))
    assert "nothing" in second  # what the provider still holds for the rolled back trip
    assert "--db trips.db" in first
    assert len(runs_in(tmp_path / "trips.db")) == 4
    # The same file through a URL, relative to the working directory.
    out = ok(sagakit(tmp_path, "list", "--db", "sqlite:///trips.db", "--status", "completed"))
    assert out.count("completed") == 2
    assert "rolled_back" not in out


def test_show_is_a_timeline_with_the_undo_in_reverse(demo_db: Path) -> None:
    _, back = demo_ids(demo_db)
    out = ok(sagakit(demo_db, "show", back))
    assert "rolled_back" in out
    assert "no rooms left" in out
    assert "rollback started" in out
    undo = [
        "undo book_hotel_london",
        "undo book_flight_london_paris",
        "undo book_flight_new_york_london",
        "undo book_flight_seattle_new_york",
    ]
    positions = [out.index(line) for line in undo]
    assert positions == sorted(positions), out
    assert out.count("compensated") >= 8  # four bookings and their four cancellations


def test_show_of_the_completed_trip_shows_the_retried_flight(demo_db: Path) -> None:
    ok_id, _ = demo_ids(demo_db)
    out = ok(sagakit(demo_db, "show", ok_id))
    flight = next(line for line in out.splitlines() if "book_flight_new_york_london" in line)
    assert flight.split()[2] == "2"  # two tries
    assert "recovered from GatewayTimeout" in out
    assert "status completed" in out


def test_history_lists_every_event(demo_db: Path) -> None:
    _, back = demo_ids(demo_db)
    out = ok(sagakit(demo_db, "history", back))
    for kind in ("run_started", "step_failed", "rollback_started", "compensation_succeeded"):
        assert kind in out
    assert "run_finished" in out
    with Engine(f"sqlite:///{demo_db / 'sagakit.db'}") as engine:
        count = len(engine.history(back))
    assert f"\n{count:>3}  " in out


def test_list_filters_and_says_when_nothing_matches(demo_db: Path) -> None:
    out = ok(sagakit(demo_db, "list", "--saga", "no-such-saga"))
    assert "no runs of saga 'no-such-saga'" in out
    out = ok(sagakit(demo_db, "list", "--limit", "1"))
    assert "pass --limit for more" in out


def test_missing_database_is_an_error_and_is_not_created(tmp_path: Path) -> None:
    for command in (["list"], ["show", "x"], ["history", "x"], ["retry", "x"]):
        err = fails(sagakit(tmp_path, *command, "--db", "nowhere.db"))
        assert "no sagakit database at" in err
        assert "nowhere.db" in err
        assert "sagakit demo" in err
    err = fails(sagakit(tmp_path, "resolve", "x", "--note", "n"))  # the default file
    assert err.splitlines()[0] == "using sqlite:///sagakit.db (no --db or SAGAKIT_DB)"
    assert "sagakit.db" in err.splitlines()[1]
    assert list(tmp_path.iterdir()) == []


def test_unknown_run_id_names_it(demo_db: Path) -> None:
    for command in ("show", "history", "retry"):
        err = fails(sagakit(demo_db, command, "order-404"))
        assert "order-404" in err


def test_usage_errors_exit_2(demo_db: Path) -> None:
    _, back = demo_ids(demo_db)
    err = fails(sagakit(demo_db, "resolve", back), code=2)
    assert "--note" in err
    err = fails(sagakit(demo_db, "list", "--status", "sideways"), code=2)
    assert "sideways" in err
    err = fails(sagakit(demo_db, "show", back, "--app", "no_such_module_here"), code=2)
    assert "no_such_module_here" in err


def test_retry_of_a_settled_run_changes_nothing(demo_db: Path) -> None:
    ok_id, back = demo_ids(demo_db)
    before = len(ok(sagakit(demo_db, "history", back)).splitlines())
    out = ok(sagakit(demo_db, "retry", back))
    assert "nothing to retry" in out
    assert "rolled_back" in out
    assert len(ok(sagakit(demo_db, "history", back)).splitlines()) == before
    err = fails(sagakit(demo_db, "resolve", ok_id, "--note", "why"))
    assert ok_id in err
    assert "completed" in err


def test_version() -> None:
    script = shutil.which("sagakit", path=str(Path(sys.executable).parent))
    command = [script] if script else [sys.executable, "-m", "sagakit"]
    done = subprocess.run([*command, "--version"], capture_output=True, text=True, check=False)
    assert done.returncode == 0
    assert done.stdout.startswith("sagakit, version ")


# -- retry and resolve of runs that need attention -------------------------------------


def load_app(folder: Path) -> ModuleType:
    path = folder / "shaky_app.py"
    path.write_text(textwrap.dedent(APP))
    spec = importlib.util.spec_from_file_location("shaky_app", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def stuck(tmp_path: Path) -> Path:
    """A folder with the app and a database holding two runs that need attention."""
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    app = load_app(app_dir)
    (app_dir / "undo-is-broken").touch()
    with Engine(f"sqlite:///{tmp_path / 'runs.db'}") as engine:
        for run_id in ("stuck-1", "stuck-2"):
            run = engine.run(app.shaky, {}, run_id=run_id)
            assert run.status is RunStatus.NEEDS_ATTENTION
    return tmp_path


def test_show_a_run_that_needs_attention(stuck: Path) -> None:
    out = ok(sagakit(stuck, "show", "stuck-1", "--db", "runs.db"))
    assert "needs_attention" in out
    assert "the stock service is down" in out
    assert "sagakit retry stuck-1" in out
    out = ok(sagakit(stuck, "list", "--db", "runs.db", "--status", "needs_attention"))
    assert "stuck-1" in out
    assert "stuck-2" in out


def test_retry_needs_the_app_registered(stuck: Path) -> None:
    err = fails(sagakit(stuck, "retry", "stuck-1", "--db", "runs.db"))
    assert "shaky-order" in err
    assert "--app" in err
    assert runs_in(stuck / "runs.db")["stuck-1"] is RunStatus.NEEDS_ATTENTION


def test_retry_after_the_cause_is_fixed_rolls_back(stuck: Path) -> None:
    app_dir = stuck / "app"
    # Still broken: the retry fails again and says so.
    done = sagakit(
        stuck, "retry", "stuck-1", "--app", "shaky_app", "--db", "runs.db", pythonpath=app_dir
    )
    assert "needs attention again" in fails(done)
    (app_dir / "undo-is-broken").unlink()
    done = sagakit(
        stuck,
        "retry",
        "stuck-1",
        "--app",
        "shaky_app:shaky",
        "--db",
        str(stuck / "runs.db"),
        "--note",
        "stock service restarted",
        pythonpath=app_dir,
    )
    out = ok(done)
    assert "now rolled_back" in out
    assert "retried by operator" in out
    assert runs_in(stuck / "runs.db") == {
        "stuck-1": RunStatus.ROLLED_BACK,
        "stuck-2": RunStatus.NEEDS_ATTENTION,
    }
    history = ok(sagakit(stuck, "history", "stuck-1", "--db", "runs.db"))
    assert "retried" in history
    assert "stock service restarted" in history


def test_resolve_records_the_manual_fix_and_finishes_the_undo(stuck: Path) -> None:
    app_dir = stuck / "app"
    done = sagakit(
        stuck,
        "resolve",
        "stuck-2",
        "--note",
        "released the stock by hand",
        "--app",
        "shaky_app",
        "--db",
        f"sqlite:///{stuck / 'runs.db'}",
        pythonpath=app_dir,
    )
    out = ok(done)
    assert "now rolled_back" in out
    assert "released the stock by hand" in out
    assert runs_in(stuck / "runs.db")["stuck-2"] is RunStatus.ROLLED_BACK
    history = ok(sagakit(stuck, "history", "stuck-2", "--db", "runs.db"))
    assert "resolved" in history
    # The compensation was not run again: the flag still breaks it, yet no new failure.
    assert history.count("compensation_failed") == 2


def test_resolve_with_a_stale_step_changes_nothing(stuck: Path) -> None:
    db = f"sqlite:///{stuck / 'runs.db'}"
    args = ("--app", "shaky_app", "--db", db)
    done = sagakit(
        stuck,
        "resolve",
        "stuck-1",
        "--note",
        "x",
        "--step",
        "charge_card",
        *args,
        pythonpath=stuck / "app",
    )
    assert done.returncode == 1
    assert "halted on step 'reserve_stock', not on step 'charge_card'" in done.stderr
    assert runs_in(stuck / "runs.db")["stuck-1"] is RunStatus.NEEDS_ATTENTION
    done = sagakit(
        stuck,
        "resolve",
        "stuck-1",
        "--note",
        "x",
        "--step",
        "reserve_stock",
        *args,
        pythonpath=stuck / "app",
    )
    assert "now rolled_back" in ok(done)
