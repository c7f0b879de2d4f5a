"""The README's and the tutorial's shell commands run, in order, on a fresh machine.

A reader copies the commands of README.md (from the clone's root) and of
docs/tutorial.md (in ``shop/`` beside the clone) into a terminal. This test
does the same in a new directory, with a copy of the repository as the
clone, and checks that every command exits as documented.

The rules, which the documents follow:

- A command is a line of a ```bash block (comments and blank lines aside),
  or a line of a ```console block that starts with ``$ ``; a line ending in
  ``\\`` goes on on the next one.
- ``# exits N`` after a command says it exits N (otherwise it must exit 0).
- ``# not run: REASON`` after a command, or ``<!-- not run: REASON -->`` on
  the line before a block, leaves it out: a worker that serves until it is
  stopped, a PostgreSQL server the machine may not have.
- A ```python or ```yaml block whose first line is a comment naming a file
  (``# shop.py``) is that file: it is written where the reader is, at that
  point, as the reader would save it.

The commands of one document run in one shell, as a reader's terminal
would, so ``cd`` and ``export`` carry over; the documented install commands
(``python3 -m venv .venv``, ``pip install -e ...``) run too, as they are.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]

_FENCE = re.compile(r"^```(\w*)\s*$")
_SKIP_BLOCK = re.compile(r"^<!--\s*not run:\s*(\S.*?)\s*-->\s*$")
_NOT_RUN = re.compile(r"\bnot run:\s*(\S.*)$")
_EXITS = re.compile(r"\bexits (\d+)\b")
_FILE_HEADER = re.compile(r"^#\s*([\w./-]+\.(?:py|ya?ml))\s*$")


@dataclass(frozen=True)
class Command:
    """One documented command, with what the document says about it."""

    line: int
    text: str
    exits: int = 0
    not_run: str | None = None


@dataclass(frozen=True)
class File:
    """A file the document shows whole, for the reader to save."""

    line: int
    path: str
    text: str


def _comment(command: str) -> str:
    """The trailing ``# ...`` comment of a shell line (none of ours quote a '#')."""
    found = re.search(r"(?:^|\s)#(.*)$", command)
    return found.group(1) if found else ""


def parse(markdown: str) -> list[Command | File]:
    """The commands and files of a Markdown document, in order."""
    items: list[Command | File] = []
    lines = markdown.splitlines()
    i = 0
    skip_reason: str | None = None
    while i < len(lines):
        opened = _FENCE.match(lines[i])
        skip = _SKIP_BLOCK.match(lines[i])
        if skip:
            skip_reason = skip.group(1)
        if not opened or not opened.group(1):
            i += 1
            continue
        language, start = opened.group(1), i + 1
        end = start
        while not _FENCE.match(lines[end]):
            end += 1
        body = lines[start:end]
        header = _FILE_HEADER.match(body[0]) if body else None
        if language in ("python", "yaml") and header:
            items.append(File(start + 1, header.group(1), "\n".join(body) + "\n"))
        elif language in ("bash", "console"):
            items.extend(_commands(language, body, start + 1, skip_reason))
        skip_reason = None
        i = end + 1
    return items


def _commands(language: str, body: list[str], first_line: int, skip: str | None) -> list[Command]:
    commands: list[Command] = []
    pending: list[str] = []
    pending_line = 0
    for offset, raw in enumerate(body):
        if pending:
            pending.append(raw)
        elif language == "console" and raw.startswith("$ "):
            pending, pending_line = [raw[2:]], first_line + offset
        elif language == "bash" and raw.strip() and not raw.lstrip().startswith("#"):
            pending, pending_line = [raw], first_line + offset
        else:
            continue
        if raw.rstrip().endswith("\\"):
            continue
        text = "\n".join(pending)
        pending = []
        comment = _comment(text.splitlines()[-1])
        not_run = _NOT_RUN.search(comment)
        exits = _EXITS.search(comment)
        commands.append(
            Command(
                pending_line,
                text,
                exits=int(exits.group(1)) if exits else 0,
                not_run=skip or (not_run.group(1) if not_run else None),
            )
        )
    assert not pending, f"line {pending_line}: a command ends in '\\' and nothing follows"
    return commands


