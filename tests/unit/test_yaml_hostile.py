"""Hostile definition files and retry policies: refused quickly, with one problem each.

Issue 23, items 7 (retry values and permanent errors that cannot work), 8 (a
value nested 10,000 deep) and 9 (alias bombs, huge files, and step rules
that were quadratic in the number of steps). Where the bug was a hang, the
test has a time bound of its own.
"""

from __future__ import annotations

import math
import textwrap
import uuid
from pathlib import Path

import pytest

from sagakit import DefinitionError, RetryPolicy, Saga
from sagakit.definition.retry import MAX_RETRY_DELAY
from sagakit.yamlfile import validate_yaml
from sagakit.yamlfile.reading import MAX_DEPTH, MAX_FILE_BYTES

from .yaml_samples import LAUGHS, STEPS


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A module of step functions beside the YAML files."""
    name = f"hostile_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(STEPS)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def only_problem(path: Path) -> str:
    report = validate_yaml(path)
    assert report.saga is None
    assert len(report.errors) == 1, report.errors
    text = str(report.errors[0])
    assert "\n" not in text
    return text


# -- item 9: bounded alias expansion and size ----------------------------------------


@pytest.mark.timeout(10)
def test_a_billion_laughs_file_is_refused_at_once(tmp_path: Path) -> None:
    path = tmp_path / "lol.yaml"
    path.write_text(LAUGHS + "steps: *i\n")
    problem = only_problem(path)
    assert problem.startswith(f"{path}:")
    assert "refused" in problem
    assert "aliases" in problem


@pytest.mark.timeout(10)
def test_an_alias_that_contains_itself_is_refused(tmp_path: Path, app: str) -> None:
    path = tmp_path / "cycle.yaml"
    path.write_text(
        f"saga: x\nsteps:\n  - &me {{name: s, function: {app}.act, retry: {{permanent: [*me]}}}}\n"
    )
    expected = f"{path}:3: refused: the alias *me refers to a value that contains it"
    assert only_problem(path) == expected


@pytest.mark.timeout(10)
def test_a_file_larger_than_the_limit_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_text("saga: big\nsteps: []\n" + "# padding\n" * (MAX_FILE_BYTES // 10 + 1))
    assert only_problem(path) == f"{path}: the file is larger than 16 MiB"


@pytest.mark.timeout(20)
def test_step_rules_take_linear_time() -> None:
    # 60,000 steps did not finish in 2 minutes: every step looked for the
    # pivot among all the steps before it, and so did every compensation.
    saga: Saga[dict[str, object]] = Saga("long")
    count = 30_000
    for i in range(count):
        saga.add_step(lambda s, c: None, name=f"a{i}", compensation=lambda s, c: None)
    saga.add_step(lambda s, c: None, name="pivot", kind="pivot")
    for i in range(count):
        saga.add_step(lambda s, c: None, name=f"r{i}")
    saga.validate()
    assert len(saga.steps) == 2 * count + 1
    with pytest.raises(DefinitionError, match="comes after the pivot 'pivot'"):
        saga["r7"].set_compensation(lambda s, c: None)


@pytest.mark.timeout(20)
def test_parallel_groups_take_linear_time() -> None:
    saga: Saga[dict[str, object]] = Saga("wide")
    for i in range(20_000):
        saga.add_step(lambda s, c: None, name=f"x{i}", compensation=lambda s, c: None)
        saga.add_step(lambda s, c: None, name=f"y{i}", compensation=lambda s, c: None)
        saga.parallel(f"x{i}", f"y{i}")
    saga.validate()
    assert len(saga.plan().stages) == 20_000
    with pytest.raises(DefinitionError, match="step 'x3' is already in a parallel group"):
        saga.parallel("x3", "y3")


def test_parallel_still_checks_its_steps_after_a_group_moved_the_stages() -> None:
    saga: Saga[dict[str, object]] = Saga("moved")
    for name in "abcde":
        saga.add_step(lambda s, c: None, name=name, compensation=lambda s, c: None)
    saga.parallel("a", "b")  # c, d and e each move one stage down
    saga.parallel("d", "e")
    assert saga.plan().stages == (("a", "b"), ("c",), ("d", "e"))
    for name in "fgh":
        saga.add_step(lambda s, c: None, name=name, compensation=lambda s, c: None)
    with pytest.raises(DefinitionError, match="one after another"):
        saga.parallel("f", "h")
    with pytest.raises(DefinitionError, match="step 'd' is already in a parallel group"):
        saga.parallel("c", "d")
    saga.parallel("g", "h")
    assert saga.plan().stages[-2:] == (("f",), ("g", "h"))


# -- item 8: a value nested 10,000 deep -----------------------------------------------


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    "value", ["[" * 10_000 + "]" * 10_000, "{a: " * 10_000 + "1" + "}" * 10_000]
)
def test_a_value_nested_ten_thousand_deep_is_one_problem(tmp_path: Path, value: str) -> None:
    path = tmp_path / "deep.yaml"
    path.write_text(f"saga: deep\nsteps:\n  - name: s\n    extra: {value}\n")
    assert only_problem(path) == (
        f"{path}:4: refused: values nested more than {MAX_DEPTH} deep; "
        "a saga definition never needs that"
    )


def test_nesting_within_the_limit_is_read(tmp_path: Path) -> None:
    path = tmp_path / "nested.yaml"
    depth = MAX_DEPTH - 5
    path.write_text("saga: nested\nsteps: []\nx: " + "[" * depth + "]" * depth + "\n")
    problems = [str(p) for p in validate_yaml(path).errors]
    assert not any("refused" in p for p in problems), problems


# -- item 7: retry policies that cannot work ------------------------------------------


@pytest.mark.parametrize("kind", [BaseException, SystemExit, KeyboardInterrupt, GeneratorExit])
def test_a_permanent_error_that_is_not_an_exception_is_refused(kind: type[BaseException]) -> None:
    with pytest.raises(DefinitionError, match="subclasses of Exception"):
        RetryPolicy(permanent=(kind,))


@pytest.mark.parametrize("field", ["initial_delay", "max_delay"])
@pytest.mark.parametrize("value", [1e308, MAX_RETRY_DELAY * 2, math.inf, math.nan, -1.0])
def test_an_absurd_delay_is_refused(field: str, value: float) -> None:
    with pytest.raises(DefinitionError, match=f"RetryPolicy.{field}|delays must not be negative"):
        RetryPolicy(**{field: value})  # type: ignore[arg-type]


def test_delays_up_to_the_cap_are_kept() -> None:
    policy = RetryPolicy(max_attempts=3, initial_delay=MAX_RETRY_DELAY, max_delay=MAX_RETRY_DELAY)
    assert policy.delay(1, 0.5) == MAX_RETRY_DELAY
    assert RetryPolicy(permanent=(ValueError, LookupError)).permanent == (ValueError, LookupError)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "saga.yaml"
    path.write_text(textwrap.dedent(text).lstrip())
    return path


@pytest.mark.parametrize("name", ["BaseException", "SystemExit", "builtins.KeyboardInterrupt"])
def test_yaml_permanent_must_be_an_exception(tmp_path: Path, app: str, name: str) -> None:
    path = write(
        tmp_path,
        f"""
        saga: s
        steps:
          - name: charge
            function: {app}.act
            retry:
              max_attempts: 3
              permanent:
                - ValueError
                - {name}
        """,
    )
    assert only_problem(path) == (
        f"{path}:9: step 'charge': {name!r} is not a subclass of Exception; SystemExit, "
        "KeyboardInterrupt and the like stop the worker, not an attempt, so they cannot "
        "be permanent"
    )


@pytest.mark.parametrize("value", ["1e308", "1.0e+308", "99999999999"])
def test_yaml_retry_delay_past_the_cap_is_refused(tmp_path: Path, app: str, value: str) -> None:
    path = write(
        tmp_path,
        f"""
        saga: s
        steps:
          - name: charge
            function: {app}.act
            compensate: {app}.undo
            compensation_retry: {{max_attempts: 3, max_delay: {value}}}
        """,
    )
    problem = only_problem(path)
    assert problem.startswith(f"{path}:6: step 'charge': RetryPolicy.max_delay must be at most")
