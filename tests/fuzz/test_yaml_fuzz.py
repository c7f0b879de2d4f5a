"""Fuzzing the YAML loader (issue 23): any file gives a report or a clean error, at once.

Documents are random text, structures built from the format's keys with
random values, anchors and aliases (bombs included), deep nesting, huge
scalars and Python tags. Each is checked by `validate_yaml` with and
without ``resolve``, by `load_yaml`, and by ``sagakit validate`` with and
without ``--no-import``: never an exception outside sagakit's error tree,
never a traceback, an exit code of 0 or 1, output a terminal cannot act on
only escaped, and no Python object built from a tag. Checking without
imports finds a subset of the problems found with them.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import example, given, settings
from hypothesis import strategies as st

from sagakit import SagaError
from sagakit.yamlfile import load_yaml, validate_yaml

from . import harness
from .harness import fuzz_settings
from .strategies import SPECIAL_CHARS, SURROGATES

pytestmark = pytest.mark.timeout(120)

STEPS = """
from pathlib import Path

from pydantic import BaseModel


class Model(BaseModel):
    item: str = "book"


class Declined(Exception):
    pass


def act(state, ctx):
    return None


def undo(state, ctx):
    return None


def on_failure(state, ctx, error):
    return None


def boom(*args, **kwargs):
    # Called only if a tag built an object: the mark the tests look for.
    Path(__file__).with_name("pwned").write_text("a tag ran code")


NOT_A_FUNCTION = 42
"""

# A file just inside the limits (a million values once aliases are expanded)
# takes a second or two to check on a slow machine; an alias bomb took 25 s
# and then ran out of memory. Each call must stay far below that.
SECONDS = 10.0
yaml_settings = settings(fuzz_settings, deadline=timedelta(seconds=3 * SECONDS))

# -- documents ------------------------------------------------------------------------

PATHS = [
    "fuzzsteps.act", "fuzzsteps.undo", "fuzzsteps.on_failure", "fuzzsteps.Model",
    "fuzzsteps.Declined", "fuzzsteps.NOT_A_FUNCTION", "fuzzsteps.nothing", "fuzzsteps._act",
    "fuzzsteps.boom", "fuzzsteps", "fuzzsteps.act.__call__", "os.system", "builtins.ValueError",
    "ValueError", "SystemExit", "BaseException", "ValueErorr", "a..b", "", " ", "x y.z",
    "fuzzsteps.act\n", "ünï.cödé",
]  # fmt: skip

TOP_KEYS = [
    "saga", "version", "description", "state", "deadline", "continue_on_compensation_error",
    "compensation_order", "steps", "workflow_type", "workflow_version", "initial_state_model",
    "initial_state_model_path", "saga_enabled", "retries",
]  # fmt: skip
STEP_KEYS = [
    "name", "function", "compensate", "kind", "retry", "timeout", "compensate_on_failure",
    "compensation_retry", "compensation_timeout", "wait_for", "local_transaction", "on_failure",
    "on_signal", "description", "parallel", "type", "tasks", "compensate_function",
    "automate_next", "merge_strategy", "function_path", "dependencies",
]  # fmt: skip
RETRY_KEYS = ["max_attempts", "initial_delay", "backoff", "max_delay", "jitter", "permanent"]
WORDS = ["compensatable", "plain", "pivot", "retriable", "STANDARD", "PARALLEL", "HTTP", "go"]

text_char = st.one_of(st.characters(), st.sampled_from(SPECIAL_CHARS + "\x00"))
names = st.one_of(st.sampled_from(["a", "b", "c", "pay", "ship"]), st.text(text_char, max_size=8))
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**30), 10**30),
    st.floats(),
    st.sampled_from(PATHS),
    st.sampled_from(WORDS),
    names,
)


def _mapping(keys: list[str], values: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.dictionaries(st.sampled_from(keys), values, max_size=6)


retry = st.one_of(
    _mapping(RETRY_KEYS, st.one_of(scalars, st.lists(st.sampled_from(PATHS), max_size=3))),
    scalars,
)
step: st.SearchStrategy[Any] = st.builds(
    lambda name, function, rest: {"name": name, "function": function, **rest},
    names,
    st.sampled_from(PATHS),
    _mapping(STEP_KEYS, st.one_of(scalars, retry, st.lists(scalars, max_size=3))),
)
stage = st.one_of(
    step,
    step,
    st.lists(step, max_size=3).map(lambda members: {"parallel": members}),
    scalars,
)
saga_data = st.builds(
    lambda name, steps, rest: {"saga": name, "steps": steps, **rest},
    names,
    st.one_of(st.lists(stage, max_size=5), scalars),
    _mapping(
        TOP_KEYS,
        st.one_of(scalars, st.lists(st.one_of(names, st.lists(names, max_size=2)), max_size=3)),
    ),
)


def _dump(data: Any, flow: bool, unicode: bool) -> str:
    return yaml.safe_dump(data, default_flow_style=flow, allow_unicode=unicode, sort_keys=False)


def _shared(data: dict[str, Any], times: int) -> str:
    # The same step under an anchor, then named again and again by alias.
    first = yaml.safe_dump(data.get("steps") or [{"name": "a", "function": "fuzzsteps.act"}])
    flow = " ".join(first.split())
    return f"saga: shared\nsteps:\n  - &s {flow}\n" + "  - *s\n" * times


def _bomb(fanout: int, depth: int) -> str:
    lines = ["saga: bomb", 'l0: &l0 ["x"]']
    for level in range(1, depth + 1):
        lines.append(f"l{level}: &l{level} [" + ", ".join([f"*l{level - 1}"] * fanout) + "]")
    lines.append(f"steps: *l{depth}")
    return "\n".join(lines) + "\n"


TAGS = [
    "!!python/object/apply:fuzzsteps.boom []",
    "!!python/object/apply:os.system ['touch pwned']",
    "!!python/object/new:fuzzsteps.Declined []",
    "!!python/name:fuzzsteps.boom",
    "!!python/module:fuzzsteps",
    "!!python/tuple [1, 2]",
    "!!python/object:fuzzsteps.Model {item: x}",
    "!!binary aGVsbG8=",
    "!!set {a, b}",
    "!!omap [a: 1]",
    "!!timestamp 2001-12-14",
    "!!float nan",
    "!!int 0x_",
    "!custom 1",
    "!<tag:yaml.org,2002:python/object/apply:fuzzsteps.boom> []",
]

documents = st.one_of(
    st.builds(_dump, saga_data, st.booleans(), st.booleans()),
    st.text(st.one_of(text_char, SURROGATES), max_size=200),
    st.builds(_shared, saga_data, st.integers(1, 50)),
    st.builds(_bomb, st.integers(1, 12), st.integers(1, 12)),
    st.integers(1, 3_000).map(lambda n: "saga: deep\nsteps: " + "[" * n + "]" * n + "\n"),
    st.integers(1, 3_000).map(lambda n: "saga: deep\nsteps: " + "{a: " * n + "1" + "}" * n),
    st.integers(1, 2_000_000).map(
        lambda n: f"saga: big\nsteps: [{{name: '{'x' * n}', function: fuzzsteps.act}}]\n"
    ),
    st.builds(
        lambda tag, where: where.format(tag),
        st.sampled_from(TAGS),
        st.sampled_from(
            [
                "saga: {}\nsteps: [{{name: a, function: fuzzsteps.act}}]\n",
                "saga: t\nsteps:\n  - name: {}\n    function: fuzzsteps.act\n",
                "saga: t\nsteps: [{{name: a, function: fuzzsteps.act, retry: {}}}]\n",
                "{}\n",
            ]
        ),
    ),
)

# -- running one document -------------------------------------------------------------


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding the module the files may name; each example writes saga.yaml there."""
    where = tmp_path_factory.mktemp("yaml-fuzz")
    (where / "fuzzsteps.py").write_text(STEPS)
    return where


