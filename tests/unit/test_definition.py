"""Saga definitions: decorators, step kinds and their rules, retry policies, plans, state."""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel

from sagakit.core import Plan, StepPlan
from sagakit.definition import (
    DEFAULT_COMPENSATION_RETRY,
    Reserve,
    RetryPolicy,
    Saga,
    Step,
    StepKind,
)
from sagakit.errors import DefinitionError, PermanentError, SagaError, StateError


def act(state: Any, ctx: Any) -> None:
    """A step function that does nothing."""


# -- decorators ------------------------------------------------------------------------


def test_bare_step_decorator_returns_a_step_that_stays_callable() -> None:
    saga = Saga("order")

    @saga.step
    def check(state: dict[str, Any], ctx: Any) -> dict[str, Any]:
        return {"checked": state["n"] + 1}

    assert isinstance(check, Step)
    assert check.name == "check"
    assert check({"n": 1}, None) == {"checked": 2}
    assert saga["check"] is check
    assert saga.steps == (check,)
    assert list(saga) == [check]
    assert check.retry_policy == RetryPolicy()
    assert check.timeout is None


def test_step_decorator_with_options() -> None:
    saga = Saga("order")
    policy = RetryPolicy(max_attempts=3, initial_delay=0.1)

    @saga.step(name="charge_card", retry=policy, timeout=2.5, compensate_on_failure=True)
    def charge(state: Any, ctx: Any) -> None: ...

    assert charge.name == "charge_card"
    assert saga["charge_card"] is charge
    assert charge.retry_policy is policy
    assert charge.timeout == 2.5
    assert charge.compensate_on_failure


def test_bare_compensate_returns_the_function_and_makes_the_step_compensatable() -> None:
    saga = Saga("order")

    @saga.step
    def charge(state: Any, ctx: Any) -> None: ...

    assert charge.kind is StepKind.PLAIN

    @charge.compensate
    def refund(state: Any, ctx: Any) -> str:
        return "refunded"

    assert refund(None, None) == "refunded"
    assert charge.compensation is refund
    assert charge.kind is StepKind.COMPENSATABLE  # type: ignore[comparison-overlap]
    assert charge.compensation_retry is DEFAULT_COMPENSATION_RETRY
    assert charge.compensation_timeout is None


def test_compensate_with_options() -> None:
    saga = Saga("order")

    @saga.step
    def charge(state: Any, ctx: Any) -> None: ...

    @charge.compensate(retry=RetryPolicy(max_attempts=50), timeout=5)
    def refund(state: Any, ctx: Any) -> None: ...

    assert charge.compensation is refund
    assert charge.compensation_retry.max_attempts == 50
    assert charge.compensation_timeout == 5


def test_async_functions_are_steps_and_compensations() -> None:
    saga = Saga("order")

    @saga.step
    async def charge(state: Any, ctx: Any) -> None: ...

    @charge.compensate
    async def refund(state: Any, ctx: Any) -> None: ...

    assert charge.kind is StepKind.COMPENSATABLE


def test_add_step_without_decorators() -> None:
    saga = Saga("order")
    step = saga.add_step(
        act,
        name="reserve",
        compensation=act,
        compensation_retry=RetryPolicy(max_attempts=7),
        compensation_timeout=3.0,
    )
    assert step.kind is StepKind.COMPENSATABLE
    assert step.compensation is act
    assert step.compensation_retry.max_attempts == 7
    assert step.compensation_timeout == 3.0


@pytest.mark.parametrize(
    "fn",
    [
        act,
        lambda state, ctx, extra=1: None,
        lambda *args: None,
        lambda state, ctx, *, flag=False: None,
        lambda state, ctx, **kw: None,
        lambda state, *rest: None,
        functools.partial(lambda state, ctx, extra: None, extra=1),
    ],
    ids=["plain", "default", "varargs", "kwonly-default", "varkw", "state-varargs", "partial"],
)
def test_functions_callable_as_state_ctx_are_accepted(fn: Callable[..., Any]) -> None:
    Saga("order").add_step(fn, name="s")


def test_a_callable_object_is_accepted() -> None:
    class Action:
        def __call__(self, state: Any, ctx: Any) -> None: ...

    assert Saga("order").add_step(Action(), name="act").name == "act"


