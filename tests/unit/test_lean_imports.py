"""What a process that only runs sagas imports: nothing it does not need.

A worker restarted to take back its runs is waited on from its first line,
so ``import sagakit``, the ``sagakit`` command group and the ``worker``
command leave out what only other parts use: the terminal's drawing (rich),
the YAML loader, the testing kit, the dashboard, OpenTelemetry, pydantic's
model machinery (for sagas whose state is a plain dict) and
importlib.resources (the SQL files are read from the package's directory).
Each check runs in a
fresh interpreter and looks at ``sys.modules``: which modules are there, not
how long they took. The public API stays whole: every name of
``sagakit.__all__`` and ``sagakit.timeline.__all__`` still imports.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

# Modules a process that runs sagas must not have imported.
HEAVY = (
    "rich",
    "yaml",
    "pydantic.main",
    "importlib.resources",
    "starlette",
    "jinja2",
    "uvicorn",
    "opentelemetry",
    "sagakit.yamlfile",
    "sagakit.testing",
    "sagakit.dashboard",
    "sagakit.views",
    "sagakit.timeline.render",
    "sagakit.cli.common",
    "sagakit.cli.jsonout",
)

REPORT = """
import json, sys
print(json.dumps(sorted(
    name for name in sys.modules
    if any(name == heavy or name.startswith(heavy + ".") for heavy in HEAVY)
)))
"""


def _heavy_after(code: str) -> list[str]:
    """The modules of `HEAVY` loaded in a fresh interpreter after running ``code``."""
    script = f"HEAVY = {HEAVY!r}\n{code}\n{REPORT}"
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    found: list[str] = json.loads(done.stdout.strip().splitlines()[-1])
    return found


def test_import_sagakit_loads_nothing_heavy() -> None:
    assert _heavy_after("import sagakit") == []


def test_the_worker_command_loads_nothing_heavy() -> None:
    # As `sagakit worker` finds its command: through the group, by name.
    code = """
import click
from sagakit.cli import main
from sagakit.cli.main import cli
with click.Context(cli) as ctx:
    command = cli.get_command(ctx, "worker")
assert command is not None and command.name == "worker"
import sagakit.cli.worker
"""
    assert _heavy_after(code) == []


def test_a_mistyped_command_is_told_the_commands_not_imported_yet() -> None:
    # Commands are imported as they are asked for; click's "Did you mean"
    # still looks among them all.
    done = subprocess.run(
        [sys.executable, "-m", "sagakit", "wrker"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2
    assert "No such command 'wrker'." in done.stderr
    assert "'worker'" in done.stderr


def test_a_saga_of_plain_dicts_runs_without_pydantic_models() -> None:
    code = """
from sagakit import Engine, Saga
saga = Saga("plain")

@saga.step
def book(state, ctx):
    return {"booked": state["n"] + 1}

with Engine("memory://") as engine:
    run = engine.run(saga, {"n": 1})
assert run.status.value == "completed", run.status
assert run.state == {"n": 1, "booked": 2}, run.state
"""
    assert _heavy_after(code) == []


def test_a_heavy_module_is_seen_when_imported() -> None:
    # The check itself works: asking for the YAML loader loads it.
    found = _heavy_after("import sagakit\nsagakit.load_yaml")
    assert "yaml" in found
    assert "sagakit.yamlfile" in found


@pytest.mark.parametrize("package", ["sagakit", "sagakit.timeline"])
def test_every_public_name_still_imports(package: str) -> None:
    code = f"""
import importlib
module = importlib.import_module({package!r})
names = list(module.__all__)
for name in names:
    value = getattr(module, name)
    exec(f"from {package} import {{name}} as imported")
    assert imported is value, name
    assert name in dir(module), name
"""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr


def test_a_lazy_name_is_the_defining_modules_own() -> None:
    import sagakit
    import sagakit.timeline
    from sagakit import yamlfile
    from sagakit.timeline import render, text

    assert sagakit.load_yaml is yamlfile.load_yaml
    assert sagakit.DefinitionFileError is yamlfile.DefinitionFileError
    assert sagakit.timeline.render_timeline is render.render_timeline
    assert sagakit.timeline.printable is text.printable


@pytest.mark.parametrize("package", ["sagakit", "sagakit.timeline"])
def test_an_unknown_name_is_still_an_attribute_error(package: str) -> None:
    import importlib

    module = importlib.import_module(package)
    with pytest.raises(AttributeError, match="no_such_name"):
        _ = module.no_such_name
    with pytest.raises(ImportError):
        exec(f"from {package} import no_such_name")
