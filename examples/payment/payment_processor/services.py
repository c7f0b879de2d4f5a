"""Fake outside systems: the order system, the payment gateway, the warehouse, carriers.

Each remembers its effects by the caller's idempotency key, as a real
gateway does, so that a call repeated after a crash changes nothing twice.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

DOWN_CARRIER = "down-express"
"""A carrier whose API never answers: ship with it to see the saga roll back."""


class CarrierUnavailable(ConnectionError):
    """The carrier's API did not answer."""


@dataclass
class Ledger:
    """What one outside system holds: a record per idempotency key."""

    prefix: str
    records: dict[str, str] = field(default_factory=dict)
    undone: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def do(self, key: str) -> str:
        """Create the record for ``key`` (or return the one made before)."""
        with self._lock:
            if key not in self.records:
                self.records[key] = f"{self.prefix}-{len(self.records) + 1:04d}"
            return self.records[key]

    def made_for(self, key: str) -> str | None:
        """The record made for ``key``, if any: what a call whose answer was lost did."""
        with self._lock:
            return self.records.get(key)

    def undo(self, reference: str) -> None:
        """Undo the record ``reference``; undoing twice is harmless.

        A reference this process never made is accepted too: these fakes
        live in one process's memory, and a cancel may run in another
        (``sagakit cancel RUN --app ...``), as it would against a real service.
        """
        with self._lock:
            self.undone.add(reference)

    def standing(self) -> list[str]:
        """The records that are not undone."""
        with self._lock:
            return [r for r in self.records.values() if r not in self.undone]


ORDERS = Ledger("ORD")
PAYMENTS = Ledger("TXN")
WAREHOUSE = Ledger("RES")
SHIPMENTS = Ledger("TRACK")


def ship(carrier: str, key: str) -> str:
    """Book a shipment with ``carrier``; the down carrier always fails."""
    if carrier == DOWN_CARRIER:
        raise CarrierUnavailable(f"carrier API unavailable: {carrier}")
    return SHIPMENTS.do(key)


def standing() -> dict[str, list[str]]:
    """Everything still in effect at every outside system."""
    return {
        "orders": ORDERS.standing(),
        "payments": PAYMENTS.standing(),
        "reservations": WAREHOUSE.standing(),
        "shipments": SHIPMENTS.standing(),
    }