# -- kinds ---------------------------------------------------------------------------------


def test_kinds_are_inferred() -> None:
    saga = Saga("order")
    check = saga.add_step(act, name="check")
    reserve = saga.add_step(act, name="reserve", compensation=act)
    commit = saga.add_step(act, name="commit", kind="pivot")
    notify = saga.add_step(act, name="notify")
    assert check.kind is StepKind.PLAIN
    assert reserve.kind is StepKind.COMPENSATABLE
    assert commit.kind is StepKind.PIVOT
    assert notify.kind is StepKind.RETRIABLE, "a step after the pivot with no kind is retriable"
    assert notify.retry_policy.max_attempts is None, "retriable steps retry without limit"
    saga.validate()


def test_kind_accepts_enum_and_string() -> None:
    saga = Saga("order")
    assert saga.add_step(act, name="a", kind=StepKind.PIVOT).kind is StepKind.PIVOT
    assert saga.add_step(act, name="b", kind="retriable").kind is StepKind.RETRIABLE


def test_a_retriable_step_keeps_its_own_retry_policy() -> None:
    saga = Saga("order")
    saga.add_step(act, name="commit", kind="pivot")
    notify = saga.add_step(act, name="notify", retry=RetryPolicy(max_attempts=4))
    assert notify.retry_policy.max_attempts == 4


# -- rule violations -----------------------------------------------------------------


def one_arg(state: Any) -> None: ...


def three_args(state: Any, ctx: Any, extra: Any) -> None: ...


def keyword_required(state: Any, ctx: Any, *, extra: Any) -> None: ...


def second_pivot(saga: Saga[Any]) -> None:
    saga.add_step(act, name="commit", kind="pivot")
    saga.add_step(act, name="publish", kind="pivot")


def retriable_first(saga: Saga[Any]) -> None:
    saga.add_step(act, name="check")
    saga.add_step(act, name="notify", kind="retriable")


def compensatable_after_pivot(saga: Saga[Any]) -> None:
    saga.add_step(act, name="commit", kind="pivot")
    saga.add_step(act, name="reserve", kind="compensatable")


def plain_after_pivot(saga: Saga[Any]) -> None:
    saga.add_step(act, name="commit", kind="pivot")
    saga.add_step(act, name="check", kind="plain")


def compensation_on_pivot(saga: Saga[Any]) -> None:
    commit = saga.add_step(act, name="commit", kind="pivot")
    commit.compensate(act)


def compensation_on_retriable(saga: Saga[Any]) -> None:
    saga.add_step(act, name="commit", kind="pivot")
    notify = saga.add_step(act, name="notify")
    notify.compensate(act)


def compensation_on_plain(saga: Saga[Any]) -> None:
    check = saga.add_step(act, name="check", kind="plain")
    check.compensate(act)


def compensation_passed_to_a_step_after_pivot(saga: Saga[Any]) -> None:
    saga.add_step(act, name="commit", kind="pivot")
    saga.add_step(act, name="notify", compensation=act)


def second_compensation(saga: Saga[Any]) -> None:
    reserve = saga.add_step(act, name="reserve", compensation=act)
    reserve.compensate(act)


def duplicate_name(saga: Saga[Any]) -> None:
    saga.add_step(act, name="reserve")
    saga.add_step(act, name="reserve")


def duplicate_by_decorator(saga: Saga[Any]) -> None:
    saga.step(act)
    saga.step(act)


def bad_compensation_signature(saga: Saga[Any]) -> None:
    reserve = saga.add_step(act, name="reserve")
    reserve.compensate(one_arg)


def bad_compensation_timeout(saga: Saga[Any]) -> None:
    reserve = saga.add_step(act, name="reserve")
    reserve.compensate(timeout=0)(act)


