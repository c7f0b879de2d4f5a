"""YAML definitions: both formats, every option, and every problem with its line."""

from __future__ import annotations

import json
import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

import sagakit
from sagakit import DefinitionFileError, Engine, RetryPolicy, RunStatus, Saga, StepKind
from sagakit.yamlfile import json_schema, load_yaml, schema_text, validate_yaml

ROOT = Path(__file__).resolve().parents[2]

APP = """
from __future__ import annotations

from os import system  # re-exported: a YAML file must not reach it through here

from pydantic import BaseModel

from sagakit import Next


class Order(BaseModel):
    item: str = "book"
    calls: list[str] = []
    order_created: bool = False


class Declined(Exception):
    pass


def create(state, context, **kwargs):
    state.calls.append("create")  # changed in place, as Ruvon's tutorial does
    return {"order_created": True}


def cancel(state, context, **kwargs):
    state.calls.append("cancel")
    return {"order_created": False}


def charge(state, ctx):
    return {"charged": True}


def refund(state, ctx):
    return None


def ship(state, ctx):
    raise ConnectionError("carrier API unavailable")


def notify(state, ctx):
    return None


def decide(state, ctx, error):
    return Next.COMPENSATE


def answered(state, ctx, signal):
    return Next.RETRY


NOT_A_FUNCTION = 42
"""


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A module of step functions with a name of its own, beside the YAML files."""
    name = f"app_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(APP)
    monkeypatch.chdir(tmp_path)
    # Also restores sys.path afterwards, to which loading adds the file's directory.
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def write(tmp_path: Path, text: str, name: str = "saga.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def errors(path: Path, **options: Any) -> list[str]:
    report = validate_yaml(path, **options)
    assert report.saga is None
    return [str(problem) for problem in report.errors]


# -- sagakit's format -----------------------------------------------------------------


def test_every_option_of_the_python_api_is_expressible(tmp_path: Path, app: str) -> None:
    path = write(
        tmp_path,
        f"""
        saga: Order
        version: "2.1.0"
        description: all the options
        state: {app}.Order
        deadline: 3600
        continue_on_compensation_error: true
        compensation_order: [[create, charge]]
        steps:
          - name: approval
            wait_for: approved
          - parallel:
              - name: create
                function: {app}.create
                compensate: {app}.cancel
                timeout: 5
                compensate_on_failure: true
                compensation_timeout: 7
                compensation_retry: {{max_attempts: 9, initial_delay: 0.5}}
              - name: charge
                function: {app}.charge
                compensate: {app}.refund
                retry:
                  max_attempts: 4
                  initial_delay: 0.25
                  backoff: 3
                  max_delay: 10
                  jitter: 0
                  permanent: [ValueError, {app}.Declined]
                on_failure: {app}.decide
          - name: ship
            function: {app}.ship
            kind: pivot
            on_signal: {app}.answered
          - name: notify
            function: {app}.notify
            kind: retriable
            retry: {{max_attempts: null, initial_delay: 1}}
            local_transaction: true
        """,
    )
    saga = load_yaml(path)
    module = __import__(app)
    assert (saga.name, saga.version, saga.state_type) == ("Order", "2.1.0", module.Order)
    assert saga.deadline == 3600
    assert saga.continue_on_compensation_error is True
    plan = saga.plan()
    assert plan.stages == (("approval",), ("create", "charge"), ("ship",), ("notify",))
    assert plan.compensation_order == (("create", "charge"),)
    approval, create, charge, ship, notify = saga.steps
    assert approval.wait_for == "approved"
    assert create.action is module.create
    assert create.compensation is module.cancel
    assert (create.timeout, create.compensate_on_failure, create.compensation_timeout) == (
        5,
        True,
        7,
    )
    assert create.compensation_retry == RetryPolicy(max_attempts=9, initial_delay=0.5)
    assert charge.retry == RetryPolicy(
        max_attempts=4,
        initial_delay=0.25,
        backoff=3,
        max_delay=10,
        jitter=0,
        permanent=(ValueError, module.Declined),
    )
    assert charge.failure_handler is module.decide
    assert ship.kind is StepKind.PIVOT
    assert ship.signal_handler is module.answered
    assert notify.kind is StepKind.RETRIABLE
    assert notify.retry is not None
    assert notify.retry.max_attempts is None
    assert notify.local_transaction is True


def test_a_loaded_saga_runs_with_ruvon_signatures_and_records_in_place_changes(
    tmp_path: Path, app: str
) -> None:
    path = write(
        tmp_path,
        f"""
        saga: Order
        state: {app}.Order
        steps:
          - {{name: create, function: {app}.create, compensate: {app}.cancel}}
          - {{name: ship, function: {app}.ship, retry: {{max_attempts: 1}}}}
        """,
    )
    with Engine("memory://") as engine:
        run = engine.run(load_yaml(path), {})
    assert run.status is RunStatus.ROLLED_BACK
    # What the compensation returned is merged into the state, and what the
    # functions appended in place is recorded too.
    assert run.data["order_created"] is False
    assert run.data["calls"] == ["create", "cancel"]


def test_an_action_in_yaml_has_the_python_default_of_three_attempts(
    tmp_path: Path, app: str
) -> None:
    steps = (
        f"steps: [{{name: a, function: {app}.charge}}, "
        f"{{name: b, function: {app}.charge, retry: {{initial_delay: 2}}}}]"
    )
    saga = load_yaml(write(tmp_path, f"saga: A\n{steps}\n"))
    assert saga["a"].retry_policy == RetryPolicy()
    assert saga["a"].retry_policy.max_attempts == 3
    assert saga["b"].retry_policy == RetryPolicy(initial_delay=2)  # the other keys: defaults


def test_an_integer_version_is_text_and_the_default_is_one(tmp_path: Path, app: str) -> None:
    steps = f"steps: [{{name: a, function: {app}.charge}}]"
    assert load_yaml(write(tmp_path, f"saga: A\nversion: 3\n{steps}\n")).version == "3"
    assert load_yaml(write(tmp_path, f"saga: A\n{steps}\n")).version == "1"


# -- Ruvon's format -------------------------------------------------------------------


def test_ruvons_workflow_yaml_is_read(tmp_path: Path, app: str) -> None:
    path = write(
        tmp_path,
        f"""
        workflow_type: "OrderProcessing"
        workflow_version: "1.0.0"
        initial_state_model: "{app}.Order"
        description: "an order"
        steps:
          - name: "Create_Order"
            type: "STANDARD"
            function: "{app}.create"
            compensate_function: "{app}.cancel"
            automate_next: true
          - name: "Checks"
            type: "PARALLEL"
            tasks:
              - {{name: "charge", function_path: "{app}.charge"}}
              - {{name: "notify", function_path: "{app}.notify"}}
            merge_strategy: "SHALLOW"
          - name: "Ship"
            type: "STANDARD"
            function: "{app}.ship"
        """,
    )
    report = validate_yaml(path)
    assert report.format == "ruvon"
    assert report.ok
    assert report.saga is not None
    assert (report.saga.name, report.saga.version) == ("OrderProcessing", "1.0.0")
    assert report.saga.plan().stages == (("Create_Order",), ("charge", "notify"), ("Ship",))
    assert report.saga["Create_Order"].kind is StepKind.COMPENSATABLE
    assert report.notes == []


@pytest.mark.parametrize("key", ["saga_mode", "saga_enabled"])
def test_ruvons_saga_mode_switch_is_read_as_ruvon_reads_it(
    tmp_path: Path, app: str, key: str
) -> None:
    """Ruvon's loader reads ``saga_mode``; its docs say ``saga_enabled``: both are honoured."""
    body = f"""
        workflow_type: Loan
        {key}: true
        steps:
          - name: Create
            function: {app}.create
            compensate_function: {app}.cancel
        """
    report = validate_yaml(write(tmp_path, body))
    assert report.ok, report.errors
    off = write(tmp_path, body.replace(f"{key}: true", f"{key}: false"))
    assert errors(off) == [
        f"{off}:2: sagakit always compensates a run that fails; remove {key}: false"
    ]


