"""The trip saga: three flights at once, then a hotel in London and one in Paris.

Stages, in order::

    flight_seattle_new_york | flight_new_york_london | flight_london_paris   (parallel)
    hotel_london
    hotel_paris

Every step books something and charges the card, so every step is
compensatable: its undo cancels the booking and refunds by the rule of
`travel_agency.models.refund_for`, reading why and when from its context
(``ctx.reason``, ``ctx.cancel_reason``, ``ctx.since_step_finished``).

A hotel that cannot be booked (full, or not in that city) does not roll the
trip back. The hotel step's failure handler pauses the run and asks the
customer to choose another hotel; a ``choose_hotel`` signal with the new
choice runs the step again, and ``engine.cancel`` undoes what was booked.

The steps are built by factories over the agency's providers, rather than
declared at module level, so that each engine (each test) can use a fresh
`TravelAgency`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sagakit import DefinitionError, ErrorInfo, Next, Pause, Saga, Signal, Step, StepContext
from travel_agency.models import FLIGHTS, City, Confirmation, Flight, Trip, money, refund_for
from travel_agency.providers import (
    Airline,
    Booking,
    HotelChain,
    HotelFull,
    TravelAgency,
    UnknownHotel,
)

__all__ = ["CHOOSE_HOTEL", "SAGA_NAME", "build_trip_saga"]

# The shapes of the functions the factories below hand to sagakit.
Action = Callable[[Trip, StepContext], dict[str, Any]]
Compensation = Callable[[Trip, StepContext], None]
FailureHandler = Callable[[Trip, StepContext, ErrorInfo], Next | Pause]
SignalHandler = Callable[[Trip, StepContext, Signal], Next | Pause]

SAGA_NAME = "travel-agency-trip"
"""The saga's name in the journal (``sagakit list`` shows it)."""

CHOOSE_HOTEL = "choose_hotel"
"""The signal that answers a hotel pause; its payload names the new hotel,
e.g. ``{"london_hotel": "The Langham"}``."""

# The errors the customer can fix by choosing again. The journal keeps an
# error's qualified class name, not the exception, so that is what we match.
_CHOOSE_AGAIN = frozenset(
    f"{cls.__module__}.{cls.__qualname__}" for cls in (HotelFull, UnknownHotel)
)


def build_trip_saga(agency: TravelAgency) -> Saga[Trip]:
    """The trip saga, booking through ``agency``.

    Register the result on an engine and run it with a `Trip`::

        saga = build_trip_saga(agency)
        engine.register(saga)
        run = engine.run(saga, Trip(traveller="Ada"), run_id="trip-1")
    """
    trip: Saga[Trip] = Saga(SAGA_NAME, state=Trip)
    undo_flight = _cancel_booking(agency.airline)
    flights = [
        trip.add_step(
            _book_flight(agency.airline, flight),
            name=f"flight_{flight.leg}",
            compensation=undo_flight,
        )
        for flight in FLIGHTS
    ]
    # The airline takes each leg on its own, so the three seats are booked
    # at the same time instead of one round trip after another.
    trip.parallel(*flights)

    undo_hotel = _cancel_booking(agency.hotels)
    hotels: list[Step] = []
    for city in City:  # London first, then Paris, as the traveller arrives
        hotel = trip.add_step(
            _book_hotel(agency.hotels, city),
            name=f"hotel_{city.name.lower()}",
            compensation=undo_hotel,
        )
        hotel.on_failure(_offer_other_hotels(agency.hotels, city))
        hotel.on_signal(_take_choice(city))
        hotels.append(hotel)

    # Undo: both hotels at once, then the three flights at once. Rooms go
    # back first because they are the scarce part (the London hotel was full
    # for this very customer); nothing links the legs, so they need no order.
    trip.compensation_order(hotels, flights)

    # Each step returns the field named like itself; a pydantic state drops
    # unknown keys silently, so a misnamed step would lose its confirmation.
    missing = [s.name for s in trip.steps if s.name not in Trip.model_fields]
    if missing:
        raise DefinitionError(f"steps without a Trip field to fill: {missing}")
    return trip


