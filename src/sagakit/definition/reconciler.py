"""`Reconciler`: how a saga lists and removes the external resources its steps create.

A step that creates something outside sagakit (a team at an LLM proxy, a
bucket, a DNS record) tags it with ``ctx.idempotency_key``. A reconciler
declared on the saga lists every resource of one kind with the key it was
created under, and removes one; `sagakit.reconcile` matches the keys against
the journal to find the resources no run owns any more (see
docs/reconcile.md). Nothing here performs I/O: this is what the user declares.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sagakit.errors import DefinitionError

__all__ = ["ListResources", "Reconciler", "RemoveResource", "Resource"]


@dataclass(frozen=True, slots=True)
class Resource:
    """One external resource, as a reconciler's ``list`` function tells of it.

    Attributes:
        id: The resource's id at the outside system (what ``remove`` needs).
        idempotency_key: The ``ctx.idempotency_key`` it was created under
            (``run_id/step``), as the outside system keeps it; None or a key
            of another shape means sagakit did not create it, and it is never
            touched.
        created_at: When it was created (seconds since the epoch, or an
            aware `datetime`), if the outside system says; a resource younger
            than the grace period is never an orphan.
        name: A label to show beside the id (an alias), if any.
    """

    id: str
    idempotency_key: str | None
    created_at: float | None = None
    name: str | None = None

    @classmethod
    def of(cls, value: Resource | Mapping[str, Any], *, kind: str) -> Resource:
        """A resource from what ``list`` returned: a `Resource` or a mapping of its fields.

        Raises:
            ValueError: it is neither, or its id is missing or not a string.
        """
        if isinstance(value, Resource):
            resource = value
        elif isinstance(value, Mapping):
            try:
                resource = cls(
                    id=value["id"],
                    idempotency_key=value.get("idempotency_key"),
                    created_at=value.get("created_at"),
                    name=value.get("name"),
                )
            except KeyError:
                raise ValueError(f"a {kind} listed has no 'id': {sorted(value)}") from None
        else:
            raise ValueError(f"a {kind} listed is a {type(value).__name__}, not a Resource or dict")
        if not isinstance(resource.id, str) or not resource.id:
            raise ValueError(f"a {kind} listed has the id {resource.id!r}, not a non-empty string")
        key = resource.idempotency_key
        if key is not None and not isinstance(key, str):
            raise ValueError(
                f"{kind} {resource.id!r} has the idempotency key {key!r}, not a string"
            )
        created = resource.created_at
        if isinstance(created, datetime):
            if created.tzinfo is None:
                raise ValueError(f"{kind} {resource.id!r}: created_at is a naive datetime")
            resource = Resource(resource.id, key, created.timestamp(), resource.name)
        elif created is not None and (
            isinstance(created, bool)
            or not isinstance(created, int | float)
            or not math.isfinite(created)
        ):
            raise ValueError(f"{kind} {resource.id!r}: created_at {created!r} is not a time")
        elif created is not None:
            resource = Resource(resource.id, key, float(created), resource.name)
        return resource


ListResources = Callable[
    [], "Iterable[Resource | Mapping[str, Any]] | Awaitable[Iterable[Resource | Mapping[str, Any]]]"
]
"""A reconciler's ``list``: every resource of its kind (sync or async)."""

RemoveResource = Callable[[Resource], "Any | Awaitable[Any]"]
"""A reconciler's ``remove``: delete one resource (sync or async); raising means it failed."""


@dataclass(frozen=True, slots=True)
class Reconciler:
    """How to list and remove the external resources of one kind a saga's step creates.

    Declared on the saga (``Saga(..., reconcilers=[...])`` or
    `Saga.reconciler`). ``sagakit reconcile`` calls ``list``, matches each
    resource's idempotency key against the journal, and calls ``remove``
    on the orphans only when told to (``--apply``).

    Args:
        kind: What the resources are (``"team"``, ``"key"``), as reports name them.
        list: Returns every resource of the kind (`Resource` objects, or
            dicts with ``id``, ``idempotency_key`` and optionally
            ``created_at`` and ``name``); sync or async.
        remove: Deletes one resource; sync or async. It may be called for
            a resource that is gone meanwhile: treat that as done.
        step: The step whose action creates the resources; a resource whose
            key names another step is left alone. None: any step of the saga.

    Reconcilers run in the order declared: declare the resources that
    depend on others first (the keys before the team that holds them).
    """

    kind: str
    list: ListResources
    remove: RemoveResource
    step: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.kind, str) or not self.kind.strip():
            raise DefinitionError(
                f"a reconciler needs a kind (a non-empty string), got {self.kind!r}"
            )
        for name in ("list", "remove"):
            if not callable(getattr(self, name)):
                raise DefinitionError(f"reconciler {self.kind!r}: {name} must be callable")
        if self.step is not None and (not isinstance(self.step, str) or not self.step):
            raise DefinitionError(f"reconciler {self.kind!r}: step must be a step's name")
