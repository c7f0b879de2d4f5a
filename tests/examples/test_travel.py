"""The travel example (``examples/travel``): its saga on real stores, and its script.

The saga is driven by a real engine on a SQLite file and on PostgreSQL;
every test checks what the fake airline, hotels and card processor hold
afterwards (bookings, rooms, cents), not just the run's status. The script
``main.py`` is run as a subprocess, as a reader of the README would run it.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sagakit import Engine, EventKind, RunStatus

from .helpers import run_example

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "travel"
if str(EXAMPLE) not in sys.path:  # the example's package lives beside its script
    sys.path.insert(0, str(EXAMPLE))

from travel_agency import (  # noqa: E402
    CHOOSE_HOTEL,
    FLIGHTS,
    HOUR,
    Agent,
    BookingStatus,
    City,
    TravelAgency,
    TravelClock,
    Trip,
    build_trip_saga,
    refund_for,
)

FLIGHT_FARES = 389_00 + 912_00 + 164_00
"""Seattle -> New York, New York -> London, London -> Paris."""
LANGHAM_2_NIGHTS = 2 * 480_00
LUTETIA_3_NIGHTS = 3 * 520_00
WHOLE_TRIP = FLIGHT_FARES + LANGHAM_2_NIGHTS + LUTETIA_3_NIGHTS  # $3,985.00


def open_agent(url: str, agency: TravelAgency) -> Iterator[Agent]:
    """An agent on an engine at ``url`` (with the example's clock), booking with ``agency``."""
    clock = TravelClock()
    saga = build_trip_saga(agency)
    with Engine(url, clock=clock) as engine:
        engine.register(saga)
        yield Agent(engine, saga, agency, clock, tag="test")


@pytest.fixture
def agent(store_url: str) -> Iterator[Agent]:
    """The example's default world: The Savoy has no room, every other hotel has three.

    On every store (``store_url`` from tests/conftest.py: memory, a SQLite
    file, PostgreSQL).
    """
    yield from open_agent(store_url, TravelAgency.open())


def paused_at_the_savoy(agent: Agent, run_id: str) -> None:
    run = agent.engine.run(agent.saga, Trip(traveller="Ada Lovelace"), run_id=run_id)
    assert run.status is RunStatus.PAUSED


# -- the London hotel is full ----------------------------------------------------------


def test_a_full_london_hotel_pauses_the_run_with_the_flights_booked(agent: Agent) -> None:
    run = agent.engine.run(agent.saga, Trip(traveller="Ada Lovelace"), run_id="ada")

    assert run.status is RunStatus.PAUSED
    paused = [e for e in agent.engine.history("ada") if e.kind is EventKind.PAUSED][-1]
    assert paused.step == "hotel_london"
    assert paused.data["options"] == [CHOOSE_HOTEL]
    assert paused.data["question"].startswith("The Savoy (London) has no room left.")
    assert "The Hoxton, The Langham" in paused.data["question"]  # cheapest first
    held = agent.agency.held("ada")
    assert sorted(b.what for b in held) == sorted(f.label for f in FLIGHTS)
    assert agent.agency.payments.charged("ada") == FLIGHT_FARES
    assert run.state.hotel_london is None
    assert run.state.flight_new_york_london.paid_cents == 912_00


def test_choosing_another_hotel_books_it_and_completes_the_trip(agent: Agent) -> None:
    paused_at_the_savoy(agent, "ada")

    run = agent.engine.signal("ada", CHOOSE_HOTEL, {"london_hotel": "The Langham"})

    assert run.status is RunStatus.COMPLETED
    assert run.state.london_hotel == "The Langham"
    assert run.state.hotel_london.what == "The Langham, London, 2 nights"
    assert run.state.hotel_paris.what == "Hotel Lutetia, Paris, 3 nights"
    held = agent.agency.held("ada")
    assert len(held) == 5
    assert all(b.status is BookingStatus.BOOKED for b in held)
    assert agent.agency.hotels.rooms_left("The Langham") == 2
    assert agent.agency.payments.charged("ada") == WHOLE_TRIP
    assert agent.agency.payments.refunded("ada") == 0
    started = [
        e for e in agent.engine.history("ada") if e.kind is EventKind.STEP_STARTED
    ]  # the hotel step ran twice: The Savoy, then The Langham
    assert [e.step for e in started].count("hotel_london") == 2


def test_a_choice_that_names_no_london_hotel_keeps_the_run_waiting(agent: Agent) -> None:
    paused_at_the_savoy(agent, "ada")

    # A Paris hotel under the London key: the step runs again and asks again.
    run = agent.engine.signal("ada", CHOOSE_HOTEL, {"london_hotel": "Hotel du Louvre"})
    assert run.status is RunStatus.PAUSED
    question = [e for e in agent.engine.history("ada") if e.kind is EventKind.PAUSED][-1]
    assert question.data["question"].startswith("there is no hotel 'Hotel du Louvre' in London")

    # Only a Paris choice: the signal handler keeps waiting without a retry.
    run = agent.engine.signal("ada", CHOOSE_HOTEL, {"paris_hotel": "Hotel du Louvre"})
    assert run.status is RunStatus.PAUSED

    run = agent.engine.signal("ada", CHOOSE_HOTEL, {"london_hotel": "The Hoxton"})
    assert run.status is RunStatus.COMPLETED
    assert run.state.hotel_london.what == "The Hoxton, London, 2 nights"
    assert run.state.hotel_paris.what == "Hotel du Louvre, Paris, 3 nights"
    assert agent.agency.payments.charged("ada") == FLIGHT_FARES + 2 * 190_00 + 3 * 390_00


def test_cancelling_the_paused_trip_cancels_and_refunds_every_flight(agent: Agent) -> None:
    paused_at_the_savoy(agent, "ada")
    agent.clock.advance(2 * HOUR)  # she thinks it over

    run = agent.engine.cancel("ada", reason="only The Savoy will do")

    assert run.status is RunStatus.CANCELLED
    assert agent.agency.held("ada") == []
    flights = agent.agency.airline.bookings("ada")
    assert [b.status for b in flights] == [BookingStatus.CANCELLED] * 3
    assert all(b.refunded_cents == b.price_cents for b in flights)
    assert agent.agency.hotels.bookings("ada") == []  # no hotel was ever booked
    assert agent.agency.payments.refunded("ada") == FLIGHT_FARES
    memos = [e.memo for e in agent.agency.payments.ledger("ada") if e.cents < 0]
    assert all(m.endswith("within 24 h of booking (only The Savoy will do)") for m in memos)
    undone = {
        e.step for e in agent.engine.history("ada") if e.kind is EventKind.COMPENSATION_SUCCEEDED
    }
    assert undone == {f"flight_{f.leg}" for f in FLIGHTS}


# -- cancelling a completed trip: the 24-hour rule ----------------------------------------


def cancelled_later(agent: Agent, run_id: str, *, hours: float, reason: str) -> None:
    """Book the whole trip, let ``hours`` pass, cancel it, and check nothing is left booked."""
    trip = Trip(traveller="Alan Turing", london_hotel="The Langham")
    assert agent.engine.run(agent.saga, trip, run_id=run_id).status is RunStatus.COMPLETED
    assert agent.agency.payments.charged(run_id) == WHOLE_TRIP
    agent.clock.advance(hours * HOUR)
    assert agent.engine.cancel(run_id, reason=reason).status is RunStatus.CANCELLED
    assert agent.agency.held(run_id) == []


def test_cancelling_a_booked_trip_within_24_hours_refunds_in_full(agent: Agent) -> None:
    cancelled_later(agent, "alan", hours=23, reason="the conference moved online")

    assert agent.agency.payments.refunded("alan") == WHOLE_TRIP
    assert agent.agency.hotels.rooms_left("The Langham") == 3  # the room is free again


def test_cancelling_a_booked_trip_after_24_hours_keeps_a_fee(agent: Agent) -> None:
    cancelled_later(agent, "alan", hours=25, reason="change of plans")

    refunds = {
        b.what: b.refunded_cents
        for b in agent.agency.airline.bookings("alan") + agent.agency.hotels.bookings("alan")
    }
    assert refunds == {  # 80 % of each price back, 20 % kept
        "AS 24 Seattle -> New York": 311_20,
        "BA 178 New York -> London": 729_60,
        "AF 1381 London -> Paris": 131_20,
        "The Langham, London, 2 nights": 768_00,
        "Hotel Lutetia, Paris, 3 nights": 1248_00,
    }
    assert agent.agency.payments.refunded("alan") == WHOLE_TRIP - 797_00
    memos = [e.memo for e in agent.agency.payments.ledger("alan") if e.cents < 0]
    assert all("20 % fee: cancelled 25 h after booking (change of plans)" in m for m in memos)


def test_the_hotels_are_cancelled_before_the_flights(agent: Agent) -> None:
    cancelled_later(agent, "alan", hours=1, reason="no reason")

    order = [
        e.step for e in agent.engine.history("alan") if e.kind is EventKind.COMPENSATION_STARTED
    ]
    assert len(order) == 5
    assert set(order[:2]) == {"hotel_london", "hotel_paris"}
    assert set(order[2:]) == {f"flight_{f.leg}" for f in FLIGHTS}


# -- no room anywhere: a rollback, which is never the customer's cost ---------------------


def test_no_room_in_london_at_all_rolls_back_with_a_full_refund(store_url: str) -> None:
    rooms = {"Hotel Lutetia": 3}  # every London hotel is full
    for agent in open_agent(store_url, TravelAgency.open(rooms)):
        run = agent.engine.run(agent.saga, Trip(traveller="Grace Hopper"), run_id="grace")

        assert run.status is RunStatus.ROLLED_BACK
        assert run.error is not None
        assert run.error.type.endswith("HotelFull")
        assert agent.agency.held("grace") == []
        assert agent.agency.payments.refunded("grace") == FLIGHT_FARES


# -- the parts on their own ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("reason", "since_booked", "refunded", "fee"),
    [
        ("cancel", 0.0, 100_00, 0),
        ("cancel", 24 * HOUR, 100_00, 0),  # the 24th hour still counts as within
        ("cancel", 24 * HOUR + 1, 80_00, 20_00),
        ("cancel", None, 100_00, 0),  # unknown: the customer's favour
        ("failure", 72 * HOUR, 100_00, 0),  # the agency's failure costs no fee
        ("deadline", 72 * HOUR, 100_00, 0),
    ],
)
def test_refund_rule(reason: str, since_booked: float | None, refunded: int, fee: int) -> None:
    refund = refund_for(100_00, reason=reason, since_booked=since_booked)
    assert (refund.amount_cents, refund.fee_cents) == (refunded, fee)