RULES: list[tuple[str, Callable[[Saga[Any]], object], list[str]]] = [
    ("a second pivot", second_pivot, ["'publish'", "second pivot", "'commit'"]),
    ("a retriable step with no pivot before it", retriable_first, ["'notify'", "no pivot"]),
    ("a compensatable step after the pivot", compensatable_after_pivot, ["'reserve'", "after"]),
    ("a plain step after the pivot", plain_after_pivot, ["'check'", "after the pivot 'commit'"]),
    ("a compensation on the pivot", compensation_on_pivot, ["'commit'", "'pivot'"]),
    ("a compensation on a retriable step", compensation_on_retriable, ["'notify'", "retriable"]),
    ("a compensation on a plain step", compensation_on_plain, ["'check'", "'plain'"]),
    (
        "a compensation given to a step after the pivot",
        compensation_passed_to_a_step_after_pivot,
        ["'notify'", "cannot have a compensation"],
    ),
    ("a second compensation", second_compensation, ["'reserve'", "already has a compensation"]),
    ("a duplicate name", duplicate_name, ["'reserve'", "already has a step"]),
    ("a duplicate name by decorator", duplicate_by_decorator, ["'act'", "already has a step"]),
    (
        "a function taking one argument",
        lambda saga: saga.add_step(one_arg),
        ["'one_arg'", "(state, ctx)"],
    ),
    (
        "a function requiring a third argument",
        lambda saga: saga.add_step(three_args),
        ["'three_args'", "'extra'"],
    ),
    (
        "a function requiring a keyword-only argument",
        lambda saga: saga.add_step(keyword_required),
        ["'keyword_required'", "'extra'"],
    ),
    (
        "not a function",
        lambda saga: saga.add_step(42, name="answer"),  # type: ignore[arg-type]
        ["'answer'", "function"],
    ),
    (
        "a compensation with a bad signature",
        bad_compensation_signature,
        ["compensation of step 'reserve'", "(state, ctx)"],
    ),
    ("an unknown kind", lambda saga: saga.add_step(act, kind="undoable"), ["'act'", "'undoable'"]),
    ("a zero timeout", lambda saga: saga.add_step(act, timeout=0), ["'act'", "timeout"]),
    ("a negative timeout", lambda saga: saga.add_step(act, timeout=-1), ["'act'", "timeout"]),
    ("an infinite timeout", lambda saga: saga.add_step(act, timeout=math.inf), ["'act'"]),
    ("a NaN timeout", lambda saga: saga.add_step(act, timeout=math.nan), ["'act'", "timeout"]),
    ("a zero compensation timeout", bad_compensation_timeout, ["'reserve'", "timeout"]),
    ("a lambda with no name", lambda saga: saga.add_step(lambda s, c: None), ["name="]),
]


@pytest.mark.parametrize(("build", "fragments"), [r[1:] for r in RULES], ids=[r[0] for r in RULES])
def test_rule_violations_are_rejected_with_a_message_naming_the_step(
    build: Callable[[Saga[Any]], object], fragments: list[str]
) -> None:
    saga = Saga("order")
    with pytest.raises(DefinitionError) as info:
        build(saga)
    for fragment in fragments:
        assert fragment in str(info.value)


def test_a_rejected_step_is_not_added() -> None:
    saga = Saga("order")
    saga.add_step(act, name="commit", kind="pivot")
    with pytest.raises(DefinitionError):
        saga.add_step(act, name="reserve", kind="compensatable")
    assert [s.name for s in saga] == ["commit"]


def test_a_rejected_compensation_is_not_attached() -> None:
    saga = Saga("order")
    reserve = saga.add_step(act, name="reserve")
    with pytest.raises(DefinitionError):
        reserve.compensate(one_arg)
    assert reserve.compensation is None
    assert reserve.kind is StepKind.PLAIN


def test_definition_errors_are_saga_errors() -> None:
    assert issubclass(DefinitionError, SagaError)
    assert issubclass(StateError, SagaError)


@pytest.mark.parametrize("name", ["", "   ", None])
def test_a_saga_needs_a_name(name: Any) -> None:
    with pytest.raises(DefinitionError, match="non-empty name"):
        Saga(name)


@pytest.mark.parametrize("state", [dict, int, object()])
def test_a_saga_state_is_a_pydantic_model_or_none(state: Any) -> None:
    with pytest.raises(DefinitionError, match=r"'order'.*BaseModel"):
        Saga("order", state=state)


# -- validate --------------------------------------------------------------------------


def test_validate_rejects_a_saga_without_steps() -> None:
    with pytest.raises(DefinitionError, match="saga 'order' has no steps"):
        Saga("order").validate()


