"""JSON encoding for states, results and journal data.

Everything sagakit stores is JSON (never pickle). pydantic-core does the
encoding: it is fast and already a dependency. Every store encodes with
`encode_json`, so that what one store accepts every other store accepts too
(a saga that runs on SQLite runs on PostgreSQL).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, Final

import pydantic_core
from typing_extensions import TypeIs

from sagakit.errors import StateError

if TYPE_CHECKING:
    from pydantic import BaseModel


def is_model(value: object) -> TypeIs[BaseModel]:
    """Whether ``value`` is a pydantic model instance, without importing pydantic's models.

    A model exists only once ``pydantic.main`` (where `BaseModel` is defined)
    has been imported, by the application that made it; until then nothing
    can be one. So a process whose sagas keep plain dicts never pays for
    importing pydantic's model machinery (a few hundred milliseconds at start).
    """
    module = sys.modules.get("pydantic.main")
    return module is not None and isinstance(value, module.BaseModel)


def is_model_class(value: object) -> TypeIs[type[BaseModel]]:
    """Whether ``value`` is a pydantic model class (see `is_model`)."""
    module = sys.modules.get("pydantic.main")
    return module is not None and isinstance(value, type) and issubclass(value, module.BaseModel)


_to_json = pydantic_core.to_json

to_json = pydantic_core.to_json
"""pydantic-core's ``to_json``: a value as JSON bytes (what the stores encode with)."""

ValidationError = pydantic_core.ValidationError
"""pydantic-core's ``ValidationError``."""


def dumps(value: Any) -> str:
    """Encode a JSON-ready value to text."""
    return pydantic_core.to_json(value).decode()


def loads(text: str | bytes) -> Any:
    """Decode JSON text."""
    return pydantic_core.from_json(text)


def loads_strict(text: str | bytes) -> Any:
    """Decode JSON text, refusing NaN and Infinity (which JSON does not have).

    Raises:
        ValueError: the text is not strict JSON.
    """
    return pydantic_core.from_json(text, allow_inf_nan=False)


def to_jsonable(value: Any, where: str) -> Any:
    """Return ``value`` as plain JSON data, or say clearly why it is not.

    Values are converted the way pydantic serialises them (a tuple or set
    becomes a list, a datetime an ISO string, a model a dict), and the result
    is what every later reader sees, so a step sees the same data before and
    after a crash. What has no JSON form (an arbitrary object, NaN or
    Infinity, which PostgreSQL's jsonb refuses) is refused on every store, so
    a saga that works on SQLite also works on PostgreSQL.

    Raises:
        StateError: ``value`` holds something JSON cannot represent.
    """
    try:
        text = pydantic_core.to_json(value, serialize_unknown=False)
    except (pydantic_core.PydanticSerializationError, ValueError, TypeError) as exc:
        raise StateError(f"{where} is not JSON-serialisable: {exc}") from exc
    # pydantic writes a secret as its mask: stored so, the secret would be lost
    # for every later reader. The mask in the text is cheap to look for; only
    # then is the value walked to tell a secret from a string of asterisks.
    if _SECRET_MASK in text and _holds_secret(value):
        raise StateError(
            f"{where} holds a pydantic secret (SecretStr, SecretBytes or Secret), which "
            "JSON would store as '**********', losing it; keep a reference to the secret "
            "instead, or its plain value in a field marked Sensitive (shown as ***)"
        )
    try:
        return pydantic_core.from_json(text, allow_inf_nan=False)
    except ValueError as exc:
        if "recursion limit" in str(exc):
            # pydantic writes lists and dicts nested deeper than it reads
            # back: stored, such a value could never be read again.
            raise StateError(
                f"{where} nests lists and dicts more than {DEEPEST} levels deep, which "
                "sagakit cannot read back; flatten it"
            ) from None
        raise StateError(
            f"{where} holds NaN or Infinity, which JSON cannot store; use None or a string"
        ) from None


DEEPEST: Final = 200
"""How deep lists and dicts may nest in JSON that pydantic-core reads back
(its ``from_json`` refuses deeper, which its ``to_json`` writes)."""


_SECRET_MASK = b"**********"


def _holds_secret(value: Any, depth: int = 0) -> bool:
    """Whether ``value`` holds a pydantic secret, in containers or models, at any depth."""
    # Here only when the mask is in the text: rare enough to import pydantic for.
    import pydantic

    if isinstance(value, pydantic.SecretStr | pydantic.SecretBytes | pydantic.Secret):
        return True
    if depth > _SECRET_DEPTH:  # deeper than JSON is accepted anywhere in sagakit
        return False
    if isinstance(value, dict):
        return any(_holds_secret(item, depth + 1) for item in value.values())
    if isinstance(value, list | tuple | set | frozenset):
        return any(_holds_secret(item, depth + 1) for item in value)
    if is_model(value):
        return any(
            _holds_secret(getattr(value, name), depth + 1) for name in type(value).model_fields
        )
    return False


_SECRET_DEPTH = 200


def encode_json(value: Any, what: str, run_id: str) -> str:
    """``value`` as JSON text, or a `StateError` that names the run and the part.

    NaN and Infinity are refused: JSON has no such values and PostgreSQL's
    jsonb cannot store them.
    """
    if type(value) is dict and not value:
        return "{}"  # most events' data: no encoder needed to say so
    try:
        # `dumps` written out: this runs for the state and each event of a commit.
        text = _to_json(value).decode()
    except (ValueError, TypeError) as exc:  # pydantic's serialisation error is a ValueError
        raise StateError(f"the {what} of run {run_id!r} is not JSON-serialisable: {exc}") from exc
    if "NaN" in text or "Infinity" in text:
        try:  # the strict parse runs only when such a value could be there
            loads_strict(text)
        except ValueError:
            raise StateError(
                f"the {what} of run {run_id!r} holds NaN or Infinity, which JSON cannot "
                "store; use None or a string"
            ) from None
    return text