def test_providers_book_and_refund_once_per_idempotency_key() -> None:
    agency = TravelAgency.open()
    first = agency.hotels.book("The Langham", City.LONDON, 2, "r1/hotel_london")
    again = agency.hotels.book("The Langham", City.LONDON, 2, "r1/hotel_london")
    assert again is first
    assert agency.hotels.rooms_left("The Langham") == 2
    assert agency.payments.charged("r1") == 960_00

    for _ in range(2):  # a compensation retried after a crash
        agency.hotels.cancel(first.code, refund_cents=960_00, key="r1/h/compensate", memo="x")
    assert agency.payments.refunded("r1") == 960_00
    assert agency.hotels.rooms_left("The Langham") == 3


# -- the script -------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_script_plays_every_scenario(tmp_path: Path) -> None:
    db = tmp_path / "travel.db"
    done = run_example("travel", "--db", str(db))

    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    for name in ("choose", "cancel", "refund", "fee"):
        assert re.search(rf"^─+ {name}: ", out, re.MULTILINE), name
    assert out.count("status paused") == 2
    assert "status completed" in out
    assert out.count("status cancelled") == 3
    # choose: the whole trip paid; cancel and refund: every cent back; fee: 20 % kept.
    assert "card: charged $3,985.00, refunded $0.00, kept $3,985.00" in out
    assert "card: charged $1,465.00, refunded $1,465.00, kept $0.00" in out
    assert "card: charged $3,985.00, refunded $3,985.00, kept $0.00" in out
    assert "card: charged $3,405.00, refunded $2,724.00, kept $681.00" in out
    assert "unexpected" not in out

    with Engine(f"sqlite:///{db}") as engine:
        statuses = sorted((run.id.rsplit("-", 1)[1], run.status) for run in engine.runs())
    assert statuses == [
        ("cancel", RunStatus.CANCELLED),
        ("choose", RunStatus.COMPLETED),
        ("fee", RunStatus.CANCELLED),
        ("refund", RunStatus.CANCELLED),
    ]


@pytest.mark.slow
def test_the_script_plays_one_scenario_and_rejects_unknown_ones(tmp_path: Path) -> None:
    done = run_example("travel", "--db", str(tmp_path / "one.db"), "--scenario", "cancel")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "cancel: the London hotel is full; the customer cancels" in done.stdout
    assert "choose:" not in done.stdout

    wrong = run_example("travel", "--scenario", "nope")
    assert wrong.returncode == 2
    assert "invalid choice: 'nope'" in wrong.stderr
