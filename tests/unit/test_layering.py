"""The layering check (scripts/check_layers.py): it passes on the package and
fails on each kind of violation it exists to catch."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "check_layers.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("check_layers", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["check_layers"] = module
    spec.loader.exec_module(module)
    return module


layers = _load()

# A small package with the real package's floors and no violation.
CLEAN = {
    "__init__.py": "from sagakit.engine import Engine\n",
    "errors.py": "",
    "journal.py": "",
    "core/__init__.py": "from sagakit.core.decide import decide\n",
    "core/decide.py": "from dataclasses import dataclass\nfrom sagakit.core.plan import Plan\n",
    "core/plan.py": "from sagakit.journal import Phase\n",
    "store/__init__.py": (
        "from sagakit.store.base import Store\n"
        "def open_store():\n    from sagakit.store.sqlite import SQLiteStore\n"
    ),
    "store/base.py": "from sagakit.errors import StoreError\n",
    "store/memory.py": "from sagakit.store.base import Store\n",
    "store/sqlite/__init__.py": "from sagakit.store.sqlite.store import SQLiteStore\n",
    "store/sqlite/store.py": "from sagakit.store.sqlite.connection import SQLiteConnection\n",
    "store/sqlite/connection.py": "from sagakit.store.base import Store\n",
    "definition/__init__.py": "from sagakit.core import Plan\n",
    "driver/__init__.py": "from sagakit.store import Store\nfrom sagakit.core import decide\n",
    "engine/__init__.py": "from sagakit.engine.engine import Engine\n",
    "engine/engine.py": "from sagakit.driver import Driver\nfrom sagakit.definition import Saga\n",
    "cli/__init__.py": "from sagakit import Engine\n",
    "__main__.py": "from sagakit.cli import main\n",
}


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / "sagakit" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


def test_the_package_keeps_its_layers() -> None:
    assert layers.check(ROOT / "src") == []


def test_a_clean_tree_passes(tmp_path: Path) -> None:
    assert layers.check(_tree(tmp_path, CLEAN)) == []


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        # A sibling importing its composing class back, only for typing.
        (
            "store/sqlite/connection.py",
            "from typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n    from sagakit.store.sqlite.store import SQLiteStore\n",
            "import ring of 2 modules: sagakit.store.sqlite.connection -> "
            "sagakit.store.sqlite.store",
        ),
        # An upward import inside a function.
        (
            "core/plan.py",
            "def f():\n    from sagakit.driver import Driver\n",
            "sagakit.core.plan imports sagakit.driver: core may import only parts on "
            "lower floors, and driver is not below it",
        ),
        (
            "store/base.py",
            "from sagakit.core import Plan\n",
            "sagakit.store.base imports sagakit.core: store never imports core",
        ),
        (
            "store/memory.py",
            "from sagakit.store.sqlite import SQLiteStore\n",
            "sagakit.store.memory imports sagakit.store.sqlite: store backends never "
            "import each other",
        ),
        (
            "core/decide.py",
            "import asyncio\n",
            "sagakit.core.decide imports asyncio: the core performs no I/O and reads no clock",
        ),
        (
            "engine/engine.py",
            "from sagakit.cli import main\n",
            "sagakit.engine.engine imports sagakit.cli: nothing imports the command line",
        ),
        (
            "definition/__init__.py",
            "from sagakit.store import Store\n",
            "sagakit.definition imports sagakit.store: definition may import only parts on "
            "lower floors, and store is not below it",
        ),
        (
            "newpart.py",
            "",
            "sagakit.newpart is on no floor: add its part to FLOORS in check_layers.py",
        ),
    ],
)
def test_each_violation_is_reported(tmp_path: Path, name: str, text: str, expected: str) -> None:
    files = {**CLEAN, name: CLEAN.get(name, "") + text}
    assert expected in layers.check(_tree(tmp_path, files))


def test_the_command_fails_on_a_violation_and_prints_the_graph(tmp_path: Path) -> None:
    files = {**CLEAN, "core/plan.py": "from sagakit.core.decide import decide\n"}
    bad = subprocess.run(
        [sys.executable, str(SCRIPT), "--src", str(_tree(tmp_path, files)), "--graph"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 1
    assert "[3] sagakit.core.plan -> sagakit.core.decide" in bad.stdout
    assert "import ring of 2 modules: sagakit.core.decide -> sagakit.core.plan" in bad.stdout
