"""Fake airline, hotel and card systems: in-process stand-ins for remote services.

They behave the way the saga needs a real partner to behave:

- every sale and every refund is keyed by the caller's idempotency key, so a
  step retried after a crash books (and charges) once, and a compensation
  retried refunds once;
- they can say what is still booked for a run, so a test or the example can
  check that nothing is left behind after an undo;
- they are safe to call from several threads, because the saga books its
  three flights in parallel and cancels hotels (then flights) in parallel.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from sagakit import PermanentError
from travel_agency.models import HOTELS, City, Flight, Hotel

__all__ = [
    "Airline",
    "Booking",
    "BookingStatus",
    "CardPayments",
    "HotelChain",
    "HotelFull",
    "HotelUnavailable",
    "LedgerEntry",
    "TravelAgency",
    "UnknownHotel",
]


class HotelUnavailable(PermanentError):
    """The hotel cannot be booked as asked; retrying the same request cannot help.

    A `PermanentError`, so sagakit skips the step's retries and hands the
    failure straight to its ``on_failure`` handler, which asks the customer.
    """

    def __init__(self, message: str, *, hotel: str, city: City) -> None:
        super().__init__(message)
        self.hotel = hotel
        self.city = city


class HotelFull(HotelUnavailable):
    """The hotel has no room left."""


class UnknownHotel(HotelUnavailable):
    """No hotel of that name in that city (the customer picked a wrong one)."""


class BookingStatus(StrEnum):
    """Where a booking stands at the provider."""

    BOOKED = "booked"
    CANCELLED = "cancelled"


@dataclass(slots=True)
class Booking:
    """A flight seat or hotel stay as the provider records it.

    Attributes:
        code: The confirmation code given to the customer.
        key: The idempotency key it was sold under (``<run id>/<step>``).
        what: The booking in words.
        price_cents: What it was sold for.
        status: Booked, or cancelled by a compensation.
        refunded_cents: What its cancellation paid back.
        hotel: The hotel's name, for a hotel stay (its room goes back on cancel).
    """

    code: str
    key: str
    what: str
    price_cents: int
    status: BookingStatus = BookingStatus.BOOKED
    refunded_cents: int = 0
    hotel: str | None = None


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One movement on the customer's card: a charge (positive) or a refund (negative).

    Attributes:
        key: The idempotency key the movement was made under.
        cents: The amount; refunds are negative.
        memo: What it was for.
    """

    key: str
    cents: int
    memo: str


@dataclass
class CardPayments:
    """The card processor: charges and refunds, each at most once per key."""

    _entries: dict[str, LedgerEntry] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def charge(self, key: str, cents: int, memo: str) -> None:
        """Charge the card ``cents``; a second charge under ``key`` does nothing."""
        self._record(LedgerEntry(f"charge:{key}", cents, memo))

    def refund(self, key: str, cents: int, memo: str) -> None:
        """Pay ``cents`` back to the card; a second refund under ``key`` does nothing."""
        self._record(LedgerEntry(f"refund:{key}", -cents, memo))

    def _record(self, entry: LedgerEntry) -> None:
        with self._lock:
            self._entries.setdefault(entry.key, entry)

    def ledger(self, run_id: str) -> list[LedgerEntry]:
        """Every movement made for one run, in the order it happened."""
        with self._lock:
            return [e for e in self._entries.values() if _of_run(e.key.partition(":")[2], run_id)]

    def charged(self, run_id: str) -> int:
        """Cents charged for one run, before refunds."""
        return sum(e.cents for e in self.ledger(run_id) if e.cents > 0)

    def refunded(self, run_id: str) -> int:
        """Cents paid back for one run."""
        return -sum(e.cents for e in self.ledger(run_id) if e.cents < 0)


def _of_run(key: str, run_id: str) -> bool:
    # sagakit's idempotency keys start with the run id and a slash.
    return key.startswith(f"{run_id}/")