def _confirmed(ctx: StepContext, booking: Booking) -> dict[str, Any]:
    """A booking step's result: its confirmation, under the step's own field."""
    confirmation = Confirmation(
        code=booking.code, what=booking.what, paid_cents=booking.price_cents
    )
    return {ctx.step: confirmation}


def _book_flight(airline: Airline, flight: Flight) -> Action:
    def book_flight(state: Trip, ctx: StepContext) -> dict[str, Any]:
        """Buy a seat on one leg."""
        # The idempotency key is the same after a crash, so a repeated call
        # gets the same ticket back instead of a second seat and charge.
        return _confirmed(ctx, airline.book(flight, ctx.idempotency_key))

    return book_flight


def _book_hotel(hotels: HotelChain, city: City) -> Action:
    def book_hotel(state: Trip, ctx: StepContext) -> dict[str, Any]:
        """Book the hotel the customer chose in one city (raises if it cannot)."""
        name, nights = state.stay(city)
        return _confirmed(ctx, hotels.book(name, city, nights, ctx.idempotency_key))

    return book_hotel


def _cancel_booking(desk: Airline | HotelChain) -> Compensation:
    def cancel_booking(state: Trip, ctx: StepContext) -> None:
        """Cancel what the forward step booked and refund by the cancellation rule."""
        recorded = (ctx.step_result or {}).get(ctx.step)
        if recorded is not None:
            booked = Confirmation.model_validate(recorded)
        else:
            # No confirmation: the step failed, or timed out with its answer
            # lost. The desk knows what the step's key bought, if anything.
            sold = desk.sold_for(ctx.action_key)
            if sold is None:
                return
            booked = Confirmation(code=sold.code, what=sold.what, paid_cents=sold.price_cents)
        refund = refund_for(
            booked.paid_cents, reason=ctx.reason, since_booked=ctx.since_step_finished
        )
        memo = refund.rule if ctx.cancel_reason is None else f"{refund.rule} ({ctx.cancel_reason})"
        # The compensation's own idempotency key: a retried undo refunds once.
        desk.cancel(
            booked.code, refund_cents=refund.amount_cents, key=ctx.idempotency_key, memo=memo
        )
        # The provider's ledger is the record of the money; the log line
        # carries the run id and step for whoever reads the logs.
        ctx.log.info("cancelled %s, refunded %s: %s", booked.code, money(refund.amount_cents), memo)

    return cancel_booking


def _offer_other_hotels(hotels: HotelChain, city: City) -> FailureHandler:
    def offer_other_hotels(state: Trip, ctx: StepContext, error: ErrorInfo) -> Next | Pause:
        """Turn "hotel unavailable" into a question for the customer.

        Any other error rolls the trip back, as does a city with no room
        anywhere: then there is nothing to offer.
        """
        others = hotels.vacancies(city)
        if error.type not in _CHOOSE_AGAIN or not others:
            return Next.COMPENSATE
        field = Trip.choice_field(city)
        return Pause(
            f"{error.message}. Choose another {city} hotel ({', '.join(others)}): "
            f'signal {CHOOSE_HOTEL} with {{"{field}": ...}}, or cancel the trip',
            options=[CHOOSE_HOTEL],
        )

    return offer_other_hotels


def _take_choice(city: City) -> SignalHandler:
    def take_choice(state: Trip, ctx: StepContext, signal: Signal) -> Next | Pause:
        """Book again with the new choice, if the signal made one for this city."""
        field = Trip.choice_field(city)
        if field in signal.payload:
            return Next.RETRY  # the payload is already in the state the retry sees
        # Keep waiting rather than retry the same full hotel: a retry would
        # only fail again and ask the same question.
        return Pause(
            f"{CHOOSE_HOTEL} did not name a {city} hotel: send {{"
            f'"{field}": ...}}, or cancel the trip',
            options=[CHOOSE_HOTEL],
        )

    return take_choice
