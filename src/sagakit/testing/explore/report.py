"""The report of an exploration: one row per scenario, and the smallest failing scenarios.

`Report` prints as a table (scenario, final status, sagakit's invariants,
the user's check), followed by each distinct failure with the smallest
scenario that shows it (fewest faults, then the first in the plan) and its
timeline, as ``sagakit show`` draws it. `Report.to_json` is the
``sagakit test --json`` document's body.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from sagakit.journal import Event, Phase
from sagakit.redaction import Redactor
from sagakit.run import Run
from sagakit.testing.explore.faults import Call
from sagakit.testing.explore.plan import Scenario
from sagakit.timeline import build_timeline, printable, render_timeline, status_style


@dataclass(frozen=True, slots=True)
class ScenarioResult:
    """How one scenario went.

    Attributes:
        scenario: The scenario.
        run_id: The id of its run.
        status: How the run ended (its status's value).
        reached: Whether every fault it names did happen (a fault on a step
            the run never got to does not).
        problems: sagakit's promises the run broke (`check_invariants`).
        check: What the user's check said was wrong, or None if it passed
            (or no check was given).
        crashes: How many engines died driving the run.
        run: The run as it ended.
        events: Its journal.
        calls: The calls its functions got, in order.
    """

    scenario: Scenario
    run_id: str
    status: str
    reached: bool
    problems: tuple[str, ...]
    check: str | None
    crashes: int = 0
    run: Run | None = field(default=None, repr=False, compare=False)
    events: tuple[Event, ...] = field(default=(), repr=False, compare=False)
    calls: tuple[Call, ...] = field(default=(), repr=False, compare=False)

    @property
    def failed(self) -> bool:
        """Whether sagakit's invariants or the user's check failed."""
        return bool(self.problems) or self.check is not None

    @property
    def findings(self) -> tuple[str, ...]:
        """Every failure, in words: the invariants broken, then the check's message."""
        check = () if self.check is None else (f"check failed: {self.check}",)
        return (*self.problems, *check)

    def render_timeline(self) -> RenderableType:
        """The run's timeline, and the calls its functions got."""
        # Masked as `sagakit show` masks it: the names the run's start lists.
        data = () if self.run is None else (self.run.data,)
        redactor = Redactor.for_run(self.events, (), *data)
        run = None if self.run is None else self.run.redacted(redactor)
        timeline = build_timeline(redactor.events(self.events), run)
        parts: list[RenderableType] = [render_timeline(timeline)]
        if self.calls:
            parts.append(Text.assemble(("calls: ", "bold"), ", ".join(_calls(self.calls))))
        return Group(*parts)

    def to_json(self) -> dict[str, Any]:
        """The result as JSON."""
        return {
            **self.scenario.to_json(),
            "run_id": self.run_id,
            "status": self.status,
            "reached": self.reached,
            "crashes": self.crashes,
            "problems": list(self.problems),
            "check": self.check,
            "passed": not self.failed,
        }


@dataclass(frozen=True, slots=True)
class Failure:
    """One distinct failure, with the smallest scenario that shows it.

    Attributes:
        finding: What went wrong, in words.
        smallest: The smallest scenario that shows it.
        scenarios: How many scenarios show it.
    """

    finding: str
    smallest: ScenarioResult
    scenarios: int


@dataclass(frozen=True, slots=True)
class Report:
    """What `explore` found.

    Attributes:
        saga: The saga's name.
        version: Its version.
        store: ``"memory"``, ``"sqlite"`` or the store URL given (password masked).
        seed: The seed that chose the pairs.
        results: One per scenario, in plan order (the baseline first).
        singles: How many single-fault scenarios the plan holds.
        pairs_possible: How many pairs of faults combine.
        pairs_run: How many of them were run (a seeded sample).
        checked: Whether a user's check ran after every scenario (without
            one, only sagakit's invariants are checked).
        seconds: Wall time of the whole exploration.
    """

    saga: str
    version: str
    store: str
    seed: int
    results: tuple[ScenarioResult, ...]
    singles: int
    pairs_possible: int
    pairs_run: int
    checked: bool
    seconds: float

    @property
    def ok(self) -> bool:
        """Whether every scenario passed."""
        return not any(result.failed for result in self.results)

    @property
    def failed(self) -> tuple[ScenarioResult, ...]:
        """The scenarios that failed, in plan order."""
        return tuple(result for result in self.results if result.failed)

    def failures(self) -> list[Failure]:
        """Each distinct failure once, with its smallest scenario (fewest faults, then first)."""
        by_finding: dict[str, list[ScenarioResult]] = {}
        for result in self.results:
            for finding in result.findings:
                key = finding.replace(result.run_id, "<run>")
                by_finding.setdefault(key, []).append(result)
        return [
            Failure(
                finding,
                min(results, key=lambda r: (r.scenario.size, r.scenario.number)),
                len(results),
            )
            for finding, results in by_finding.items()
        ]

    def summary(self) -> str:
        """One line: how many scenarios ran and how many failed."""
        failed = len(self.failed)
        verdict = "all passed" if not failed else f"{failed} failed"
        pairs = (
            f"{self.pairs_run} of {self.pairs_possible} pairs (seed {self.seed})"
            if self.pairs_possible
            else "no pairs"
        )
        checks = (
            "sagakit's invariants and your check"
            if self.checked
            else ("sagakit's invariants only (no check was given)")
        )
        return (
            f"explored saga {self.saga} v{self.version} on the {self.store} store: "
            f"{len(self.results)} scenarios (the baseline, {self.singles} single faults, "
            f"{pairs}) in {self.seconds:.2f}s; checked {checks}: {verdict}"
        )

    def renderable(self, *, every: bool = True) -> RenderableType:
        """The report for a rich console: the table, then each failure's smallest scenario.

        Args:
            every: List every scenario in the table; False lists only the failed ones.
        """
        table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
        for column in ("#", "scenario", "status", "sagakit", "check"):
            table.add_column(column, justify="right" if column == "#" else "left")
        for result in self.results:
            if not every and not result.failed:
                continue
            text = result.scenario.describe()
            if not result.reached:
                text += " (not reached)"
            sagakit = Text("FAIL", style="red") if result.problems else Text("ok", style="green")
            if not self.checked:
                check = Text("-", style="dim")
            else:
                check = (
                    Text("ok", style="green") if result.check is None else Text("FAIL", style="red")
                )
            table.add_row(
                str(result.scenario.number),
                printable(text),
                Text(result.status, style=status_style(result.status)),
                sagakit,
                check,
            )
        parts: list[RenderableType] = [table] if table.row_count else []
        parts.append(Text(self.summary(), style="bold"))
        for failure in self.failures():
            smallest = failure.smallest
            others = failure.scenarios - 1
            also = f" (and {others} more scenario{'s' if others != 1 else ''})" if others else ""
            parts.append(Text(""))
            parts.append(Text.assemble(("FAILED: ", "bold red"), printable(failure.finding)))
            parts.append(
                Text(
                    f"smallest scenario #{smallest.scenario.number}{also}: "
                    f"{printable(smallest.scenario.describe())}"
                )
            )
            parts.append(smallest.render_timeline())
        return Group(*parts)

    def render(self, *, width: int = 120, every: bool = True) -> str:
        """The report as plain text (see `renderable`)."""
        out = io.StringIO()
        console = Console(
            file=out, width=width, no_color=True, highlight=False, emoji=False, markup=False
        )
        console.print(self.renderable(every=every), soft_wrap=False)
        return out.getvalue()

    def __str__(self) -> str:
        return self.render()

    def assert_ok(self) -> None:
        """Raise `AssertionError` with the report's failures, if any scenario failed."""
        if not self.ok:
            raise AssertionError(self.render(every=False))

    def to_json(self) -> dict[str, Any]:
        """The report as JSON (the body of the ``sagakit/test`` document)."""
        return {
            "saga": self.saga,
            "version": self.version,
            "store": self.store,
            "seed": self.seed,
            "ok": self.ok,
            "checked": self.checked,
            "seconds": self.seconds,
            "singles": self.singles,
            "pairs_possible": self.pairs_possible,
            "pairs_run": self.pairs_run,
            "scenarios": [result.to_json() for result in self.results],
            "failures": [
                {
                    "finding": failure.finding,
                    "scenarios": failure.scenarios,
                    "smallest": failure.smallest.scenario.number,
                }
                for failure in self.failures()
            ],
        }


def _calls(calls: tuple[Call, ...]) -> list[str]:
    """The calls in words, a run of alike attempts in one (``undo pay #1-#20 (no effect)``)."""
    said: list[str] = []
    index = 0
    while index < len(calls):
        call = calls[index]
        last = index
        while (
            last + 1 < len(calls)
            and (calls[last + 1].step, calls[last + 1].phase, calls[last + 1].effect)
            == (call.step, call.phase, call.effect)
            and calls[last + 1].note == call.note
            and calls[last + 1].attempt == calls[last].attempt + 1
        ):
            last += 1
        name = call.step if call.phase is Phase.ACTION else f"undo {call.step}"
        attempts = (
            f"#{call.attempt}" if last == index else f"#{call.attempt}-#{calls[last].attempt}"
        )
        what = call.note or ("took effect" if call.effect else "no effect")
        said.append(f"{printable(name)} {attempts} ({what})")
        index = last + 1
    return said
