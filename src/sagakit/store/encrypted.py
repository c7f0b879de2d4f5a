"""Encryption at rest: a `Store` wrapper that encrypts the user's data with Fernet keys.

`EncryptedStore` wraps any store. What it writes of the user's data is
encrypted: a run's state as a whole, and in event and mail data the values
under `ENCRYPTED_KEYS` (a run's input, a step's result and what of it the
state keeps, a signal's payload). Each becomes an envelope,
``{"$encrypted": "<Fernet token>"}``, stored as JSON like any other value, so
no schema changes. What operators need to read stays readable: statuses,
step names, times, errors (exception messages and tracebacks), notes,
reasons, retry times. Reads decrypt with any of the keys (`MultiFernet`);
writes encrypt with the first. A value written before encryption was switched
on is plain and is read as it is, so an existing store can be switched on.

A process without keys never drives a run whose data it cannot read: the
engine checks each run it is about to drive or change (`refuse_encrypted`),
and the driver each mail it reads, and refuses with an `EncryptionError`.
`EncryptedStore.masked` is the keyless reading view the read-only commands
use: every encrypted value reads as `MASK`, and it writes nothing.

Keys come from the application (a secret manager, an environment variable):
``sagakit`` never stores them. Rotation: put the new key first everywhere,
restart, re-encrypt (`EncryptedStore.rotate`, ``sagakit keys rotate``), then
drop the old key. See docs/encryption.md.

Needs the ``cryptography`` package (``pip install -e '.[encryption]'`` from the repository);
this module imports it only when keys are given, so the envelope helpers work
without it.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, TypeGuard

from sagakit import jsonutil
from sagakit.errors import EncryptionError
from sagakit.journal import JSON, Event, RunStatus
from sagakit.jsonutil import encode_json
from sagakit.store.base import (
    FINISHED_STATUSES,
    Backlog,
    Commit,
    DataKind,
    DataRewrite,
    Lease,
    LocalTransaction,
    Mail,
    Purged,
    Reservation,
    Rewritten,
    RunCounts,
    RunCursor,
    RunFilter,
    RunRecord,
    Store,
)

if TYPE_CHECKING:
    from cryptography.fernet import Fernet, MultiFernet

__all__ = [
    "ENCRYPTED_KEYS",
    "ENVELOPE_KEY",
    "KEYS_VARIABLE",
    "MASK",
    "EncryptedStore",
    "Encryption",
    "Rotation",
    "generate_key",
    "holds_encrypted",
    "is_envelope",
    "keys_from_environment",
    "refuse_encrypted",
    "refuse_encrypted_mail",
]

ENVELOPE_KEY: Final = "$encrypted"
"""The one key of an envelope: ``{"$encrypted": "<Fernet token>"}``."""

ENCRYPTED_KEYS: Final = ("state", "result", "payload", "input")
"""The keys of event and mail data whose values are the user's data, and encrypted.

``state``: a run's input (``run_started``) and what of a result the state
keeps; ``result``: a step's or compensation's result; ``payload``: a
signal's payload (mail and ``signal_received``); ``input``: kept for data
that names its input so.
"""

MASK: Final = "<encrypted>"
"""What the keyless reading view (`EncryptedStore.masked`) shows for an encrypted value."""

KEYS_VARIABLE: Final = "SAGAKIT_ENCRYPTION_KEYS"
"""The environment variable the ``sagakit`` command reads its keys from, newest first."""

_NO_KEY: Final = (
    "and this process has no encryption key; give it the keys the store is written with "
    f"({KEYS_VARIABLE} for the sagakit command, encryption_keys= for Engine and open_store)"
)


def generate_key() -> str:
    """A new random Fernet key, as text (``sagakit keys generate`` prints one).

    Raises:
        EncryptionError: the ``cryptography`` package is not installed.
    """
    key: bytes = _fernet_module().Fernet.generate_key()
    return key.decode("ascii")


def is_envelope(value: object) -> TypeGuard[JSON]:
    """Whether ``value`` is an encrypted value's envelope."""
    return type(value) is dict and len(value) == 1 and ENVELOPE_KEY in value


def holds_encrypted(value: JSON) -> bool:
    """Whether a stored value (a state, an event's or a mail's data) holds encrypted data."""
    if is_envelope(value):
        return True
    return any(is_envelope(value.get(key)) for key in ENCRYPTED_KEYS)


