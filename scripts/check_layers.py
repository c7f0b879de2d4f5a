"""Check sagakit's import graph against its layers; print the graph on request.

Every import counts: at module level, inside functions, and under
``TYPE_CHECKING`` (a ring that only the type checker sees is still a ring a
reader has to untangle). The rules:

- each part imports only parts on lower floors (`FLOORS`), never a peer on
  its own floor and never one above it; inside a part, modules import each
  other freely but without rings;
- the store knows nothing of sagas: it never imports the core, the
  definition or the step context (`NEVER`), nor anything above it;
- the store backends (memory, SQLite, PostgreSQL) never import each other;
- the core imports nothing that does I/O or reads a clock (`CORE_FORBIDS`);
- nothing imports the command line but ``__main__``;
- no module is part of an import ring.

Run from the repository root::

    python scripts/check_layers.py            # check; exit 1 on a violation
    python scripts/check_layers.py --graph    # also print who imports whom
    python scripts/check_layers.py --parts    # the same, part by part
    python scripts/check_layers.py --src other/src   # check another tree
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Iterator, Mapping, Set
from pathlib import Path

PACKAGE = "sagakit"

# Floors from the bottom up: a part may import parts on lower floors only.
FLOORS: tuple[tuple[str, ...], ...] = (
    ("frozen",),  # a faster __init__ for the frozen dataclasses below
    ("journal", "errors", "clock"),
    ("jsonutil", "control", "redaction"),
    ("core", "run", "observe", "runlog"),
    ("store", "definition"),
    ("context",),
    ("driver", "reconcile"),
    ("engine", "yamlfile", "timeline", "alerts"),
    # the testing kit: a skipping clock, fixtures, explore (drives engines); the
    # public run view an application shows its users (reads through an engine)
    ("testing", "views"),
    ("dashboard",),  # the web dashboard: pages over an engine
    ("",),  # the public API: sagakit/__init__.py
    ("cli",),
    ("__main__",),
)

# Backends of the store, which never import each other.
BACKENDS = ("store.memory", "store.sqlite", "store.postgresql")

# Parts that may never import some lower parts all the same: the store keeps
# runs and journals and knows nothing of sagas, their plan or their context.
NEVER: dict[str, frozenset[str]] = {"store": frozenset({"core", "definition", "context"})}

# What the pure core must not import: it performs no I/O and reads no clock.
CORE_FORBIDS = frozenset(
    {"asyncio", "time", "datetime", "threading", "os", "random", "socket", "sqlite3", "psycopg"}
)

Graph = dict[str, set[str]]


def _modules(src: Path) -> dict[str, Path]:
    """Every module of the package under ``src``, by dotted name."""
    mods: dict[str, Path] = {}
    for path in sorted((src / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = path
    return mods


def _owner(name: str, mods: Set[str]) -> str:
    """The module that ``name`` (a module or a name in one) lives in, or ''."""
    while name and name not in mods:
        name = name.rpartition(".")[0]
    return name


def _imports(module: str, path: Path, mods: Set[str]) -> tuple[set[str], set[str]]:
    """The package's modules and the outside top-level modules ``module`` imports."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    inside: set[str] = set()
    outside: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                root = ".".join([*base, node.module or ""]).strip(".")
            else:
                root = node.module or ""
            # `from a import b` names module a.b if there is one, else a name in a.
            names = [_owner(f"{root}.{alias.name}", mods) or root for alias in node.names]
        else:
            continue
        for name in names:
            if name == PACKAGE or name.startswith(PACKAGE + "."):
                inside.add(_owner(name, mods))
            else:
                outside.add(name.partition(".")[0])
    # A module's import of its own package's __init__ is how Python loads it, not a dependency.
    inside = {m for m in inside if m and m != module and not module.startswith(m + ".")}
    return inside, outside


def import_graph(src: Path) -> tuple[Graph, Graph]:
    """The package's import graph under ``src``: inside the package, and to the outside."""
    mods = _modules(src)
    graph: Graph = {}
    external: Graph = {}
    for module, path in mods.items():
        graph[module], external[module] = _imports(module, path, mods.keys())
    return graph, external


