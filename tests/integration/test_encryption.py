"""Encryption at rest (`sagakit.store.encrypted`), through the engine and the stores.

What is stored of the user's data is encrypted; a process with the keys runs
as before; one without them never drives, changes or answers an encrypted
run; a wrong key is one line naming the run; rotation re-encrypts everything
in place, losing no write made meanwhile.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from sagakit import AsyncEngine, Engine, RunStatus, Saga, Worker
from sagakit.errors import EncryptionError
from sagakit.journal import Event, EventKind
from sagakit.store import Mail, RunRecord, Store, open_store
from sagakit.store.base import Rewritten
from sagakit.store.encrypted import (
    ENCRYPTED_KEYS,
    MASK,
    EncryptedStore,
    Encryption,
    generate_key,
    is_envelope,
)
from sagakit.store.testing import T0, change, new_run, opened, steps

SECRET = "4111-1111-1111-1111"
PIN = "pin-97531"
A, B = generate_key(), generate_key()


def vault() -> Saga[Any]:
    saga: Saga[Any] = Saga("vault")

    @saga.step
    def tokenize(state: dict[str, Any], ctx: Any) -> dict[str, Any]:
        return {"token": f"tok-{state['card'][-4:]}"}

    saga.wait_for("approve")

    @saga.step
    def charge(state: dict[str, Any], ctx: Any) -> dict[str, Any]:
        return {"charged": f"{state['card']}/{state['pin']}"}

    return saga


Snapshot = list[tuple[RunRecord, list[Event], list[Mail]]]


async def snapshot(url: str) -> Snapshot:
    """Every run of the store as stored (no keys): its row, journal and mail."""
    async with opened(open_store(url)) as store:
        runs = await store.list_runs(limit=1000)
        return [(run, await store.journal(run.id), await store.mail(run.id)) for run in runs]


def stored_text(shot: Snapshot) -> str:
    return json.dumps([(r.state, [e.data for e in j], [m.data for m in m_]) for r, j, m_ in shot])


def paused_encrypted(url: str, run_id: str = "v1") -> None:
    with Engine(url, encryption_keys=[A]) as engine:
        run = engine.run(vault(), {"card": SECRET}, run_id=run_id)
        assert run.status is RunStatus.PAUSED


# -- what is stored ----------------------------------------------------------------------


def test_user_data_is_stored_encrypted_and_runs_as_before(store_url: str) -> None:
    with Engine(store_url, encryption_keys=[A]) as engine:
        engine.run(vault(), {"card": SECRET}, run_id="v1")
        run = engine.signal("v1", "approve", {"pin": PIN})
        assert run.status is RunStatus.COMPLETED
        assert run.data == {
            "card": SECRET,
            "token": "tok-1111",
            "pin": PIN,
            "charged": f"{SECRET}/{PIN}",
        }
        kinds = [e.kind for e in engine.history("v1")]
        assert EventKind.SIGNAL_RECEIVED in kinds
        assert engine.history("v1")[0].data["state"] == {"card": SECRET}
    shot = asyncio.run(snapshot(store_url))
    ((row, journal, _),) = shot
    assert is_envelope(row.state)
    for event in journal:
        for key in ENCRYPTED_KEYS:
            if key in event.data:
                assert is_envelope(event.data[key]), (event.kind, key)
    text = stored_text(shot)
    assert SECRET not in text
    assert PIN not in text
    assert "tok-1111" not in text
    # Operators' fields stay readable.
    assert [e.data.get("status") for e in journal if e.kind is EventKind.RUN_FINISHED] == [
        "completed"
    ]


def test_a_run_started_before_encryption_was_switched_on_finishes_with_it(
    store_url: str,
) -> None:
    with Engine(store_url) as plain:
        plain.run(vault(), {"card": SECRET}, run_id="v1")
    with Engine(store_url, encryption_keys=[A]) as engine:
        engine.register(vault())
        run = engine.signal("v1", "approve", {"pin": PIN})
        assert run.status is RunStatus.COMPLETED
        assert run.data["charged"] == f"{SECRET}/{PIN}"
    ((row, journal, _),) = asyncio.run(snapshot(store_url))
    assert is_envelope(row.state)
    assert journal[0].data["state"] == {"card": SECRET}  # written plain, left plain
    assert is_envelope(journal[-2].data["result"])


def test_signal_payloads_are_encrypted_in_mail(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    paused_encrypted(url)
    with Engine(url, encryption_keys=[A]) as poster:  # the saga not loaded: mail only
        poster.signal("v1", "approve", {"pin": PIN})
    ((_, _, mail),) = asyncio.run(snapshot(url))
    assert is_envelope(mail[0].data["payload"])
    assert mail[0].data["name"] == "approve"
    with Engine(url, encryption_keys=[A]) as engine:
        engine.register(vault())
        (run,) = engine.recover()  # a paused run with mail is due: recover answers it
        assert run.id == "v1"
        assert run.status is not RunStatus.PAUSED
        assert run.data["pin"] == PIN


# -- without keys --------------------------------------------------------------------------


def test_an_engine_without_keys_refuses_an_encrypted_run_and_changes_nothing(
    store_url: str,
) -> None:
    paused_encrypted(store_url, "v1")
    with Engine(store_url, encryption_keys=[A]) as keyed:
        keyed.start(vault(), {"card": SECRET}, run_id="v2")  # pending, nobody's
    before = asyncio.run(snapshot(store_url))
    refusal = r"^the data of run 'v\d' is encrypted, and this process has no encryption key"
    with Engine(store_url) as engine:
        engine.register(vault())
        for act in (
            lambda: engine.signal("v1", "approve", {"pin": PIN}),
            lambda: engine.cancel("v1", reason="stop"),
            lambda: engine.retry("v1"),
            lambda: engine.resolve("v1", note="done by hand"),
            engine.recover,
        ):
            with pytest.raises(EncryptionError, match=refusal) as caught:
                act()
            assert "\n" not in str(caught.value)
    assert asyncio.run(snapshot(store_url)) == before


def test_a_worker_without_keys_hands_the_run_back_as_it_was_and_stops(store_url: str) -> None:
    with Engine(store_url, encryption_keys=[A]) as keyed:
        keyed.start(vault(), {"card": SECRET}, run_id="v1")
    before = asyncio.run(snapshot(store_url))

    async def serve() -> None:
        async with AsyncEngine(store_url) as engine:
            engine.register(vault())
            await asyncio.wait_for(Worker(engine, poll_interval=0.05).run(), 30)

    with pytest.raises(EncryptionError, match="the data of run 'v1' is encrypted"):
        asyncio.run(serve())
    after = asyncio.run(snapshot(store_url))
    # Row for row the same, but the lease epoch its claim moved on (fencing).
    ((run, journal, mail),) = before
    ((run_after, journal_after, mail_after),) = after
    assert run_after.lease_epoch == run.lease_epoch + 1
    assert replace(run_after, lease_epoch=run.lease_epoch) == run
    assert (journal_after, mail_after) == (journal, mail)
    # A worker with the key drives it.

    async def keyed_worker() -> RunStatus:
        async with AsyncEngine(store_url, encryption_keys=[A]) as engine:
            engine.register(vault())
            worker = Worker(engine, poll_interval=0.05)
            task = asyncio.ensure_future(worker.run())
            try:
                run = await engine.wait("v1", timeout=30, poll=0.05)
            finally:
                worker.stop()
                await task
            return run.status

    assert asyncio.run(keyed_worker()) is RunStatus.PAUSED


def test_encrypted_mail_of_a_plain_run_waits_for_a_worker_with_the_key(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    with Engine(url) as plain:
        plain.run(vault(), {"card": SECRET}, run_id="v1")  # plain, paused
    with Engine(url, encryption_keys=[A]) as poster:
        poster.signal("v1", "approve", {"pin": PIN})  # encrypted mail, not acted on here

    async def serve(keys: list[str] | None) -> None:
        async with AsyncEngine(url, encryption_keys=keys) as engine:
            engine.register(vault())
            worker = Worker(engine, poll_interval=0.05)
            task = asyncio.ensure_future(worker.run())
            try:
                if keys is not None:
                    run = await engine.wait("v1", timeout=30, poll=0.05)
                    assert run.status is RunStatus.COMPLETED
            finally:
                if keys is not None:
                    worker.stop()
                await asyncio.wait_for(task, 30)

    before = asyncio.run(snapshot(url))
    with pytest.raises(EncryptionError, match="run 'v1' has encrypted signal mail"):
        asyncio.run(serve(None))
    ((_, journal, mail),) = asyncio.run(snapshot(url))
    assert (journal, mail) == (before[0][1], before[0][2])  # the mail is kept
    asyncio.run(serve([A]))
    with Engine(url, encryption_keys=[A]) as engine:
        assert engine.get("v1").data["charged"] == f"{SECRET}/{PIN}"


def test_the_masked_view_shows_encrypted_values_as_a_mark_and_writes_nothing(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    paused_encrypted(url)

    async def body() -> None:
        async with opened(EncryptedStore.masked(open_store(url))) as view:
            run = await view.get_run("v1")
            assert run is not None
            assert run.state == {"$encrypted": MASK}
            journal = await view.journal("v1")
            assert journal[0].data["state"] == MASK
            assert [e.data["result"] for e in journal if "result" in e.data] == [MASK]
            with pytest.raises(EncryptionError, match="no encryption key and only reads"):
                await view.post("v1", "signal", {"name": "approve", "payload": {}}, at=T0)
            with pytest.raises(EncryptionError, match="only reads"):
                await view.claim("v1", owner="x", now=T0, lease_until=T0 + 1)

    before = asyncio.run(snapshot(url))
    asyncio.run(body())
    assert asyncio.run(snapshot(url)) == before


# -- keys ----------------------------------------------------------------------------------


def test_a_wrong_key_is_one_line_naming_the_run(store_url: str) -> None:
    paused_encrypted(store_url)
    with Engine(store_url, encryption_keys=[B]) as engine, pytest.raises(EncryptionError) as caught:
        engine.get("v1")
    message = str(caught.value)
    assert message.startswith("the state of run 'v1' cannot be decrypted with the 1 encryption")
    assert "\n" not in message
    assert A not in message
    assert B not in message


def test_keys_that_are_not_fernet_keys_are_refused_without_being_shown() -> None:
    for keys, message in (
        (["not-a-key-at-all"], "encryption key 1 of 1 is not a Fernet key"),
        ([A, "x" * 44], "encryption key 2 of 2 is not a Fernet key"),
        ([], "no encryption key given"),
        (A, "a list of Fernet keys"),
    ):
        with pytest.raises(EncryptionError, match=message) as caught:
            Encryption(keys)
        assert "not-a-key-at-all" not in str(caught.value)
        assert "x" * 44 not in str(caught.value)
        assert A not in str(caught.value)


# -- rotation ------------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgresql":
        url: str = request.getfixturevalue("postgres_url")
        return url
    return f"sqlite:///{tmp_path / 'runs.db'}"


async def _write_under_a(url: str, count: int) -> None:
    async with opened(EncryptedStore(open_store(url), [A])) as store:
        for n in range(count):
            run_id = f"r{n:03}"
            await new_run(store, run_id, state={"card": f"{SECRET}-{n}"})
            done = Event(run_id, 2, EventKind.STEP_SUCCEEDED, T0, "s", 1, {"result": {"n": n}})
            await store.commit(change(run_id, events=(done,), state={"card": f"{SECRET}-{n}"}))
            await store.post(run_id, "signal", {"name": "go", "payload": {"pin": PIN}}, at=T0)


async def _read_all(store: Store) -> list[Any]:
    found = []
    for run in sorted(await store.list_runs(limit=1000), key=lambda r: r.id):
        found.append((run.state, await store.journal(run.id), await store.mail(run.id)))
    return found


def test_rotation_reencrypts_everything_so_the_new_key_alone_reads_it(db_url: str) -> None:
    async def body() -> None:
        await _write_under_a(db_url, 7)
        async with opened(EncryptedStore(open_store(db_url), [A])) as old:
            written = await _read_all(old)
        async with opened(EncryptedStore(open_store(db_url), [B, A])) as both:
            done = await both.rotate(batch_size=3)
            # 7 states, 7 run_started and 7 results in events, 7 payloads in mail.
            assert done.rewritten == Rewritten(runs=7, events=14, mail=7)
            assert (done.reencrypted, done.current, done.plain) == (28, 0, 0)
            again = await both.rotate(batch_size=3)
            assert again.rewritten == Rewritten()
            assert again.current == 28
        async with opened(EncryptedStore(open_store(db_url), [B])) as new:
            assert await _read_all(new) == written
        async with opened(EncryptedStore(open_store(db_url), [A])) as old:
            with pytest.raises(EncryptionError, match="run 'r000' cannot be decrypted"):
                await old.get_run("r000")

    asyncio.run(body())


def test_rotation_without_the_old_key_names_the_run_and_keeps_its_data(db_url: str) -> None:
    async def body() -> None:
        await _write_under_a(db_url, 2)
        before = await snapshot(db_url)
        async with opened(EncryptedStore(open_store(db_url), [B])) as store:
            with pytest.raises(EncryptionError, match="state of run 'r000' cannot be decrypted"):
                await store.rotate()
        assert await snapshot(db_url) == before

    asyncio.run(body())


def test_rotation_can_encrypt_what_was_written_plain(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'runs.db'}"

    async def body() -> None:
        async with opened(url) as plain:
            await new_run(plain, "r1", state={"card": SECRET})
        async with opened(EncryptedStore(open_store(url), [A])) as store:
            assert (await store.rotate()).plain == 2
            done = await store.rotate(encrypt_plain=True)
            assert (done.plain, done.rewritten) == (2, Rewritten(runs=1, events=1))
            run = await store.get_run("r1")
            assert run is not None
            assert run.state == {"card": SECRET}
        assert SECRET not in stored_text(await snapshot(url))

    asyncio.run(body())


def test_rotation_while_another_process_commits_loses_no_write(db_url: str) -> None:
    count, rounds = 60, 6

    async def body() -> None:
        await _write_under_a(db_url, count)
        async with (
            opened(EncryptedStore(open_store(db_url), [B, A])) as rotator,
            opened(EncryptedStore(open_store(db_url), [B, A])) as writer,
        ):

            async def commits() -> None:
                for k in range(rounds):
                    await asyncio.gather(
                        *(
                            writer.commit(
                                change(
                                    f"r{n:03}",
                                    events=steps(f"r{n:03}", 3 + k, 1),
                                    state={"card": SECRET, "k": k},
                                )
                            )
                            for n in range(count)
                        )
                    )

            await asyncio.gather(rotator.rotate(batch_size=7), commits())
        async with opened(EncryptedStore(open_store(db_url), [B])) as new:
            for n in range(count):
                run = await new.get_run(f"r{n:03}")
                assert run is not None
                assert (run.state, run.last_seq) == ({"card": SECRET, "k": rounds - 1}, 2 + rounds)
                assert len(await new.journal(run.id)) == 2 + rounds

    asyncio.run(body())


def test_a_store_is_not_encrypted_twice() -> None:
    with pytest.raises(EncryptionError, match="encrypted already"):
        EncryptedStore(EncryptedStore(open_store("memory://"), [A]), [A])
