"""Running the ``sagakit`` command in-process on hostile input, and what every run must satisfy.

`workspace` makes a throwaway folder per example holding a copy of a
SQLite store with a few runs (`cliapp.RUNS`) and some files to name;
`invoke` runs the command there through click's `CliRunner`, restoring what
a real process would throw away at exit (logging handlers, ``sys.path``)
and never starting a real worker loop; `check` asserts what any input must
give: exit code 0, 1 or 2, no traceback, only printable characters, and the
store unchanged where the command must not change it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any
from unittest import mock

from click.testing import CliRunner, Result
from hypothesis import HealthCheck, settings

from sagakit import Engine
from sagakit.cli.main import cli

from . import cliapp

CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

# Examples per test: enough to reach the odd corners in seconds. CI runs a
# fixed (derandomized) sample, so that its verdict is reproducible;
# SAGAKIT_FUZZ_EXAMPLES=2000 digs deeper on a developer's machine.
EXAMPLES = int(os.environ.get("SAGAKIT_FUZZ_EXAMPLES", "60"))

fuzz_settings = settings(
    max_examples=EXAMPLES,
    # An example is one command on a small store, far below a second: the
    # deadline catches a stall, pytest-timeout (on each test) a hang.
    deadline=timedelta(seconds=5),
    derandomize=CI,
    database=None if CI else settings().database,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

STORE = "runs.db"

# Commands that must leave the store as it was, whatever they are given.
READ_ONLY = frozenset({"list", "show", "history", "validate", "schema"})

GOOD_YAML = """\
saga: from-yaml
version: "2"
steps:
  - name: reserve
    function: fuzz.cliapp.plain_reserve
    compensate: fuzz.cliapp.plain_release
  - {name: charge, function: fuzz.cliapp.plain_charge}
"""
BAD_YAML = "saga: broken\nsteps:\n  - {name: a, function: os.system, kind: pivot, retries: 3}\n"


def make_template(folder: Path) -> Path:
    """A SQLite store in ``folder`` holding one run of `cliapp.fuzzed` per entry of `RUNS`."""
    folder.mkdir(parents=True, exist_ok=True)
    with Engine(f"sqlite:///{folder / STORE}") as engine:
        for run_id, state in cliapp.RUNS.items():
            engine.run(cliapp.fuzzed, state, run_id=run_id)
    (folder / "payload.json").write_text('{"answer": "visa"}')
    (folder / "latin1.json").write_bytes(b'{"answer": "caf\xe9"}')
    (folder / "good.yaml").write_text(GOOD_YAML)
    (folder / "bad.yaml").write_text(BAD_YAML)
    return folder


@contextlib.contextmanager
def workspace(template: Path) -> Iterator[Path]:
    """A fresh copy of the template folder, removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="ex-", dir=template.parent))
    try:
        for item in template.iterdir():
            shutil.copy2(item, folder / item.name)
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def snapshot(folder: Path) -> dict[str, bytes]:
    """The bytes of the store and of its side files."""
    return {p.name: p.read_bytes() for p in sorted(folder.glob(STORE + "*"))}


async def _no_serve(*args: Any, **kwargs: Any) -> None:
    """Stands for the worker's loop: its options are checked, then it stops at once."""


def invoke(args: Sequence[str], cwd: Path, stdin: str | bytes = "") -> Result:
    """``sagakit ARGS`` in ``cwd``, in this process."""
    logger, root = logging.getLogger("sagakit"), logging.getLogger()
    kept = (list(logger.handlers), logger.level, list(root.handlers), root.level)
    path = list(sys.path)
    try:
        with (
            contextlib.chdir(cwd),
            mock.patch.multiple(
                "sagakit.cli.worker",
                _serve=_no_serve,
                _tune_garbage_collector=lambda: None,
                _log_to_stderr=lambda level, log_format: None,
                _abandon_stuck_threads=lambda: None,
            ),
        ):
            return CliRunner().invoke(
                cli,
                list(args),
                input=stdin,
                env={"COLUMNS": "200", "NO_COLOR": "1"},
                catch_exceptions=True,
            )
    finally:
        logger.handlers[:], root.handlers[:] = kept[0], kept[2]
        logger.setLevel(kept[1])
        root.setLevel(kept[3])
        sys.path[:] = path


def unprintable(text: str) -> list[str]:
    """The characters of ``text`` a terminal would act on (line feeds apart)."""
    return sorted({ch for ch in text if ch != "\n" and not ch.isprintable()})


def check(
    result: Result, args: Sequence[str], before: dict[str, bytes], after: dict[str, bytes]
) -> None:
    """What any command line must give: see the module's docstring."""
    shown = f"sagakit {list(args)!r}\nexit {result.exit_code}\n{result.output}"
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"uncaught {result.exception!r}: {shown}") from result.exception
    assert result.exit_code in (0, 1, 2), shown
    assert "Traceback" not in result.output, shown
    assert unprintable(result.output) == [], shown
    command = next((a for a in args if a in COMMANDS), None)
    # A refusal changes nothing; a command that acted and left a run needing
    # attention (retry, resolve, run) exits 1 too, and did change it.
    refused = result.exit_code == 2 or (
        result.exit_code == 1 and "needs attention" not in result.output
    )
    if command in READ_ONLY or command is None or refused:
        assert after == before, f"the store changed: {shown}"


COMMANDS = frozenset(
    {
        "demo",
        "list",
        "show",
        "history",
        "cancel",
        "signal",
        "retry",
        "resolve",
        "recover",
        "worker",
        "migrate",
        "validate",
        "run",
        "schema",
    }
)
