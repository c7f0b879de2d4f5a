"""Sagas that pause, take signals and get cancelled, for the ``sagakit cancel``
and ``sagakit signal`` tests (``--app tripapp`` with this folder on PYTHONPATH).

``trip``: flight -> London hotel -> Paris hotel. Asked for the Ritz, the London
hotel step pauses with the question "the Ritz is full..." answered only by the
signal ``choose``, whose payload names another hotel.

``ticketed``: flight -> hotel -> ticket (the pivot) -> email. A completed run
of it has passed its pivot, so a plain cancel is refused.
"""

from __future__ import annotations

from typing import Any

from sagakit import Pause, Saga, StepContext

State = dict[str, Any]

QUESTION = "the Ritz is full: choose another London hotel"

trip: Saga[Any] = Saga("cli-trip")


@trip.step
def flight(state: State, ctx: StepContext) -> State:
    return {"flight": "LHR-1"}


@flight.compensate
def cancel_flight(state: State, ctx: StepContext) -> State:
    return {"flight": None, "undo_reason": ctx.reason, "cancel_reason": ctx.cancel_reason}


@trip.step
def london_hotel(state: State, ctx: StepContext) -> State:
    if state.get("london", "Savoy") == "Ritz":
        raise Pause(QUESTION, options=["choose"])
    return {"london_booking": state.get("london", "Savoy")}


@london_hotel.compensate
def cancel_london(state: State, ctx: StepContext) -> State:
    return {"london_booking": None}


@trip.step
def paris_hotel(state: State, ctx: StepContext) -> State:
    return {"paris_booking": "Lutetia"}


ticketed: Saga[Any] = Saga("cli-ticketed")


@ticketed.step
def book_flight(state: State, ctx: StepContext) -> State:
    return {"flight": "CDG-2"}


@book_flight.compensate
def refund_flight(state: State, ctx: StepContext) -> State:
    return {"flight": None}


@ticketed.step
def book_hotel(state: State, ctx: StepContext) -> State:
    return {"hotel": "H1"}


@book_hotel.compensate
def cancel_hotel(state: State, ctx: StepContext) -> State:
    return {"hotel": None}


@ticketed.step(kind="pivot")
def issue_ticket(state: State, ctx: StepContext) -> State:
    return {"ticketed": True}


@ticketed.step
def send_email(state: State, ctx: StepContext) -> None:
    return None
