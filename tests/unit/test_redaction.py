"""Fields marked sensitive: which names a saga marks, and how a `Redactor` masks them."""

from __future__ import annotations

from typing import Annotated, Any

import pytest
from pydantic import BaseModel, Field, SecretStr

from sagakit import (
    AttentionReport,
    DefinitionError,
    Engine,
    ErrorInfo,
    Event,
    EventKind,
    PermanentError,
    Redactor,
    RetryPolicy,
    RunStatus,
    Saga,
    Sensitive,
    StateError,
    StepContext,
)
from sagakit.redaction import MASK

CARD = "4111111111111111"


class Card(BaseModel):
    number: Annotated[str, Sensitive()]
    holder: str = "Ada"


class Customer(BaseModel):
    name: str
    pin: Annotated[str | None, Sensitive] = None
    token: Annotated[str, Sensitive(), Field(alias="apiToken")] = ""
    cards: list[Card] = []
    backup: Card | None = None
    plain: str = ""


class Tree(BaseModel):
    secret: Annotated[str, Sensitive()] = ""
    children: list[Tree] = []


def test_a_state_model_marks_fields_at_any_depth_by_name_and_alias() -> None:
    saga: Saga[Customer] = Saga("marks", state=Customer)
    assert saga.sensitive == {"pin", "token", "apiToken", "number"}


def test_a_recursive_model_is_walked_once() -> None:
    assert Saga("tree", state=Tree).sensitive == {"secret"}


def test_names_given_to_the_saga_join_the_models_marks() -> None:
    saga: Saga[Customer] = Saga("both", state=Customer, sensitive=["api_key", "iban"])
    assert {"api_key", "iban", "pin"} <= saga.sensitive
    assert Saga("dict", sensitive="api_key").sensitive == {"api_key"}
    assert Saga("none").sensitive == frozenset()


@pytest.mark.parametrize("bad", [[""], [3], [None]])
def test_a_sensitive_name_must_be_a_non_empty_string(bad: list[Any]) -> None:
    with pytest.raises(DefinitionError, match="sensitive takes field names"):
        Saga("bad", sensitive=bad)


def test_values_under_sensitive_keys_are_masked_at_any_depth() -> None:
    redactor = Redactor(frozenset({"card", "pin"}))
    data = {
        "order": 7,
        "card": {"number": CARD, "exp": "12/30"},
        "people": [{"name": "Ada", "pin": 1234}, {"name": "Bob", "pin": None}],
    }
    assert redactor.json(data) == {
        "order": 7,
        "card": MASK,
        "people": [{"name": "Ada", "pin": MASK}, {"name": "Bob", "pin": MASK}],
    }
    assert data["card"] == {"number": CARD, "exp": "12/30"}, "the input is not changed"


def test_sensitive_values_are_masked_inside_texts_longest_first() -> None:
    redactor = Redactor(frozenset({"card", "pin", "short"})).collect(
        {"card": {"number": CARD, "last4": CARD[-4:]}, "pin": 98765, "short": "ab"}
    )
    text = f"card {CARD} (ending {CARD[-4:]}) refused; pin 98765; ab stays"
    assert redactor.text(text) == f"card {MASK} (ending {MASK}) refused; pin {MASK}; ab stays"
    assert redactor.json({"note": text})["note"] == redactor.text(text)


def test_a_redactor_reads_the_names_a_run_journaled_and_the_values_of_every_event() -> None:
    started = {"state": {"card": CARD}, "sensitive": ["card", "key"]}
    error = ErrorInfo("E", f"bad {CARD} / sk_live_1", traceback=f"x {CARD}").to_json()
    events = [
        Event("r", 1, EventKind.RUN_STARTED, 1.0, data=started),
        Event("r", 2, EventKind.STEP_SUCCEEDED, 2.0, "auth", 1, data={"result": {"key": "sk_1"}}),
        Event("r", 3, EventKind.STEP_FAILED, 3.0, "charge", 1, data={"error": error}),
    ]
    redactor = Redactor.for_run(events)
    assert redactor.names == {"card", "key"}
    shown = redactor.events(events)
    assert shown[0].data["state"] == {"card": MASK}
    assert shown[1].data["result"] == {"key": MASK}
    failed = shown[2].error
    assert failed is not None
    assert (failed.message, failed.traceback) == (f"bad {MASK} / sk_live_1", f"x {MASK}")
    assert events[0].data["state"] == {"card": CARD}, "the journal itself is not changed"