@contextlib.contextmanager
def inside(folder: Path) -> Iterator[None]:
    """In ``folder``, with ``sys.path`` as it was afterwards (resolving adds to it)."""
    path = list(sys.path)
    try:
        with contextlib.chdir(folder):
            yield
    finally:
        sys.path[:] = path


def timed(action: Any, *args: Any, **kwargs: Any) -> Any:
    started = time.monotonic()
    value = action(*args, **kwargs)
    took = time.monotonic() - started
    assert took < SECONDS, f"{action.__name__} took {took:.1f}s"
    return value


@yaml_settings
@given(text=documents)
@example(text=_bomb(9, 9))
@example(text=_bomb(2, 16))  # about the largest shape inside the limits: checked in time
@example(text="saga: x\nsteps: &a [*a]\n")
@example(text="saga: x\nsteps: [" + "[" * 10_000 + "]" * 10_000 + "]\n")
@example(text="saga: !!python/object/apply:fuzzsteps.boom []\nsteps: []\n")
@example(text="saga: x\nsteps: [{name: a, function: fuzzsteps.act, kind: pivot}, "
         "{name: b, function: fuzzsteps.act, compensate: fuzzsteps.undo}]\n")  # fmt: skip
@example(text="\ud800saga: x")
def test_any_document_gives_a_report(folder: Path, text: str) -> None:
    path = folder / "saga.yaml"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    with inside(folder):
        unresolved = timed(validate_yaml, path, resolve=False)
        resolved = timed(validate_yaml, path)
        try:
            timed(load_yaml, path)
        except SagaError as exc:  # DefinitionFileError, in sagakit's error tree
            message = str(exc)
        else:
            message = ""
    assert not (folder / "pwned").exists(), "a YAML tag ran code"
    assert unresolved.saga is None
    assert message == "\n".join(str(problem) for problem in resolved.errors)
    if resolved.ok:
        # What fails without imports fails with them: the check is a subset.
        assert unresolved.ok, unresolved.errors
        assert unresolved.outline == resolved.outline
    if not unresolved.ok:
        assert not resolved.ok
    for report in (unresolved, resolved):
        assert report.ok == (not report.errors), report.errors
        assert all(problem.file == str(path) for problem in report.errors)


@yaml_settings
@given(text=documents, no_import=st.booleans())
@example(text=_bomb(12, 12), no_import=True)
@example(text="saga: 'a\x1b[31m'\nsteps: [{name: \"b\\e[2J\\r\", function: fuzzsteps.act}]\n",
         no_import=True)  # fmt: skip
def test_sagakit_validate_on_any_document(folder: Path, text: str, no_import: bool) -> None:
    (folder / "saga.yaml").write_bytes(text.encode("utf-8", "surrogatepass"))
    args = ["validate", "saga.yaml", *(["--no-import"] if no_import else [])]
    with inside(folder):
        result = timed(harness.invoke, args, folder)
    shown = f"sagakit {args}\nexit {result.exit_code}\n{result.output}"
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"uncaught {result.exception!r}: {shown}") from result.exception
    assert result.exit_code in (0, 1), shown
    assert "Traceback" not in result.output, shown
    assert harness.unprintable(result.output) == [], shown
    assert not (folder / "pwned").exists(), "a YAML tag ran code"