def test_what_ruvon_can_say_and_sagakit_cannot_gets_a_clear_message(
    tmp_path: Path, app: str
) -> None:
    path = write(
        tmp_path,
        f"""
        workflow_type: Loan
        initial_state_model: {app}.Order
        saga_enabled: false
        steps:
          - name: Review
            type: HUMAN_IN_LOOP
            function: {app}.notify
          - name: Route
            type: DECISION
            function: {app}.notify
            routes: [{{condition: "state.amount > 10", target: Review}}]
          - name: Fan
            type: PARALLEL
            tasks:
              - {{name: a, function_path: {app}.notify}}
              - {{name: b, function_path: {app}.charge}}
            merge_strategy: DEEP
        """,
    )
    found = errors(path)
    assert found == [
        f"{path}:3: sagakit always compensates a run that fails; remove saga_enabled: false",
        f"{path}:6: step 'Review': step type HUMAN_IN_LOOP has no equivalent in sagakit; use "
        "a step with wait_for: SIGNAL (sagakit format), or raise sagakit.Pause",
        f"{path}:11: step 'Route': 'routes' has no equivalent in sagakit: a saga's steps "
        "are fixed; branch inside a step function",
        f"{path}:9: step 'Route': step type DECISION has no equivalent in sagakit; use "
        "branching inside a step function; a saga's stages run in a fixed order",
        f"{path}:17: step 'Fan': merge_strategy DEEP has no equivalent: sagakit merges each "
        "result's top-level keys into the state, the newest winning (SHALLOW)",
    ]


