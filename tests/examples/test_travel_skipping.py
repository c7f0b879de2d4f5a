"""The travel example's refund rules, driven by the skipping clock of the pytest plugin.

``saga_clock`` and ``saga_engine`` / ``saga_engine_sqlite`` come from
sagakit's pytest plugin (installing sagakit turns it on). The trip is
cancelled "the next day" by moving the clock (`SkippingClock.advance`), and
a card processor that keeps failing its refunds makes the compensations
retry on their default schedule (minutes of backoff) without any real wait.
"""

from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path

import pytest

from sagakit import Engine, EventKind, RunStatus
from sagakit.testing import SkippingClock

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "travel"
if str(EXAMPLE) not in sys.path:  # the example's package lives beside its script
    sys.path.insert(0, str(EXAMPLE))

from travel_agency import Booking, TravelAgency, Trip, build_trip_saga  # noqa: E402

pytestmark = pytest.mark.timeout(60)

WHOLE_TRIP = 389_00 + 912_00 + 164_00 + 2 * 480_00 + 3 * 520_00  # $3,985.00
FEE = 797_00  # 20 % of every booking


@pytest.fixture(params=["memory", "sqlite"])
def engine(request: pytest.FixtureRequest) -> Engine:
    found: Engine = request.getfixturevalue(
        "saga_engine" if request.param == "memory" else "saga_engine_sqlite"
    )
    return found


def book_the_whole_trip(engine: Engine, agency: TravelAgency, run_id: str) -> None:
    saga = build_trip_saga(agency)
    trip = Trip(traveller="Alan Turing", london_hotel="The Langham")
    assert engine.run(saga, trip, run_id=run_id).status is RunStatus.COMPLETED
    assert agency.payments.charged(run_id) == WHOLE_TRIP


def test_cancelling_the_next_day_refunds_with_a_fee(
    engine: Engine, saga_clock: SkippingClock
) -> None:
    agency = TravelAgency.open()
    book_the_whole_trip(engine, agency, "alan")

    saga_clock.advance(timedelta(days=1, hours=1))
    run = engine.cancel("alan", reason="change of plans")

    assert run.status is RunStatus.CANCELLED
    assert agency.held("alan") == []
    assert agency.payments.refunded("alan") == WHOLE_TRIP - FEE
    memos = [e.memo for e in agency.payments.ledger("alan") if e.cents < 0]
    assert len(memos) == 5
    assert all("20 % fee: cancelled 25 h after booking (change of plans)" in m for m in memos)


def test_cancelling_the_same_day_refunds_in_full(engine: Engine, saga_clock: SkippingClock) -> None:
    agency = TravelAgency.open()
    book_the_whole_trip(engine, agency, "ada")

    saga_clock.advance(timedelta(hours=23))
    assert engine.cancel("ada", reason="no reason").status is RunStatus.CANCELLED
    assert agency.payments.refunded("ada") == WHOLE_TRIP


def failing_london_hotel_cancels(
    agency: TravelAgency, monkeypatch: pytest.MonkeyPatch, times: float
) -> None:
    """Make the hotel chain refuse to cancel the London hotel ``times`` times (a down API)."""
    cancel = agency.hotels.cancel
    left = {"times": times}

    def flaky(code: str, *, refund_cents: int, key: str, memo: str) -> Booking:
        if "hotel_london" in key and left["times"] > 0:
            left["times"] -= 1
            raise ConnectionError("the hotel chain's API is down")
        return cancel(code, refund_cents=refund_cents, key=key, memo=memo)

    monkeypatch.setattr(agency.hotels, "cancel", flaky)


def london_failures(engine: Engine, run_id: str) -> list[float]:
    return [
        e.at
        for e in engine.history(run_id)
        if e.kind is EventKind.COMPENSATION_FAILED and e.step == "hotel_london"
    ]


def test_an_undo_failing_for_minutes_is_retried_on_the_default_schedule(
    engine: Engine, saga_clock: SkippingClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    agency = TravelAgency.open()
    book_the_whole_trip(engine, agency, "grace")
    failing_london_hotel_cancels(agency, monkeypatch, times=12)
    saga_clock.advance(timedelta(days=2))

    run = engine.cancel("grace", reason="change of plans")

    assert run.status is RunStatus.CANCELLED
    assert agency.held("grace") == []
    assert agency.payments.refunded("grace") == WHOLE_TRIP - FEE  # still 20 %: asked at 48 h
    failed = london_failures(engine, "grace")
    assert len(failed) == 12
    # Twelve failures, then the default compensation backoff: 0.5 s doubling to
    # a minute, ±10 %; the thirteenth try (at the last timer) succeeded.
    backoff = sum(min(0.5 * 2**n, 60.0) for n in range(12))
    assert backoff == pytest.approx(363.5)
    assert 0.9 * backoff <= saga_clock() - failed[0] <= 1.1 * backoff


def test_an_undo_that_never_succeeds_needs_attention_after_its_default_retries(
    engine: Engine, saga_clock: SkippingClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    agency = TravelAgency.open()
    book_the_whole_trip(engine, agency, "alan")
    failing_london_hotel_cancels(agency, monkeypatch, times=float("inf"))
    saga_clock.advance(timedelta(days=1, hours=1))

    run = engine.cancel("alan", reason="change of plans")

    assert run.status is RunStatus.NEEDS_ATTENTION
    failed = london_failures(engine, "alan")
    assert len(failed) == 20  # the default compensation policy's attempts
    assert failed[-1] - failed[0] >= 0.9 * 783.5  # about 13 minutes of backoff, skipped
    # The undo stopped there: the flights, undone after the hotels, still stand.
    assert len(agency.airline.held("alan")) == 3