def test_validate_rejects_compensate_on_failure_without_compensation() -> None:
    saga = Saga("order")
    saga.add_step(act, name="charge", compensate_on_failure=True)  # accepted for now...
    with pytest.raises(DefinitionError, match=r"'charge'.*compensate_on_failure"):
        saga.validate()  # ...but not once the saga is complete


def test_validate_rejects_a_compensatable_step_without_compensation() -> None:
    saga = Saga("order")
    saga.add_step(act, name="charge", kind="compensatable")
    with pytest.raises(DefinitionError, match=r"'charge'.*@charge\.compensate"):
        saga.validate()


def test_validate_accepts_a_complete_saga() -> None:
    saga = Saga("order")
    saga.add_step(act, name="charge", compensate_on_failure=True, compensation=act)
    saga.validate()


# -- retry policies -----------------------------------------------------------------------


def test_delay_grows_exponentially() -> None:
    policy = RetryPolicy(initial_delay=0.5, backoff=3.0, max_delay=1000, jitter=0)
    assert [policy.delay(n, 0.7) for n in (1, 2, 3, 4)] == [0.5, 1.5, 4.5, 13.5]
    assert policy.delay(0, 0.7) == 0.5, "no failure yet counts as the first"


def test_delay_is_capped_at_max_delay() -> None:
    policy = RetryPolicy(initial_delay=1, backoff=2, max_delay=10, jitter=0)
    assert [policy.delay(n, 0.5) for n in (4, 5, 6, 100, 10**9)] == [8, 10, 10, 10, 10]


def test_delay_with_a_huge_backoff_is_capped_not_an_overflow() -> None:
    assert RetryPolicy(backoff=1e6, max_delay=30, jitter=0).delay(200, 0.5) == 30
    assert RetryPolicy(initial_delay=0, backoff=1e6, jitter=0).delay(200, 0.5) == 0


def test_jitter_spreads_the_delay_within_its_bounds() -> None:
    policy = RetryPolicy(initial_delay=10, backoff=1, jitter=0.2)
    assert policy.delay(1, 0.0) == pytest.approx(8.0)
    assert policy.delay(1, 0.5) == pytest.approx(10.0)
    assert policy.delay(1, 0.999999) == pytest.approx(12.0)
    assert RetryPolicy(initial_delay=10, jitter=1).delay(1, 0.0) == 0.0