def part(module: str) -> str:
    """The part a module belongs to: ``store.sqlite`` for ``sagakit.store.sqlite.writes``."""
    rest = module[len(PACKAGE) + 1 :] if module != PACKAGE else ""
    for backend in BACKENDS:
        if rest == backend or rest.startswith(backend + "."):
            return backend
    return rest.partition(".")[0]


def floor(module: str) -> int | None:
    """The floor of a module's part (see `FLOORS`), or None if it has none."""
    top = part(module).partition(".")[0]
    for index, names in enumerate(FLOORS):
        if top in names:
            return index
    return None


def _part_floor(name: str) -> int:
    return floor(f"{PACKAGE}.{name}" if name else PACKAGE) or 0


def rings(graph: Mapping[str, Set[str]]) -> list[list[str]]:
    """Every import ring (strongly connected set of two or more modules), sorted."""
    reach: dict[str, set[str]] = {}
    for start in graph:
        seen: set[str] = set()
        todo = [start]
        while todo:
            for nxt in graph.get(todo.pop(), set()) - seen:
                seen.add(nxt)
                todo.append(nxt)
        reach[start] = seen
    found = {
        frozenset([m, *(o for o in reach[m] if m in reach.get(o, ()))])
        for m in graph
        if m in reach[m]
    }
    return sorted((sorted(ring) for ring in found), key=lambda r: (len(r), r))


def _edge_problems(
    graph: Mapping[str, Set[str]], external: Mapping[str, Set[str]]
) -> Iterator[str]:
    for module in sorted(graph):
        mine = part(module)
        if floor(module) is None:
            yield f"{module} is on no floor: add its part to FLOORS in {Path(__file__).name}"
            continue
        for target in sorted(graph[module]):
            theirs = part(target)
            if theirs == mine or {mine.partition(".")[0], theirs.partition(".")[0]} == {"store"}:
                # Inside one part; the store's package picks a backend by URL and
                # each backend uses the store's contract (the ring check still applies).
                if theirs in BACKENDS and mine in BACKENDS and theirs != mine:
                    yield f"{module} imports {target}: store backends never import each other"
                continue
            if theirs.partition(".")[0] in NEVER.get(mine.partition(".")[0], ()):
                yield f"{module} imports {target}: {mine} never imports {theirs}"
            elif theirs == "cli" and mine != "__main__":
                yield f"{module} imports {target}: nothing imports the command line"
            elif (floor(target) or 0) >= (floor(module) or 0):
                yield (
                    f"{module} imports {target}: {mine or 'the public API'} may import only "
                    f"parts on lower floors, and {theirs or 'the public API'} is not below it"
                )
        if part(module) == "core":
            for name in sorted(external[module] & CORE_FORBIDS):
                yield f"{module} imports {name}: the core performs no I/O and reads no clock"


def check(src: Path) -> list[str]:
    """Every violation of the rules in the tree under ``src``, one line each."""
    graph, external = import_graph(src)
    problems = list(_edge_problems(graph, external))
    for ring in rings(graph):
        problems.append(f"import ring of {len(ring)} modules: {' -> '.join(ring)}")
    return problems


def main(argv: list[str] | None = None) -> int:
    """Check the tree; print violations (and the graph with ``--graph``)."""
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--src", type=Path, default=Path(__file__).parent.parent / "src")
    parser.add_argument("--graph", action="store_true", help="print who imports whom")
    parser.add_argument("--parts", action="store_true", help="print which part imports which")
    args = parser.parse_args(argv)
    graph, _ = import_graph(args.src)
    if args.parts:
        parts: dict[str, set[str]] = {}
        for module, targets in graph.items():
            mine = part(module)
            parts.setdefault(mine, set()).update(part(t) for t in targets if part(t) != mine)
        for mine in sorted(parts, key=lambda name: (_part_floor(name), name)):
            shown = ", ".join(sorted(t or "(public API)" for t in parts[mine])) or "-"
            print(f"{mine or '(public API)'} -> {shown}")
    if args.graph:
        for module in sorted(graph, key=lambda m: (floor(m) or 0, m)):
            print(f"[{floor(module)}] {module} -> {', '.join(sorted(graph[module])) or '-'}")
    problems = check(args.src)
    for problem in problems:
        print(problem)
    if problems:
        print(f"{len(problems)} layering problem(s)", file=sys.stderr)
        return 1
    print("layering: ok (no ring, no upward import)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
