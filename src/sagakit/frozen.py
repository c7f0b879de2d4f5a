"""A faster ``__init__`` for the frozen, slotted dataclasses made at every step.

A frozen dataclass's generated ``__init__`` sets each field through
``object.__setattr__`` (its own ``__setattr__`` refuses), and on CPython that
call costs over a thousand instructions a field: the engine makes two
`sagakit.journal.Event`, a `sagakit.store.Commit` and a
`sagakit.context.StepContext` at every step, about 45 fields in all.
`fast_init` gives such a class an ``__init__`` with the same signature,
defaults and default factories that sets each field through its slot's own
descriptor instead, at about half the cost. The class stays frozen: setting
a field afterwards still raises ``FrozenInstanceError``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

T = TypeVar("T")

_MISSING = dataclasses.MISSING


def fast_init(cls: type[T]) -> type[T]:
    """Replace the ``__init__`` of ``cls``, a frozen slotted dataclass, by a faster one.

    Apply it above ``@dataclass(frozen=True, slots=True)``. Every field must
    be an ``__init__`` argument, positional or keyword (no ``kw_only``, no
    ``init=False``, no ``InitVar``, no ``__post_init__``): anything else is
    refused rather than half supported.

    Raises:
        TypeError: ``cls`` is not such a dataclass.
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
    body: list[str] = []
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if not f.init or f.kw_only:
            raise TypeError(f"{cls.__name__}.{f.name} is keyword-only or not an argument")
        name = f.name
        # The slot's own setter: the frozen class's __setattr__ is never asked.
        names[f"_set_{name}"] = cls.__dict__[name].__set__
        if f.default is not _MISSING:
            names[f"_default_{name}"] = f.default
            args.append(f"{name}=_default_{name}")
            value = name
        elif f.default_factory is not _MISSING:
            names[f"_factory_{name}"] = f.default_factory
            args.append(f"{name}=MISSING")
            value = f"_factory_{name}() if {name} is MISSING else {name}"
        else:
            args.append(name)
            value = name
        body.append(f"    _set_{name}(self, {value})")
    source = f"def __init__(self, {', '.join(args)}):\n" + "\n".join(body or ["    pass"])
    exec(source, names)  # text built here from the field names only
    init = names["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    init.__doc__ = cls.__init__.__doc__
    cls.__init__ = init  # type: ignore[method-assign]
    return cls
