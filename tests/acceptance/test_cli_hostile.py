"""Hostile input on the real command line (issue 23): a password in ``--db``,
numbers that are not numbers, JSON bombs, ``@FILE`` and ``-`` for JSON
options, and terminal escapes or rich markup in run ids, step names and
error messages.

Every refusal is one ``Error:`` line with exit code 2, no traceback, and the
store exactly as it was, byte for byte.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from sagakit import Engine, PermanentError, RunStatus, Saga, StepContext

from . import tripapp
from .helpers import ok

pytestmark = pytest.mark.slow

HERE = Path(__file__).parent
EXAMPLE = HERE.parents[1] / "examples" / "payment"
PASSWORD = "Pa55-w0rd-not-to-be-seen"
ESC = "\x1b"


def sagakit(
    cwd: Path, *args: str, stdin: str | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    """``python -m sagakit ARGS`` in ``cwd``, with ``tripapp`` importable."""
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "PYTHONPATH": str(HERE)}
    return subprocess.run(
        [sys.executable, "-m", "sagakit", *args],
        cwd=cwd,
        env=env,
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def error_line(done: subprocess.CompletedProcess[str], code: int = 2) -> str:
    """The one ``Error:`` line of a refused command (and no traceback)."""
    assert done.returncode == code, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    assert "Traceback" not in done.stdout + done.stderr
    assert done.stdout == ""
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, done.stderr
    return errors[0]


def snapshot(db: Path) -> dict[str, bytes]:
    """The bytes of a SQLite file and of its side files."""
    return {path.name: path.read_bytes() for path in sorted(db.parent.glob(db.name + "*"))}


# -- passwords -------------------------------------------------------------------------


@pytest.fixture
def secret_url(postgres_url: str) -> tuple[str, str]:
    """The test schema's URL with a password in it (trust auth ignores it), and the password."""
    parts = urlsplit(postgres_url)
    if parts.password:  # a real one: it must not show either
        return postgres_url, parts.password
    netloc = f"{parts.username}:{PASSWORD}@{parts.hostname}:{parts.port or 5432}"
    return urlunsplit(parts._replace(netloc=netloc)), PASSWORD


