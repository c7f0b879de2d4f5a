"""A fake payment gateway: charges and refunds, idempotent by key.

Like a real gateway (Stripe's ``Idempotency-Key``), it remembers every key
it has seen, so a call repeated after a crash or a retry has no second
effect. It lives in memory and is shared by the threads of one process,
which is all the example needs.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from warehouse.models import PaymentDeclined


@dataclass(frozen=True, slots=True)
class Charge:
    """A payment as the gateway keeps it."""

    payment_id: str
    customer: str
    amount: int
    refunded: int = 0


class PaymentGateway:
    """Charges customers' cards; some cards are declined.

    Args:
        declined: Customers whose bank refuses every charge.
        before_answer: Called with the customer's name when a charge
            arrives, before the bank answers: a test or the demo uses it to
            see that a charge is in flight, and to decide when it returns.
    """

    def __init__(
        self,
        *,
        declined: Iterable[str] = (),
        before_answer: Callable[[str], None] | None = None,
    ) -> None:
        self.declined = frozenset(declined)
        self.before_answer = before_answer
        self._lock = threading.Lock()
        self._charges: dict[str, Charge] = {}  # by idempotency key
        self._refunds: dict[str, int] = {}  # refund key -> amount
        self.log: list[str] = []
        """What happened, in order: ``charged ALICE``, ``declined BOB``, ``refunded ALICE``."""

    def charge(self, customer: str, amount: int, *, key: str) -> str:
        """Charge ``amount`` cents; the same ``key`` charges once.

        Returns:
            The payment id.

        Raises:
            PaymentDeclined: the customer's bank refused; nothing was charged.
        """
        if self.before_answer is not None:
            self.before_answer(customer)
        with self._lock:
            if key in self._charges:
                return self._charges[key].payment_id
            if customer in self.declined:
                self.log.append(f"declined {customer}")
                raise PaymentDeclined(f"{customer}'s card was declined")
            charge = Charge(f"pay-{len(self._charges) + 1:04d}", customer, amount)
            self._charges[key] = charge
            self.log.append(f"charged {customer}")
            return charge.payment_id

    def payment_for(self, key: str) -> str | None:
        """The payment made by the charge with ``key``, if any (what a lost answer was)."""
        with self._lock:
            charge = self._charges.get(key)
            return None if charge is None else charge.payment_id

    def refund(self, payment_id: str, *, key: str) -> int:
        """Refund a payment in full; the same ``key`` refunds once.

        Returns:
            The amount refunded by this key, in cents.

        Raises:
            KeyError: no such payment.
        """
        with self._lock:
            if key in self._refunds:
                return self._refunds[key]
            match = [k for k, c in self._charges.items() if c.payment_id == payment_id]
            if not match:
                raise KeyError(f"no payment {payment_id!r}")
            charge = self._charges[match[0]]
            amount = charge.amount - charge.refunded
            self._charges[match[0]] = Charge(
                charge.payment_id, charge.customer, charge.amount, charge.amount
            )
            self._refunds[key] = amount
            self.log.append(f"refunded {charge.customer}")
            return amount

    def charges(self) -> list[Charge]:
        """Every payment taken, in order, with what was refunded of it."""
        with self._lock:
            return list(self._charges.values())

    def net(self) -> int:
        """Cents kept: charged minus refunded."""
        return sum(c.amount - c.refunded for c in self.charges())


class SlowBank:
    """A bank that keeps one customer's charge waiting until told to answer.

    Pass it as the gateway's ``before_answer`` to stage a payment that is in
    flight while other orders arrive: `asked` is set when the charge comes
    in (the order then holds its SKU), and the charge goes on once `answer`
    is called.
    """

    def __init__(self, customer: str, *, patience: float = 60.0) -> None:
        self.customer = customer
        self.patience = patience
        self.asked = threading.Event()
        self._answered = threading.Event()

    def __call__(self, customer: str) -> None:
        if customer == self.customer:
            self.asked.set()
            self._answered.wait(self.patience)

    def answer(self) -> None:
        """Let the held charge go on."""
        self._answered.set()
