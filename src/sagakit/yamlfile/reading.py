"""Reading a YAML definition file safely, with the line of every key and item.

`compose` parses the text with PyYAML's safe loader and notes where each
key and list item starts; `Located` turns a place in the data (or a pydantic
error's location) into a `Problem` with the file, the line and the step it
concerns.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import yaml
from pydantic import ValidationError

Path_ = tuple[str | int, ...]


# -- problems -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong (or worth knowing) about a definition file.

    Attributes:
        file: The file, as it was named.
        line: The line it concerns (from 1), or None for the file as a whole.
        step: The step it concerns, if any.
        message: What is wrong and, where possible, what to do instead.
    """

    file: str
    line: int | None
    step: str | None
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        named = self.step and f"step {self.step!r}" not in self.message
        step = f" step {self.step!r}:" if named else ""
        return f"{where}:{step} {self.message}"


# -- reading YAML with line numbers ---------------------------------------------------


_Duplicate = tuple[Path_, str]


def compose(text: str, file: str) -> tuple[Any, dict[Path_, int], list[Problem], list[_Duplicate]]:
    """Parse YAML safely: the data, the line of every key and item, problems, duplicate keys."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        return None, {}, [Problem(file, line, None, f"not valid YAML: {problem}")], []
    if node is None:
        return None, {}, [Problem(file, None, None, "the file is empty")], []
    lines: dict[Path_, int] = {}
    duplicates: list[_Duplicate] = []
    _walk(node, (), lines, duplicates)
    loader = yaml.SafeLoader("")
    try:
        data = loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        return None, lines, [Problem(file, line, None, f"not valid YAML: {problem}")], []
    finally:
        loader.dispose()
    return data, lines, [], duplicates


def _walk(node: yaml.Node, path: Path_, lines: dict[Path_, int], dup: list[_Duplicate]) -> None:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value)
            line = key_node.start_mark.line + 1
            if key in seen:
                # PyYAML keeps the last silently; a second `compensate:` is a mistake.
                dup.append(((*path, key), f"key {key!r} appears twice (first at line {seen[key]})"))
            seen[key] = line
            _walk(value_node, (*path, key), lines, dup)
            lines[(*path, key)] = line
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _walk(item, (*path, index), lines, dup)


class Located:
    """Finds the line and step of a place in the file's data."""

    def __init__(self, file: str, data: Any, lines: dict[Path_, int]) -> None:
        self.file = file
        self.data = data
        self.lines = lines

    def problem(self, loc: Sequence[str | int], message: str, step: str | None = None) -> Problem:
        """A `Problem` at ``loc`` (a path of keys and indexes), with its line."""
        path = self._path(loc)
        line = None
        for end in range(len(path), -1, -1):
            line = self.lines.get(path[:end])
            if line is not None:
                break
        return Problem(self.file, line, step or self._step(path), message)

    def alias(self, path: Path_, *originals: Path_) -> None:
        """Let ``path`` of a converted file point at the line of its original key."""
        for original in originals:
            if original in self.lines:
                self.lines[path] = self.lines[original]
                return

    def _path(self, loc: Sequence[str | int]) -> Path_:
        # pydantic's locations name union members ("step", "parallel"); keep only
        # the parts that are keys or indexes of the data itself.
        path: list[str | int] = []
        for part in loc:
            if (*path, part) in self.lines:
                path.append(part)
        return tuple(path)

    def _step(self, path: Path_) -> str | None:
        value: Any = self.data
        name: str | None = None
        for part in path:
            try:
                value = value[part]
            except (KeyError, IndexError, TypeError):
                break
            if isinstance(value, dict) and isinstance(value.get("name"), str):
                name = value["name"]
        return name

    def step_line(self, name: str) -> int | None:
        """The line where the step called ``name`` is declared, if any."""
        for path, line in self.lines.items():
            if path and path[-1] == "name" and self._step(path[:-1]) == name:
                return line
        return None


def _message(error: Any) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        return f"unknown key {error['loc'][-1]!r}"
    if kind == "missing":
        return f"{error['loc'][-1]!r} is required"
    if kind == "string_pattern_mismatch":
        return f"{error['input']!r} is not a dotted path such as package.module.function"
    text = str(error["msg"]).removeprefix("Value error, ")
    keys = [part for part in error["loc"] if isinstance(part, str) and part not in _TAGS]
    return f"{keys[-1]}: {text}" if keys else text


_TAGS = ("step", "parallel-stage", "str", "list[str]")


def validation_problems(at: Located, exc: ValidationError) -> Iterator[Problem]:
    """Pydantic's errors for a file as `Problem`s, each with its line."""
    for error in exc.errors(include_url=False):
        yield at.problem(error["loc"], _message(error))
