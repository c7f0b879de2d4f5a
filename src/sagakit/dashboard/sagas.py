"""A saga's page: its definition laid out as a diagram, and its versions with their runs.

Pure layout (`diagram`: where each box goes, no markup) and the reads the
page needs (`saga_page`). The SVG itself is drawn by the ``saga.html``
template from the layout, so every name passes through the templates'
escaping like any other text on the dashboard.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

from sagakit.definition import Saga, StepKind
from sagakit.definition.saga import version_key
from sagakit.engine import Engine
from sagakit.journal import RunStatus

COUNT_CAP = 1000
"""How many runs of one status the page reads before it says "1000+" (as the overview)."""

NODE_WIDTH = 190
NODE_HEIGHT = 54
H_GAP = 24
V_GAP = 30
MARGIN = 16
TITLE = 28
LANE_GAP = 60
MAX_LABEL = 24
"""Characters of a name drawn in a box; the whole name is in the box's tooltip."""


@dataclass(frozen=True, slots=True)
class Node:
    """A step's box in the diagram.

    Attributes:
        name: The step's name (whole; the template escapes it).
        label: The name as drawn, cut to `MAX_LABEL` characters.
        kind: The step's kind (`StepKind` value).
        stage: The stage it belongs to, from 0.
        x: Left edge.
        y: Top edge.
        pivot: Whether it is the saga's pivot.
        parallel: Whether it runs at the same time as others of its stage.
        reserves: The reservations it takes before each attempt.
        compensation: Its compensation's name, if it has one.
    """

    name: str
    label: str
    kind: str
    stage: int
    x: int
    y: int
    pivot: bool = False
    parallel: bool = False
    reserves: tuple[str, ...] = ()
    compensation: str | None = None

    @property
    def width(self) -> int:
        """The box's width."""
        return NODE_WIDTH

    @property
    def height(self) -> int:
        """The box's height."""
        return NODE_HEIGHT

    @property
    def centre(self) -> int:
        """The x of the box's middle, where arrows meet it."""
        return self.x + NODE_WIDTH // 2

    @property
    def bottom(self) -> int:
        """The y of the box's lower edge."""
        return self.y + NODE_HEIGHT


@dataclass(frozen=True, slots=True)
class Edge:
    """An arrow from one box to the next stage's."""

    x1: int
    y1: int
    x2: int
    y2: int


@dataclass(frozen=True, slots=True)
class Diagram:
    """A saga version laid out: stages top to bottom, parallel members side by side.

    Attributes:
        version: The version drawn.
        width: The drawing's width.
        height: The drawing's height.
        nodes: Every step's box, in stage order (members of a stage left to right).
        edges: Arrows between consecutive stages.
        undo: The compensation order, drawn to the right: one box per
            compensation, groups that run together side by side.
        undo_edges: Arrows between consecutive compensation groups.
        undo_x: Where the compensation lane starts.
        declared_order: Whether the compensation order was declared
            (``compensation_order``) rather than the reverse of completion.
    """

    version: str
    width: int
    height: int
    nodes: tuple[Node, ...]
    edges: tuple[Edge, ...]
    undo: tuple[Node, ...]
    undo_edges: tuple[Edge, ...]
    undo_x: int
    declared_order: bool


@dataclass(frozen=True, slots=True)
class VersionCount:
    """How many runs one version of a saga has, by status.

    Attributes:
        version: The version.
        counts: Runs by status value (only statuses with runs).
        loaded: Whether this version is registered with the dashboard.
    """

    version: str
    counts: dict[str, int]
    loaded: bool

    @property
    def total(self) -> int:
        """Runs of this version, every status."""
        return sum(self.counts.values())


@dataclass(frozen=True, slots=True)
class SagaPage:
    """What a saga's page shows.

    Attributes:
        name: The saga's name.
        versions: Every version registered or with runs, newest first.
        diagram: The chosen version drawn, or None when none is registered.
        why_not_drawn: Why there is no diagram, when there is none.
        capped: Statuses with more than `COUNT_CAP` runs (counts read as "1000+").
    """

    name: str
    versions: tuple[VersionCount, ...]
    diagram: Diagram | None
    why_not_drawn: str | None
    capped: frozenset[str]

    @property
    def statuses(self) -> list[str]:
        """Every status, in the order the page shows them."""
        return [status.value for status in RunStatus]


def _label(name: str) -> str:
    return name if len(name) <= MAX_LABEL else name[: MAX_LABEL - 1] + "…"


def _undo_groups(saga: Saga[Any]) -> tuple[tuple[tuple[str, ...], ...], bool]:
    """The compensation order: as declared, or the reverse of the stages (compensable steps)."""
    plan = saga.plan()
    if plan.compensation_order is not None:
        return plan.compensation_order, True
    groups = []
    for stage in reversed(plan.stages):
        members = tuple(name for name in stage if saga[name].compensation is not None)
        if members:
            groups.append(members)
    return tuple(groups), False


