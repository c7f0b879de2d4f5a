"""The sagakit exception tree: every error the library raises is a `SagaError`.

Each message says what happened, to which run or step, and what the user can
do about it, so that an operator reading a log line needs nothing else.

```
SagaError
├── DefinitionError
│   └── DefinitionFileError      (sagakit.yamlfile: a YAML file's problems, with lines)
├── PermanentError               (raised by a step: fail at once, no retries)
├── StateError
├── RunNotFound
├── InvalidRunId                 (also a ValueError)
├── RunIdConflict
│   └── RunInputConflict
├── SagaNotRegistered
├── InvalidRunState
├── JournalMismatch
├── RunBusy
├── LeaseLost
├── RunTimeout                   (also a TimeoutError)
├── RunFailed                    (sagakit.run, beside the `Run` it carries: Run.raise_for_status)
├── ReservationBusy
└── StoreError
    └── SchemaVersionError
```
"""

from __future__ import annotations

from collections.abc import Sequence


class SagaError(Exception):
    """Base class of every error raised by sagakit."""


class DefinitionError(SagaError):
    """A saga definition breaks a rule (step kinds, names, signatures).

    Raised when the saga is defined or registered, never in the middle of a run.
    """


class PermanentError(SagaError):
    """Raise from a step or compensation to fail it at once, without retries.

    Use it for errors that retrying cannot fix (a card declined, a validation
    error). Any exception listed in a `RetryPolicy`'s ``permanent`` tuple is
    treated the same way.
    """


class StateError(SagaError):
    """A saga's state or a step's result is invalid or not JSON-serialisable."""


class RunNotFound(SagaError):
    """No run with the given id exists in the store."""

    def __init__(self, run_id: str) -> None:
        super().__init__(
            f"no run with id {run_id!r} in this store; `sagakit list` shows the runs it holds"
        )
        self.run_id = run_id


class InvalidRunId(SagaError, ValueError):
    """A run id given to start a saga breaks the run id rule (`sagakit.run.check_run_id`)."""

    def __init__(self, run_id: str, why: str) -> None:
        shown = run_id if len(run_id) <= 40 else f"{run_id[:40]}..."
        super().__init__(
            f"run id {shown!r} {why}; a run id is 1 to 200 printable characters, "
            "with no '/' and not only spaces"
        )
        self.run_id = run_id


class RunIdConflict(SagaError):
    """A run id given to start a saga already belongs to a run of another saga."""

    def __init__(self, run_id: str, existing: str, wanted: str) -> None:
        super().__init__(
            f"run id {run_id!r} already belongs to a run of saga {existing!r}, so it cannot "
            f"start saga {wanted!r}; choose another id"
        )
        self.run_id = run_id


class RunInputConflict(RunIdConflict):
    """A run id given to start a saga belongs to a run of it started with another input.

    Starting is idempotent only for the same request: the same id with the
    same input returns the existing run; the same id with another input is
    most likely two different requests that collided on one id, and the
    second must not be mistaken for the first.

    Attributes:
        run_id: The run id.
        saga: The saga's name.
        keys: The top-level keys of the state whose values differ (their
            values are not quoted: they may be sensitive).
    """

    def __init__(self, run_id: str, saga: str, keys: Sequence[str]) -> None:
        named = ", ".join(map(repr, keys))
        # Not RunIdConflict's own message, which is about another saga.
        SagaError.__init__(
            self,
            f"run id {run_id!r} already belongs to a run of saga {saga!r} started with "
            f"another input (it differs in {named}); the same id starts a run once, and "
            "again only with the same input: choose another id, or pass the run's own input",
        )
        self.run_id = run_id
        self.saga = saga
        self.keys = tuple(keys)


class SagaNotRegistered(SagaError):
    """A run belongs to a saga (name and version) this engine does not know."""

    def __init__(self, run_id: str, saga: str, version: str, *, loaded: Sequence[str] = ()) -> None:
        here = (
            f"; this engine has version(s) {', '.join(map(repr, loaded))} of that saga, "
            "and a run never moves to another version's code"
            if loaded
            else ""
        )
        super().__init__(
            f"run {run_id!r} belongs to saga {saga!r} version {version!r}, which this "
            f"engine has not registered{here}; register that version (engine.register, "
            "or --app with the module or YAML file that defines it) before acting on it"
        )
        self.run_id = run_id
        self.saga = saga
        self.version = version
        self.loaded = tuple(loaded)


class InvalidRunState(SagaError):
    """The action does not apply to a run in its current status."""

    def __init__(self, run_id: str, status: str, action: str, why: str | None = None) -> None:
        super().__init__(
            f"run {run_id!r} is {status}; "
            + (
                f"cannot {action}: {why}"
                if why
                else f"{action} applies only to a run that needs attention, to what it is halted on"
            )
        )
        self.run_id = run_id
        self.status = status