@given(
    policy=st.builds(
        RetryPolicy,
        initial_delay=st.floats(0, 100),
        backoff=st.floats(1, 1e6),
        max_delay=st.floats(0, 1000),
        jitter=st.floats(0, 1),
    ),
    failures=st.integers(0, 10_000),
    random=st.floats(0, 1, exclude_max=True),
)
def test_delay_stays_within_the_cap_and_its_jitter(
    policy: RetryPolicy, failures: int, random: float
) -> None:
    delay = policy.delay(failures, random)
    assert 0 <= delay <= policy.max_delay * (1 + policy.jitter) + 1e-9
    no_jitter = dataclasses.replace(policy, jitter=0)
    assert no_jitter.delay(failures, random) <= no_jitter.delay(failures + 1, random)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_attempts": 0}, "max_attempts"),
        ({"max_attempts": -1}, "max_attempts"),
        ({"initial_delay": -1}, "negative"),
        ({"max_delay": -0.5}, "negative"),
        ({"backoff": 0.5}, "backoff"),
        ({"jitter": -0.1}, "jitter"),
        ({"jitter": 1.5}, "jitter"),
        ({"jitter": math.nan}, "jitter"),
        ({"backoff": math.nan}, "backoff must be a finite number"),
        ({"initial_delay": math.nan}, "initial_delay must be a finite number"),
        ({"max_delay": math.inf}, "max_delay must be a finite number"),
    ],
)
def test_retry_policy_rejects_bad_arguments(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(DefinitionError, match=message):
        RetryPolicy(**kwargs)


def test_an_action_is_tried_three_times_by_default_quickly_and_a_compensation_twenty() -> None:
    saga = Saga("order")
    plain = saga.add_step(act, name="plain")
    undone = saga.add_step(act, name="undone", compensation=act)
    saga.add_step(act, name="pivot", kind="pivot")
    after = saga.add_step(act, name="after")
    default = plain.retry_policy
    assert default == undone.retry_policy == RetryPolicy()  # RetryPolicy() is the default
    assert default.max_attempts == 3
    # 0.5 s, then 1 s (±10 %): a passing fault is over, a real outage compensates in ~2 s.
    assert [default.delay(n, 0.5) for n in (1, 2)] == [0.5, 1.0]
    assert 0.45 <= default.delay(1, 0.0) <= default.delay(1, 0.999) <= 0.55
    assert not default.is_permanent(ConnectionError())
    assert default.is_permanent(PermanentError())
    assert undone.compensation_retry == DEFAULT_COMPENSATION_RETRY
    assert DEFAULT_COMPENSATION_RETRY.max_attempts == 20
    assert after.retry_policy.max_attempts is None  # retriable, after the pivot
    # A field given replaces only its own default.
    assert RetryPolicy(permanent=(KeyError,)).max_attempts == 3
    assert RetryPolicy(max_attempts=1).initial_delay == 0.5


def test_retry_policy_accepts_unlimited_attempts_and_is_frozen() -> None:
    policy = RetryPolicy(max_attempts=None)
    assert policy.max_attempts is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.max_attempts = 3  # type: ignore[misc]


class Declined(Exception):
    pass


class HardDeclined(Declined):
    pass


def test_is_permanent() -> None:
    default = RetryPolicy()
    assert default.is_permanent(PermanentError("card declined"))
    assert not default.is_permanent(Declined())
    assert not default.is_permanent(TimeoutError())

    policy = RetryPolicy(permanent=(Declined, KeyError))
    assert policy.is_permanent(Declined())
    assert policy.is_permanent(HardDeclined()), "subclasses of a permanent type count"
    assert policy.is_permanent(KeyError("x"))
    assert policy.is_permanent(PermanentError())
    assert not policy.is_permanent(ValueError())


# -- plan -----------------------------------------------------------------------------


def shop(*, continue_on_compensation_error: bool = False) -> Saga[Any]:
    saga = Saga("shop", continue_on_compensation_error=continue_on_compensation_error)
    saga.add_step(act, name="check")
    reserve = saga.add_step(act, name="reserve", retry=RetryPolicy(max_attempts=4))
    reserve.compensate(retry=RetryPolicy(max_attempts=5))(act)
    saga.add_step(act, name="charge", compensate_on_failure=True, compensation=act)
    saga.add_step(act, name="commit", kind="pivot", retry=RetryPolicy(max_attempts=2))
    saga.add_step(act, name="notify")
    return saga


def test_plan_reduces_the_saga_to_what_the_core_needs() -> None:
    undo = DEFAULT_COMPENSATION_RETRY.max_attempts  # unused by steps without compensation
    assert shop().plan() == Plan(
        steps=(
            # An action's default is three attempts; a retriable step's, unlimited.
            StepPlan("check", "plain", False, 3, undo),
            StepPlan("reserve", "compensatable", True, 4, 5),
            StepPlan("charge", "compensatable", True, 3, undo, compensate_on_failure=True),
            StepPlan("commit", "pivot", False, 2, undo),
            StepPlan("notify", "retriable", False, None, undo),
        ),
        stages=(("check",), ("reserve",), ("charge",), ("commit",), ("notify",)),
    )
    plan = shop(continue_on_compensation_error=True).plan()
    assert plan.continue_on_compensation_error
    assert plan.step("reserve").compensable


def test_plan_is_cached_until_the_saga_changes() -> None:
    saga = Saga("order")
    check = saga.add_step(act, name="check")
    first = saga.plan()
    assert saga.plan() is first
    check.compensate(act)
    second = saga.plan()
    assert second is not first
    assert second.step("check").compensable
    saga.add_step(act, name="ship")
    assert [s.name for s in saga.plan().steps] == ["check", "ship"]


def test_plan_validates() -> None:
    saga = Saga("order")
    saga.add_step(act, name="charge", kind="compensatable")
    with pytest.raises(DefinitionError, match="'charge'"):
        saga.plan()


def test_saga_repr_and_version() -> None:
    saga = Saga("order", version=2)  # type: ignore[arg-type]
    saga.add_step(act, name="check")
    assert saga.version == "2"
    assert repr(saga) == "Saga('order', version='2', steps=['check'])"


# -- state ---------------------------------------------------------------------------------


class Order(BaseModel):
    order_id: int
    amount: float = 0.0
    note: str | None = None


def test_model_state_loads_as_an_instance() -> None:
    saga = Saga("order", state=Order)
    state = saga.load_state({"order_id": 7, "amount": 9.5})
    assert state == Order(order_id=7, amount=9.5)


def test_model_state_dumps_to_json_data() -> None:
    saga = Saga("order", state=Order)
    assert saga.dump_state(Order(order_id=7)) == {"order_id": 7, "amount": 0.0, "note": None}
    assert saga.dump_state({"order_id": "8"}) == {"order_id": 8, "amount": 0.0, "note": None}


@pytest.mark.parametrize("data", [{}, {"order_id": "seven"}, {"order_id": 1, "amount": "lots"}])
def test_invalid_model_state_is_a_state_error(data: dict[str, Any]) -> None:
    saga = Saga("order", state=Order)
    with pytest.raises(StateError, match="saga 'order': state is invalid for Order"):
        saga.load_state(data)
    with pytest.raises(StateError, match="saga 'order': state is invalid for Order"):
        saga.dump_state(data)


@pytest.mark.parametrize("value", [5, "text", [1, 2], None])
def test_state_must_be_a_dict_or_a_model(value: Any) -> None:
    for saga in (Saga("order"), Saga("order", state=Order)):
        with pytest.raises(StateError, match="state must be a dict or a pydantic model"):
            saga.dump_state(value)


def test_dict_state_loads_as_a_copy() -> None:
    saga = Saga("order")
    data = {"order_id": 7, "items": ["a"]}
    state = saga.load_state(data)
    assert state == data
    state["order_id"] = 8
    assert data["order_id"] == 7


@pytest.mark.parametrize("keys", [3, 40])
def test_dict_state_of_many_keys_loads_as_a_copy_with_its_lists_copied(keys: int) -> None:
    # Many keys, all texts and numbers (copied in one go), or one of them a list.
    saga = Saga("order")
    flat: dict[str, Any] = {f"k{i}": f"v{i}" if i % 2 else i for i in range(keys)}
    state = saga.load_state(flat)
    assert state == flat
    assert state is not flat
    state["k0"] = "changed"
    assert flat["k0"] == 0
    nested = {**flat, "items": ["a"]}
    state = saga.load_state(nested)
    assert state == nested
    assert list(state) == list(nested)
    state["items"].append("b")
    assert nested["items"] == ["a"]


def test_dict_state_loads_with_the_keys_that_may_nest_named_copying_those_alone() -> None:
    # The driver names the keys that may hold a list or a dict (more is
    # harmless): those are copied, every other value is shared.
    saga = Saga("order")
    text = "t" * 100
    data: dict[str, Any] = {"items": [{"sku": "a"}], "meta": {"n": 1}, "text": text, "n": 2}
    state = saga.load_state(data, {"items", "meta", "text", "gone"})
    assert state == data
    assert list(state) == list(data)
    assert state["text"] is text
    state["items"][0]["sku"] = "b"
    state["meta"]["n"] = 9
    assert data == {"items": [{"sku": "a"}], "meta": {"n": 1}, "text": text, "n": 2}
    assert "gone" not in state
    # Named none: a copy of the dict that shares every value.
    assert saga.load_state({"text": text}, set()) == {"text": text}


def test_dict_state_dumps_to_json_data() -> None:
    saga = Saga("order")
    value = {"order_id": 7, "items": [{"sku": "a", "qty": 2}], "paid": True, "note": None}
    assert saga.dump_state(value) == value
    assert saga.dump_state(Order(order_id=1)) == {"order_id": 1, "amount": 0.0, "note": None}


def test_dict_state_dumps_as_a_copy_that_shares_its_strings() -> None:
    # A big state is mostly strings: made again, they cost as much memory as it.
    saga = Saga("order")
    blob = "x" * 10_000
    value: dict[str, Any] = {
        "blob": blob,
        "items": [{"sku": "a"}],
        "n": 1,
        "f": 1.5,
        "b": False,
        "z": None,
    }
    dumped = saga.dump_state(value)
    assert dumped == value
    assert list(dumped) == list(value)  # in the same order
    assert dumped["blob"] is blob
    # Its lists and dicts are its own: the caller's may change afterwards.
    assert dumped is not value
    assert dumped["items"] is not value["items"]
    value["items"][0]["sku"] = "b"
    assert dumped["items"] == [{"sku": "a"}]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({1: "a", "b": "c"}, {"1": "a", "b": "c"}),  # keys made strings, as JSON does
        ({"t": ("a", 1)}, {"t": ["a", 1]}),
        ({"s": "caf\u00e9"}, {"s": "caf\u00e9"}),
        ({"caf\u00e9": 1}, {"caf\u00e9": 1}),
    ],
)
def test_dict_state_dumps_as_json_would_give_it_back(
    value: dict[Any, Any], expected: dict[str, Any]
) -> None:
    assert Saga("order").dump_state(value) == expected