def test_a_run_that_journaled_no_names_is_shown_as_it_is() -> None:
    events = [Event("r", 1, EventKind.RUN_STARTED, 1.0, data={"state": {"card": CARD}})]
    redactor = Redactor.for_run(events)
    assert not redactor
    assert redactor.events(events) == events
    assert Redactor.for_run(events, ["card"]).events(events)[0].data["state"] == {"card": MASK}


class Payment(BaseModel):
    order_id: str
    card_number: Annotated[str, Sensitive()]
    api_key: str | None = None


def payment_saga(fail: bool) -> Saga[Payment]:
    saga: Saga[Payment] = Saga("pay", state=Payment, sensitive=["api_key"])

    @saga.step
    def authorize(state: Payment, ctx: StepContext) -> dict[str, str]:
        return {"api_key": "sk_live_51Hx"}

    @authorize.compensate
    def void(state: Payment, ctx: StepContext) -> None:
        pass

    @saga.step(retry=RetryPolicy(max_attempts=1))  # refused at once: the error is what is looked at
    def charge(state: Payment, ctx: StepContext) -> None:
        if fail:
            raise ValueError(f"card {state.card_number} refused with key {state.api_key}")

    return saga


def test_the_engine_journals_the_names_and_masks_errors_before_recording_them() -> None:
    saga = payment_saga(fail=True)
    with Engine("memory://") as engine:
        run = engine.run(saga, {"order_id": "o1", "card_number": CARD}, run_id="r1")
        assert run.status is RunStatus.ROLLED_BACK
        assert run.data["card_number"] == CARD, "the engine keeps the real value"
        events = engine.history("r1")
    assert events[0].data["sensitive"] == ["api_key", "card_number"]
    assert run.error is not None
    assert run.error.message == f"card {MASK} refused with key {MASK}"
    assert CARD not in run.error.traceback
    shown = run.redacted(Redactor.for_run(events, (), run.data))
    assert shown.data == {**run.data, "card_number": MASK, "api_key": MASK}


def test_a_state_error_does_not_quote_a_sensitive_value() -> None:
    saga: Saga[Payment] = Saga("pay", state=Payment)
    with pytest.raises(StateError) as caught:
        saga.dump_state({"order_id": ["x"], "card_number": 4111111111111111})
    assert CARD not in str(caught.value)
    assert MASK in str(caught.value)


def test_a_result_holding_a_pydantic_secret_fails_the_step_instead_of_storing_the_mask() -> None:
    saga = Saga("leaky")

    @saga.step
    def fetch(state: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        return {"keys": [SecretStr("sk_live_1")]}

    with Engine("memory://") as engine:
        run = engine.run(saga, {})
    assert run.status is RunStatus.FAILED
    assert run.error is not None
    assert "pydantic secret" in run.error.message
    assert "**********" not in str(run.data)


def test_a_string_of_asterisks_is_not_taken_for_a_secret() -> None:
    saga = Saga("stars")

    @saga.step
    def mask(state: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        return {"shown": "**********"}

    with Engine("memory://") as engine:
        run = engine.run(saga, {})
    assert run.status is RunStatus.COMPLETED
    assert run.data == {"shown": "**********"}


def test_an_attention_report_is_whole_for_the_hook_and_masked_when_redacted() -> None:
    saga: Saga[Payment] = Saga("halts", state=Payment, sensitive=["api_key"])

    @saga.step
    def authorize(state: Payment, ctx: StepContext) -> dict[str, str]:
        return {"api_key": "sk_live_51Hx"}

    @authorize.compensate
    def void(state: Payment, ctx: StepContext) -> None:
        raise PermanentError(f"void refused for {state.card_number}")

    @saga.step
    def charge(state: Payment, ctx: StepContext) -> None:
        raise PermanentError("declined")

    reports: list[AttentionReport] = []
    with Engine("memory://", on_attention=reports.append) as engine:
        run = engine.run(saga, {"order_id": "o1", "card_number": CARD})
    assert run.status is RunStatus.NEEDS_ATTENTION
    (report,) = reports
    assert report.state["card_number"] == CARD, "the application's own hook gets the values"
    assert report.sensitive == {"api_key", "card_number"}
    shown = report.redacted()
    assert shown.state == {**report.state, "card_number": MASK, "api_key": MASK}
    assert shown.run.data == shown.state
    assert [e.message for e in shown.errors] == ["declined", f"void refused for {MASK}"]
    assert CARD not in repr(shown)
    assert "sk_live_51Hx" not in repr(shown)
