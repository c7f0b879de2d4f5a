"""Ruvon's workflow files, read by ruvon-sdk's own loader and by sagakit, key by key.

Ruvon's key set is not written down here: it is read from ruvon-sdk's code
at test time (every ``config.get("key")`` and ``config["key"]`` of its
loader), so a key a new Ruvon version reads, and that sagakit's table
(`sagakit.yamlfile.ruvon_keys`) or this test's table does not cover, fails
the test. For each key, a sample file with the key and the same file
without it are loaded by Ruvon's loaders: they must build different
workflows (Ruvon reads the key) or the same one (a key it does not read).
The sample is then loaded by sagakit, which must map the key to the same
meaning, accept it, note a difference, or refuse it saying what to use.

ruvon-sdk is pinned in the ``dev`` extra, so ``scripts/test.sh`` installs it.
"""

from __future__ import annotations

import ast
import asyncio
import copy
import inspect
import os
import re
import sys
import textwrap
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from sagakit import Engine, EventKind, RunStatus, Saga, StepContext, StepKind
from sagakit.yamlfile import validate_yaml
from sagakit.yamlfile.ruvon_keys import (
    RUVON_KEYS,
    RUVON_PARALLEL,
    RUVON_REFUSED,
    RUVON_STEP_TYPES,
    RUVON_TYPES_SAME,
    Where,
)

# Importing ruvon switches the whole process to uvloop when uvloop is installed.
os.environ.setdefault("RUVON_USE_UVLOOP", "false")
try:
    import ruvon
    import ruvon.builder
    import ruvon.models
    import ruvon.testing.harness
    import ruvon.workflow
    import ruvon_cli.commands.workflow_cmd as ruvon_cli_start
    from ruvon.implementations.execution.sync import SyncExecutor
    from ruvon.implementations.expression_evaluator.simple import SimpleExpressionEvaluator
    from ruvon.implementations.observability.logging import LoggingObserver
    from ruvon.implementations.persistence.memory import InMemoryPersistence
    from ruvon.implementations.templating.jinja2 import Jinja2TemplateEngine
    from ruvon_cli.config import Config
except ImportError as exc:  # pragma: no cover - only without the dev extra
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        raise
    pytest.skip(
        f"ruvon-sdk is not installed ({exc}): pip install -e '.[dev]'", allow_module_level=True
    )

ROOT = Path(__file__).resolve().parents[2]

APP = """
from __future__ import annotations

from pydantic import BaseModel


class Order(BaseModel):
    calls: list[str] = []
    order_created: bool = False


def create(state, context, **kwargs):
    return {"order_created": True}


def cancel(state, context, **kwargs):
    return {"order_created": False}


def check(state, context, **kwargs):
    return {}


def undo_check(state, context, **kwargs):
    return {}
"""

# -- what Ruvon's code reads ----------------------------------------------------------

# Where the loaders of ruvon-sdk keep a workflow file's data: (module, function,
# variable) -> "workflow", "step", "task", or None for data that is not the file's
# (Ruvon's registry entry, a dynamic_injection rule's insides, typing subscripts).
# A read through a variable not listed fails the test: a new place to classify.
READERS: dict[str, dict[tuple[str | None, str], str | None]] = {
    "ruvon.builder": {
        ("_build_steps_from_config", "config"): "step",
        ("_build_steps_from_config", "task_config"): "task",
        ("_collect_func_paths", "step"): "step",
        ("_collect_func_paths", "task"): "task",
        ("_collect_modules_from_steps", "step"): "step",
        ("_collect_modules_from_steps", "task"): "task",
        ("_collect_modules_from_steps", "rule"): None,
        ("create_workflow", "workflow_config"): "workflow",
        ("create_workflow", "s"): "step",
        ("get_all_task_modules", "config"): "workflow",
        ("get_scheduled_workflows", "config"): "workflow",
        ("get_state_model_class", "workflow_config"): "workflow",
        ("get_workflow_config", "processed_config_info"): "workflow",
        ("get_workflow_config", "config_info"): None,  # the registry's entry
        ("reload_workflow_type", "parsed"): "workflow",
    },
    "ruvon.testing.harness": {("from_yaml", "workflow_config"): "workflow"},
    # The other functions of these two read runs from a database, not the file.
    "ruvon_cli.commands.workflow_cmd:_start": {("_start", "workflow_config"): "workflow"},
    "ruvon.workflow:_process_dynamic_injection": {
        ("_process_dynamic_injection", "current_step_config"): "step",
        ("_process_dynamic_injection", "injection_block"): None,
        ("_process_dynamic_injection", "rule"): None,
    },
}
_TYPING = {"Type", "List", "Dict", "Optional"}


