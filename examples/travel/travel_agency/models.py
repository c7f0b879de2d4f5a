"""The trip as the saga keeps it, the catalogue it is booked from, and the refund rule.

Money is kept in whole cents (``int``) so that a refund minus a fee adds up
to exactly what was charged: no float rounding in a ledger.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from pydantic import BaseModel, ConfigDict

__all__ = [
    "CANCELLATION_FEE_PERCENT",
    "FLIGHTS",
    "FREE_CANCELLATION_SECONDS",
    "HOTELS",
    "City",
    "Confirmation",
    "Flight",
    "Hotel",
    "Refund",
    "Trip",
    "money",
    "refund_for",
]


class City(StrEnum):
    """The cities the itinerary stays a night or more in."""

    LONDON = "London"
    PARIS = "Paris"


class Flight(BaseModel):
    """One leg of the itinerary, as the airline sells it.

    Attributes:
        leg: A short name for the leg; the saga's step is ``flight_<leg>``.
        number: The flight number.
        origin: Where it leaves from.
        destination: Where it lands.
        fare_cents: What the seat costs.
    """

    model_config = ConfigDict(frozen=True)

    leg: str
    number: str
    origin: str
    destination: str
    fare_cents: int

    @property
    def label(self) -> str:
        """How the flight reads on a ticket: ``BA 178 New York -> London``."""
        return f"{self.number} {self.origin} -> {self.destination}"


class Hotel(BaseModel):
    """A hotel the agency can book rooms in."""

    model_config = ConfigDict(frozen=True)

    name: str
    city: City
    nightly_cents: int


# Seattle -> New York -> London -> Paris, after the itinerary in Azure's
# description of the Compensating Transaction pattern.
FLIGHTS: tuple[Flight, ...] = (
    Flight(
        leg="seattle_new_york",
        number="AS 24",
        origin="Seattle",
        destination="New York",
        fare_cents=389_00,
    ),
    Flight(
        leg="new_york_london",
        number="BA 178",
        origin="New York",
        destination="London",
        fare_cents=912_00,
    ),
    Flight(
        leg="london_paris",
        number="AF 1381",
        origin="London",
        destination="Paris",
        fare_cents=164_00,
    ),
)

HOTELS: tuple[Hotel, ...] = (
    Hotel(name="The Savoy", city=City.LONDON, nightly_cents=650_00),
    Hotel(name="The Langham", city=City.LONDON, nightly_cents=480_00),
    Hotel(name="The Hoxton", city=City.LONDON, nightly_cents=190_00),
    Hotel(name="Hotel Lutetia", city=City.PARIS, nightly_cents=520_00),
    Hotel(name="Hotel du Louvre", city=City.PARIS, nightly_cents=390_00),
)


class Confirmation(BaseModel):
    """What a booking step returns and its compensation needs to undo it.

    Attributes:
        code: The provider's confirmation code.
        what: The booking in words (flight or hotel and nights).
        paid_cents: What the customer's card was charged for it.
    """

    code: str
    what: str
    paid_cents: int


class Trip(BaseModel):
    """The saga's state: the customer's choices, then one confirmation per booking.

    Each booking step fills in the field named like the step, so the steps of
    the parallel flight stage never write the same key. A ``choose_hotel``
    signal replaces ``london_hotel`` (or ``paris_hotel``) with the customer's
    new choice, and the paused hotel step runs again with it.
    """

    traveller: str
    london_hotel: str = "The Savoy"
    london_nights: int = 2
    paris_hotel: str = "Hotel Lutetia"
    paris_nights: int = 3
    flight_seattle_new_york: Confirmation | None = None
    flight_new_york_london: Confirmation | None = None
    flight_london_paris: Confirmation | None = None
    hotel_london: Confirmation | None = None
    hotel_paris: Confirmation | None = None

    def stay(self, city: City) -> tuple[str, int]:
        """The hotel chosen in ``city`` and the nights to book there."""
        if city is City.LONDON:
            return self.london_hotel, self.london_nights
        return self.paris_hotel, self.paris_nights

    @staticmethod
    def choice_field(city: City) -> str:
        """The field a ``choose_hotel`` signal sets to pick a hotel in ``city``."""
        return f"{city.name.lower()}_hotel"


FREE_CANCELLATION_SECONDS = 24 * 3600
"""A customer who cancels within this long after a booking gets every cent back."""

CANCELLATION_FEE_PERCENT = 20
"""What a later cancellation keeps of a booking's price."""


@dataclass(frozen=True, slots=True)
class Refund:
    """What the customer gets back for one cancelled booking, and why.

    Attributes:
        amount_cents: Paid back to the card.
        fee_cents: Kept by the agency; ``amount_cents + fee_cents`` is what was paid.
        rule: The rule that decided it, in words (shown in the journal).
    """

    amount_cents: int
    fee_cents: int
    rule: str


def refund_for(paid_cents: int, *, reason: str | None, since_booked: float | None) -> Refund:
    """Decide the refund for a booking that is being undone.

    Only a customer's own late change of plans costs a fee. A rollback after
    a failure (``reason == "failure"``) or a missed deadline is the agency's
    doing, so it refunds in full whenever it happens.

    Args:
        paid_cents: What the booking cost.
        reason: Why the saga undoes it: ``ctx.reason`` (``"failure"``,
            ``"cancel"`` or ``"deadline"``).
        since_booked: Seconds since the booking was made
            (``ctx.since_step_finished``); ``None`` when unknown, which is
            resolved in the customer's favour.
    """
    if reason != "cancel":
        return Refund(paid_cents, 0, f"full refund: the trip could not be booked ({reason})")
    if since_booked is None or since_booked <= FREE_CANCELLATION_SECONDS:
        return Refund(paid_cents, 0, "full refund: cancelled within 24 h of booking")
    fee = paid_cents * CANCELLATION_FEE_PERCENT // 100
    hours = since_booked / 3600
    rule = f"{CANCELLATION_FEE_PERCENT} % fee: cancelled {hours:.0f} h after booking"
    return Refund(paid_cents - fee, fee, rule)


def money(cents: int) -> str:
    """Cents as dollars, for people: ``money(91200) == "$912.00"``."""
    return f"${cents // 100:,}.{cents % 100:02d}"
