"""The pure matching of reconciliation: keys back to runs and steps, and the verdicts."""

from __future__ import annotations

from typing import Any

import pytest

from sagakit.journal import Event, EventKind, RunStatus
from sagakit.reconcile import Reason, Verdict, classify, parse_key, step_fate
from sagakit.reconcile.match import StepFate

STEPS = frozenset({"create_team", "create_key"})


@pytest.mark.parametrize(
    ("key", "only", "expected"),
    [
        ("run-1/create_team", None, ("run-1", "create_team")),
        ("run-1/create_key", "create_key", ("run-1", "create_key")),
        ("run-1/create_key", "create_team", None),  # another step than the reconciler's
        ("run-1/create_team/compensate", None, None),  # a compensation's key
        ("run-1/unknown_step", None, None),
        ("/create_team", None, None),
        ("run-1", None, None),
        ("", None, None),
        (None, None, None),
    ],
)
def test_parse_key(key: str | None, only: str | None, expected: tuple[str, str] | None) -> None:
    assert parse_key(key, STEPS, only=only) == expected


def journal(*entries: tuple[EventKind, str | None, dict[str, Any]]) -> list[Event]:
    return [
        Event("r", seq, kind, float(seq), step, 1, data)
        for seq, (kind, step, data) in enumerate(entries, 1)
    ]


def test_step_fate_reads_successes_compensations_and_operator_actions() -> None:
    events = journal(
        (EventKind.RUN_STARTED, None, {}),
        (EventKind.STEP_STARTED, "create_team", {}),
        (EventKind.STEP_SUCCEEDED, "create_team", {}),
        (EventKind.STEP_STARTED, "create_key", {}),
        (EventKind.STEP_FAILED, "create_key", {"handled": "continue"}),
        (EventKind.COMPENSATION_STARTED, "create_team", {}),
        (EventKind.NEEDS_ATTENTION, "create_team", {"phase": "compensation"}),
        (EventKind.RESOLVED, "create_team", {"phase": "compensation"}),
        (EventKind.RUN_FINISHED, None, {"status": "rolled_back"}),
    )
    assert step_fate(events, "create_team") == StepFate(True, True, True, 8.0)
    assert step_fate(events, "create_key") == StepFate(True, True, False, 5.0)
    # A step the journal never names: not started; its age is the run's last change.
    assert step_fate(events, "other") == StepFate(False, False, False, 9.0)
    assert step_fate([], "create_team") == StepFate()


def test_a_plain_failure_is_not_a_success() -> None:
    events = journal(
        (EventKind.STEP_STARTED, "create_team", {}),
        (EventKind.STEP_FAILED, "create_team", {"permanent": True}),
    )
    assert step_fate(events, "create_team") == StepFate(True, False, False, 2.0)


DONE = StepFate(started=True, succeeded=True, last_at=0.0)
UNDONE = StepFate(started=True, succeeded=True, compensated=True, last_at=0.0)
FAILED = StepFate(started=True, last_at=0.0)


@pytest.mark.parametrize(
    ("status", "fate", "created_at", "expected"),
    [
        # orphans
        (RunStatus.ROLLED_BACK, UNDONE, None, (Verdict.ORPHAN, Reason.STEP_COMPENSATED)),
        (RunStatus.CANCELLED, UNDONE, 10.0, (Verdict.ORPHAN, Reason.STEP_COMPENSATED)),
        (RunStatus.NEEDS_ATTENTION, UNDONE, None, (Verdict.ORPHAN, Reason.STEP_COMPENSATED)),
        (RunStatus.ROLLED_BACK, FAILED, None, (Verdict.ORPHAN, Reason.RUN_ENDED_WITHOUT_STEP)),
        (RunStatus.FAILED, FAILED, None, (Verdict.ORPHAN, Reason.RUN_ENDED_WITHOUT_STEP)),
        (None, None, 10.0, (Verdict.ORPHAN, Reason.UNKNOWN_RUN)),
        # live
        (RunStatus.COMPLETED, DONE, None, (Verdict.LIVE, Reason.OWNED)),
        (RunStatus.ROLLED_BACK, DONE, None, (Verdict.LIVE, Reason.OWNED)),  # no compensation
        (RunStatus.RUNNING, DONE, None, (Verdict.LIVE, Reason.OWNED)),
        (RunStatus.RUNNING, FAILED, None, (Verdict.LIVE, Reason.IN_FLIGHT)),
        (RunStatus.PAUSED, FAILED, None, (Verdict.LIVE, Reason.IN_FLIGHT)),
        (RunStatus.NEEDS_ATTENTION, FAILED, None, (Verdict.LIVE, Reason.IN_FLIGHT)),
        (RunStatus.COMPENSATING, UNDONE, None, (Verdict.LIVE, Reason.RUN_NOT_SETTLED)),
        # no run and no creation time: nothing to age it by, so never removed
        (None, None, None, (Verdict.LIVE, Reason.AGE_UNKNOWN)),
        # the grace period wins over everything
        (RunStatus.ROLLED_BACK, UNDONE, 95.0, (Verdict.LIVE, Reason.IN_GRACE)),
        (None, None, 95.0, (Verdict.LIVE, Reason.IN_GRACE)),
    ],
)
def test_classify(
    status: RunStatus | None,
    fate: StepFate | None,
    created_at: float | None,
    expected: tuple[Verdict, Reason],
) -> None:
    assert classify(status=status, fate=fate, created_at=created_at, now=100.0, grace=10.0) == (
        expected
    )


def test_without_a_creation_time_the_journal_gives_the_age() -> None:
    recent = StepFate(started=True, succeeded=True, compensated=True, last_at=95.0)
    verdict = classify(
        status=RunStatus.ROLLED_BACK, fate=recent, created_at=None, now=100.0, grace=10.0
    )
    assert verdict == (Verdict.LIVE, Reason.IN_GRACE)
    verdict = classify(
        status=RunStatus.ROLLED_BACK, fate=recent, created_at=None, now=106.0, grace=10.0
    )
    assert verdict == (Verdict.ORPHAN, Reason.STEP_COMPENSATED)


def test_an_unknown_run_without_a_creation_time_is_an_orphan_only_with_no_grace() -> None:
    assert classify(status=None, fate=None, created_at=None, now=100.0, grace=0.0) == (
        Verdict.ORPHAN,
        Reason.UNKNOWN_RUN,
    )
