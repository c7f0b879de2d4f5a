"""A payment saga with sensitive fields, for the redaction tests (``--app cardapp``).

``card_number`` is marked `Sensitive` on the state model; ``api_key`` (a key
of the ``authorize`` step's result) is named by the saga. Order ``"bad"``
makes ``charge`` fail with a message quoting both, so the run rolls back with
the secrets in its error; order ``"stuck"`` makes the undo fail too, so the
run needs attention and holds compensation errors as well.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel

from sagakit import Engine, PermanentError, RunStatus, Saga, Sensitive, StepContext

CARD = "4111111111111111"
API_KEY = "sk_live_51HxSECRETkey"
CVV = "737"


class Payment(BaseModel):
    order_id: str
    card_number: Annotated[str, Sensitive()]
    cvv: Annotated[str | None, Sensitive] = None
    api_key: str | None = None
    receipt: str | None = None


payment: Saga[Payment] = Saga("card-payment", state=Payment, sensitive=["api_key"])


@payment.step
def authorize(state: Payment, ctx: StepContext) -> dict[str, str]:
    return {"api_key": API_KEY}


@authorize.compensate
def void(state: Payment, ctx: StepContext) -> None:
    if state.order_id == "stuck":
        raise PermanentError(f"void refused for card {state.card_number} (key {state.api_key})")


@payment.step
def charge(state: Payment, ctx: StepContext) -> dict[str, str]:
    if state.order_id in ("bad", "stuck"):
        raise PermanentError(f"gateway refused card {state.card_number} with key {state.api_key}")
    return {"receipt": f"r-{state.order_id}"}


def record_payments(engine: Engine) -> None:
    """Record runs pay-ok, pay-bad and pay-stuck: completed, rolled back, needing attention."""
    for order, status in [
        ("ok", RunStatus.COMPLETED),
        ("bad", RunStatus.ROLLED_BACK),
        ("stuck", RunStatus.NEEDS_ATTENTION),
    ]:
        state = {"order_id": order, "card_number": CARD, "cvv": CVV}
        run = engine.run(payment, state, run_id=f"pay-{order}")
        assert run.status is status
        assert run.data["card_number"] == CARD, "steps and the store get the real value"