def _reads(source: str, only: str | None) -> Iterator[tuple[str | None, str, str]]:
    """(function, variable, key) of every ``variable.get("key")`` and ``variable["key"]``."""
    found: list[tuple[str | None, str, str]] = []

    class Visitor(ast.NodeVisitor):
        def __init__(self) -> None:
            self.stack: list[str] = []

        def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
            self.stack.append(node.name)
            self.generic_visit(node)
            self.stack.pop()

        visit_AsyncFunctionDef = visit_FunctionDef

        def _add(self, name: ast.expr, key: ast.expr) -> None:
            inside = self.stack[-1] if self.stack else None
            if only is not None and only not in self.stack:
                return
            if (
                isinstance(name, ast.Name)
                and isinstance(key, ast.Constant)
                and isinstance(key.value, str)
                and name.id not in _TYPING
            ):
                found.append((inside, name.id, key.value))

        def visit_Call(self, node: ast.Call) -> None:
            func = node.func
            if isinstance(func, ast.Attribute) and func.attr == "get" and node.args:
                self._add(func.value, node.args[0])
            self.generic_visit(node)

        def visit_Subscript(self, node: ast.Subscript) -> None:
            self._add(node.value, node.slice)
            self.generic_visit(node)

    Visitor().visit(ast.parse(source))
    return iter(found)


def ruvon_reads() -> set[tuple[str, str]]:
    """Every (where, key) ruvon-sdk's loaders read from a workflow file."""
    keys: set[tuple[str, str]] = set()
    unknown = []
    for target, readers in READERS.items():
        module, _, only = target.partition(":")
        source = inspect.getsource(sys.modules[module])
        for function, variable, key in _reads(source, only or None):
            if function == "_discover_marketplace_steps":  # Python entry points
                continue
            if (function, variable) not in readers:
                unknown.append(f"{module}.{function}: {variable}[{key!r}]")
                continue
            where = readers[(function, variable)]
            if where is not None:
                keys.add((where, key))
    assert not unknown, f"ruvon-sdk reads data this test does not place: {unknown}"
    return keys


def ruvon_step_types() -> set[str]:
    """The values of ``type`` Ruvon's loader knows (its list, and each it compares)."""
    source = inspect.getsource(ruvon.builder.WorkflowBuilder._build_steps_from_config)
    tree = ast.parse(textwrap.dedent(source))
    types: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.List) and any(
            isinstance(e, ast.Constant) and e.value == "STANDARD" for e in node.elts
        ):
            types |= {
                e.value
                for e in node.elts
                if isinstance(e, ast.Constant) and isinstance(e.value, str)
            }
        if (
            isinstance(node, ast.Compare)
            and isinstance(node.left, ast.Name)
            and node.left.id == "step_type_str"
        ):
            types |= {
                c.value
                for c in node.comparators
                if isinstance(c, ast.Constant) and isinstance(c.value, str)
            }
    return types


# -- loading a file with Ruvon's loaders --------------------------------------------------


