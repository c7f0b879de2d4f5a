"""``sagakit validate`` on hostile files: exit 1, one problem line, no traceback, no stall.

Issue 23, items 7, 8 and 9, through a real ``python -m sagakit validate FILE``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from unit.yaml_samples import LAUGHS, STEPS

pytestmark = pytest.mark.slow


def validate(tmp_path: Path, text: str, seconds: float = 20) -> str:
    """Run ``sagakit validate`` on ``text``; it must fail in time with one problem line."""
    (tmp_path / "hostile_steps.py").write_text(STEPS)
    path = tmp_path / "saga.yaml"
    path.write_text(text)
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    env.pop("PYTHONPATH", None)
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "sagakit", "validate", "saga.yaml"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=seconds,
        check=False,
    )
    assert time.monotonic() - started < seconds
    assert done.returncode == 1, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    assert "Traceback" not in done.stdout + done.stderr
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    # The one problem, then the summary every failed validation ends with.
    assert len(lines) == 2, done.stderr
    assert lines[1] == "Error: saga.yaml: 1 problem"
    return lines[0]


def test_billion_laughs_is_refused_quickly(tmp_path: Path) -> None:
    problem = validate(tmp_path, LAUGHS + "steps: *i\n", seconds=15)
    assert problem == (
        "saga.yaml:8: refused: the data holds more than 1,000,000 values once its "
        "aliases (*name) are expanded; a saga definition never needs that"
    )


def test_alias_cycle_is_refused(tmp_path: Path) -> None:
    problem = validate(tmp_path, "saga: x\nsteps: &a [*a]\n")
    assert problem == "saga.yaml:2: refused: the alias *a refers to a value that contains it"


@pytest.mark.parametrize(
    "value", ["[" * 10_000 + "]" * 10_000, "{a: " * 10_000 + "1" + "}" * 10_000]
)
def test_value_nested_ten_thousand_deep_is_one_line(tmp_path: Path, value: str) -> None:
    problem = validate(tmp_path, f"saga: deep\nsteps:\n  - name: s\n    extra: {value}\n")
    assert problem == (
        "saga.yaml:4: refused: values nested more than 100 deep; a saga definition never needs that"
    )


@pytest.mark.parametrize("name", ["BaseException", "SystemExit", "GeneratorExit"])
def test_permanent_base_exception_is_refused(tmp_path: Path, name: str) -> None:
    text = (
        "saga: s\nsteps:\n  - name: charge\n    function: hostile_steps.act\n"
        f"    retry: {{max_attempts: 3, permanent: [{name}]}}\n"
    )
    problem = validate(tmp_path, text)
    assert problem.startswith(
        f"saga.yaml:5: step 'charge': {name!r} is not a subclass of Exception;"
    )


@pytest.mark.parametrize("value", ["1e308", "1.0e+308", "100000000"])
def test_retry_delay_past_the_cap_is_refused(tmp_path: Path, value: str) -> None:
    text = (
        "saga: s\nsteps:\n  - name: charge\n    function: hostile_steps.act\n"
        f"    retry: {{max_attempts: 3, initial_delay: {value}}}\n"
    )
    problem = validate(tmp_path, text)
    assert problem.startswith(
        "saga.yaml:5: step 'charge': RetryPolicy.initial_delay must be at most 2.592e+06 "
        "seconds (30 days)"
    )


def test_a_long_saga_validates_in_linear_time(tmp_path: Path) -> None:
    # 4,000 steps took 3.6 s of rule checking, and 60,000 did not finish in two
    # minutes; the YAML parsing itself is linear, so 8,000 is enough to tell.
    (tmp_path / "hostile_steps.py").write_text(STEPS)
    lines = ["saga: long", "steps:"]
    lines += [
        f"  - {{name: s{i}, function: hostile_steps.act, compensate: hostile_steps.undo}}"
        for i in range(8_000)
    ]
    lines += ["  - {name: pivot, function: hostile_steps.act, kind: pivot}"]
    lines += [f"  - {{name: r{i}, function: hostile_steps.act}}" for i in range(4_000)]
    (tmp_path / "long.yaml").write_text("\n".join(lines) + "\n")
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    env.pop("PYTHONPATH", None)
    done = subprocess.run(
        [sys.executable, "-m", "sagakit", "validate", "long.yaml"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("long.yaml: ok - saga long version 1, 12001 steps: s0 -> s1")
