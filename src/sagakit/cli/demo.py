"""The demo: a travel itinerary, after Azure's Compensating Transaction pattern.

A trip is three flights (Seattle -> New York -> London -> Paris) and two
hotels (London, Paris). Each booking is a compensatable step whose undo
cancels it. The airline and hotel systems are one fake in-process
`TravelProvider` that remembers every booking by its idempotency key, so a
repeated call books nothing twice, and that can say what is still booked.

`run_demo` books two trips: the first completes (the New York -> London
flight fails once with a transient error and succeeds on its retry); the
second asks for a Paris hotel that has no rooms, so the four earlier
bookings are cancelled in reverse order and the run ends ``rolled_back``
with nothing left booked.
"""

from __future__ import annotations

import hashlib
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from sagakit.context import StepContext
from sagakit.definition import RetryPolicy, Saga
from sagakit.engine import Engine
from sagakit.errors import PermanentError
from sagakit.journal import Event
from sagakit.run import Run

__all__ = [
    "FULL_HOTEL",
    "PROVIDER",
    "SAGAS",
    "DemoTrip",
    "Itinerary",
    "TravelProvider",
    "run_demo",
    "trip",
]

FULL_HOTEL = "Le Complet"
"""The Paris hotel that never has a room: choose it to see a rollback."""


class Itinerary(BaseModel):
    """The trip's state: who travels, where they stay, and the confirmations.

    Each booking step fills in its confirmation code, which its compensation
    needs to cancel the booking.
    """

    traveller: str
    london_hotel: str = "Strand Palace"
    paris_hotel: str = "Le Meurice"
    flight_seattle_new_york: str | None = None
    flight_new_york_london: str | None = None
    flight_london_paris: str | None = None
    hotel_london: str | None = None
    hotel_paris: str | None = None


@dataclass(slots=True)
class Booking:
    """One booking as the provider holds it."""

    confirmation: str
    what: str
    key: str
    cancelled: bool = False


class GatewayTimeout(ConnectionError):
    """The airline's gateway did not answer in time: worth another try."""


@dataclass
class TravelProvider:
    """A fake airline and hotel system that deduplicates on idempotency keys.

    Attributes:
        bookings: Every booking made, by confirmation code.
        log: What happened, in order, for the demo to show.
        flaky: Trips whose first request for these bookings times out once
            (a transient error that a retry fixes).
    """

    bookings: dict[str, Booking] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)
    flaky: frozenset[str] = frozenset({"flight New York -> London"})
    _seen: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def book(self, what: str, key: str, *, full: bool = False) -> str:
        """Book ``what`` under ``key`` and return its confirmation code.

        The same key always yields the same booking: a retried or replayed
        call books nothing twice.

        Raises:
            GatewayTimeout: the first request for a flaky booking.
            PermanentError: the hotel is full (no retry can help).
        """
        with self._lock:
            confirmation = _confirmation(key)
            if confirmation in self.bookings:
                return confirmation
            if what in self.flaky and key not in self._seen:
                self._seen.add(key)
                self.log.append(f"timeout  {what}")
                raise GatewayTimeout(f"booking gateway for {what} did not answer")
            if full:
                self.log.append(f"refused  {what}")
                raise PermanentError(f"no rooms left: {what}")
            self.bookings[confirmation] = Booking(confirmation, what, key)
            self.log.append(f"booked   {what} ({confirmation})")
            return confirmation

    def cancel(self, confirmation: str) -> None:
        """Cancel a booking; cancelling it again changes nothing."""
        with self._lock:
            booking = self.bookings.get(confirmation)
            if booking is not None and not booking.cancelled:
                booking.cancelled = True
                self.log.append(f"cancelled {booking.what} ({confirmation})")

    def held(self, run_id: str) -> list[Booking]:
        """The bookings of one run that still stand (not cancelled)."""
        with self._lock:
            prefix = f"{run_id}/"
            return [
                b for b in self.bookings.values() if b.key.startswith(prefix) and not b.cancelled
            ]


def _confirmation(key: str) -> str:
    # Derived from the idempotency key, so a replay gets the same code back.
    return "BK-" + hashlib.sha256(key.encode()).hexdigest()[:6].upper()


PROVIDER = TravelProvider()
"""The provider the demo's steps talk to (one per process)."""

# The airline gateway times out now and then; a quick retry usually does it.
# Delays are tiny so the demo finishes at once.
FLIGHT_RETRY = RetryPolicy(max_attempts=3, initial_delay=0.05, max_delay=0.2, jitter=0.0)

