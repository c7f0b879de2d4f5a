"""Every example runs after the README's one install, in a new virtual environment.

The other tests here run the examples with the development install, which
brings every optional dependency (psycopg, SQLAlchemy, ...). A reader has
only what the README tells her to install: ``pip install -e '.[examples]'``
from the repository. This test makes that environment, from nothing, and
runs each example's documented command in it, so an example that needs a
package the ``examples`` extra lacks (or imports the PostgreSQL store on
SQLite) fails here.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]

# What the README's "Two commands" installs, after `python3 -m venv .venv`.
README_INSTALL = ".venv/bin/pip install -e '.[examples]'"


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new virtual environment with the project installed as the README says."""
    # The README's line must still be the one this test follows.
    assert README_INSTALL in (ROOT / "README.md").read_text()
    home = tmp_path_factory.mktemp("reader")
    venv = home / ".venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    # From the repository's root, as the README says; pip reads its indexes
    # from the environment and the machine's configuration, as a reader's does.
    installed = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--quiet", "-e", ".[examples]"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert installed.returncode == 0, installed.stderr
    # Nothing beyond the extra came with it (psycopg is the PostgreSQL extra's),
    # so a SQLite example that imports the PostgreSQL store fails here.
    probe = [str(venv / "bin" / "python"), "-c", "import psycopg"]
    assert subprocess.run(probe, capture_output=True, check=False, timeout=60).returncode != 0
    return venv


def _documented_commands() -> list[tuple[str, str]]:
    """Each example's first documented ``.venv/bin/python examples/X/main.py`` line."""
    commands = []
    for readme in sorted(ROOT.glob("examples/*/README.md")):
        name = readme.parent.name
        if not (readme.parent / "main.py").exists():
            # A service, not a script: the order service needs PostgreSQL and
            # runs as uvicorn plus workers (tests/examples/test_order_service.py).
            continue
        found = re.search(
            rf"^(?:\$ )?\.venv/bin/python (examples/{name}/main\.py)\s*(?:#.*)?$",
            readme.read_text(),
            re.MULTILINE,
        )
        assert found, f"{readme} documents no command"
        commands.append((name, found.group(1)))
    return commands


COMMANDS = _documented_commands()


def test_every_example_is_covered() -> None:
    documented = {name for name, _ in COMMANDS}
    assert documented == {p.parent.name for p in ROOT.glob("examples/*/main.py")}


@pytest.mark.parametrize(("name", "script"), COMMANDS, ids=[name for name, _ in COMMANDS])
def test_example_runs_after_the_readme_install(
    fresh_venv: Path, tmp_path: Path, name: str, script: str
) -> None:
    # The command as documented, with the reader's interpreter. It runs in a
    # directory of its own so that examples writing ./NAME.db by default
    # leave nothing in the repository.
    plain = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE")}
    done = subprocess.run(
        [str(fresh_venv / "bin" / "python"), str(ROOT / script)],
        cwd=tmp_path,
        env={**plain, "NO_COLOR": "1", "COLUMNS": "100"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"{name}:\n{done.stdout}\n{done.stderr}"


def test_without_the_postgresql_extra_a_postgresql_url_says_how_to_install_it(
    fresh_venv: Path, tmp_path: Path
) -> None:
    done = subprocess.run(
        [str(fresh_venv / "bin" / "sagakit"), "list", "--db", "postgresql://app@127.0.0.1:1/x"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert "pip install -e '.[postgresql]'" in done.stderr
