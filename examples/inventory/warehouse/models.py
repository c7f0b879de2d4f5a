"""The order's state and the business errors that stop an order."""

from __future__ import annotations

from pydantic import BaseModel, Field

from sagakit import PermanentError


class Order(BaseModel):
    """One customer's order for some units of one SKU: the saga's state.

    The first four fields are the input; each step fills in what a later
    step or a compensation needs, by returning it.
    """

    sku: str
    quantity: int = Field(gt=0)
    customer: str
    unit_price: int = Field(default=1200, ge=0, description="in cents")
    stock_seen: int | None = None
    """The stock level `hold_stock` saw under the hold: what a wrong,
    "restore the old value" compensation would write back."""
    payment_id: str | None = None
    """Set by `charge_payment`; the refund needs it."""
    stock_after: int | None = None
    """The level right after `take_stock` took this order's units."""

    @property
    def amount(self) -> int:
        """What the customer pays, in cents."""
        return self.quantity * self.unit_price


class OutOfStock(PermanentError):
    """Fewer units are on the shelf than the order asks for.

    Permanent: trying again a second later would not change the answer, so
    the order is undone at once instead of being retried.
    """


class PaymentDeclined(PermanentError):
    """The customer's bank refused the charge; nothing was charged."""