def diagram(saga: Saga[Any]) -> Diagram:
    """Lay out a saga's stages and compensation order as boxes and arrows.

    Raises:
        DefinitionError: the saga is not valid (it is validated as registering it does).
    """
    stages = saga.plan().stages
    columns = max((len(stage) for stage in stages), default=1)
    nodes: list[Node] = []
    rows: list[list[Node]] = []
    for index, stage in enumerate(stages):
        row = []
        for column, name in enumerate(stage):
            step = saga[name]
            compensation = step.compensation
            row.append(
                Node(
                    name=name,
                    label=_label(name),
                    kind=step.kind.value,
                    stage=index,
                    x=MARGIN + column * (NODE_WIDTH + H_GAP),
                    y=TITLE + MARGIN + index * (NODE_HEIGHT + V_GAP),
                    pivot=step.kind is StepKind.PIVOT,
                    parallel=len(stage) > 1,
                    reserves=tuple(step.reserve.names) if step.reserve is not None else (),
                    compensation=getattr(compensation, "__name__", None)
                    if compensation is not None
                    else None,
                )
            )
        rows.append(row)
        nodes.extend(row)
    undo_x = MARGIN + columns * (NODE_WIDTH + H_GAP) + LANE_GAP
    groups, declared = _undo_groups(saga)
    undo_rows: list[list[Node]] = []
    for index, group in enumerate(groups):
        undo_rows.append(
            [
                Node(
                    name=name,
                    label=_label(name),
                    kind=saga[name].kind.value,
                    stage=index,
                    x=undo_x + column * (NODE_WIDTH + H_GAP),
                    y=TITLE + MARGIN + index * (NODE_HEIGHT + V_GAP),
                    parallel=len(group) > 1,
                )
                for column, name in enumerate(group)
            ]
        )
    undo_columns = max((len(group) for group in groups), default=0)
    width = undo_x + max(undo_columns, 1) * (NODE_WIDTH + H_GAP) + MARGIN
    height = TITLE + 2 * MARGIN + max(len(rows), len(undo_rows), 1) * (NODE_HEIGHT + V_GAP)
    return Diagram(
        version=saga.version,
        width=width,
        height=height,
        nodes=tuple(nodes),
        edges=_edges(rows),
        undo=tuple(node for row in undo_rows for node in row),
        undo_edges=_edges(undo_rows),
        undo_x=undo_x,
        declared_order=declared,
    )


def _edges(rows: Sequence[Sequence[Node]]) -> tuple[Edge, ...]:
    """An arrow from every box of a row to every box of the next."""
    return tuple(
        Edge(a.centre, a.bottom, b.centre, b.y)
        for above, below in pairwise(rows)
        for a in above
        for b in below
    )


def version_counts(engine: Engine, name: str) -> tuple[dict[str, dict[str, int]], frozenset[str]]:
    """Runs of saga ``name`` by version and status: one bounded read per status.

    Returns:
        The counts (version -> status -> runs) and the statuses whose
        count reached `COUNT_CAP` (more runs than were counted).
    """
    counts: dict[str, dict[str, int]] = {}
    capped: set[str] = set()
    for status in RunStatus:
        runs = engine.runs(status=status, saga=name, limit=COUNT_CAP)
        if len(runs) == COUNT_CAP:
            capped.add(status.value)
        for run in runs:
            per = counts.setdefault(run.version, {})
            per[status.value] = per.get(status.value, 0) + 1
    return counts, frozenset(capped)


def saga_page(engine: Engine, name: str, *, version: str | None = None) -> SagaPage | None:
    """A saga's page: its versions with their runs, and one version drawn.

    Args:
        engine: The dashboard's engine.
        name: The saga's name.
        version: The version to draw; the newest registered when None.

    Returns:
        The page, or None when the saga is neither registered nor has runs.
        It has no diagram when the saga (or that version) is not registered.
    """
    loaded = engine.versions(name)
    counts, capped = version_counts(engine, name)
    if not loaded and not counts:
        return None
    every = sorted(set(loaded) | set(counts), key=version_key, reverse=True)
    versions = tuple(
        VersionCount(version=v, counts=counts.get(v, {}), loaded=v in loaded) for v in every
    )
    if not loaded:
        why = (
            f"saga {name} is not registered with this dashboard: only the runs in the store "
            "are known. Pass it to create_app(sagas=...) (or --app) to see its steps."
        )
        return SagaPage(name, versions, None, why, capped)
    if version is not None and version not in loaded:
        why = (
            f"version {version} of saga {name} is not registered with this dashboard "
            f"(registered: {', '.join(loaded)}): its steps are not known here."
        )
        return SagaPage(name, versions, None, why, capped)
    drawn = diagram(engine.saga(name, version))
    return SagaPage(name, versions, drawn, None, capped)


def loaded_sagas(engine: Engine) -> list[str]:
    """The names of the sagas registered with the dashboard, sorted."""
    return sorted({saga.name for saga in engine.sagas})
