"""`fast_init`: the same construction as a frozen dataclass's own, still frozen."""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass, field
from typing import Any

import pytest

from sagakit.context import StepContext
from sagakit.frozen import fast_init
from sagakit.journal import Event, EventKind, Phase
from sagakit.run import Run
from sagakit.store import Commit, Lease, RunRecord


def reference(cls: type) -> type:
    """``cls`` rebuilt by dataclasses alone, with its own generated ``__init__``."""
    specs = [(f.name, f.type, f) for f in dataclasses.fields(cls)]
    copies = [
        (name, kind, field(default=f.default, default_factory=f.default_factory))
        for name, kind, f in specs
    ]
    return dataclasses.make_dataclass(f"Plain{cls.__name__}", copies, frozen=True, slots=True)


@pytest.mark.parametrize("cls", [Event, Commit, RunRecord, StepContext, Run, Lease])
def test_the_signature_is_the_dataclass_one(cls: type) -> None:
    ours = inspect.signature(cls.__init__).parameters  # type: ignore[misc]
    theirs = inspect.signature(reference(cls).__init__).parameters  # type: ignore[misc]
    assert list(ours) == list(theirs)
    for name, param in theirs.items():
        assert ours[name].kind == param.kind
        if param.default is not inspect.Parameter.empty and repr(param.default) != "<factory>":
            assert ours[name].default is param.default


def test_an_event_is_built_as_before_and_stays_frozen() -> None:
    event = Event("r", 2, EventKind.STEP_STARTED, 5.0, "s", 1)
    plain = reference(Event)("r", 2, EventKind.STEP_STARTED, 5.0, "s", 1)
    assert dataclasses.astuple(event) == dataclasses.astuple(plain)
    assert event.data == {}
    assert event.data is not Event("r", 3, EventKind.STEP_STARTED, 5.0).data
    assert Event(run_id="r", seq=2, kind=EventKind.STEP_STARTED, at=5.0, step="s", attempt=1) == (
        event
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.seq = 3  # type: ignore[misc]
    assert dataclasses.replace(event, seq=3).seq == 3
    with pytest.raises(TypeError):
        Event("r", 2)  # type: ignore[call-arg]


def test_a_commit_and_a_context_take_their_defaults() -> None:
    commit = Commit("r", Lease("me", 1), (), "running", {}, None, 1.0)  # type: ignore[arg-type]
    assert (commit.wake_at, commit.release, commit.mail_read, commit.requires) == (
        None,
        False,
        (),
        (),
    )
    ctx = StepContext("r", "saga", "1", "s", Phase.ACTION, 1, "r/s", 1.0)
    assert ctx.log is not None
    assert ctx.connection is None
    assert ctx.reserver is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        ctx.attempt = 2  # type: ignore[misc]


def test_what_it_cannot_build_alike_is_refused() -> None:
    @dataclass(slots=True)
    class Mutable:
        a: int

    @dataclass(frozen=True, slots=True)
    class Later:
        a: int

        def __post_init__(self) -> None:
            pass

    @dataclass(frozen=True, slots=True, kw_only=True)
    class Keywords:
        a: int

    for cls in (Mutable, Later, Keywords):
        with pytest.raises(TypeError):
            fast_init(cls)


@pytest.mark.parametrize("cls", [Event, Commit, RunRecord, StepContext, Run, Lease])
def test_the_lent_class_is_given_back(cls: type) -> None:
    # Every field of the class set, through the lent plain class, then the
    # instance is of the class again, equal to what dataclasses would build.
    values = {f.name: f"v-{f.name}" for f in dataclasses.fields(cls)}
    made: Any = cls(**values)
    plain: Any = reference(cls)(**values)
    assert dataclasses.astuple(made) == dataclasses.astuple(plain)
    assert type(made) is cls
    first = dataclasses.fields(cls)[0].name
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(made, first, "other")


def test_a_subclass_is_built_through_the_slot_setters() -> None:
    # A subclass that inherits the __init__ may have another layout: its
    # instances are never lent the plain class, and still get every field, frozen.
    class Same(Event):
        __slots__ = ()

    same = Same("r", 2, EventKind.STEP_STARTED, 5.0)
    assert type(same) is Same
    assert same == Same("r", 2, EventKind.STEP_STARTED, 5.0, None, None, {})
    with pytest.raises(dataclasses.FrozenInstanceError):
        same.seq = 3  # type: ignore[misc]


def test_an_instance_copies_and_pickles_as_before() -> None:
    import copy
    import pickle

    event = Event("r", 2, EventKind.STEP_STARTED, 5.0, "s", 1, {"a": [1]})
    assert copy.copy(event) == event
    assert copy.deepcopy(event) == event
    assert pickle.loads(pickle.dumps(event)) == event
    assert type(pickle.loads(pickle.dumps(event))) is Event


def test_a_field_may_be_named_as_a_builtin_but_not_as_a_name_it_uses() -> None:
    # The generated __init__ takes the fields as its arguments: a field named
    # `type` must not hide the builtin from it, and one named as a name of
    # its own (the lent class, a slot setter) is refused rather than built wrong.
    @fast_init
    @dataclass(frozen=True, slots=True)
    class Named:
        type: str
        id: int = 0

    named = Named("kind", 2)
    assert type(named) is Named
    assert (named.type, named.id) == ("kind", 2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        named.type = "other"  # type: ignore[misc]

    @dataclass(frozen=True, slots=True)
    class Lent:
        _Lent: int

    @dataclass(frozen=True, slots=True)
    class Setter:
        a: int
        _set_a: int

    for cls in (Lent, Setter):
        with pytest.raises(TypeError, match="a name fast_init uses"):
            fast_init(cls)
