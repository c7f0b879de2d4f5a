"""The saga the CLI fuzz tests run against (``--app fuzz.cliapp``), and the runs they start from.

``fuzzed``: reserve (compensatable; its undo fails for good when the state
says ``break_undo``) -> charge (fails for good on ``fail``, pauses for the
signal ``answer`` on ``ask``). `RUNS` gives one run in each settled or
paused status, with ids that are themselves a little hostile.
"""

from __future__ import annotations

from typing import Any

from sagakit import Pause, PermanentError, RetryPolicy, Saga, StepContext

State = dict[str, Any]

fuzzed: Saga[Any] = Saga("fuzzed", version="1")


@fuzzed.step
def reserve(state: State, ctx: StepContext) -> State:
    return {"reserved": True}


@reserve.compensate(retry=RetryPolicy(max_attempts=1))
def release(state: State, ctx: StepContext) -> State:
    if state.get("break_undo"):
        raise RuntimeError("the undo failed \x1b[31m for good")
    return {"reserved": False}


@fuzzed.step
def charge(state: State, ctx: StepContext) -> State:
    if state.get("fail"):
        raise PermanentError("card declined\r\nforged line")
    if state.get("ask") and "answer" not in state:
        raise Pause("which card?", options=["answer"])
    return {"charged": True}


def on_attention(report: object) -> None:
    """An ``--on-attention`` hook that does nothing."""


NOT_A_SAGA = 42

# run id -> input: one completed, rolled back, needing attention and paused.
RUNS: dict[str, State] = {
    "done-1": {"card": "c-1"},
    "rolled-1": {"fail": True},
    "attn ünï ✓": {"fail": True, "break_undo": True},
    "paused-1": {"ask": True},
}


# Plain functions for the YAML files the fuzz tests name (a decorated step
# is a `Step`, not a function a YAML file may take).
def plain_reserve(state: State, ctx: StepContext) -> State:
    return {"reserved": True}


def plain_release(state: State, ctx: StepContext) -> State:
    return {"reserved": False}


def plain_charge(state: State, ctx: StepContext) -> State:
    if state.get("fail"):
        raise PermanentError("card declined")
    return {"charged": True}
