"""The ``sagakit keys`` commands: make an encryption key, re-encrypt a store with the newest.

The keys come from ``SAGAKIT_ENCRYPTION_KEYS`` (comma-separated Fernet keys,
newest first), as for every command that opens a store; no command takes a
key as an argument (it would be kept in shell histories and shown by ``ps``)
and none prints one, but ``generate``, whose output is the new key (with
``--json`` too: ``sagakit/key/v1`` holds it). ``rotate --json`` prints only
counts (``sagakit/rotation/v1``).
"""

from __future__ import annotations

import asyncio

import click

from sagakit.cli.common import console
from sagakit.cli.jsonout import emit, json_option, key_document, rotation_document
from sagakit.cli.options import db_option, shown_path, shown_url, use_db
from sagakit.store import open_store
from sagakit.store.encrypted import (
    KEYS_VARIABLE,
    EncryptedStore,
    Rotation,
    generate_key,
    keys_from_environment,
)

# Rows per transaction: a page holds the rows it rewrites locked this long.
_BATCH = 500
_MOST_BATCH = 100_000


@click.group()
def keys() -> None:
    """Encryption keys of a store's data (see docs/encryption.md).

    Keys are read from SAGAKIT_ENCRYPTION_KEYS, comma-separated, newest first.
    """


@keys.command()
@json_option
def generate(as_json: bool) -> None:
    """Print a new random encryption key (a Fernet key).

    Put it first in SAGAKIT_ENCRYPTION_KEYS (or the application's
    encryption_keys) to encrypt with it; keep it in a secret manager. With
    --json the key is in the document's "key" (printing it is the command's
    purpose).
    """
    key = generate_key()
    if as_json:
        emit(key_document(key))
    else:
        click.echo(key)


@keys.command()
@db_option
@click.option(
    "--batch-size",
    type=click.IntRange(min=1, max=_MOST_BATCH),
    default=_BATCH,
    show_default=True,
    help="Rows re-encrypted per transaction.",
)
@click.option(
    "--encrypt-plain",
    is_flag=True,
    help="Also encrypt the data written before encryption was switched on.",
)
@json_option
def rotate(db: str, batch_size: int, encrypt_plain: bool, as_json: bool) -> None:
    """Re-encrypt every encrypted value of the store with the newest key.

    The newest key is the first of SAGAKIT_ENCRYPTION_KEYS; the others must
    include every key the store's data was written with. Safe while workers
    run, and running it again rewrites nothing more. The procedure: put the
    new key first everywhere, restart the workers, run this, then drop the
    old key.
    """
    found = keys_from_environment()
    if found is None:
        raise click.ClickException(
            f"set {KEYS_VARIABLE} to the store's keys, newest first "
            "(`sagakit keys generate` makes a new one)"
        )
    url, path = use_db(db)
    if url.lower().startswith("memory:"):
        raise click.ClickException(
            "a memory:// store lives only in the process that made it: nothing to re-encrypt"
        )
    if path is not None and not path.is_file():
        raise click.ClickException(f"no sagakit database at {shown_path(path)}; check --db")
    store = EncryptedStore(open_store(url), found)

    async def run() -> Rotation:
        try:
            await store.open()
            return await store.rotate(batch_size=batch_size, encrypt_plain=encrypt_plain)
        finally:
            await store.close()

    done = asyncio.run(run())
    if as_json:
        emit(rotation_document(shown_url(db), done, encrypt_plain=encrypt_plain))
        return
    rows = done.rewritten
    console.print(
        f"re-encrypted with the newest key: {done.reencrypted} values "
        f"({rows.runs} runs, {rows.events} events and {rows.mail} mail rewritten)",
        soft_wrap=True,
    )
    console.print(f"already under the newest key: {done.current} values", soft_wrap=True)
    if encrypt_plain:
        console.print(f"plain values encrypted: {done.plain}", soft_wrap=True)
    elif done.plain:
        console.print(
            f"plain values, written before encryption was switched on: {done.plain}, "
            "left as they are (--encrypt-plain encrypts them)",
            soft_wrap=True,
        )