def test_automate_next_false_is_a_note_not_an_error(tmp_path: Path, app: str) -> None:
    path = write(
        tmp_path,
        f"""
        workflow_type: Two
        steps:
          - {{name: first, function: {app}.charge, automate_next: false}}
          - {{name: second, function: {app}.notify}}
        """,
    )
    report = validate_yaml(path)
    assert report.ok
    assert [str(note) for note in report.notes] == [
        f"{path}:3: step 'first': automate_next: false — sagakit goes on to the next step at "
        "once; to wait for a person, give the next step wait_for: SIGNAL"
    ]


# -- problems, each with file, line and step ------------------------------------------


def test_schema_problems_are_all_reported_with_lines_and_steps(tmp_path: Path, app: str) -> None:
    path = write(
        tmp_path,
        f"""
        saga: Broken
        version: 1.10
        steps:
          - name: a
            function: {app}.create
            compensate: {app}.cancel
            compensate: {app}.cancel
          - name: b
            function: "not a path"
            retry:
              max_attempts: 0
              bogus: 1
          - parallel:
              - {{name: c, function: {app}.charge}}
          - name: d
        """,
    )
    assert errors(path) == [
        f"{path}:7: step 'a': key 'compensate' appears twice (first at line 6)",
        f"{path}:2: version: YAML read the version as the number 1.1; quote it so that it "
        'stays as written (version: "1.10", not version: 1.10)',
        f"{path}:9: step 'b': 'not a path' is not a dotted path such as package.module.function",
        f"{path}:11: step 'b': max_attempts: Input should be greater than or equal to 1",
        f"{path}:12: step 'b': unknown key 'bogus'",
        f"{path}:13: parallel: List should have at least 2 items after validation, not 1",
    ]


def test_step_rules_are_reported_at_the_step(tmp_path: Path, app: str) -> None:
    path = write(
        tmp_path,
        f"""
        saga: Rules
        steps:
          - name: ship
            function: {app}.ship
            kind: pivot
          - name: charge
            function: {app}.charge
            compensate: {app}.refund
          - name: notify
        """,
    )
    assert errors(path) == [
        f"{path}:6: step 'charge' of saga 'Rules' comes after the pivot 'ship', so it is "
        "retriable and cannot have a compensation",
        f"{path}:9: step 'notify': 'function' is required (unless the step only waits, "
        "with wait_for)",
    ]