class JournalMismatch(SagaError):
    """A run's journal does not fit the saga definition registered for it.

    Typically a step was renamed or removed without a new saga version.
    """

    def __init__(self, run_id: str, saga: str, version: str, cause: Exception) -> None:
        super().__init__(
            f"the journal of run {run_id!r} does not fit saga {saga!r} version {version!r} "
            f"as registered ({type(cause).__name__}: {cause}); register the definition the "
            "run started with, or give changed definitions a new version"
        )
        self.run_id = run_id


class RunBusy(SagaError):
    """Another live process holds the lease of the run."""

    def __init__(self, run_id: str, owner: str | None) -> None:
        super().__init__(
            f"run {run_id!r} is being driven by {owner or 'another process'}; "
            "wait for its lease to lapse, or act on it from that process"
        )
        self.run_id = run_id
        self.owner = owner


class LeaseLost(SagaError):
    """This process no longer owns the run it tried to write (fencing).

    Another process claimed the run after this one's lease lapsed; every later
    write of this process to that run is refused, so the journal never records
    the same attempt twice.
    """

    def __init__(self, run_id: str) -> None:
        super().__init__(
            f"lost the lease on run {run_id!r}: another process took it over; "
            "this process will not write to it again"
        )
        self.run_id = run_id


class LeaseLapsed(LeaseLost):
    """This process could not renew a run's lease in time and let the run go.

    The store could not be reached to renew the lease (an outage, a cut
    connection) until too little of it was left to start a call: the drive
    stops before calling, so that the process that takes the run next is
    the only one running its step.
    """

    def __init__(self, run_id: str, reason: str) -> None:
        SagaError.__init__(
            self,
            f"could not renew the lease on run {run_id!r} in time ({reason}); "
            "stopped driving it so that another process can take it over",
        )
        self.run_id = run_id
        self.reason = reason


class RunTimeout(SagaError, TimeoutError):
    """A run did not settle within the time `AsyncEngine.wait` was given.

    The run goes on (or waits for a worker); only the wait gave up.
    """

    def __init__(self, run_id: str, timeout: float, status: str) -> None:
        super().__init__(
            f"run {run_id!r} did not settle within {timeout:g}s; it is still {status}. "
            "A run started with start() is driven by a worker (`sagakit worker`) or by "
            "engine.recover(); check that one serves its saga"
        )
        self.run_id = run_id
        self.timeout = timeout
        self.status = status


class ReservationBusy(SagaError):
    """Another run holds the reservation a step asked for (`StepContext.reserve`).

    Raised from ``ctx.reserve`` when the wait allowed ran out; the step's
    attempt fails with it, and its retry policy decides what comes next.
    """

    def __init__(self, name: str, holder: str, expires_at: float) -> None:
        super().__init__(
            f"reservation {name!r} is held by run {holder!r} until {expires_at:.3f} "
            "(seconds since the epoch)"
        )
        self.name = name
        self.holder = holder
        self.expires_at = expires_at


class ReservationLapsed(SagaError):
    """A step's success was not recorded: the run no longer holds a reservation it took.

    The store refuses a success commit that requires reservations (see
    `sagakit.store.Commit.requires`) when one of them expired or went to
    another run while the step ran. The step's effects may stand while
    another run held the name, so the driver journals the attempt as failed
    with an unknown outcome, as it does a timeout: it is retried per the
    step's policy, and compensated if the run rolls back.

    Attributes:
        run_id: The run whose commit was refused.
        name: The reservation that lapsed.
        holder: The run that holds it now, or None if nobody does.
        ttl: The time-to-live the step last gave it, in seconds, if known.
    """

    def __init__(
        self, run_id: str, name: str, holder: str | None, *, ttl: float | None = None
    ) -> None:
        after = "" if ttl is None else f" after {ttl:g} s"
        held = "nobody" if holder is None else f"run {holder!r}"
        super().__init__(
            f"reservation {name!r} of run {run_id!r} lapsed{after} and is held by {held}; "
            "the step's outcome is unknown (reserve with a longer ttl, or reserve "
            "again to extend it while the step runs)"
        )
        self.run_id = run_id
        self.name = name
        self.holder = holder
        self.ttl = ttl


class StoreError(SagaError):
    """The store could not be opened or used (missing file, bad URL, I/O error)."""


class SchemaVersionError(StoreError):
    """The database schema is newer than this version of sagakit understands."""


class EncryptionError(StoreError):
    """A run's stored data cannot be read or written with the encryption keys at hand.

    The run's data is encrypted and this process has no key (it refuses to
    drive or change the run), none of its keys decrypts it (a key it was
    written with was dropped), a key is not a Fernet key, or the
    ``cryptography`` package is missing. Nothing is written when it is raised.
    """