def replay(items: list[Command | File], cwd: Path, path: str, log: Path) -> list[tuple[int, int]]:
    """Run the document's commands in one bash, in order; each one's line and exit code."""
    script = ["set +e"]
    for n, item in enumerate(items):
        if isinstance(item, File):
            script += [f"cat > {item.path} <<'__DOC_FILE_{n}__'", item.text + f"__DOC_FILE_{n}__"]
        elif item.not_run is None:
            script += [
                f"echo '>>> line {item.line}'",
                item.text,
                f'echo "{item.line} $?" >> "$DOC_CODES"',
            ]
    codes = log.with_suffix(".codes")
    # A reader's shell: no store named by SAGAKIT_DB, no virtual environment or
    # module path of the test run's own, plain 100-column output.
    inherited = ("FORCE_COLOR", "TTY_COMPATIBLE", "SAGAKIT_DB", "VIRTUAL_ENV", "PYTHONPATH")
    plain = {k: v for k, v in os.environ.items() if k not in inherited}
    env = {**plain, "PATH": path, "NO_COLOR": "1", "COLUMNS": "100", "DOC_CODES": str(codes)}
    with log.open("w") as out:
        subprocess.run(
            ["bash", "-c", "\n".join(script)],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=540,
            check=False,
        )
    if not codes.exists():
        return []
    return [(int(a), int(b)) for a, b in (ln.split() for ln in codes.read_text().splitlines())]


@pytest.fixture(scope="module")
def reader_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new directory holding ``sagakit/``, a copy of the repository as a clone has it."""
    home = tmp_path_factory.mktemp("reader")
    shutil.copytree(
        ROOT,
        home / "sagakit",
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "site", "*.db", "*.db-*", "__pycache__", ".*_cache", ".hypothesis"
        ),
    )
    return home


def _check(doc: str, cwd: Path, path: str, tmp_path: Path) -> None:
    items = parse((ROOT / doc).read_text())
    run = [c for c in items if isinstance(c, Command) and c.not_run is None]
    assert run, f"{doc} documents no command"
    log = tmp_path / "replay.log"
    done = dict(replay(items, cwd, path, log))
    output = log.read_text()
    for command in run:
        assert command.line in done, f"{doc}:{command.line} never ran:\n{output}"
        assert done[command.line] == command.exits, (
            f"{doc}:{command.line}: `{command.text}` exited {done[command.line]}, "
            f"documented {command.exits}:\n{output}"
        )


# It installs into a new virtual environment, from pip's cache or the index.
@pytest.mark.timeout(600)
def test_the_readme_commands_run_from_a_fresh_clone(reader_home: Path, tmp_path: Path) -> None:
    clone = reader_home / "sagakit"
    # The README's first command makes .venv; later ones call `sagakit` bare.
    path = f"{clone / '.venv' / 'bin'}:{os.environ['PATH']}"
    _check("README.md", clone, path, tmp_path)


# It installs into a new virtual environment, from pip's cache or the index.
@pytest.mark.timeout(600)
def test_the_tutorial_commands_run_beside_a_fresh_clone(reader_home: Path, tmp_path: Path) -> None:
    _check("docs/tutorial.md", reader_home, os.environ["PATH"], tmp_path)


def test_the_rules_read_commands_markers_and_files() -> None:
    doc = "\n".join(
        [
            "```console",
            "$ sagakit validate broken.yaml   # exits 1",
            "broken.yaml:3: a problem",
            "$ sagakit run x.yaml \\",
            "    --input '{}'",
            "$ sagakit worker   # not run: serves until stopped",
            "```",
            "<!-- not run: needs a PostgreSQL server -->",
            "```bash",
            "# a comment",
            "sagakit migrate --db postgresql://db/x",
            "```",
            "```python",
            "# shop.py",
            "print('hi')",
            "```",
            "```python",
            "print('a snippet')",
            "```",
        ]
    )
    assert parse(doc) == [
        Command(2, "sagakit validate broken.yaml   # exits 1", exits=1),
        Command(4, "sagakit run x.yaml \\\n    --input '{}'"),
        Command(
            6, "sagakit worker   # not run: serves until stopped", not_run="serves until stopped"
        ),
        Command(11, "sagakit migrate --db postgresql://db/x", not_run="needs a PostgreSQL server"),
        File(14, "shop.py", "# shop.py\nprint('hi')\n"),
    ]
