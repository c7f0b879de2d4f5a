"""Checking a YAML definition without importing anything: ``validate_yaml(resolve=False)``.

Issue 23: ``validate`` on an untrusted file imports the modules beside it,
which runs their code. With ``resolve=False`` nothing is imported (proved
by modules whose import leaves a mark), while everything that needs no code
is still checked: the YAML and its limits, the schema, the step rules and
the form of every path.
"""

from __future__ import annotations

import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from sagakit.yamlfile import Outline, load_yaml, validate_yaml

# Importing it leaves a file beside it: the proof that it was imported.
MARKING = """
from pathlib import Path

Path(__file__).with_name("imported-" + __name__.replace(".", "-")).write_text("ran")


class Declined(Exception):
    pass


def act(state, ctx):
    return None


def undo(state, ctx):
    return None


def on_failure(state, ctx, error):
    return None
"""

MODEL = """
from pathlib import Path

from pydantic import BaseModel

Path(__file__).with_name("imported-" + __name__.replace(".", "-")).write_text("ran")


class State(BaseModel):
    item: str = "book"
"""


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A module and a package beside the YAML files, each marking its import; the name prefix."""
    name = f"mark_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(MARKING)
    package = tmp_path / f"{name}_pkg"
    package.mkdir()
    (package / "__init__.py").write_text(MARKING)
    (package / "models.py").write_text(MODEL)
    monkeypatch.chdir(tmp_path)
    # Restores sys.path afterwards, to which loading with resolve adds the directory.
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def write(tmp_path: Path, text: str, name: str = "saga.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def marks(tmp_path: Path) -> list[str]:
    return sorted(p.name for p in tmp_path.rglob("imported-*"))


def full_saga(tmp_path: Path, app: str) -> Path:
    return write(
        tmp_path,
        f"""
        saga: order
        version: "2"
        state: {app}_pkg.models.State
        compensation_order: [[hold, book], charge]
        steps:
          - name: approval
            wait_for: approved
          - name: charge
            function: {app}.act
            compensate: {app}_pkg.undo
            retry: {{max_attempts: 3, permanent: [ValueError, {app}.Declined]}}
            on_failure: {app}.on_failure
          - parallel:
              - {{name: hold, function: {app}_pkg.act, compensate: {app}.undo}}
              - {{name: book, function: {app}.act, compensate: {app}.undo}}
          - {{name: ship, function: {app}.act, kind: pivot}}
          - {{name: notify, function: {app}.act}}
        """,
    )


def test_without_resolve_nothing_is_imported_and_with_it_the_modules_run(
    tmp_path: Path, app: str
) -> None:
    path = full_saga(tmp_path, app)
    modules, syspath = set(sys.modules), list(sys.path)

    report = validate_yaml(path, resolve=False)

    assert report.errors == []
    assert report.ok
    assert not report.resolved
    assert report.saga is None  # its functions are stand-ins: never handed out
    assert report.outline == Outline(
        "order", "2", (("approval",), ("charge",), ("hold", "book"), ("ship",), ("notify",))
    )
    assert report.outline.steps == 6
    assert marks(tmp_path) == []
    assert set(sys.modules) - modules == set()
    assert sys.path == syspath

    # The same file, resolved: every module it names is imported, and runs.
    report = validate_yaml(path)
    assert report.ok
    assert report.saga is not None
    assert report.outline == Outline(
        "order", "2", (("approval",), ("charge",), ("hold", "book"), ("ship",), ("notify",))
    )
    assert marks(tmp_path) == [
        f"imported-{app}",
        f"imported-{app}_pkg",
        f"imported-{app}_pkg-models",
    ]


def test_a_ruvon_file_is_checked_without_imports_too(tmp_path: Path, app: str) -> None:
    path = write(
        tmp_path,
        f"""
        workflow_type: Loan
        initial_state_model: {app}_pkg.models.State
        steps:
          - {{name: Apply, type: STANDARD, function: {app}.act, compensate_function: {app}.undo}}
          - name: Checks
            type: PARALLEL
            tasks:
              - {{name: credit, function_path: {app}.act}}
              - {{name: fraud, function_path: {app}_pkg.act}}
        """,
    )
    report = validate_yaml(path, resolve=False)
    assert report.ok, report.errors
    assert report.format == "ruvon"
    assert report.outline is not None
    assert report.outline.stages == (("Apply",), ("credit", "fraud"))
    assert marks(tmp_path) == []


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        # The form of a path.
        (
            "  - {name: a, function: APP._hidden}",
            "saga.yaml:3: step 'a': 'APP._hidden' names a private attribute; name a public one",
        ),
        (
            "  - {name: a, function: APP}",
            "saga.yaml:3: step 'a': 'APP' is not a dotted path such as package.module.function",
        ),
        (
            "  - {name: a, function: 'APP.a b'}",
            "saga.yaml:3: step 'a': 'APP.a b' is not a dotted path such as package.module.function",
        ),
        # Its scope: a module outside the allowed ones is refused, as when resolving.
        (
            "  - {name: a, function: os.system}",
            "saga.yaml:3: step 'a': 'os.system' is outside the allowed modules: only modules "
            "beside the file or in the current directory are allowed (APP, APP_pkg); allow "
            "others with allowed_modules= or --app MODULE",
        ),
        # Exceptions: a bare name must be a builtin one, and a subclass of Exception.
        (
            "  - {name: a, function: APP.act, retry: {permanent: [ValueErorr]}}",
            "saga.yaml:3: step 'a': 'ValueErorr' is not a builtin exception; name one "
            "(ValueError) or give module.ExceptionClass",
        ),
        (
            "  - {name: a, function: APP.act, retry: {permanent: [SystemExit]}}",
            "saga.yaml:3: step 'a': 'SystemExit' is not a subclass of Exception; SystemExit, "
            "KeyboardInterrupt and the like stop the worker, not an attempt, so they cannot "
            "be permanent",
        ),
        # The schema and the retry limits.
        ("  - {name: a, function: APP.act, retries: 3}", "saga.yaml:3: step 'a': unknown key"),
        (
            "  - {name: a, function: APP.act, retry: {initial_delay: 1e308}}",
            "saga.yaml:3: step 'a': RetryPolicy.initial_delay must be at most",
        ),
        # The rules between steps.
        (
            "  - {name: a, function: APP.act}\n  - {name: a, function: APP.act}",
            "saga.yaml:4: step 'a': saga 's' already has a step named 'a'",
        ),
        (
            "  - {name: a, function: APP.act, kind: retriable}",
            "saga.yaml:3: step 'a' of saga 's' is retriable but no pivot step comes before it",
        ),
        (
            "  - {name: p, function: APP.act, kind: pivot}\n"
            "  - {name: b, function: APP.act, compensate: APP.undo}",
            "saga.yaml:4: step 'b' of saga 's' comes after the pivot 'p', so it is retriable and "
            "cannot have a compensation",
        ),
        (
            "  - {name: a, wait_for: go, timeout: 3}",
            "saga.yaml:3: step 'a': timeout: a step without 'function' only waits for its "
            "signal; give it a function to use this",
        ),
        (
            "  - parallel:\n"
            "      - {name: a, function: APP.act, kind: pivot}\n"
            "      - {name: b, function: APP.act}",
            "saga.yaml:3: saga 's': parallel(a, b): the pivot 'a' cannot run in parallel",
        ),
    ],
)
def test_what_needs_no_import_is_checked_as_when_resolving(
    tmp_path: Path, app: str, steps: str, message: str
) -> None:
    path = tmp_path / "saga.yaml"
    path.write_text("saga: s\nsteps:\n" + steps.replace("APP", app) + "\n")
    expected = message.replace("APP", app).replace("saga.yaml", str(path))
    for resolve in (False, True):
        report = validate_yaml(path, resolve=resolve)
        assert not report.ok
        assert report.saga is None
        assert report.outline is None
        problems = [str(problem) for problem in report.errors]
        assert len(problems) == 1, problems
        assert problems[0].startswith(expected), (resolve, problems[0])
        if not resolve:
            assert marks(tmp_path) == []


def test_compensation_order_and_yaml_limits_are_checked_without_imports(
    tmp_path: Path, app: str
) -> None:
    order = write(
        tmp_path,
        f"""
        saga: s
        compensation_order: [a]
        steps:
          - {{name: a, function: {app}.act, compensate: {app}.undo}}
          - {{name: b, function: {app}.act, compensate: {app}.undo}}
        """,
    )
    report = validate_yaml(order, resolve=False)
    assert [p.message for p in report.errors] == [
        "saga 's': compensation_order leaves out the compensatable step(s) 'b'; name every one"
    ]
    deep = tmp_path / "deep.yaml"
    deep.write_text("saga: s\nsteps: " + "[" * 5_000 + "]" * 5_000 + "\n")
    (problem,) = validate_yaml(deep, resolve=False).errors
    assert problem.message.startswith("refused: values nested more than 100 deep")
    tag = tmp_path / "tag.yaml"
    tag.write_text(
        "saga: !!python/object/apply:os.system ['touch pwned']\n"
        f"steps: [{{name: a, function: {app}.act}}]\n"
    )
    (problem,) = validate_yaml(tag, resolve=False).errors
    assert problem.message.startswith("not valid YAML: could not determine a constructor")
    assert not (tmp_path / "pwned").exists()
    assert marks(tmp_path) == []


def test_what_only_an_import_can_tell_is_left_to_resolving(tmp_path: Path, app: str) -> None:
    path = write(
        tmp_path,
        f"""
        saga: s
        state: {app}.act
        steps:
          - {{name: a, function: {app}.nothing_here}}
          - {{name: b, function: {app}.act, on_failure: {app}.act}}
          - {{name: c, function: {app}.Declined}}
          - {{name: d, function: {app}.act, retry: {{permanent: [{app}.act]}}}}
        """,
    )
    unresolved = validate_yaml(path, resolve=False)
    assert unresolved.ok, unresolved.errors
    assert marks(tmp_path) == []
    resolved = validate_yaml(path)
    assert [p.message for p in resolved.errors] == [
        f"'{app}.act' is not a pydantic model class",
        f"'{app}' has no attribute 'nothing_here'",
        "failure handler of step 'b' must accept three arguments (state, ctx, error or "
        "signal), its signature is (state, ctx)",
        f"'{app}.Declined' is type, not a function",
        f"'{app}.act' is not an exception class",
    ]


def test_allowed_modules_name_the_scope_without_importing_it(tmp_path: Path, app: str) -> None:
    path = full_saga(tmp_path, app)
    report = validate_yaml(path, allowed_modules=[f"{app}_pkg"], resolve=False)
    assert {p.message for p in report.errors} == {
        f"'{app}.{attr}' is outside the allowed modules: the allowed modules are {app}_pkg"
        for attr in ("act", "Declined", "on_failure", "undo")
    }
    report = validate_yaml(path, allowed_modules=[app, f"{app}_pkg"], resolve=False)
    assert report.ok, report.errors
    assert marks(tmp_path) == []


def test_load_yaml_still_resolves(tmp_path: Path, app: str) -> None:
    saga = load_yaml(full_saga(tmp_path, app))
    assert saga.name == "order"
    assert f"imported-{app}" in marks(tmp_path)
