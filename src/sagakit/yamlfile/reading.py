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

# Limits for a file that may come from anyone (see "Untrusted files" in
# docs/yaml.md). A real saga is a few hundred lines nested a few levels deep;
# these are far above that, yet refuse a billion-laughs file (aliases that
# expand to billions of nodes) or a value nested 10,000 deep at once.
MAX_FILE_BYTES = 16 * 1024 * 1024
MAX_NODES = 1_000_000  # nodes of the data once every alias is expanded
MAX_DEPTH = 100  # nested mappings and lists


class _TooBig(yaml.YAMLError):
    """The file is past one of the limits above."""

    def __init__(self, problem: str, mark: Any) -> None:
        super().__init__(problem)
        self.problem = problem
        self.problem_mark = mark


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a file past `MAX_DEPTH` or `MAX_NODES`.

    The composer recurses once per level, so the depth is checked before it
    goes down (a value nested 10,000 deep would overflow the stack). An alias
    is the node its anchor names, shared: composing it is cheap, but walking
    and validating the data visits it once per use, so what counts is the size
    with every alias expanded. Each node's expanded size is its own plus its
    children's, which are already known when it is finished: one pass.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._size: dict[int, int] = {}  # id(node) -> nodes under it, aliases expanded

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            event: yaml.AliasEvent = self.peek_event()  # type: ignore[no-untyped-call]
            target = self.anchors.get(event.anchor)
            if target is not None and id(target) not in self._size:
                # Its anchor is still being composed: the data would hold itself.
                raise _TooBig(
                    f"the alias *{event.anchor} refers to a value that contains it",
                    event.start_mark,
                )
            return super().compose_node(parent, index)
        if self._depth >= MAX_DEPTH:
            raise _TooBig(
                f"values nested more than {MAX_DEPTH} deep; a saga definition never needs that",
                self.peek_event().start_mark,  # type: ignore[no-untyped-call]
            )
        self._depth += 1
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        if node is None:
            return None
        size = 1
        if isinstance(node, yaml.MappingNode):
            size += sum(self._size[id(k)] + self._size[id(v)] for k, v in node.value)
        elif isinstance(node, yaml.SequenceNode):
            size += sum(self._size[id(item)] for item in node.value)
        if size > MAX_NODES:
            raise _TooBig(
                f"the data holds more than {MAX_NODES:,} values once its aliases (*name) "
                "are expanded; a saga definition never needs that",
                node.start_mark,
            )
        self._size[id(node)] = size
        return node


class _Constructor(yaml.SafeLoader):
    """PyYAML's safe constructor, turning a value it cannot convert into a YAML error.

    Some scalars match a type's pattern yet fail its conversion with a plain
    ValueError, not a YAML error: an unquoted date that does not exist
    (``2001-02-30``), an integer of more digits than Python converts, an
    explicit ``!!int 0x_``. They become a problem on the value's line.
    """

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except (ValueError, OverflowError) as exc:
            value = str(node.value)
            shown = (
                repr(value) if len(value) <= 40 else f"{value[:20]!r}... ({len(value)} characters)"
            )
            kind = str(node.tag).rpartition(":")[2]
            # Python's advice on its integer limit (set_int_max_str_digits) is not for YAML users.
            reason = str(exc).split(";")[0]
            raise yaml.constructor.ConstructorError(
                None, None, f"{shown} cannot be read as {kind}: {reason}", node.start_mark
            ) from None


def too_large(file: str) -> Problem:
    """The problem of a file past `MAX_FILE_BYTES`."""
    return Problem(file, None, None, f"the file is larger than {MAX_FILE_BYTES // 2**20} MiB")


def compose(text: str, file: str) -> tuple[Any, dict[Path_, int], list[Problem], list[_Duplicate]]:
    """Parse YAML safely: the data, the line of every key and item, problems, duplicate keys.

    A file past `MAX_FILE_BYTES`, `MAX_NODES` or `MAX_DEPTH` is refused
    with one problem, before anything else is done with it.
    """
    if len(text.encode("utf-8", "surrogatepass")) > MAX_FILE_BYTES:
        return None, {}, [too_large(file)], []
    try:
        node = yaml.compose(text, Loader=_BoundedLoader)
    except _TooBig as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark is not None else None
        return None, {}, [Problem(file, line, None, f"refused: {exc.problem}")], []
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
    loader = _Constructor("")
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
