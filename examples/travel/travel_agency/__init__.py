"""A travel agency on sagakit: Azure's Compensating Transaction itinerary.

Three flights and two hotels, booked by one saga (`build_trip_saga`) against
fake providers (`TravelAgency`). When the London hotel is full the run pauses
for the customer, who chooses another hotel (a signal) or cancels (the
flights are cancelled). A cancellation refunds in full within 24 hours of
booking, and keeps a fee after that (`refund_for`).
"""

from __future__ import annotations

from travel_agency.models import (
    CANCELLATION_FEE_PERCENT,
    FLIGHTS,
    FREE_CANCELLATION_SECONDS,
    HOTELS,
    City,
    Confirmation,
    Flight,
    Hotel,
    Refund,
    Trip,
    money,
    refund_for,
)
from travel_agency.providers import (
    Airline,
    Booking,
    BookingStatus,
    CardPayments,
    HotelChain,
    HotelFull,
    HotelUnavailable,
    LedgerEntry,
    TravelAgency,
    UnknownHotel,
)
from travel_agency.saga import CHOOSE_HOTEL, SAGA_NAME, build_trip_saga
from travel_agency.scenarios import HOUR, SCENARIOS, Agent, Scenario, TravelClock

__all__ = [
    "CANCELLATION_FEE_PERCENT",
    "CHOOSE_HOTEL",
    "FLIGHTS",
    "FREE_CANCELLATION_SECONDS",
    "HOTELS",
    "HOUR",
    "SAGA_NAME",
    "SCENARIOS",
    "Agent",
    "Airline",
    "Booking",
    "BookingStatus",
    "CardPayments",
    "City",
    "Confirmation",
    "Flight",
    "Hotel",
    "HotelChain",
    "HotelFull",
    "HotelUnavailable",
    "LedgerEntry",
    "Refund",
    "Scenario",
    "TravelAgency",
    "TravelClock",
    "Trip",
    "UnknownHotel",
    "build_trip_saga",
    "money",
    "refund_for",
]