def test_functions_that_do_not_resolve_are_each_reported(tmp_path: Path, app: str) -> None:
    path = write(
        tmp_path,
        f"""
        saga: Missing
        state: {app}.create
        steps:
          - name: a
            function: {app}.nope
            compensate: {app}.NOT_A_FUNCTION
          - name: b
            function: {app}.Order
            retry: {{permanent: [{app}.create]}}
        """,
    )
    assert errors(path) == [
        f"{path}:2: '{app}.create' is not a pydantic model class",
        f"{path}:5: step 'a': '{app}' has no attribute 'nope'",
        f"{path}:6: step 'a': '{app}.NOT_A_FUNCTION' is int, not a function",
        f"{path}:8: step 'b': '{app}.Order' is ModelMetaclass, not a function",
        f"{path}:9: step 'b': '{app}.create' is not an exception class",
    ]


def test_only_allowed_modules_are_ever_imported(tmp_path: Path, app: str) -> None:
    marker = tmp_path / "imported"
    (tmp_path / "sideeffect.py").write_text(
        f"open({str(marker)!r}, 'w').close()\n\ndef fn(state, ctx):\n    return None\n"
    )
    path = write(
        tmp_path,
        f"""
        saga: Evil
        steps:
          - {{name: a, function: os.system}}
          - {{name: b, function: {app}.system}}
          - {{name: c, function: sideeffect.fn}}
        """,
    )
    found = errors(path, allowed_modules=[app])
    assert found == [
        f"{path}:3: step 'a': 'os.system' is outside the allowed modules: the allowed "
        f"modules are {app}",
        f"{path}:4: step 'b': '{app}.system' is posix.system, defined outside the allowed "
        f"modules; the allowed modules are {app}",
        f"{path}:5: step 'c': 'sideeffect.fn' is outside the allowed modules: the allowed "
        f"modules are {app}",
    ]
    assert not marker.exists()  # refused before it was imported


def test_by_default_only_modules_beside_the_file_are_allowed(tmp_path: Path, app: str) -> None:
    path = write(tmp_path, "saga: Evil\nsteps: [{name: a, function: os.system}]\n")
    [problem] = errors(path)
    assert "'os.system' is outside the allowed modules" in problem
    assert "only modules beside the file or in the current directory are allowed" in problem
    assert app in problem


