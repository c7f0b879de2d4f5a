"""What the fuzz tests found, each through a real ``python -m sagakit``: one line, no traceback.

Every case here was a traceback, a raw control character or a password on
the terminal, or a read without end, before its fix:

- bytes that are not UTF-8 in an argument (a run id, ``--saga``, ``--db``)
  reached SQLite or ``urllib`` and raised UnicodeEncodeError;
- click's own usage errors quoted the unknown option or extra argument raw,
  escape sequences included, and an unknown command's name with the
  password of the URL typed in its place;
- ``--db`` given a libpq connection string was taken for a file name and
  printed whole, password included;
- ``--payload @/dev/zero`` (or endless stdin) read until memory ran out;
- masking passwords in a message took time in the square of its length, so
  a long run id stalled ``show`` for seconds, minutes at argv's limit;
- a YAML value that matches a type's pattern but cannot be converted
  (``version: 2001-02-30``, an integer of 5,000 digits, ``!!int 0x_``)
  raised ValueError out of the loader.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sagakit.store import redact_text, redact_url
from sagakit.yamlfile import validate_yaml

from . import cliapp, harness

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

TESTS = Path(__file__).resolve().parents[1]
PASSWORD = "Pw-n0t-t0-be-seen"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return harness.make_template(tmp_path / "store")


def sagakit(
    cwd: Path, *args: str | bytes, stdin: bytes = b"", timeout: float = 60
) -> subprocess.CompletedProcess[bytes]:
    """``python -m sagakit ARGS`` with ``fuzz.cliapp`` importable; bytes in, bytes out."""
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "PYTHONPATH": str(TESTS)}
    return subprocess.run(
        [sys.executable, "-m", "sagakit", *args],
        cwd=cwd,
        env=env,
        input=stdin,
        capture_output=True,
        timeout=timeout,
        check=False,
    )


def one_error(done: subprocess.CompletedProcess[bytes], code: int) -> str:
    """The one ``Error:`` line of a refused command; nothing raw, no traceback."""
    out, err = done.stdout.decode(), done.stderr.decode()
    assert done.returncode == code, f"exit {done.returncode}\n{out}\n{err}"
    assert "Traceback" not in out + err
    assert harness.unprintable(out + err) == [], err
    errors = [line for line in err.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, err
    assert PASSWORD not in out + err
    return errors[0]


@pytest.mark.parametrize(
    "args",
    [
        [b"show", b"done-1\xff", b"--db", b"runs.db"],
        [b"list", b"--saga", b"\xfe\xff", b"--db", b"runs.db"],
        [b"list", b"--db", b"runs\xff.db"],
        [b"signal", b"paused-1", b"answer", b"--payload", b'{"a": "\xff"}', b"--db", b"runs.db"],
    ],
)
def test_an_argument_that_is_not_utf8_is_refused(folder: Path, args: list[bytes]) -> None:
    before = harness.snapshot(folder)
    error = one_error(sagakit(folder, *args), code=2)
    assert error.startswith("Error: an argument is not UTF-8 text: b'")
    assert "\\xff" in error or "\\xfe" in error
    assert harness.snapshot(folder) == before


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["list", "--\x1b[31m"], "Error: No such option '--\\x1b[31m'."),
        (["demo", "\x1f"], "Error: Got unexpected extra argument (\\x1f)"),
        (["\x1b]0;title\x07"], "Error: No such command '\\x1b]0;title\\x07'."),
        (
            [f"postgresql://app:{PASSWORD}@127.0.0.1:1/db"],
            "Error: No such command 'postgresql://app:***@127.0.0.1:1/db'.",
        ),
    ],
)
def test_usage_errors_quote_what_was_typed_escaped(
    folder: Path, args: list[str], expected: str
) -> None:
    before = harness.snapshot(folder)
    assert one_error(sagakit(folder, *args), code=2) == expected
    assert harness.snapshot(folder) == before


def test_a_connection_string_taken_for_a_file_shows_no_password(folder: Path) -> None:
    error = one_error(
        sagakit(folder, "list", "--db", f"host=127.0.0.1 port=1 password={PASSWORD}"), code=1
    )
    assert error.startswith("Error: no sagakit database at ")
    assert error.endswith(
        "host=127.0.0.1 port=1 password=***; run `sagakit demo` first or pass --db"
    )


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
def test_a_json_option_reads_a_bounded_amount(folder: Path) -> None:
    before = harness.snapshot(folder)
    error = one_error(
        sagakit(
            folder, "signal", "paused-1", "answer", "--payload", "@/dev/zero", "--db", "runs.db"
        ),
        code=2,
    )
    assert error == "Error: Invalid value for --payload: /dev/zero holds more than 16 MiB"
    endless = b" " * (17 * 2**20)
    error = one_error(
        sagakit(folder, "run", "good.yaml", "--app", "fuzz.cliapp", "--input", "-",
                "--db", "runs.db", stdin=endless),
        code=2,
    )  # fmt: skip
    assert error == "Error: Invalid value for --input: stdin holds more than 16 MiB"
    assert harness.snapshot(folder) == before
    assert cliapp.RUNS  # the store still holds exactly the runs it was made with (above)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (
            "2001-02-30",
            "saga.yaml:2: not valid YAML: '2001-02-30' cannot be read as timestamp: day is out "
            "of range for month",
        ),
        (
            "9" * 5_000,
            "saga.yaml:2: not valid YAML: '99999999999999999999'... (5000 characters) cannot be "
            "read as int: Exceeds the limit (4300 digits) for integer string conversion: value "
            "has 5000 digits",
        ),
        (
            "!!int 0x_",
            "saga.yaml:2: not valid YAML: '0x_' cannot be read as int: invalid literal for int() "
            "with base 16: ''",
        ),
    ],
)
def test_a_yaml_value_that_cannot_be_converted_is_one_problem(
    tmp_path: Path, value: str, problem: str
) -> None:
    path = tmp_path / "saga.yaml"
    path.write_text(f"saga: s\nversion: {value}\nsteps: [{{name: a, function: x.y}}]\n")
    report = validate_yaml(path, resolve=False)
    assert [str(p) for p in report.errors] == [problem.replace("saga.yaml", str(path))]
    for options in (["--no-import"], []):
        done = sagakit(tmp_path, "validate", "saga.yaml", *options)
        assert done.returncode == 1
        assert "Traceback" not in done.stderr.decode()
        assert done.stderr.decode().splitlines() == [problem, "Error: saga.yaml: 1 problem"]


def test_a_long_run_id_is_refused_at_once(folder: Path) -> None:
    # Masking passwords in the message took time in the square of its length:
    # 8 s for a 20,000-character id, minutes for the 100,000 a shell allows.
    started = time.monotonic()
    error = one_error(sagakit(folder, "show", "r" * 100_000, "--db", "runs.db"), code=1)
    assert time.monotonic() - started < 10
    assert error.startswith("Error: no run with id 'rrrr")
    one_error(sagakit(folder, "r" * 100_000), code=2)
    one_error(sagakit(folder, "list", "--db", "r" * 100_000 + "://u:pw"), code=1)


def test_masking_passwords_takes_linear_time() -> None:
    text = (
        "r" * 200_000
        + " "
        + "1a" * 100_000
        + " password" * 20_000
        + " postgresql://u:"
        + "p" * 100_000
    )
    started = time.monotonic()
    shown = redact_url(text)
    redact_text(text, text)
    assert time.monotonic() - started < 2
    assert shown.endswith("postgresql://u:" + "p" * 100_000)  # no "@": nothing to mask
    assert (
        redact_url("1postgresql://u:pw@h/db x password=s")
        == "1postgresql://u:***@h/db x password=***"
    )