def refuse_encrypted(record: RunRecord) -> None:
    """Refuse a run, read without keys, whose data is encrypted.

    The engine calls it on each run it is about to drive or change; a store
    read through an `EncryptedStore` with keys never shows an envelope, so
    this costs a dict lookup there.

    Raises:
        EncryptionError: the run's state is encrypted.
    """
    state = record.state
    if type(state) is dict and ENVELOPE_KEY in state and len(state) == 1:
        raise EncryptionError(f"the data of run {record.id!r} is encrypted, {_NO_KEY}")


def refuse_encrypted_mail(mail: Mail) -> None:
    """Refuse mail, read without keys, whose data is encrypted (see `refuse_encrypted`).

    Raises:
        EncryptionError: the mail's data holds encrypted values.
    """
    if holds_encrypted(mail.data):
        raise EncryptionError(
            f"run {mail.run_id!r} has encrypted {mail.kind} mail, {_NO_KEY}; "
            "the mail is kept for a process that has the key"
        )


def keys_from_environment(value: str | None = None) -> list[str] | None:
    """The keys `KEYS_VARIABLE` lists (comma-separated, newest first), or None if it is unset.

    Args:
        value: The variable's value (default: read from the environment).
    """
    if value is None:
        value = os.environ.get(KEYS_VARIABLE)
    keys = [key.strip() for key in (value or "").split(",") if key.strip()]
    return keys or None


def _fernet_module() -> Any:
    try:
        from cryptography import fernet
    except ImportError as exc:
        raise EncryptionError(
            f"encryption needs the cryptography package ({exc}); "
            "install it from the repository's root with: pip install -e '.[encryption]'"
        ) from exc
    return fernet


class Encryption:
    """Fernet keys: values are encrypted with the first, decrypted with any.

    Args:
        keys: Fernet keys (text or bytes, as `generate_key` makes them),
            newest first. Keep a retired key in the list until every value
            written with it has been re-encrypted (`EncryptedStore.rotate`).

    Raises:
        EncryptionError: no key, a key that is not a Fernet key (the key
            itself is never shown), or ``cryptography`` is missing.
    """

    __slots__ = ("_invalid", "_multi", "_newest", "count")

    def __init__(self, keys: Sequence[str | bytes]) -> None:
        if isinstance(keys, str | bytes):
            raise EncryptionError(
                "encryption keys are a list of Fernet keys, newest first; got a single "
                "string (split a comma-separated list first)"
            )
        fernet = _fernet_module()
        made: list[Fernet] = []
        for number, key in enumerate(keys, 1):
            try:
                made.append(fernet.Fernet(key.strip() if isinstance(key, str | bytes) else key))
            except (ValueError, TypeError):
                # The key is never quoted: it may be a real key with a typo.
                raise EncryptionError(
                    f"encryption key {number} of {len(keys)} is not a Fernet key (32 url-safe "
                    "base64-encoded bytes); make one with `sagakit keys generate`"
                ) from None
        if not made:
            raise EncryptionError("no encryption key given; make one with `sagakit keys generate`")
        self.count = len(made)
        """How many keys there are."""
        self._newest: Fernet = made[0]
        self._multi: MultiFernet = fernet.MultiFernet(made)
        self._invalid: type[Exception] = fernet.InvalidToken

    def seal(self, value: Any, what: str, run_id: str) -> JSON:
        """``value`` encrypted with the newest key, as an envelope.

        Raises:
            StateError: ``value`` is not JSON (the message names ``what`` and the run).
        """
        text = encode_json(value, what, run_id)
        return {ENVELOPE_KEY: self._newest.encrypt(text.encode()).decode("ascii")}

    def open(self, envelope: JSON, what: str, run_id: str) -> Any:
        """The value an envelope holds.

        Raises:
            EncryptionError: none of the keys decrypts it.
        """
        try:
            text = self._multi.decrypt(_token(envelope))
        except (self._invalid, TypeError, ValueError):
            raise EncryptionError(
                f"the {what} of run {run_id!r} cannot be decrypted with the "
                f"{self.count} encryption key(s) given: the key it was written with is "
                f"missing ({KEYS_VARIABLE} or encryption_keys), or the data was altered"
            ) from None
        return jsonutil.loads(text)

    def is_newest(self, envelope: JSON) -> bool:
        """Whether an envelope is encrypted with the newest key."""
        try:
            self._newest.decrypt(_token(envelope))
        except (self._invalid, TypeError, ValueError):
            return False
        return True

    def reseal(self, envelope: JSON, what: str, run_id: str) -> JSON:
        """An envelope encrypted again with the newest key (its value unchanged).

        Raises:
            EncryptionError: none of the keys decrypts it.
        """
        try:
            token = self._multi.rotate(_token(envelope))
        except (self._invalid, TypeError, ValueError):
            raise EncryptionError(
                f"the {what} of run {run_id!r} cannot be decrypted with the "
                f"{self.count} encryption key(s) given, so it cannot be re-encrypted: "
                "keep the key it was written with in the list until rotation has finished"
            ) from None
        return {ENVELOPE_KEY: token.decode("ascii")}