def test_the_loader_is_safe(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = write(
        tmp_path,
        f"""
        saga: !!python/object/apply:os.system ["touch {marker}"]
        steps: []
        """,
    )
    [problem] = errors(path)
    assert problem.startswith(f"{path}:1: not valid YAML: could not determine a constructor")
    assert not marker.exists()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("saga: x\nsteps:\n  - name: [a\n", ":4: not valid YAML: expected ',' or ']'"),
        ("", ": the file is empty"),
        ("- a\n- b\n", ":1: the file must hold a mapping"),
        ("name: x\n", ":1: no 'saga:' (sagakit's format) or 'workflow_type:' (Ruvon's)"),
        ("saga: x\nsteps: []\n", ":2: steps: List should have at least 1 item"),
    ],
)
def test_broken_files_say_what_and_where(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "saga.yaml"
    path.write_text(text)
    [problem] = errors(path)
    assert problem.startswith(f"{path}{message}"), problem


def test_a_missing_file_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    [problem] = errors(tmp_path / "absent.yaml")
    assert problem.startswith(f"{tmp_path / 'absent.yaml'}: cannot read the file")


def test_load_yaml_raises_with_every_problem(tmp_path: Path, app: str) -> None:
    path = write(tmp_path, f"saga: A\nsteps:\n  - {{name: a, function: {app}.nope}}\n")
    with pytest.raises(DefinitionFileError) as caught:
        load_yaml(path)
    assert [p.line for p in caught.value.problems] == [3]
    assert caught.value.problems[0].step == "a"
    assert isinstance(caught.value, sagakit.DefinitionError)


# -- the shipped JSON Schema ----------------------------------------------------------


def test_the_shipped_schema_is_the_generated_one() -> None:
    shipped = ROOT / "src" / "sagakit" / "schema" / "saga.schema.json"
    assert shipped.read_text() == schema_text(), "run: sagakit schema > " + str(shipped)
    Draft202012Validator.check_schema(json_schema())


def test_the_schema_accepts_good_files_and_rejects_bad_ones(tmp_path: Path, app: str) -> None:
    import yaml

    validator = Draft202012Validator(json.loads(schema_text()))
    for path in sorted((ROOT / "examples").rglob("*.yaml")):
        data = yaml.safe_load(path.read_text())
        if "saga" in data:  # sagakit's format (Ruvon's files have their own)
            assert not list(validator.iter_errors(data)), path
    bad = {"saga": "x", "steps": [{"name": "a", "function": "m.f", "retries": 3}]}
    assert list(validator.iter_errors(bad))


def test_a_saga_from_yaml_and_one_from_python_are_the_same_plan(tmp_path: Path, app: str) -> None:
    module = __import__(app)
    python: Saga[Any] = Saga("Same", state=module.Order)
    python.add_step(module.create, name="create", compensation=module.cancel)
    python.add_step(module.ship, name="ship", kind="pivot")
    path = write(
        tmp_path,
        f"""
        saga: Same
        state: {app}.Order
        steps:
          - {{name: create, function: {app}.create, compensate: {app}.cancel}}
          - {{name: ship, function: {app}.ship, kind: pivot}}
        """,
    )
    assert load_yaml(path).plan() == python.plan()


def test_keys_a_step_cannot_use_are_refused_not_ignored(tmp_path: Path, app: str) -> None:
    path = write(
        tmp_path,
        f"""
        saga: Ignored
        compensation_order: [charge, ghost]
        steps:
          - name: approval
            wait_for: approved
            retry: {{max_attempts: 3}}
          - name: charge
            function: {app}.charge
            compensate: {app}.refund
          - name: notify
            function: {app}.notify
            compensation_timeout: 5
            retry: {{permanent: [ValueErorr, _hidden.Error]}}
        """,
    )
    assert errors(path) == [
        f"{path}:6: step 'approval': retry: a step without 'function' only waits for its "
        "signal; give it a function to use this",
        f"{path}:12: step 'notify': compensation_timeout: there is no 'compensate' to apply it to",
        f"{path}:13: step 'notify': 'ValueErorr' is not a builtin exception; name one "
        "(ValueError) or give module.ExceptionClass",
        f"{path}:13: step 'notify': '_hidden.Error' names a private attribute; name a public one",
    ]
    fixed = path.read_text().replace("    retry: {max_attempts: 3}\n", "")
    fixed = fixed.replace("    compensation_timeout: 5\n", "").replace(
        "[ValueErorr, _hidden.Error]", "[ValueError]"
    )
    path.write_text(fixed)
    assert errors(path) == [
        f"{path}:2: saga 'Ignored': compensation_order names 'ghost', which is not a step"
    ]


def test_a_ruvon_file_with_sagakit_keys_or_lossy_parallel_steps_is_refused(
    tmp_path: Path, app: str
) -> None:
    path = write(
        tmp_path,
        f"""
        workflow_type: Mixed
        steps:
          - name: Charge
            function: {app}.charge
            retry: {{max_attempts: 3}}
          - name: Fan
            type: PARALLEL
            compensate_function: {app}.refund
            tasks:
              - {{name: a, function_path: {app}.notify, retries: 2}}
              - {{name: b, function_path: {app}.charge}}
        """,
    )
    assert errors(path) == [
        f"{path}:5: step 'Charge': 'retry' belongs to sagakit's format, not Ruvon's; to use "
        "it, write the file in sagakit's format (saga:, version:, steps:)",
        f"{path}:8: step 'Fan': a PARALLEL step runs its tasks, not a compensate_function; "
        "give each task its own function and compensate_function",
        f"{path}:10: step 'Fan': task keys 'retries' have no equivalent; a task is a name, "
        "a function (or function_path) and a compensate_function",
    ]
    path.write_text(
        f"workflow_type: Both\ninitial_state_model: {app}.Order\n"
        f"initial_state_model_path: {app}.Order\nsteps:\n"
        f"  - {{name: a, function: {app}.charge, tasks: []}}\n"
    )
    assert errors(path) == [
        f"{path}:5: step 'a': tasks belong to a PARALLEL step, not STANDARD",
        f"{path}:3: give initial_state_model or initial_state_model_path, not both",
    ]


# -- reserve: ---------------------------------------------------------------------------


def test_a_step_reserves_names_from_yaml(tmp_path: Path, app: str) -> None:
    path = write(
        tmp_path,
        f"""
        saga: Seats
        state: {app}.Order
        steps:
          - name: charge
            function: {app}.charge
            reserve: {{names: ["item:{{item}}", "desk"], ttl: 30, wait: 5}}
          - name: notify
            function: {app}.notify
            reserve:
              names: [counter]
              ttl: 0.5
        """,
    )
    saga = load_yaml(path)
    assert saga["charge"].reserve == sagakit.Reserve(("item:{item}", "desk"), ttl=30, wait=5)
    assert saga["notify"].reserve == sagakit.Reserve(("counter",), ttl=0.5, wait=0.0)
    assert saga["charge"].reserve.names_for({"item": "book"}) == ["item:book", "desk"]


def test_bad_reserve_keys_are_reported_with_their_lines(tmp_path: Path, app: str) -> None:
    path = write(
        tmp_path,
        f"""
        saga: Seats
        steps:
          - name: a
            function: {app}.charge
            reserve: {{names: [], ttl: 0}}
          - name: b
            function: {app}.charge
            reserve:
              names: ["seat:{{seat"]
              ttl: 5
              wait: -1
              hold: true
          - name: c
            function: {app}.charge
            reserve: ["seat:1"]
        """,
    )
    assert errors(path) == [
        f"{path}:5: step 'a': names: List should have at least 1 item after validation, not 0",
        f"{path}:5: step 'a': ttl: Input should be greater than 0",
        f"{path}:11: step 'b': wait: Input should be greater than or equal to 0",
        f"{path}:12: step 'b': unknown key 'hold'",
        f"{path}:15: step 'c': reserve: Input should be a valid dictionary or instance of "
        "ReserveSpec",
    ]


def test_reserve_names_are_checked_against_the_template_and_the_state_model(
    tmp_path: Path, app: str
) -> None:
    path = write(
        tmp_path,
        f"""
        saga: Seats
        state: {app}.Order
        steps:
          - name: a
            function: {app}.charge
            reserve:
              names: ["seat:{{seat"]
              ttl: 5
          - name: b
            function: {app}.charge
            reserve:
              names: [ok, "item:{{item}}", "row:{{row}}"]
              ttl: 5
          - name: c
            function: {app}.charge
            reserve: {{names: ["slot:{{0}}"], ttl: 5}}
          - name: d
            function: {app}.charge
            local_transaction: true
            reserve: {{names: [x], ttl: 5}}
        """,
    )
    assert errors(path) == [
        f"{path}:7: step 'a': reserve: 'seat:{{seat' is not a valid name template (expected "
        "'}' before end of string); write {{ and }} for a brace",
        f"{path}:12: step 'b': reserve: 'row:{{row}}' uses 'row', which the state model Order "
        "has no field for",
        f"{path}:16: step 'c': reserve: 'slot:{{0}}' must name state fields in braces, like "
        "'seat:{seat}', not {0}",
        f"{path}:20: step 'd': reserve: a local-transaction step cannot reserve; reserve in "
        "the step before it",
    ]


def test_a_step_without_a_function_cannot_reserve(tmp_path: Path, app: str) -> None:
    path = write(
        tmp_path,
        """
        saga: Seats
        steps:
          - name: approval
            wait_for: approved
            reserve: {names: [x], ttl: 5}
        """,
    )
    assert errors(path) == [
        f"{path}:5: step 'approval': reserve: a step without 'function' only waits for its "
        "signal; give it a function to use this",
    ]