def test_commands_on_postgresql_never_print_the_password(
    tmp_path: Path, secret_url: tuple[str, str]
) -> None:
    url, password = secret_url
    masked = f"postgresql://{urlsplit(url).username}:***@"
    outputs = [ok(sagakit(tmp_path, "migrate", "--db", url))]
    done = sagakit(tmp_path, "list", "--db", url)
    outputs.append(ok(done) + done.stderr)
    assert f"no runs in {masked}" in done.stdout
    done = sagakit(tmp_path, "demo", "--db", url)
    outputs.append(ok(done) + done.stderr)
    assert f"runs are stored in {masked}" in done.stdout
    assert f"sagakit list --db '{masked}" in done.stdout
    done = sagakit(tmp_path, "list", "--db", url)
    outputs.append(ok(done) + done.stderr)
    assert f"runs in {masked}" in done.stdout
    run_id = next(line.split()[0] for line in done.stdout.splitlines() if "-rollback" in line)
    done = sagakit(tmp_path, "show", run_id, "--db", url)
    outputs.append(ok(done) + done.stderr)
    worker = subprocess.Popen(
        [sys.executable, "-m", "sagakit", "worker", "--db", url, "--app", "tripapp"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(HERE)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert worker.stdout is not None
    assert worker.stderr is not None
    banner = worker.stdout.readline()
    started = ""
    while "started" not in started:  # its signal handlers are set by then
        line = worker.stderr.readline()
        assert line, banner
        started += line
    worker.send_signal(signal.SIGTERM)
    rest, errors = worker.communicate(timeout=30)
    assert worker.returncode == 0, started + errors
    assert f"serving cli-trip v1, cli-ticketed v1 from {masked}" in banner
    outputs.append(banner + rest + started + errors)
    for output in outputs:
        assert password not in output


# -- numbers ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder whose ``runs.db`` holds the demo's two runs."""
    where = tmp_path_factory.mktemp("demo")
    ok(sagakit(where, "demo", "--db", "runs.db"))
    return where


@pytest.fixture
def demo_db(demo_dir: Path, tmp_path: Path) -> Path:
    """A copy of the demo's store, for one test to (not) change."""
    for path in demo_dir.glob("runs.db*"):
        shutil.copy(path, tmp_path / path.name)
    return tmp_path / "runs.db"


@pytest.mark.parametrize(
    ("option", "value", "why"),
    [
        ("--lease", "nan", "'nan' is not a finite number of seconds"),
        ("--lease", "inf", "'inf' is not a finite number of seconds"),
        ("--lease", "-inf", "'-inf' is not a finite number of seconds"),
        ("--lease", "-1", "not in the range 0<x<=86400"),
        ("--lease", "0", "not in the range 0<x<=86400"),
        ("--lease", "1e308", "not in the range 0<x<=86400"),
        ("--poll", "nan", "'nan' is not a finite number of seconds"),
        ("--poll", "inf", "'inf' is not a finite number of seconds"),
        ("--poll", "-1", "not in the range 0<x<=3600"),
        ("--grace", "nan", "'nan' is not a finite number of seconds"),
        ("--grace", "inf", "'inf' is not a finite number of seconds"),
        ("--grace", "-1", "not in the range 0<=x<=86400"),
        ("--concurrency", "100000000000000000000", "not in the range 1<=x<=10000"),
    ],
)
def test_worker_refuses_numbers_that_are_not_finite_or_in_range(
    demo_db: Path, option: str, value: str, why: str
) -> None:
    before = snapshot(demo_db)
    # Before the fix NaN and infinity started a worker: it would run into the timeout.
    done = sagakit(
        demo_db.parent,
        "worker",
        "--db",
        str(demo_db),
        "--app",
        "tripapp",
        option,
        value,
        timeout=20,
    )
    line = error_line(done)
    assert f"Invalid value for '{option}'" in line
    assert why in line
    assert snapshot(demo_db) == before


@pytest.mark.parametrize("value", ["100000000000000000000", "1000001", "0", "-1"])
def test_list_refuses_a_limit_out_of_range(demo_db: Path, value: str) -> None:
    before = snapshot(demo_db)
    line = error_line(sagakit(demo_db.parent, "list", "--limit", value, "--db", str(demo_db)))
    assert f"Invalid value for '--limit': {value} is not in the range 1<=x<=1000000" in line
    assert snapshot(demo_db) == before


# -- JSON options ----------------------------------------------------------------------

HOSTILE_JSON = {
    "arrays 10,000 deep": (
        '{"a": ' + "[" * 10_000 + "]" * 10_000 + "}",
        "not usable JSON{where}: nested more than 100 levels deep",
    ),
    "objects 10,000 deep": (
        '{"a": ' * 10_000 + "1" + "}" * 10_000,
        "not usable JSON{where}: nested more than 100 levels deep",
    ),
    "101 levels": (
        '{"a": ' + "[" * 100 + "]" * 100 + "}",
        "not usable JSON{where}: nested more than 100 levels deep",
    ),
    "a 5,000-digit integer": (
        '{"a": ' + "9" * 5_000 + "}",
        "not usable JSON{where}: an integer of 5000 digits is too long",
    ),
    "NaN": ('{"a": NaN}', "not usable JSON{where}: NaN is not a JSON number"),
    "-Infinity": ('{"a": -Infinity}', "not usable JSON{where}: -Infinity is not a JSON number"),
    "1e999": ('{"a": 1e999}', "not usable JSON{where}: the number 1e999 is too large for a float"),
    "not JSON": ("{london: Savoy}", "not JSON{where}: Expecting property name"),
    "not an object": ('["Savoy"]', "must be a JSON object{where}"),
}


@pytest.fixture
def trips(tmp_path: Path) -> Path:
    """A folder whose ``runs.db`` holds a trip paused on its London hotel."""
    with Engine(f"sqlite:///{tmp_path / 'runs.db'}") as engine:
        run = engine.run(tripapp.trip, {"london": "Ritz"}, run_id="paused-1")
        assert run.status is RunStatus.PAUSED
    return tmp_path


def as_given(where: Path, how: str, text: str) -> tuple[str, str | None, str]:
    """The option value, stdin and source label for JSON given inline, as @FILE or as -."""
    if how == "inline":
        return text, None, ""
    if how == "file":
        (where / "hostile.json").write_text(text)
        return "@hostile.json", None, " (hostile.json)"
    return "-", text, " (stdin)"


@pytest.mark.parametrize("how", ["inline", "file", "stdin"])
@pytest.mark.parametrize("case", list(HOSTILE_JSON))
def test_signal_refuses_hostile_json_with_one_line(trips: Path, case: str, how: str) -> None:
    text, template = HOSTILE_JSON[case]
    value, stdin, where = as_given(trips, how, text)
    before = snapshot(trips / "runs.db")
    done = sagakit(
        trips, "signal", "paused-1", "choose", "--payload", value, "--app", "tripapp",
        "--db", "runs.db", stdin=stdin,
    )  # fmt: skip
    line = error_line(done)
    assert line.startswith("Error: Invalid value for --payload: " + template.format(where=where))
    assert snapshot(trips / "runs.db") == before


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of the payment example, with an empty store in ``runs.db``."""
    target = tmp_path / "project"
    shutil.copytree(EXAMPLE, target, ignore=shutil.ignore_patterns("__pycache__"))
    ok(sagakit(target, "migrate", "--db", "runs.db"))
    return target


@pytest.mark.parametrize("how", ["inline", "file", "stdin"])
@pytest.mark.parametrize("case", ["arrays 10,000 deep", "a 5,000-digit integer", "NaN"])
def test_run_refuses_hostile_json_input_with_one_line(project: Path, case: str, how: str) -> None:
    text, template = HOSTILE_JSON[case]
    value, stdin, where = as_given(project, how, text)
    before = snapshot(project / "runs.db")
    done = sagakit(project, "run", "payment.yaml", "--input", value, "--db", "runs.db", stdin=stdin)
    line = error_line(done)
    assert line.startswith("Error: Invalid value for --input: " + template.format(where=where))
    assert snapshot(project / "runs.db") == before


def test_signal_payload_from_a_file_and_from_stdin(trips: Path) -> None:
    with Engine(f"sqlite:///{trips / 'runs.db'}") as engine:
        run = engine.run(tripapp.trip, {"london": "Ritz"}, run_id="paused-2")
        assert run.status is RunStatus.PAUSED
    (trips / "answer.json").write_text('{"london": "Savoy"}\n')
    ok(sagakit(trips, "signal", "paused-1", "choose", "--payload", "@answer.json",
               "--app", "tripapp", "--db", "runs.db"))  # fmt: skip
    ok(sagakit(trips, "signal", "paused-2", "choose", "--payload", "-", "--app", "tripapp",
               "--db", "runs.db", stdin='{"london": "Claridge\'s"}'))  # fmt: skip
    with Engine(f"sqlite:///{trips / 'runs.db'}") as engine:
        assert engine.get("paused-1").status is RunStatus.COMPLETED
        assert engine.get("paused-1").state["london"] == "Savoy"
        assert engine.get("paused-2").state["london"] == "Claridge's"


def test_run_input_from_a_file(project: Path) -> None:
    (project / "down.json").write_text(
        '{"order_id": "o-1", "customer_id": "c-1", "amount": 10.0, "carrier": "down-express"}'
    )
    out = ok(sagakit(project, "run", "payment.yaml", "--input", "@down.json", "--run-id", "r1",
                     "--db", "runs.db"))  # fmt: skip
    assert "status rolled_back" in out
    with Engine(f"sqlite:///{project / 'runs.db'}") as engine:
        assert engine.get("r1").state["order_id"] == "o-1"


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("@missing.json", "cannot read missing.json: No such file or directory"),
        ("@", "@ must be followed by a file name"),
        ("@folder", "cannot read folder: Is a directory"),
        ("@latin1.json", "latin1.json is not UTF-8 text (byte 15)"),
    ],
)
def test_payload_file_that_cannot_be_read_is_one_line(trips: Path, value: str, why: str) -> None:
    (trips / "folder").mkdir()
    (trips / "latin1.json").write_bytes('{"london": "Caf\u00e9"}'.encode("latin-1"))
    before = snapshot(trips / "runs.db")
    done = sagakit(trips, "signal", "paused-1", "choose", "--payload", value, "--app", "tripapp",
                   "--db", "runs.db")  # fmt: skip
    assert error_line(done) == f"Error: Invalid value for --payload: {why}"
    assert snapshot(trips / "runs.db") == before


# -- terminal escapes and markup -------------------------------------------------------

HOSTILE_IDS = {
    "id-esc": "r\x1b[31mred\x1b[0m",
    "id-cr": "r\rCR",
    "id-lf": "r\nLF",
    "id-bidi": "r\u202eevil",
    "id-markup": "[bold]x[/bold]",
    "id-link": "[link=http://e.vil]y[/link]",
    "id-emoji": ":fire:",
}
SHOWN_IDS = [
    "r\\x1b[31mred\\x1b[0m",
    "r\\rCR",
    "r\\nLF",
    "r\\u202eevil",
    "[bold]x[/bold]",
    "[link=http://e.vil]y[/link]",
    ":fire:",
]

evil: Saga[dict[str, object]] = Saga("evil\x1b[2J")


@evil.step(name="book\x1b[31m\r\nX")
def book(state: dict[str, object], ctx: StepContext) -> None:
    """A step whose name holds an escape, a CR and a LF."""


@book.compensate
def unbook(state: dict[str, object], ctx: StepContext) -> None:
    """Its undo."""


@evil.step(name="[bold]pay[/bold]")
def pay(state: dict[str, object], ctx: StepContext) -> None:
    """A step whose name is rich markup; it fails with an escape in its message."""
    raise PermanentError("declined\x1b[2J\rgone")


def no_raw_controls(text: str) -> None:
    for char in ("\x1b", "\r", "\u202e"):
        assert char not in text, repr(text)


@pytest.fixture
def hostile_db(tmp_path: Path) -> Path:
    """A store whose runs have ids with escapes and markup, as an older sagakit or
    another tool may have written them (the ids are put in with SQL)."""
    db = tmp_path / "runs.db"
    with Engine(f"sqlite:///{db}") as engine:
        for safe in [*HOSTILE_IDS, "evil-1"]:
            assert engine.run(evil, {}, run_id=safe).status is RunStatus.ROLLED_BACK
    with sqlite3.connect(db) as conn:
        for safe, hostile in HOSTILE_IDS.items():
            conn.execute("UPDATE runs SET id = ? WHERE id = ?", (hostile, safe))
            conn.execute("UPDATE events SET run_id = ? WHERE run_id = ?", (hostile, safe))
    conn.close()
    return db


def test_list_escapes_control_characters_and_prints_markup_literally(hostile_db: Path) -> None:
    out = ok(sagakit(hostile_db.parent, "list", "--db", "runs.db"))
    no_raw_controls(out)
    lines = out.splitlines()
    for shown in SHOWN_IDS:
        line = next(line for line in lines if line.startswith(shown + " "))
        assert "rolled_back  evil\\x1b[2J v1" in line
    assert "PermanentError: declined\\x1b[2J" in out
    assert len(lines) == 2 + 2 * (len(HOSTILE_IDS) + 1)  # a title, headers, two lines a run
    done = sagakit(hostile_db.parent, "list", "--saga", "[red]x[/red]", "--db", "runs.db")
    assert ok(done).startswith("no runs of saga '[red]x[/red]' in runs.db")


@pytest.mark.parametrize("command", ["show", "history"])
def test_show_and_history_escape_step_names_and_errors(hostile_db: Path, command: str) -> None:
    out = ok(sagakit(hostile_db.parent, command, "evil-1", "--db", "runs.db"))
    no_raw_controls(out)
    assert "book\\x1b[31m\\r\\nX" in out
    assert "[bold]pay[/bold]" in out
    assert "declined\\x1b[2J" in out  # a CR ends the first line of an error
    if command == "show":
        assert "run evil-1  saga evil\\x1b[2J" in out
        assert "undo book\\x1b[31m\\r\\nX" in out


YAML = """\
saga: "[bold]S[/bold]\\e[2J"
steps:
  - name: "hold\\e[31m\\rX"
    function: hostile_steps.hold
    compensate: hostile_steps.release
  - name: "[link=http://e.vil]pay[/link]"
    function: hostile_steps.pay
"""
STEPS = """\
from sagakit import PermanentError


def hold(state, ctx):
    return {"held": True}


def release(state, ctx):
    return None


def pay(state, ctx):
    raise PermanentError("declined\\x1b[2J")
"""


@pytest.fixture
def yaml_project(tmp_path: Path) -> Path:
    (tmp_path / "hostile.yaml").write_text(YAML)
    (tmp_path / "hostile_steps.py").write_text(STEPS)
    return tmp_path


def test_validate_escapes_names_from_the_file(yaml_project: Path) -> None:
    done = sagakit(yaml_project, "validate", "hostile.yaml")
    out = ok(done)
    no_raw_controls(out + done.stderr)
    assert out.strip() == (
        "hostile.yaml: ok - saga [bold]S[/bold]\\x1b[2J version 1, 2 steps: "
        "hold\\x1b[31m\\rX -> [link=http://e.vil]pay[/link]"
    )
    (yaml_project / "broken.yaml").write_text(
        YAML.replace("function: hostile_steps.pay", 'function: "hostile_steps.\\e[2Jnothing"')
    )
    done = sagakit(yaml_project, "validate", "broken.yaml")
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    no_raw_controls(done.stdout + done.stderr)
    assert "\\x1b[2Jnothing" in done.stderr


def test_run_escapes_names_and_errors_in_its_timeline(yaml_project: Path) -> None:
    done = sagakit(yaml_project, "run", "hostile.yaml", "--run-id", "y1", "--db", "runs.db")
    out = ok(done)
    no_raw_controls(out + done.stderr)
    assert "run y1  saga [bold]S[/bold]\\x1b[2J" in out
    assert "undo hold\\x1b[31m\\rX" in out
    assert "[link=http://e.vil]pay[/link]" in out
    assert "declined\\x1b[2J" in out
    assert "status rolled_back" in out