@pytest.mark.parametrize("value", [{"s": "\ud800"}, {"\ud800": 1}, {"ok": {"\ud800": 1}}])
def test_a_lone_surrogate_in_dict_state_is_a_state_error(value: dict[str, Any]) -> None:
    # In a value or in a key: neither can be written as JSON text.
    with pytest.raises(StateError, match="not JSON-serialisable"):
        Saga("order").dump_state(value)


def test_a_non_json_value_in_dict_state_is_a_state_error_naming_it() -> None:
    class Gateway:
        pass

    saga = Saga("order")
    with pytest.raises(StateError) as info:
        saga.dump_state({"order_id": 7, "gateway": Gateway()})
    message = str(info.value)
    assert "state of saga 'order'" in message
    assert "not JSON-serialisable" in message
    assert "Gateway" in message


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_nan_and_infinity_are_refused_in_state_on_every_store(value: float) -> None:
    # PostgreSQL's jsonb cannot hold them, so no store accepts them: a saga
    # that works on SQLite must work on PostgreSQL too.
    saga: Saga[Any] = Saga("prices")
    with pytest.raises(StateError, match="NaN or Infinity"):
        saga.dump_state({"price": value})


# -- reserve= ---------------------------------------------------------------------------


def test_a_step_may_reserve_names_before_its_action() -> None:
    saga: Saga[Any] = Saga("seats")

    @saga.step(reserve=Reserve(["seat:{seat}", "row:{row:02d}"], ttl=30, wait=2))
    def book(state: Any, ctx: Any) -> None:
        return None

    reserve = saga["book"].reserve
    assert reserve == Reserve(("seat:{seat}", "row:{row:02d}"), ttl=30, wait=2)
    assert reserve.fields() == {"seat", "row"}
    assert reserve.names_for({"seat": "F1", "row": 3}) == ["seat:F1", "row:03"]
    with pytest.raises(KeyError, match="seat"):
        reserve.names_for({"row": 3})


