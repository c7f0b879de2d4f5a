"""Stores keep runs and their journals: in memory, in SQLite or in PostgreSQL.

`open_store` picks the backend from a URL's scheme. Every backend honours the
contract of `sagakit.store.base.Store` and passes the same contract tests
(`sagakit.store.testing`, which a third-party backend can run too).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Final
from urllib.parse import unquote

from sagakit.errors import StoreError
from sagakit.store.base import (
    ACTIVE_STATUSES,
    FINISHED_STATUSES,
    Backlog,
    Commit,
    Lease,
    LocalTransaction,
    Mail,
    Purged,
    Reservation,
    RunCounts,
    RunCursor,
    RunFilter,
    RunRecord,
    Store,
    purge_statuses,
)

__all__ = [
    "ACTIVE_STATUSES",
    "FINISHED_STATUSES",
    "Backlog",
    "Commit",
    "Lease",
    "LocalTransaction",
    "Mail",
    "Purged",
    "Reservation",
    "RunCounts",
    "RunCursor",
    "RunFilter",
    "RunRecord",
    "Store",
    "open_store",
    "purge_statuses",
    "redact_text",
    "redact_url",
]

_SUPPORTED = (
    "memory://, memory://NAME, sqlite:///relative/path.db, sqlite:////absolute/path.db, "
    "postgresql://user@host/database"
)


def open_store(
    url: str,
    *,
    read_only: bool = False,
    encryption_keys: Sequence[str | bytes] | None = None,
    **options: Any,
) -> Store:
    """Make the store a URL names. No I/O happens until ``await store.open()``.

    Args:
        url: ``memory://`` (private), ``memory://NAME`` (shared by name in this
            process), ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db``
            or ``postgresql://user:password@host:port/database``.
        read_only: Open it for reading only: `Store.open` then never creates
            a file or a schema, nor migrates one, and a store that is missing
            or of another schema version is a `StoreError` that says so. The
            memory store ignores it (it has nothing to create).
        encryption_keys: Fernet keys, newest first: the store is wrapped in an
            `sagakit.store.encrypted.EncryptedStore`, which encrypts the
            user's data at rest (needs ``pip install -e '.[encryption]'`` from the repository).
        options: Backend options, such as ``synchronous="normal"`` for SQLite.

    Raises:
        StoreError: the scheme is not supported, or an option is unknown.
        EncryptionError: a key is not a Fernet key, or cryptography is missing.
    """
    if encryption_keys is not None:
        from sagakit.store.encrypted import EncryptedStore

        return EncryptedStore(open_store(url, read_only=read_only, **options), encryption_keys)
    scheme = url.partition(":")[0].lower()
    if scheme == "memory":
        if options:
            raise StoreError(f"the memory store takes no options, got: {', '.join(options)}")
        from sagakit.store.memory import MemoryStore

        return MemoryStore(url)
    if scheme == "sqlite":
        from sagakit.store.sqlite import SQLiteStore

        try:
            return SQLiteStore(url, read_only=read_only, **options)
        except TypeError as exc:
            raise StoreError(f"unknown option for the SQLite store: {exc}") from exc
    if scheme in ("postgresql", "postgres"):
        try:
            from sagakit.store.postgresql import PostgresStore
        except ImportError as exc:
            raise StoreError(
                f"PostgreSQL stores need psycopg 3 and psycopg-pool ({exc}); "
                "install them from the repository's root with: pip install -e '.[postgresql]'"
            ) from exc
        try:
            return PostgresStore(url, read_only=read_only, **options)
        except TypeError as exc:
            raise StoreError(f"unknown option for the PostgreSQL store: {exc}") from exc
    raise StoreError(f"unsupported store URL {redact_url(url)!r}; supported forms: {_SUPPORTED}")


# libpq's options that hold a secret; libpq decodes percent-escapes in a URL's
# option names too, so ``pass%77ord`` is one of them.
_SECRET_KEYS: Final = frozenset({"password", "sslpassword"})
# Each pattern below starts only where a run of its characters starts (the
# look-behind): tried at every position of a long run, as in a 20,000-character
# run id, it took time in the square of its length. The matches are the same.
# ``scheme://user:password@``. libpq ends the credentials at the first "@"
# before any "/" (a "?" or "#" does not end them), Python's urlsplit at the
# last: mask up to the last, which covers both.
_CREDENTIALS: Final = re.compile(
    r"(?<![A-Za-z0-9+.-])(?P<pre>[0-9+.-]*)"
    r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:@/]*:)(?P<secret>[^/]*)@"
)
# ``key=value`` in a URL's query (``&``-separated) or a libpq keyword string
# (space-separated, a value maybe quoted: ``password = 'a b'``).
_OPTION: Final = re.compile(
    r"(?<![A-Za-z0-9_%])"
    r"(?P<key>[A-Za-z0-9_%]+)(?P<eq>\s*=\s*)(?P<value>'(?:[^'\\]|\\.)*'?|[^&\s#]*)"
)
_MASK: Final = "***"


def redact_url(url: str) -> str:
    """The URL with its passwords masked, fit for messages and logs.

    Masks the password in ``user:password@`` and the value of a ``password``
    (or ``sslpassword``) option, in a URL's query or a libpq keyword string
    (``host=db password=...``), whatever the scheme: a mistyped one too.
    """
    shown = _CREDENTIALS.sub(rf"\g<pre>\g<head>{_MASK}@", url)

    def mask(match: re.Match[str]) -> str:
        if unquote(match["key"]).strip().lower() not in _SECRET_KEYS:
            return match[0]
        return f"{match['key']}{match['eq']}{_MASK}"

    return _OPTION.sub(mask, shown)


def redact_text(text: str, url: str) -> str:
    """``text`` (a driver's message, say) with every password ``url`` holds masked.

    A driver may quote part of the URL it was given (libpq quotes a badly
    percent-encoded password whole), so the secrets are looked for as they
    are written in the URL and as decoded.
    """
    secrets: set[str] = set()
    for match in _CREDENTIALS.finditer(url):
        secrets.add(match["secret"])
    for match in _OPTION.finditer(url):
        if unquote(match["key"]).strip().lower() in _SECRET_KEYS:
            value = match["value"]
            secrets.add(value)
            if value.startswith("'"):
                secrets.add(value.strip("'"))
    for secret in list(secrets):
        secrets.add(unquote(secret))
    # The longest first, so that a secret inside another is not left half shown.
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        if len(secret) >= 4:
            text = text.replace(secret, _MASK)
        else:
            # A short one is masked only where it stands alone, not inside every word.
            text = re.sub(rf"(?<![A-Za-z0-9]){re.escape(secret)}(?![A-Za-z0-9])", _MASK, text)
    return text
