"""The stories the example tells, each one run of the trip saga.

- ``choose``: The Savoy is full; the run pauses; the customer picks The
  Langham with a ``choose_hotel`` signal and the trip completes.
- ``cancel``: The Savoy is full; the run pauses; the customer cancels, and
  the three flights are cancelled and refunded in full.
- ``refund``: a completed trip cancelled 10 hours later: full refund.
- ``fee``: a completed trip cancelled two days later: refunded minus a fee.

Each scenario reports the moments worth looking at through `Agent.show`, so
the command line can print timelines and a test can simply collect them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from sagakit import Engine, Run, RunStatus, Saga
from travel_agency.models import Trip
from travel_agency.providers import TravelAgency
from travel_agency.saga import CHOOSE_HOTEL

__all__ = ["HOUR", "SCENARIOS", "Agent", "Scenario", "TravelClock"]

HOUR = 3600.0


class TravelClock:
    """The engine's clock (``Engine(url, clock=...)``): real time, plus jumps.

    `advance` moves it forward at once, so the example can cancel a trip
    "two days later" and the compensation's ``ctx.since_step_finished``
    really is two days, without waiting for them.
    """

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        """Jump ``seconds`` into the future."""
        self.offset += seconds


@dataclass
class Agent:
    """The travel agent: books trips for customers on one engine.

    Attributes:
        engine: The engine, with ``saga`` registered and ``clock`` as its clock.
        saga: The trip saga.
        agency: The providers the saga books with.
        clock: The engine's clock.
        tag: Makes this session's run ids unique, so a database can be reused.
        show: Called with a caption and the run at each moment worth showing.
    """

    engine: Engine
    saga: Saga[Trip]
    agency: TravelAgency
    clock: TravelClock
    tag: str
    show: Callable[[str, Run], None] = lambda caption, run: None

    def run_id(self, scenario: str) -> str:
        """The run id of one scenario in this session."""
        return f"trip-{self.tag}-{scenario}"

    def book(self, scenario: str, trip: Trip) -> Run:
        """Start the trip saga for one scenario and drive it until it settles or pauses."""
        return self.engine.run(self.saga, trip, run_id=self.run_id(scenario))


def choose_another_hotel(agent: Agent) -> Run:
    """The Savoy is full; the customer answers the pause with The Langham."""
    run = agent.book("choose", Trip(traveller="Ada Lovelace"))
    agent.show("The Savoy is full: the flights stand and the run pauses to ask", run)
    run = agent.engine.signal(run.id, CHOOSE_HOTEL, {"london_hotel": "The Langham"})
    agent.show("Ada answers with The Langham: London is booked and the trip completes", run)
    return run


def cancel_when_paused(agent: Agent) -> Run:
    """The Savoy is full; the customer cancels, and the flights are undone."""
    run = agent.book("cancel", Trip(traveller="Grace Hopper"))
    agent.show("The Savoy is full: the run pauses", run)
    run = agent.engine.cancel(run.id, reason="only The Savoy will do")
    agent.show("Grace cancels: the three flights are cancelled, refunded in full", run)
    return run


def cancel_within_a_day(agent: Agent) -> Run:
    """A completed trip cancelled 10 hours later: every cent comes back."""
    run = agent.book("refund", Trip(traveller="Alan Turing", london_hotel="The Langham"))
    agent.clock.advance(10 * HOUR)
    run = agent.engine.cancel(run.id, reason="the conference moved online")
    agent.show("Booked, then cancelled 10 hours later: full refund", run)
    return run


def cancel_after_a_day(agent: Agent) -> Run:
    """A completed trip cancelled two days later: refunded minus the fee."""
    trip = Trip(traveller="Edsger Dijkstra", london_hotel="The Hoxton")
    run = agent.book("fee", trip)
    agent.clock.advance(48 * HOUR)
    run = agent.engine.cancel(run.id, reason="change of plans")
    agent.show("Booked, then cancelled two days later: refunded minus the fee", run)
    return run


@dataclass(frozen=True, slots=True)
class Scenario:
    """One story: how to play it and how it must end.

    Attributes:
        name: Its name on the command line (``--scenario``).
        title: What it shows, in a line.
        play: Runs it; returns the run as it ended.
        ends: The status the run must end in.
    """

    name: str
    title: str
    play: Callable[[Agent], Run]
    ends: RunStatus


SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        "choose",
        "the London hotel is full; the customer picks another",
        choose_another_hotel,
        RunStatus.COMPLETED,
    ),
    Scenario(
        "cancel",
        "the London hotel is full; the customer cancels",
        cancel_when_paused,
        RunStatus.CANCELLED,
    ),
    Scenario(
        "refund",
        "a booked trip cancelled within 24 hours",
        cancel_within_a_day,
        RunStatus.CANCELLED,
    ),
    Scenario(
        "fee",
        "a booked trip cancelled after 24 hours",
        cancel_after_a_day,
        RunStatus.CANCELLED,
    ),
)
"""Every scenario, in the order the example plays them."""