@pytest.mark.parametrize(
    ("names", "ttl", "wait", "message"),
    [
        ([], 5, 0, "give a list of one or more names"),
        ("seat:1", 5, 0, "give a list of one or more names"),
        ([""], 5, 0, "every name must be a non-empty string"),
        (["seat:{"], 5, 0, "is not a valid name template"),
        (["seat:{}"], 5, 0, "must name state fields in braces"),
        (["seat:{a.b}"], 5, 0, "must name state fields in braces"),
        (["x"], 0, 0, "ttl must be a positive number of seconds"),
        (["x"], float("inf"), 0, "ttl must be a positive number"),
        (["x"], 5, -1, "wait must be a number, 0 or more, of seconds"),
        (["x"], True, 0, "ttl must be a positive number"),
    ],
)
def test_a_bad_reserve_is_refused_as_it_is_declared(
    names: Any, ttl: Any, wait: Any, message: str
) -> None:
    with pytest.raises(DefinitionError, match=message):
        Reserve(names, ttl=ttl, wait=wait)


def test_a_local_transaction_step_cannot_reserve() -> None:
    saga: Saga[Any] = Saga("seats")
    with pytest.raises(DefinitionError, match="a local-transaction step cannot reserve"):
        saga.add_step(
            lambda state, ctx: None,
            name="write",
            local_transaction=True,
            reserve=Reserve(["x"], ttl=5),
        )
    with pytest.raises(DefinitionError, match=r"reserve must be a Reserve\(names"):
        saga.add_step(lambda state, ctx: None, name="other", reserve=["x"])  # type: ignore[arg-type]