class _ReservationDesk:
    """What the airline and the hotel chain share: selling and cancelling bookings."""

    def __init__(self, payments: CardPayments, code_prefix: str) -> None:
        self.payments = payments
        self._prefix = code_prefix
        self._numbers = itertools.count(1001)
        self._sold: dict[str, Booking] = {}  # by idempotency key
        self._lock = threading.RLock()

    def _sell(self, key: str, what: str, price_cents: int, hotel: str | None = None) -> Booking:
        """Record a booking and charge for it, once per key (the caller holds the lock)."""
        known = self._sold.get(key)
        if known is not None:  # a retry after a crash: the same booking, no second charge
            return known
        booking = Booking(
            f"{self._prefix}{next(self._numbers)}", key, what, price_cents, hotel=hotel
        )
        self.payments.charge(key, price_cents, what)
        self._sold[key] = booking
        return booking

    def cancel(self, code: str, *, refund_cents: int, key: str, memo: str) -> Booking:
        """Cancel a booking and refund ``refund_cents``, once per ``key``.

        Cancelling a cancelled booking again changes nothing and refunds
        nothing, so a compensation that crashed after this call can safely
        repeat it.

        Raises:
            KeyError: no booking has that code.
        """
        with self._lock:
            booking = next((b for b in self._sold.values() if b.code == code), None)
            if booking is None:
                raise KeyError(f"no booking {code!r}")
            if booking.status is BookingStatus.CANCELLED:
                return booking  # undone already (a compensation retried after a crash)
            # The refund first: should it fail, the booking is still held, and
            # the compensation's retry refunds (once per key) and cancels then.
            self.payments.refund(key, refund_cents, f"{booking.what}: {memo}")
            booking.status = BookingStatus.CANCELLED
            booking.refunded_cents = refund_cents
            self._released(booking)
            return booking

    def sold_for(self, key: str) -> Booking | None:
        """The booking sold under idempotency key ``key``, if any.

        For an undo whose forward call timed out: its answer was lost, but
        the desk knows what that call bought.
        """
        with self._lock:
            return self._sold.get(key)

    def _released(self, booking: Booking) -> None:
        """Give back what the booking held (a hotel room); nothing for a seat."""

    def bookings(self, run_id: str) -> list[Booking]:
        """Every booking made for one run, cancelled ones included."""
        with self._lock:
            return [b for b in self._sold.values() if _of_run(b.key, run_id)]

    def held(self, run_id: str) -> list[Booking]:
        """The bookings of one run that still stand."""
        return [b for b in self.bookings(run_id) if b.status is BookingStatus.BOOKED]


class Airline(_ReservationDesk):
    """Sells seats; every flight in the example has seats to spare."""

    def __init__(self, payments: CardPayments) -> None:
        super().__init__(payments, "TKT-")

    def book(self, flight: Flight, key: str) -> Booking:
        """Sell a seat on ``flight`` and charge its fare (once per ``key``)."""
        with self._lock:
            return self._sell(key, flight.label, flight.fare_cents)


class HotelChain(_ReservationDesk):
    """Books rooms in the hotels of `HOTELS`, as long as rooms are left.

    Args:
        payments: The card processor that takes the payment.
        rooms: Rooms free per hotel name; a hotel left out has none.
        hotels: The hotels it knows.
    """

    def __init__(
        self,
        payments: CardPayments,
        rooms: Mapping[str, int],
        hotels: Iterable[Hotel] = HOTELS,
    ) -> None:
        super().__init__(payments, "HTL-")
        self.hotels = {h.name: h for h in hotels}
        self._rooms = {name: rooms.get(name, 0) for name in self.hotels}

    def book(self, name: str, city: City, nights: int, key: str) -> Booking:
        """Book a room for ``nights`` and charge for them (once per ``key``).

        Raises:
            UnknownHotel: ``name`` is not a hotel in ``city``.
            HotelFull: the hotel has no room left.
        """
        with self._lock:
            if key in self._sold:
                return self._sold[key]
            hotel = self.hotels.get(name)
            if hotel is None or hotel.city is not city:
                raise UnknownHotel(f"there is no hotel {name!r} in {city}", hotel=name, city=city)
            if self._rooms[name] <= 0:
                raise HotelFull(f"{name} ({city}) has no room left", hotel=name, city=city)
            self._rooms[name] -= 1
            what = f"{name}, {city}, {nights} nights"
            return self._sell(key, what, hotel.nightly_cents * nights, hotel=name)

    def _released(self, booking: Booking) -> None:
        if booking.hotel is not None:
            self._rooms[booking.hotel] += 1

    def rooms_left(self, name: str) -> int:
        """Rooms still free in one hotel."""
        with self._lock:
            return self._rooms[name]

    def vacancies(self, city: City) -> list[str]:
        """The hotels in ``city`` with a room left, cheapest first."""
        with self._lock:
            free = [h for h in self.hotels.values() if h.city is city and self._rooms[h.name] > 0]
        return [h.name for h in sorted(free, key=lambda h: h.nightly_cents)]


@dataclass
class TravelAgency:
    """The outside world the trip saga talks to: card payments, an airline, hotels."""

    payments: CardPayments
    airline: Airline
    hotels: HotelChain

    @classmethod
    def open(cls, rooms: Mapping[str, int] | None = None) -> TravelAgency:
        """A fresh agency. By default The Savoy in London is fully booked.

        Args:
            rooms: Rooms free per hotel (default: three in each, none at The Savoy).
        """
        if rooms is None:
            rooms = {h.name: 3 for h in HOTELS} | {"The Savoy": 0}
        payments = CardPayments()
        return cls(payments, Airline(payments), HotelChain(payments, rooms))

    def held(self, run_id: str) -> list[Booking]:
        """What still stands for one run at the airline and the hotels."""
        return self.airline.held(run_id) + self.hotels.held(run_id)