def _token(envelope: JSON) -> bytes:
    token = envelope[ENVELOPE_KEY]
    if not isinstance(token, str):
        raise TypeError("not a token")
    return token.encode("ascii")


@dataclass(frozen=True, slots=True)
class Rotation:
    """What `EncryptedStore.rotate` did.

    Attributes:
        rewritten: Rows rewritten, by table.
        reencrypted: Encrypted values re-encrypted with the newest key.
        current: Encrypted values already under the newest key (left as they were).
        plain: Values written before encryption was switched on: encrypted
            now if ``encrypt_plain`` was asked, else left plain.
    """

    rewritten: Rewritten
    reencrypted: int
    current: int
    plain: int


class EncryptedStore(Store):
    """A store whose user data is encrypted at rest (see the module's docstring).

    Every method of `Store` is passed to ``inner``: writes with the user's data
    encrypted, reads with it decrypted. Leases, timers, statuses and errors
    pass as they are.

    Args:
        inner: The store that keeps the data (any backend).
        keys: Fernet keys, newest first, or an `Encryption` made of them.

    Attributes:
        inner: The wrapped store.
        url: The wrapped store's URL.

    Raises:
        EncryptionError: no key, or a key is not a Fernet key.
    """

    def __init__(self, inner: Store, keys: Sequence[str | bytes] | Encryption) -> None:
        if isinstance(inner, EncryptedStore):
            raise EncryptionError("this store is encrypted already: wrap the store it wraps")
        self.inner = inner
        self.url = inner.url
        self._encryption: Encryption | None = (
            keys if isinstance(keys, Encryption) else Encryption(keys)
        )

    @classmethod
    def masked(cls, inner: Store) -> EncryptedStore:
        """A keyless view for reading: each encrypted value reads as `MASK`.

        A run's encrypted state reads as ``{"$encrypted": "<encrypted>"}``
        (still an envelope, so no engine drives it), an encrypted value in
        event or mail data as the text ``"<encrypted>"``. Every write is
        refused with an `EncryptionError`, plain runs' too: it is for the
        commands that only read.
        """
        view = cls.__new__(cls)
        view.inner = inner
        view.url = inner.url
        view._encryption = None
        return view

    @property
    def encryption(self) -> Encryption | None:
        """The keys, or None for the masked view."""
        return self._encryption

    # -- sealing and opening ------------------------------------------------------------

    def _keys(self, doing: str) -> Encryption:
        if self._encryption is None:
            raise EncryptionError(
                f"cannot {doing}: this view of the store has no encryption key and only reads"
            )
        return self._encryption

    def _seal_data(self, data: JSON, what: str, run_id: str) -> JSON:
        """Event or mail data with its user values encrypted (a new dict if any is)."""
        if not data or not any(key in data for key in ENCRYPTED_KEYS):
            return data
        encryption = self._keys(f"write {what} of run {run_id!r}")
        sealed = dict(data)
        for key in ENCRYPTED_KEYS:
            if key in sealed:
                sealed[key] = encryption.seal(sealed[key], f"{what} {key}", run_id)
        return sealed

    def _open_data(self, data: JSON, what: str, run_id: str) -> JSON:
        """Event or mail data with its encrypted values decrypted (or masked)."""
        opened: JSON | None = None
        for key in ENCRYPTED_KEYS:
            value = data.get(key)
            if is_envelope(value):
                if opened is None:
                    opened = dict(data)
                encryption = self._encryption
                opened[key] = (
                    MASK if encryption is None else encryption.open(value, f"{what} {key}", run_id)
                )
        return data if opened is None else opened

    def _open_state(self, state: JSON, run_id: str) -> JSON:
        if not is_envelope(state):
            return state
        encryption = self._encryption
        if encryption is None:
            return {ENVELOPE_KEY: MASK}
        opened = encryption.open(state, "state", run_id)
        if not isinstance(opened, dict):
            raise EncryptionError(f"the state of run {run_id!r} decrypts to no JSON object")
        return opened

    def _open_record(self, record: RunRecord) -> RunRecord:
        state = record.state
        if not is_envelope(state):
            return record
        return dataclasses.replace(record, state=self._open_state(state, record.id))

    def _seal_events(self, run_id: str, events: Sequence[Event]) -> tuple[Event, ...]:
        return tuple(
            event
            if not event.data
            else dataclasses.replace(
                event, data=self._seal_data(event.data, f"event {event.seq}", run_id)
            )
            for event in events
        )

    def _open_event(self, event: Event) -> Event:
        data = event.data
        if not data:
            return event
        opened = self._open_data(data, f"event {event.seq}", event.run_id)
        return event if opened is data else dataclasses.replace(event, data=opened)

    def _open_mail(self, mail: Mail) -> Mail:
        opened = self._open_data(mail.data, f"{mail.kind} mail", mail.run_id)
        return mail if opened is mail.data else dataclasses.replace(mail, data=opened)

    def seal_commit(self, commit: Commit) -> Commit:
        """``commit`` with its state and its events' user data encrypted.

        Raises:
            EncryptionError: this is the masked view.
            StateError: a value is not JSON.
        """
        run_id = commit.run_id
        encryption = self._keys(f"write to run {run_id!r}")
        return dataclasses.replace(
            commit,
            state=encryption.seal(commit.state, "state", run_id),
            events=self._seal_events(run_id, commit.events),
            sets=None,  # the sealed state has keys of its own
        )

    # -- lifecycle ----------------------------------------------------------------------

    async def open(self) -> None:
        """See `Store.open`."""
        await self.inner.open()

    async def close(self) -> None:
        """See `Store.close`."""
        await self.inner.close()

    async def migrate(self) -> tuple[int, int]:
        """See `Store.migrate`."""
        return await self.inner.migrate()

    async def wait_for_work(self, timeout: float) -> None:
        """See `Store.wait_for_work`."""
        await self.inner.wait_for_work(timeout)

    # -- writes -------------------------------------------------------------------------

    async def create_run(self, run: RunRecord, events: Sequence[Event]) -> tuple[RunRecord, bool]:
        """See `Store.create_run`."""
        encryption = self._keys(f"create run {run.id!r}")
        sealed = dataclasses.replace(run, state=encryption.seal(run.state, "state", run.id))
        stored, created = await self.inner.create_run(sealed, self._seal_events(run.id, events))
        return self._open_record(stored), created

    async def commit(self, commit: Commit) -> bool:
        """See `Store.commit`."""
        return await self.inner.commit(self.seal_commit(commit))

    async def post(self, run_id: str, kind: str, data: JSON, *, at: float) -> Mail | None:
        """See `Store.post`."""
        self._keys(f"post mail to run {run_id!r}")
        mail = await self.inner.post(
            run_id, kind, self._seal_data(data, f"{kind} mail", run_id), at=at
        )
        return None if mail is None else self._open_mail(mail)

    def local_transaction(self) -> LocalTransaction:
        """See `Store.local_transaction`: its commit is encrypted too."""
        self._keys("open a local transaction")
        return _EncryptedLocalTransaction(self.inner.local_transaction(), self.seal_commit)

    # -- reads --------------------------------------------------------------------------

    async def get_run(self, run_id: str) -> RunRecord | None:
        """See `Store.get_run`."""
        record = await self.inner.get_run(run_id)
        return None if record is None else self._open_record(record)

    async def list_runs(
        self,
        *,
        status: RunStatus | None = None,
        saga: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[RunRecord]:
        """See `Store.list_runs`."""
        records = await self.inner.list_runs(status=status, saga=saga, limit=limit, offset=offset)
        return [self._open_record(record) for record in records]

    async def page_runs(
        self,
        *,
        after: RunCursor | None = None,
        before: RunCursor | None = None,
        limit: int = 50,
        where: RunFilter | None = None,
    ) -> list[RunRecord]:
        """See `Store.page_runs`: the inner store's page, each run opened."""
        records = await self.inner.page_runs(after=after, before=before, limit=limit, where=where)
        return [self._open_record(record) for record in records]

    async def count_runs(self) -> RunCounts:
        """See `Store.count_runs`: counts only, nothing to decrypt."""
        return await self.inner.count_runs()

    async def backlog(self, *, now: float) -> Backlog:
        """See `Store.backlog`: counts only, nothing to decrypt."""
        return await self.inner.backlog(now=now)

    async def journal(self, run_id: str, *, after_seq: int = 0) -> list[Event]:
        """See `Store.journal`."""
        return [self._open_event(e) for e in await self.inner.journal(run_id, after_seq=after_seq)]

    async def journals(self, run_ids: Sequence[str]) -> dict[str, list[Event]]:
        """See `Store.journals`."""
        found = await self.inner.journals(run_ids)
        return {run_id: [self._open_event(e) for e in events] for run_id, events in found.items()}

    async def mail(self, run_id: str) -> list[Mail]:
        """See `Store.mail`."""
        return [self._open_mail(mail) for mail in await self.inner.mail(run_id)]

    # -- leases -------------------------------------------------------------------------

    async def claim(
        self, run_id: str, *, owner: str, now: float, lease_until: float
    ) -> RunRecord | None:
        """See `Store.claim`."""
        self._keys(f"claim run {run_id!r}")
        record = await self.inner.claim(run_id, owner=owner, now=now, lease_until=lease_until)
        return None if record is None else self._open_record(record)

    async def claim_due(
        self,
        *,
        owner: str,
        now: float,
        lease_until: float,
        limit: int,
        sagas: Sequence[tuple[str, str]] | None = None,
    ) -> list[RunRecord]:
        """See `Store.claim_due`."""
        self._keys("claim runs")
        records = await self.inner.claim_due(
            owner=owner, now=now, lease_until=lease_until, limit=limit, sagas=sagas
        )
        return [self._open_record(record) for record in records]

    async def owners(self) -> set[str]:
        """See `Store.owners`."""
        return await self.inner.owners()

    async def claim_held(
        self,
        owners: Sequence[str],
        *,
        owner: str,
        now: float,
        lease_until: float,
        limit: int,
        sagas: Sequence[tuple[str, str]] | None = None,
    ) -> list[RunRecord]:
        """See `Store.claim_held`."""
        self._keys("take over runs")
        records = await self.inner.claim_held(
            owners, owner=owner, now=now, lease_until=lease_until, limit=limit, sagas=sagas
        )
        return [self._open_record(record) for record in records]

    async def renew(
        self, leases: dict[str, Lease], *, lease_until: float, now: float | None = None
    ) -> set[str]:
        """See `Store.renew`."""
        return await self.inner.renew(leases, lease_until=lease_until, now=now)

    async def release(self, run_id: str, lease: Lease, *, hold_until: float | None = None) -> None:
        """See `Store.release`."""
        await self.inner.release(run_id, lease, hold_until=hold_until)

    # -- reservations -------------------------------------------------------------------

    async def reserve(
        self, name: str, *, run_id: str, now: float, expires_at: float
    ) -> Reservation:
        """See `Store.reserve`."""
        self._keys(f"reserve {name!r}")
        return await self.inner.reserve(name, run_id=run_id, now=now, expires_at=expires_at)

    async def reserve_all(
        self, names: Sequence[str], *, run_id: str, now: float, expires_at: float
    ) -> list[Reservation]:
        """See `Store.reserve_all`."""
        self._keys(f"reserve {', '.join(map(repr, names))}")
        return await self.inner.reserve_all(names, run_id=run_id, now=now, expires_at=expires_at)

    async def release_reservations(self, run_id: str, names: Sequence[str] | None = None) -> int:
        """See `Store.release_reservations`."""
        return await self.inner.release_reservations(run_id, names)

    async def reservations(
        self, *, run_id: str | None = None, now: float | None = None
    ) -> list[Reservation]:
        """See `Store.reservations`."""
        return await self.inner.reservations(run_id=run_id, now=now)

    # -- purging --------------------------------------------------------------------

    async def purge(
        self,
        *,
        before: float,
        statuses: Sequence[RunStatus] = FINISHED_STATUSES,
        limit: int = 500,
        archive: Callable[[Sequence[Purged]], None] | None = None,
    ) -> list[Purged]:
        """See `Store.purge`. Runs and journals come back as stored: still encrypted.

        A purge deletes; it needs no key, and an archive made from what it
        returns holds the data as the store held it.
        """
        return await self.inner.purge(
            before=before, statuses=statuses, limit=limit, archive=archive
        )

    # -- rewriting and rotation ---------------------------------------------------------

    async def rewrite_data(self, rewrite: DataRewrite, *, batch_size: int = 500) -> Rewritten:
        """See `Store.rewrite_data`: ``rewrite`` sees values decrypted; it returns plain values."""
        encryption = self._keys("rewrite the store's data")

        def through(kind: DataKind, run_id: str, value: JSON) -> JSON | None:
            if kind == "state":
                new = rewrite(kind, run_id, self._open_state(value, run_id))
                return None if new is None else encryption.seal(new, "state", run_id)
            what = "event" if kind == "event" else "mail"
            new = rewrite(kind, run_id, self._open_data(value, what, run_id))
            return None if new is None else self._seal_data(new, what, run_id)

        return await self.inner.rewrite_data(through, batch_size=batch_size)

    async def rotate(self, *, batch_size: int = 500, encrypt_plain: bool = False) -> Rotation:
        """Re-encrypt every encrypted value with the newest key, in place.

        Safe while workers run (see `Store.rewrite_data`); running it again
        rewrites nothing more. Afterwards the older keys may be dropped, once
        every process writes with the newest key (it is first in their lists).

        Args:
            batch_size: Rows per transaction.
            encrypt_plain: Also encrypt the values written before encryption
                was switched on (runs of processes without keys must be over).

        Raises:
            EncryptionError: a value that none of the keys decrypts (it names
                the run); the batches before it are re-encrypted.
        """
        encryption = self._keys("re-encrypt the store's data")
        counts = {"reencrypted": 0, "current": 0, "plain": 0}

        def value(item: Any, what: str, run_id: str) -> Any:
            """The item re-encrypted (or encrypted), or ``_SAME``."""
            if is_envelope(item):
                if encryption.is_newest(item):
                    counts["current"] += 1
                    return _SAME
                counts["reencrypted"] += 1
                return encryption.reseal(item, what, run_id)
            counts["plain"] += 1
            if encrypt_plain:
                return encryption.seal(item, what, run_id)
            return _SAME

        def rotate(kind: DataKind, run_id: str, stored: JSON) -> JSON | None:
            if kind == "state":
                new = value(stored, "state", run_id)
                return None if new is _SAME else new
            what = "event data" if kind == "event" else "mail data"
            changed: JSON | None = None
            for key in ENCRYPTED_KEYS:
                if key in stored:
                    new = value(stored[key], f"{what} {key}", run_id)
                    if new is not _SAME:
                        changed = changed if changed is not None else dict(stored)
                        changed[key] = new
            return changed

        rewritten = await self.inner.rewrite_data(rotate, batch_size=batch_size)
        return Rotation(rewritten, counts["reencrypted"], counts["current"], counts["plain"])


_SAME: Final = object()


class _EncryptedLocalTransaction(LocalTransaction):
    """A local transaction whose step record is encrypted as it is committed."""

    def __init__(self, inner: LocalTransaction, seal: Callable[[Commit], Commit]) -> None:
        self._inner = inner
        self._seal = seal
        self.connection = inner.connection

    def commit(self, commit: Commit) -> bool:
        """See `LocalTransaction.commit`."""
        try:
            sealed = self._seal(commit)
        except BaseException:
            self._inner.rollback()  # as a failed commit does: nothing of it stays
            raise
        return self._inner.commit(sealed)

    def rollback(self) -> None:
        """See `LocalTransaction.rollback`."""
        self._inner.rollback()

    def close(self) -> None:
        """See `LocalTransaction.close`."""
        self._inner.close()