trip: Saga[Itinerary] = Saga("travel-itinerary", state=Itinerary)
"""Three flights and two hotels, each cancelled if the trip cannot be completed."""


@trip.step(retry=FLIGHT_RETRY)
def book_flight_seattle_new_york(state: Itinerary, ctx: StepContext) -> dict[str, str]:
    """Book the first flight."""
    return {
        "flight_seattle_new_york": PROVIDER.book("flight Seattle -> New York", ctx.idempotency_key)
    }


@book_flight_seattle_new_york.compensate
def cancel_flight_seattle_new_york(state: Itinerary, ctx: StepContext) -> None:
    """Cancel the first flight."""
    if state.flight_seattle_new_york:
        PROVIDER.cancel(state.flight_seattle_new_york)


@trip.step(retry=FLIGHT_RETRY)
def book_flight_new_york_london(state: Itinerary, ctx: StepContext) -> dict[str, str]:
    """Book the transatlantic flight (its gateway times out once)."""
    return {
        "flight_new_york_london": PROVIDER.book("flight New York -> London", ctx.idempotency_key)
    }


@book_flight_new_york_london.compensate
def cancel_flight_new_york_london(state: Itinerary, ctx: StepContext) -> None:
    """Cancel the transatlantic flight."""
    if state.flight_new_york_london:
        PROVIDER.cancel(state.flight_new_york_london)


@trip.step(retry=FLIGHT_RETRY)
def book_flight_london_paris(state: Itinerary, ctx: StepContext) -> dict[str, str]:
    """Book the flight to Paris."""
    return {"flight_london_paris": PROVIDER.book("flight London -> Paris", ctx.idempotency_key)}


@book_flight_london_paris.compensate
def cancel_flight_london_paris(state: Itinerary, ctx: StepContext) -> None:
    """Cancel the flight to Paris."""
    if state.flight_london_paris:
        PROVIDER.cancel(state.flight_london_paris)


@trip.step
def book_hotel_london(state: Itinerary, ctx: StepContext) -> dict[str, str]:
    """Book the London hotel."""
    what = f"hotel {state.london_hotel}, London"
    return {"hotel_london": PROVIDER.book(what, ctx.idempotency_key)}


@book_hotel_london.compensate
def cancel_hotel_london(state: Itinerary, ctx: StepContext) -> None:
    """Cancel the London hotel."""
    if state.hotel_london:
        PROVIDER.cancel(state.hotel_london)


@trip.step
def book_hotel_paris(state: Itinerary, ctx: StepContext) -> dict[str, str]:
    """Book the Paris hotel; the full one refuses for good."""
    what = f"hotel {state.paris_hotel}, Paris"
    full = state.paris_hotel == FULL_HOTEL
    return {"hotel_paris": PROVIDER.book(what, ctx.idempotency_key, full=full)}


@book_hotel_paris.compensate
def cancel_hotel_paris(state: Itinerary, ctx: StepContext) -> None:
    """Cancel the Paris hotel."""
    if state.hotel_paris:
        PROVIDER.cancel(state.hotel_paris)


SAGAS: list[Saga[Any]] = [trip]
"""Every saga of the demo; the command line always registers them."""


@dataclass(frozen=True, slots=True)
class DemoTrip:
    """One trip of the demo as it ended.

    Attributes:
        run: The run.
        history: Its journal.
        held: The bookings the provider still holds for it.
    """

    run: Run
    history: list[Event]
    held: list[Booking]


def run_demo(engine: Engine) -> list[DemoTrip]:
    """Book the two demo trips on ``engine``: one completes, one rolls back.

    Run ids are fresh each time (``trip-<8 hex>-ok`` and ``-rollback``), so
    the demo can run again and again on the same database.

    Args:
        engine: The engine to run on; the demo's sagas are registered on it.

    Returns:
        The completed trip, then the rolled-back one.
    """
    engine.register(*SAGAS)
    tag = uuid.uuid4().hex[:8]
    trips = [
        (f"trip-{tag}-ok", Itinerary(traveller="Ada Lovelace")),
        (f"trip-{tag}-rollback", Itinerary(traveller="Alan Turing", paris_hotel=FULL_HOTEL)),
    ]
    done: list[DemoTrip] = []
    for run_id, itinerary in trips:
        run = engine.run(trip, itinerary, run_id=run_id)
        done.append(DemoTrip(run, engine.history(run_id), PROVIDER.held(run_id)))
    return done
