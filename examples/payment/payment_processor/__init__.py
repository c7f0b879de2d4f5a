"""The payment example's application: an order, a payment, stock and a shipment.

The outside systems are fakes in `payment_processor.services` that remember
what each idempotency key did, so a repeated call has no second effect and a
test can ask what is still standing.
"""

from __future__ import annotations
