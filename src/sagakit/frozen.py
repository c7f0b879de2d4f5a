"""A faster ``__init__`` for the frozen, slotted dataclasses made at every step.

A frozen dataclass's generated ``__init__`` sets each field through
``object.__setattr__`` (its own ``__setattr__`` refuses), and on CPython that
call costs over a thousand instructions a field: the engine makes two
`sagakit.journal.Event`, a `sagakit.store.Commit` and a
`sagakit.context.StepContext` at every step, about 45 fields in all.
`fast_init` gives such a class an ``__init__`` with the same signature,
defaults and default factories that fills the slots cheaply instead: for an
instance of the class itself, it lends the instance for the time of the
``__init__`` to a plain (not frozen) class with the very same slots, whose
plain attribute stores the interpreter runs at a few dozen instructions each,
then gives it its class back (two ``__class__`` assignments, about as much
as two slot setters); for an instance of a subclass, it sets each field
through its slot's own descriptor (about half the cost of
``object.__setattr__``). The class stays frozen: setting a field afterwards
still raises ``FrozenInstanceError``, and no one sees the instance before its
``__init__`` returns.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

T = TypeVar("T")

_MISSING = dataclasses.MISSING
# The setter of ``obj.__class__``, which a frozen class's own __setattr__ would refuse.
_set_class = object.__dict__["__class__"].__set__


def fast_init(cls: type[T]) -> type[T]:
    """Replace the ``__init__`` of ``cls``, a frozen slotted dataclass, by a faster one.

    Apply it above ``@dataclass(frozen=True, slots=True)``. Every field must
    be an ``__init__`` argument, positional or keyword (no ``kw_only``, no
    ``init=False``, no ``InitVar``, no ``__post_init__``): anything else is
    refused rather than half supported.

    Raises:
        TypeError: ``cls`` is not such a dataclass, or a field of it is named
            as a name the new ``__init__`` uses (``MISSING``, ``_Cls``, a
            ``_set_`` name, ...).
    """
    params = getattr(cls, "__dataclass_params__", None)
    if params is None or not params.frozen or "__slots__" not in cls.__dict__:
        raise TypeError(f"{cls.__name__} is not a frozen, slotted dataclass")
    if hasattr(cls, "__post_init__") or getattr(cls, "__dataclass_fields__", {}).keys() != {
        f.name
        for f in dataclasses.fields(cls)  # type: ignore[arg-type]
    }:
        raise TypeError(f"{cls.__name__} has an InitVar, a ClassVar or a __post_init__")
    names: dict[str, Any] = {"MISSING": _MISSING}
    args: list[str] = []
    values: list[str] = []  # the factories first: nothing may raise once the class is lent
    slow: list[str] = []
    fast: list[str] = []
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if not f.init or f.kw_only:
            raise TypeError(f"{cls.__name__}.{f.name} is keyword-only or not an argument")
        name = f.name
        # The slot's own setter: the frozen class's __setattr__ is never asked.
        names[f"_set_{name}"] = cls.__dict__[name].__set__
        if f.default is not _MISSING:
            names[f"_default_{name}"] = f.default
            args.append(f"{name}=_default_{name}")
        elif f.default_factory is not _MISSING:
            names[f"_factory_{name}"] = f.default_factory
            args.append(f"{name}=MISSING")
            values.append(f"    if {name} is MISSING:\n        {name} = _factory_{name}()")
        else:
            args.append(name)
        slow.append(f"        _set_{name}(self, {name})")
        fast.append(f"    self.{name} = {name}")
    # The lent class: the same slots (so the same layout, which is what
    # `__class__` assignment checks), no __setattr__ of its own.
    lent = type(f"_{cls.__name__}Fields", (), {"__slots__": cls.__dict__["__slots__"]})
    probe = object.__new__(cls)
    _set_class(probe, lent)  # raises TypeError now if the layouts differ after all
    _set_class(probe, cls)
    names["_Cls"] = cls
    names["_Lent"] = lent
    names["_set_class"] = _set_class
    names["_type"] = type
    # An argument named as one of these would hide it from the body below.
    fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    clashes = sorted(fields & {*names, "self"})
    if clashes:
        raise TypeError(f"{cls.__name__} has a field named {clashes[0]!r}, a name fast_init uses")
    source = (
        f"def __init__(self, {', '.join(args)}):\n"
        + "".join(line + "\n" for line in values)
        + "    if _type(self) is not _Cls:  # a subclass: its layout may differ\n"
        + "".join(line + "\n" for line in slow)
        + "        return\n"
        + "    _set_class(self, _Lent)\n"
        + "".join(line + "\n" for line in fast)
        + "    _set_class(self, _Cls)\n"
    )
    exec(source, names)  # text built here from the field names only
    init = names["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    init.__doc__ = cls.__init__.__doc__
    cls.__init__ = init  # type: ignore[method-assign]
    return cls