def _summary(value: Any) -> Any:
    """What a built workflow or step amounts to, comparable with ==."""
    if isinstance(value, ruvon.models.WorkflowStep):
        return (type(value).__name__, _summary(value.model_dump()))
    if isinstance(value, dict):
        return {k: _summary(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_summary(v) for v in value]
    return value


async def _providers() -> tuple[Any, Any, Any]:
    return InMemoryPersistence(), SyncExecutor(), LoggingObserver()


def _workflow_summary(workflow: Any) -> Any:
    return {
        "saga_mode": workflow.saga_mode,
        "automate_start": workflow.automate_start,
        "version": workflow.workflow_version,
        "state": type(workflow.state).__name__,
        "steps": _summary(workflow.workflow_steps),
    }


def _attempt(work: Callable[[], Any]) -> Any:
    try:
        return work()
    except Exception as exc:  # what Ruvon refuses is an outcome too
        return f"{type(exc).__name__}: {exc}"


def ruvon_sees(path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """What each of Ruvon's loaders builds from the file."""
    ruvon.builder.WorkflowBuilder._import_cache.clear()
    seen: dict[str, Any] = {}

    def builder(registry: dict[str, Any]) -> Any:
        return ruvon.builder.WorkflowBuilder(
            workflow_registry=registry,
            expression_evaluator_cls=SimpleExpressionEvaluator,
            template_engine_cls=Jinja2TemplateEngine,
            config_dir=str(path.parent),
        )

    def create(made: Any, name: str) -> Any:
        persistence, execution, observer = asyncio.run(_providers())
        workflow = asyncio.run(
            made.create_workflow(
                workflow_type=name,
                persistence_provider=persistence,
                execution_provider=execution,
                workflow_builder=made,
                expression_evaluator_cls=SimpleExpressionEvaluator,
                template_engine_cls=Jinja2TemplateEngine,
                workflow_observer=observer,
            )
        )
        return _workflow_summary(workflow)

    # An engine's loader: a registry entry naming the file.
    made = builder({"WF": {"type": "WF", "config_file": path.name}})
    seen["engine"] = _attempt(lambda: create(made, "WF"))
    seen["scheduled"] = _attempt(lambda: sorted(made.get_scheduled_workflows()))
    seen["modules"] = _attempt(lambda: sorted(made.get_all_task_modules()))
    # ruvon.testing: reads workflow_type, then the file as the registry entry.
    seen["testing"] = _attempt(
        lambda: ruvon.testing.harness.WorkflowTestHarness.from_yaml(str(path)).workflow_type
    )

    # `ruvon start WF --config FILE`, with its providers in memory.
    captured: list[Any] = []

    class Capturing(ruvon.builder.WorkflowBuilder):  # type: ignore[misc]
        async def create_workflow(self, *args: Any, **kwargs: Any) -> Any:
            workflow = await super().create_workflow(*args, **kwargs)
            captured.append(_workflow_summary(workflow))
            return workflow

    async def close(*providers: Any) -> None:
        return None

    with monkeypatch.context() as patch:
        patch.setattr(sys, "path", list(sys.path))  # the command adds a directory to it
        patch.setattr(ruvon_cli_start, "get_config", Config)
        patch.setattr(ruvon_cli_start, "create_providers", lambda config: _providers())
        patch.setattr(ruvon_cli_start, "close_providers", close)
        patch.setattr(ruvon_cli_start, "WorkflowBuilder", Capturing)
        outcome = _attempt(
            lambda: ruvon_cli_start.start_workflow(
                "Order",  # as the file's workflow_type, when it has one
                data=None,
                data_file=None,
                config_file=path,
                auto_execute=None,
                interactive=None,
                dry_run=False,
            )
        )
    seen["cli"] = captured or outcome
    return seen


# -- the table: each key Ruvon reads, a sample, and what sagakit must do ------------------


@dataclass(frozen=True)
class Case:
    """A key, a sample using it, and what sagakit does with it.

    ``sample`` is a step (or a task, or workflow keys) merged into a base file;
    ``then`` is "maps", "accepted", "note" or "refused"; ``says`` a text the
    note or error holds (by default, the refusal from sagakit's table);
    ``check`` what a mapped key must have become in the loaded saga. ``read``:
    Ruvon's code reads the key; ``effect``: the file with it builds another
    workflow than the file without it (None: not compared, the sample's value
    being Ruvon's default).
    """

    where: Where
    key: str
    sample: dict[str, Any]
    then: str
    says: str | None = None
    check: Callable[[Saga[Any]], bool] | None = None
    read: bool = True
    effect: bool | None = True


def _step(**step: Any) -> dict[str, Any]:
    return {"name": "S", "function": "APP.create", **step}


def _parallel(**step: Any) -> dict[str, Any]:
    return {"name": "S", "type": "PARALLEL", **step}


CASES = [
    # the top level
    Case("workflow", "workflow_type", {}, "maps", check=lambda s: s.name == "Order"),
    Case(
        "workflow",
        "workflow_version",
        {"workflow_version": "2.1"},
        "maps",
        check=lambda s: s.version == "2.1",
    ),
    Case(
        "workflow",
        "initial_state_model_path",
        {},
        "maps",
        check=lambda s: getattr(s.state_type, "__name__", None) == "Order",
    ),
    Case(
        "workflow",
        "initial_state_model",
        {"initial_state_model": "APP.Order", "initial_state_model_path": None},
        "maps",
        check=lambda s: getattr(s.state_type, "__name__", None) == "Order",
    ),
    Case("workflow", "steps", {}, "maps", check=lambda s: s.plan().stages[0] == ("Create",)),
    Case("workflow", "saga_mode", {"saga_mode": True}, "accepted"),
    Case(
        "workflow",
        "saga_mode",
        {"saga_mode": False},
        "refused",
        effect=None,
        says="sagakit always compensates a run that fails; remove saga_mode: false",
    ),
    Case("workflow", "automate_start", {"automate_start": True}, "accepted"),
    Case(
        "workflow",
        "automate_start",
        {"automate_start": False},
        "note",
        effect=None,
        says="automate_start: false — a sagakit run starts at once",
    ),
    Case(
        "workflow",
        "parameters",
        {"parameters": {"v": "2"}, "workflow_version": "{{ parameters.v }}"},
        "refused",
    ),
    Case("workflow", "env", {"env": {"A": "1"}}, "refused", effect=False),
    Case("workflow", "schedule", {"schedule": "0 * * * *"}, "refused"),
    # a step
    Case("step", "name", _step(), "maps", check=lambda s: s.plan().stages[1] == ("S",)),
    Case("step", "type", _step(type="ASYNC"), "accepted"),
    Case("step", "function", _step(), "maps", check=lambda s: s["S"].action is not None),
    Case(
        "step",
        "compensate_function",
        _step(compensate_function="APP.cancel"),
        "maps",
        check=lambda s: s["S"].kind is StepKind.COMPENSATABLE and s["S"].compensation is not None,
    ),
    Case("step", "automate_next", _step(automate_next=True), "accepted"),
    Case(
        "step",
        "automate_next",
        _step(automate_next=False),
        "note",
        effect=None,
        says="automate_next: false — sagakit goes on to the next step at once",
    ),
    Case(
        "step",
        "merge_strategy",
        _step(type="ASYNC", merge_strategy="deep"),
        "refused",
        says="merge_strategy deep has no equivalent",
    ),
    Case(
        "step",
        "merge_conflict_behavior",
        _step(type="ASYNC", merge_conflict_behavior="raise_error"),
        "refused",
        says="merge_conflict_behavior raise_error has no equivalent",
    ),
    Case(
        "step",
        "tasks",
        {
            "name": "Fan",
            "type": "PARALLEL",
            "tasks": [
                {"name": "a", "function": "APP.check"},
                {"name": "b", "function": "APP.check"},
            ],
        },
        "maps",
        check=lambda s: ("a", "b") in s.plan().stages,
    ),
    Case("step", "input_model", _step(input_model="APP.Order"), "refused"),
    Case("step", "required_input", _step(required_input=["x"]), "refused"),
    Case(
        "step",
        "routes",
        _step(type="DECISION", routes=[{"condition": "True", "target": "Create"}]),
        "refused",
    ),
    Case(
        "step",
        "dynamic_injection",
        _step(
            dynamic_injection={
                "rules": [{"steps_to_insert": [{"name": "x", "function": "json.dumps"}]}]
            },
        ),
        "refused",
    ),
    Case(
        "step",
        "merge_function_path",
        _parallel(merge_function_path="os.path.join"),
        "refused",
    ),
    Case("step", "iterate_over", _parallel(iterate_over="calls"), "refused"),
    Case("step", "task_function", _parallel(task_function="APP.check"), "refused"),
    Case("step", "item_var_name", _parallel(item_var_name="one"), "refused"),
    Case("step", "http_config", _step(type="HTTP", http_config={"url": "x"}), "refused"),
    Case(
        "step",
        "ai_config",
        _step(type="AI_INFERENCE", ai_config={"model_name": "m", "input_source": "s"}),
        "refused",
    ),
    Case(
        "step",
        "llm_config",
        _step(
            type="AI_LLM_INFERENCE",
            llm_config={"model": "m", "system_prompt": "s", "user_prompt": "u"},
        ),
        "refused",
    ),
    Case(
        "step",
        "edge_config",
        _step(type="EDGE_MODEL_CALL", edge_config={"model_id": "m", "prompt": "p"}),
        "refused",
    ),
    Case("step", "wasm_config", _step(type="WASM", wasm_config={"wasm_hash": "h"}), "refused"),
    Case(
        "step",
        "approval_config",
        _step(type="HUMAN_APPROVAL", approval_config={"title": "t"}),
        "refused",
    ),
    Case(
        "step",
        "audit_config",
        _step(type="AUDIT_EMIT", audit_config={"event_type": "e"}),
        "refused",
    ),
    Case(
        "step",
        "compliance_config",
        _step(type="COMPLIANCE_CHECK", compliance_config={"ruleset": "r"}),
        "refused",
    ),
    Case(
        "step",
        "meta_config",
        _step(type="WORKFLOW_BUILDER_META", meta_config={"human_reviewed": True}),
        "refused",
    ),
    Case(
        "step",
        "target_workflow_type",
        _step(type="FIRE_AND_FORGET", target_workflow_type="Other"),
        "refused",
    ),
    Case(
        "step",
        "initial_data_template",
        _step(type="FIRE_AND_FORGET", target_workflow_type="O", initial_data_template={"a": 1}),
        "refused",
    ),
    Case("step", "loop_body", _step(type="LOOP", loop_body=[_step()]), "refused"),
    Case("step", "mode", _step(type="LOOP", mode="WHILE"), "refused"),
    Case("step", "while_condition", _step(type="LOOP", while_condition="False"), "refused"),
    Case("step", "max_iterations", _step(type="LOOP", max_iterations=3), "refused"),
    Case(
        "step",
        "schedule",
        _step(type="CRON_SCHEDULE", target_workflow_type="O", schedule="* * * * *"),
        "refused",
    ),
    Case(
        "step",
        "schedule_name",
        _step(
            type="CRON_SCHEDULE",
            target_workflow_type="O",
            schedule="* * * * *",
            schedule_name="n",
        ),
        "refused",
    ),
    # a task of a PARALLEL step
    Case(
        "task",
        "name",
        {"name": "a", "function": "APP.check"},
        "maps",
        check=lambda s: ("a", "b") in s.plan().stages,
    ),
    Case(
        "task",
        "function",
        {"name": "a", "function": "APP.check"},
        "maps",
        check=lambda s: s["a"].action is not None,
    ),
    # keys sagakit reads that Ruvon's loader does not
    Case("workflow", "saga_enabled", {"saga_enabled": True}, "accepted", read=False, effect=False),
    Case("workflow", "description", {"description": "d"}, "accepted", read=False, effect=False),
    Case("step", "description", _step(description="d"), "accepted", read=False, effect=False),
    Case(
        "step", "dependencies", _step(dependencies=["Create"]), "refused", read=False, effect=False
    ),
    Case(
        "step",
        "allow_partial_success",
        _parallel(allow_partial_success=True),
        "refused",
        read=False,
        effect=False,
    ),
    Case("step", "timeout_seconds", _step(timeout_seconds=3), "refused", read=False, effect=False),
    Case(
        "task",
        "function_path",
        {"name": "a", "function_path": "APP.check"},
        "maps",
        check=lambda s: s["a"].action is not None,
        read=False,
        effect=False,
    ),
    Case(
        "task",
        "compensate_function",
        {"name": "a", "function": "APP.check", "compensate_function": "APP.undo_check"},
        "note",
        says="task 'a': Ruvon never compensates a PARALLEL step's tasks",
        check=lambda s: s["a"].compensation is not None,
        read=False,
        effect=False,
    ),
]


def _case_id(case: Case) -> str:
    value = case.sample.get(case.key)
    suffix = f"={value}" if isinstance(value, bool) else ""
    return f"{case.where}.{case.key}{suffix}"


# -- files from the cases --------------------------------------------------------------


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Step functions in a module of their own name, beside the files."""
    name = f"ruvon_app_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(APP)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


BASE: dict[str, Any] = {
    "workflow_type": "Order",
    "initial_state_model_path": "APP.Order",
    "saga_mode": True,
    "steps": [
        {
            "name": "Create",
            "type": "STANDARD",
            "function": "APP.create",
            "compensate_function": "APP.cancel",
            "automate_next": True,
        }
    ],
}


def _with_app(data: dict[str, Any], app: str) -> dict[str, Any]:
    text = yaml.safe_dump(data, sort_keys=False)
    loaded: dict[str, Any] = yaml.safe_load(text.replace("APP.", f"{app}."))
    return loaded


def case_file(case: Case, app: str) -> dict[str, Any]:
    """The sample as a whole file, in the data Ruvon's loader gets."""
    data = copy.deepcopy(BASE)
    if case.where == "workflow":
        data.update(case.sample)
        data = {k: v for k, v in data.items() if v is not None}
    elif case.where == "step":
        step = {k: v for k, v in case.sample.items() if v is not None}
        step["name"] = step.get("name", "S")
        data["steps"].append(step)
    else:
        other = {"name": "b", "function": "APP.check"}
        data["steps"].append({"name": "Fan", "type": "PARALLEL", "tasks": [case.sample, other]})
    if case.where != "workflow":  # a step after the sample's, as automate_next speaks of it
        data["steps"].append({"name": "End", "function": "APP.check"})
    return _with_app(data, app)


def without(data: dict[str, Any], case: Case) -> dict[str, Any]:
    """The same file without the case's key."""
    data = copy.deepcopy(data)
    if case.where == "workflow":
        data.pop(case.key, None)
    elif case.where == "step":
        data["steps"][1].pop(case.key, None)
    else:
        data["steps"][1]["tasks"][0].pop(case.key, None)
    return data


def write(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    return path


# -- the tests ---------------------------------------------------------------------------


def test_ruvon_sdk_is_the_version_the_table_was_read_from() -> None:
    # A new version may read new keys: the tests below then name them.
    assert ruvon.__version__ == "0.1.5"


def test_every_key_ruvons_loaders_read_is_in_sagakits_table_and_this_one() -> None:
    reads = ruvon_reads()
    table = {(entry.where, entry.key) for entry in RUVON_KEYS}
    cases = {(case.where, case.key) for case in CASES}
    assert reads - table == set(), "keys Ruvon reads that sagakit's table does not cover"
    assert reads - cases == set(), "keys Ruvon reads that this test has no case for"
    # And each key said to be read by Ruvon is read, each said not to be is not.
    said = {(c.where, c.key) for c in CASES if c.read}
    assert said - reads == set()
    assert {(c.where, c.key) for c in CASES if not c.read} & reads == set()
    assert table == cases, "sagakit's table and this test's cases cover different keys"


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_ruvon_reads_the_key_and_sagakit_gives_it_its_meaning(
    case: Case, app: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = case_file(case, app)
    path = write(tmp_path / "workflow.yaml", data)
    # Ruvon: the file with the key and without it build different workflows
    # (or, for a key Ruvon does not read, the same one).
    with_key = ruvon_sees(path, monkeypatch)
    without_key = ruvon_sees(write(tmp_path / "workflow.yaml", without(data, case)), monkeypatch)
    if case.effect is True:
        assert with_key != without_key, f"Ruvon's loaders ignore {case.key!r}"
    elif case.effect is False:
        assert with_key == without_key, f"{case.key!r} changes what Ruvon's loaders build"

    report = validate_yaml(write(tmp_path / "workflow.yaml", data))
    assert report.format == "ruvon"
    if case.then == "refused":
        says = case.says or f"{case.key!r} has no equivalent in sagakit: " + str(
            RUVON_REFUSED[(case.where, case.key)]
        )
        assert any(says in problem.message for problem in report.errors), report.errors
        return
    assert report.ok, [str(p) for p in report.errors]
    assert report.saga is not None
    if case.then == "note":
        assert case.says is not None
        assert any(case.says in note.message for note in report.notes), report.notes
    else:
        assert report.notes == [], report.notes
    if case.check is not None:
        assert case.check(report.saga)


def test_every_step_type_ruvon_knows_is_a_step_or_refused_with_what_to_use(
    tmp_path: Path, app: str
) -> None:
    types = ruvon_step_types()
    assert {"STANDARD", "PARALLEL", "HUMAN_IN_LOOP", "WASM", "CRON_SCHEDULE"} <= types
    known = RUVON_TYPES_SAME | {RUVON_PARALLEL} | set(RUVON_STEP_TYPES)
    assert types - known == set(), "step types Ruvon knows that sagakit's table does not"
    for kind in sorted(types - RUVON_TYPES_SAME - {RUVON_PARALLEL}):
        data = _with_app(BASE, app)
        data["steps"].append({"name": "S", "type": kind, "function": f"{app}.create"})
        report = validate_yaml(write(tmp_path / "workflow.yaml", data))
        assert [p.message for p in report.errors] == [
            f"step type {kind} has no equivalent in sagakit; use {RUVON_STEP_TYPES[kind]}"
        ]
    for kind in sorted(RUVON_TYPES_SAME):
        data = _with_app(BASE, app)
        data["steps"].append({"name": "S", "type": kind, "function": f"{app}.create"})
        assert validate_yaml(write(tmp_path / "workflow.yaml", data)).ok


# -- the undo of a PARALLEL step's tasks -------------------------------------------------


def test_ruvon_never_compensates_a_parallel_steps_tasks(tmp_path: Path, app: str) -> None:
    """What Ruvon's loader builds from tasks with compensate_function: nothing to undo."""
    step = {
        "name": "Fan",
        "type": "PARALLEL",
        "tasks": [
            {"name": "a", "function": f"{app}.check", "compensate_function": f"{app}.undo_check"},
            {"name": "b", "function": f"{app}.check"},
        ],
    }
    (built,) = ruvon.builder.WorkflowBuilder._build_steps_from_config([step])
    assert isinstance(built, ruvon.models.ParallelWorkflowStep)
    # Ruvon's rollback undoes CompensatableStep instances only.
    assert not isinstance(built, ruvon.models.CompensatableStep)
    assert "compensate" not in str(built.tasks[0].model_dump())
    assert "CompensatableStep" in inspect.getsource(ruvon.workflow.Workflow._execute_saga_rollback)


UNDO_APP = """
from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Trip(BaseModel):
    model_config = ConfigDict(extra="allow")


def book(state, context):
    return {context.step_name: True}


def unbook(state, context):
    return {context.step_name: False}


def pay(state, context):
    raise ValueError("card declined")
"""


def test_a_ruvon_files_parallel_tasks_are_compensated_when_a_later_step_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"trip_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(UNDO_APP)
    monkeypatch.syspath_prepend(str(tmp_path))
    path = tmp_path / "trip.yaml"
    path.write_text(
        textwrap.dedent(
            f"""\
            workflow_type: Trip
            initial_state_model_path: {name}.Trip
            saga_mode: true
            steps:
              - name: Flight
                function: {name}.book
                compensate_function: {name}.unbook
                automate_next: true
              - name: Stay
                type: PARALLEL
                automate_next: true
                tasks:
                  - {{name: Hotel, function: {name}.book, compensate_function: {name}.unbook}}
                  - {{name: Car, function: {name}.book, compensate_function: {name}.unbook}}
                  - {{name: Note, function: {name}.book}}
              - name: Pay
                function: {name}.pay
                automate_next: true
            """
        )
    )
    report = validate_yaml(path)
    assert report.ok, report.errors
    assert report.saga is not None
    assert [str(note) for note in report.notes] == [
        f"{path}:{line}: step 'Stay': task {task!r}: Ruvon never compensates a PARALLEL "
        "step's tasks (its loader ignores compensate_function there); sagakit will, if the "
        "run rolls back"
        for line, task in ((13, "Hotel"), (14, "Car"))
    ]
    saga = report.saga
    assert saga.plan().stages == (("Flight",), ("Hotel", "Car", "Note"), ("Pay",))
    assert saga["Hotel"].kind is StepKind.COMPENSATABLE
    assert saga["Note"].kind is StepKind.PLAIN
    with Engine("memory://") as engine:
        run = engine.run(saga, {}, run_id="trip-1")
        history = engine.history(run.id)
    assert run.status is RunStatus.ROLLED_BACK
    assert {k: run.data[k] for k in ("Flight", "Hotel", "Car", "Note")} == {
        "Flight": False,
        "Hotel": False,
        "Car": False,
        "Note": True,
    }
    # The tasks are undone first (in reverse order of completion), then the step before them.
    done = [e.step for e in history if e.kind is EventKind.STEP_SUCCEEDED]
    undone = [e.step for e in history if e.kind is EventKind.COMPENSATION_SUCCEEDED]
    tasks_done = [step for step in done if step in ("Hotel", "Car")]
    assert undone == [*reversed(tasks_done), "Flight"]


# -- Ruvon's StepContext --------------------------------------------------------------


def test_sagakits_context_has_every_field_of_ruvons_step_context() -> None:
    fields = set(ruvon.models.StepContext.model_fields)
    assert fields == {
        "workflow_id",
        "step_name",
        "validated_input",
        "previous_step_result",
        "loop_item",
        "loop_index",
    }
    missing = {name for name in fields if not hasattr(StepContext, name)}
    assert missing == set(), "fields of Ruvon's StepContext sagakit's has not"


def ruvon_style_step(state: dict[str, Any], context: StepContext) -> dict[str, Any]:
    """A Ruvon step function, its import changed to ``from sagakit import StepContext``."""
    return {
        context.step_name: [
            context.workflow_id,
            context.previous_step_result,
            context.validated_input,
            context.loop_item,
            context.loop_index,
        ]
    }


def test_a_ruvon_step_function_reads_its_context_under_sagakit() -> None:
    saga: Saga[Any] = Saga("ctx")
    saga.add_step(ruvon_style_step, name="first")
    saga.add_step(ruvon_style_step, name="second")
    with Engine("memory://") as engine:
        run = engine.run(saga, {}, run_id="ctx-1")
    assert run.status is RunStatus.COMPLETED
    assert run.data["first"] == ["ctx-1", None, None, None, None]
    assert run.data["second"] == [
        "ctx-1",
        {"first": ["ctx-1", None, None, None, None]},
        None,
        None,
        None,
    ]
    # Ruvon's own context, as its engine builds it for a step, holds the same.
    theirs = ruvon.models.StepContext(workflow_id="ctx-1", step_name="first")
    assert ruvon_style_step({}, theirs) == {"first": ["ctx-1", None, None, None, None]}


# -- the documentation ------------------------------------------------------------------


def key_table_markdown() -> str:
    """The key-by-key table of docs/yaml.md, from sagakit's table."""
    titles = {"workflow": "top level", "step": "step", "task": "task of a `PARALLEL` step"}
    rows = ["| where | key | Ruvon's loader | sagakit |", "|---|---|---|---|"]
    for entry in RUVON_KEYS:
        rows.append(f"| {titles[entry.where]} | `{entry.key}` | {entry.ruvon} | {entry.sagakit} |")
    return "\n".join(rows) + "\n"


def test_the_documentation_shows_sagakits_table_of_ruvons_keys() -> None:
    text = (ROOT / "docs" / "yaml.md").read_text()
    match = re.search(r"<!-- ruvon-keys -->\n(.*?)<!-- /ruvon-keys -->", text, re.S)
    assert match is not None, "docs/yaml.md has lost its <!-- ruvon-keys --> table"
    assert match.group(1) == key_table_markdown(), (
        "docs/yaml.md's table of Ruvon's keys is out of step; it should read:\n"
        + key_table_markdown()
    )
