"""`SagaRegistry`: the sagas an engine knows, by name and version.

It also shows a stored run through its saga's state model, with the exception
behind its error when this process still remembers it (`Failures`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sagakit import core
from sagakit.definition import Saga, version_key
from sagakit.driver import Failures
from sagakit.errors import JournalMismatch, SagaError, SagaNotRegistered
from sagakit.journal import JSON, ErrorInfo, Event, RunStatus
from sagakit.run import Run
from sagakit.store import RunRecord


class SagaRegistry:
    """The sagas registered in one engine, every version of each.

    A run only ever runs on its own version's code: a run is matched to the
    saga of its exact name and version, never to another version.

    Attributes:
        failures: The exceptions of calls that failed for good in this
            process, which the drives remember and `to_run` hands back.
    """

    def __init__(self) -> None:
        self._sagas: dict[tuple[str, str], Saga[Any]] = {}
        self.failures = Failures()

    def register(self, *sagas: Saga[Any]) -> None:
        """Make sagas known here; a saga of the same name and version is replaced.

        Raises:
            DefinitionError: a saga's definition breaks a rule.
        """
        for saga in sagas:
            saga.plan()  # validates
            self._sagas[(saga.name, saga.version)] = saga

    @property
    def sagas(self) -> tuple[Saga[Any], ...]:
        """The sagas registered (every version of each)."""
        return tuple(self._sagas.values())

    def versions(self, name: str) -> list[str]:
        """The versions of saga ``name`` registered here, oldest first."""
        return sorted((v for n, v in self._sagas if n == name), key=version_key)

    def find(self, name: str, version: str) -> Saga[Any] | None:
        """The saga registered under this name and version, or None."""
        return self._sagas.get((name, version))

    def saga(self, name: str, version: str | None = None) -> Saga[Any]:
        """A registered saga by name: the given version, or the newest.

        Versions compare part by part, numbers as numbers (``1.10`` is newer
        than ``1.9``).

        Raises:
            SagaError: no saga of that name (or that version) is registered.
        """
        versions = self.versions(name)
        if not versions:
            known = ", ".join(sorted({n for n, _ in self._sagas})) or "none"
            raise SagaError(f"no saga named {name!r} is registered (registered: {known})")
        if version is None:
            version = versions[-1]
        saga = self._sagas.get((name, str(version)))
        if saga is None:
            raise SagaError(
                f"saga {name!r} has no version {version!r} registered "
                f"(registered: {', '.join(versions)})"
            )
        return saga

    def saga_for(self, record: RunRecord) -> Saga[Any]:
        """The registered saga a run belongs to: its own name and version, never another.

        Raises:
            SagaNotRegistered: that name and version are not registered.
        """
        saga = self._sagas.get((record.saga, record.version))
        if saga is None:
            raise SagaNotRegistered(
                record.id, record.saga, record.version, loaded=self.versions(record.saga)
            )
        return saga

    def replay(self, record: RunRecord, events: Sequence[Event]) -> tuple[Saga[Any], core.Progress]:
        """A run's saga and its progress, its journal folded by that saga's plan.

        What an engine does with every run it claims before it drives it, and
        what `sagakit check` does with every run it checks: a run this refuses
        is never driven here.

        Raises:
            SagaNotRegistered: the run's name and version are not registered.
            JournalMismatch: the journal does not fit the registered saga (it
                names a step the definition no longer has).
        """
        saga = self.saga_for(record)
        try:
            return saga, core.replay(saga.plan(), events)
        except (KeyError, ValueError) as exc:
            raise JournalMismatch(record.id, record.saga, record.version, exc) from exc

    def to_run(self, record: RunRecord, *, created: bool = False) -> Run:
        """The `Run` a stored row shows.

        Its state is loaded by its saga's model when that saga is registered
        here (raw JSON otherwise); its ``exception`` is the one its error
        records, if this process raised it and still remembers it.

        Args:
            record: The stored row.
            created: Whether the call the run is returned from created it.
        """
        return self.run_of(
            record.id,
            record.saga,
            record.version,
            record.status,
            record.state,
            record.error,
            record.created_at,
            record.updated_at,
            record.owner,
            record.mail,
            created,
        )

    def run_of(  # noqa: PLR0917  # positional: the engine calls it for every run it drives
        self,
        run_id: str,
        saga_name: str,
        version: str,
        status: RunStatus | str,
        data: JSON,
        error: JSON | None,
        created_at: float,
        updated_at: float,
        owner: str | None,
        mail: int,
        created: bool,
    ) -> Run:
        """`to_run` of a row given field by field (no `RunRecord` made for it)."""
        saga = self._sagas.get((saga_name, version))
        state: Any = data
        if saga is not None and saga.state_type is not None:
            try:
                state = saga.load_state(data)
            except SagaError:
                state = dict(data)  # an old row the model no longer accepts: show raw
        info: ErrorInfo | None = None
        compensation_errors: tuple[ErrorInfo, ...] = ()
        if error:  # most runs have none: no lookups, no generator
            cause = error.get("cause")
            info = ErrorInfo.from_json(cause) if cause else None
            compensation_errors = tuple(
                ErrorInfo.from_json(e) for e in error.get("compensation", [])
            )
        # Positional, in field order: keywords cost a dict, for every run.
        return Run(
            run_id,
            saga_name,
            version,
            # The enum call only for a plain string: it costs about as much as the rest.
            status if type(status) is RunStatus else RunStatus(status),
            state,
            data,
            info,  # error
            compensation_errors,
            created_at,
            updated_at,
            owner,
            mail,  # pending
            created,
            None if info is None else self.failures.recall(run_id, info),  # exception
        )
