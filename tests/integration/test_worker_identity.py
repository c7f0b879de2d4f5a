"""Lease owners that name an identity, and the runs a worker takes back at once.

`LeaseIdentity` judges real processes: one that exited, a zombie, a live
one, a pid whose start time is not the one recorded. A `Worker` under a
worker id takes back at once the runs an earlier process under that id held
on another host (leases of five minutes, not waited out), and leaves alone
those of another id.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sagakit import AsyncEngine, RunStatus, Saga, SagaError, StepContext, Worker
from sagakit.engine.identity import LeaseIdentity, Takeover, check_worker_id
from sagakit.store import Commit, Lease

# A child that prints its own owner name, then waits to be told to exit.
CHILD = (
    "import sys; from sagakit.engine.identity import LeaseIdentity; "
    "print(LeaseIdentity().owner, flush=True); sys.stdin.readline()"
)
needs_proc = pytest.mark.skipif(
    not Path("/proc/self/stat").exists(), reason="proving a process gone needs /proc"
)


@pytest.fixture
def child() -> Iterator[tuple[subprocess.Popen[str], str]]:
    """A live process of this host and the owner name it would write."""
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    owner = proc.stdout.readline().strip()
    try:
        yield proc, owner
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for stream in (proc.stdin, proc.stdout):
            if stream is not None and not stream.closed:
                stream.close()


def test_owner_names_the_process_and_the_worker_id() -> None:
    plain = LeaseIdentity()
    host, pid, nonce, start, scope = plain.owner.split(":")
    assert (host, int(pid)) == (plain.host, plain.pid)
    assert len(nonce) == 8
    assert start.isdigit()
    assert scope
    named = LeaseIdentity("orders-1")
    assert named.owner.startswith("orders-1/")
    assert named.worker_id == "orders-1"
    assert LeaseIdentity().owner != plain.owner  # two engines of one process: two owners


@pytest.mark.parametrize("bad", ["", "a/b", "a b", "tab\there", "esc\x1b[31m", "x" * 101])
def test_worker_ids_that_could_be_misread_are_refused(bad: str) -> None:
    with pytest.raises(SagaError, match="worker id"):
        check_worker_id(bad)
    with pytest.raises(SagaError, match="worker id"):
        AsyncEngine("memory://", worker_id=bad)


def test_an_engine_takes_an_owner_or_a_worker_id_not_both() -> None:
    with pytest.raises(SagaError, match="not both"):
        AsyncEngine("memory://", owner="me", worker_id="w1")
    assert AsyncEngine("memory://", worker_id="w1").owner.startswith("w1/")


@needs_proc
def test_a_live_process_of_this_host_is_never_taken_over(
    child: tuple[subprocess.Popen[str], str],
) -> None:
    _, owner = child
    me = LeaseIdentity()
    assert me.proves_gone
    assert me.takeover(owner) is None
    assert me.alive_here(owner)
    assert me.takeover(me.owner) is None  # itself


@needs_proc
def test_a_process_that_exited_is_gone(child: tuple[subprocess.Popen[str], str]) -> None:
    proc, owner = child
    proc.communicate("\n")  # it exits and is reaped: its pid is free
    assert LeaseIdentity().takeover(owner) is Takeover.PROCESS_GONE


@needs_proc
def test_a_killed_process_not_yet_reaped_is_gone(
    child: tuple[subprocess.Popen[str], str],
) -> None:
    proc, owner = child
    proc.send_signal(signal.SIGKILL)
    pid = proc.pid
    deadline = time.monotonic() + 10
    # A zombie until it is waited for: its pid still shows, in state Z.
    while Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert LeaseIdentity().takeover(owner) is Takeover.PROCESS_GONE


def _hide_from_proc(monkeypatch: pytest.MonkeyPatch, pid: int) -> None:
    """Make ``/proc/PID`` absent to this process, as ``hidepid=2`` does for another user's."""
    real_open = open

    def hiding(path: Any, *args: Any, **kwargs: Any) -> Any:
        if str(path).startswith(f"/proc/{pid}/"):
            raise FileNotFoundError(path)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", hiding)


@needs_proc
def test_a_live_process_that_proc_hides_is_not_taken_over(
    child: tuple[subprocess.Popen[str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # With /proc mounted hidepid=2, another user's live process has no
    # /proc entry for us: its absence proves nothing; the kernel says it lives.
    proc, owner = child
    me = LeaseIdentity()
    _hide_from_proc(monkeypatch, proc.pid)
    assert me.takeover(owner) is None
    proc.communicate("\n")  # it exits and is reaped: now the kernel knows no such pid
    assert me.takeover(owner) is Takeover.PROCESS_GONE


@needs_proc
def test_a_pid_now_used_by_another_process_is_gone(
    child: tuple[subprocess.Popen[str], str],
) -> None:
    _, owner = child
    host, pid, nonce, start, scope = owner.split(":")
    # The same live pid, started at another time: the process recorded is gone.
    reused = ":".join([host, pid, nonce, str(int(start) + 1), scope])
    assert LeaseIdentity().takeover(reused) is Takeover.PROCESS_GONE


def test_other_hosts_and_foreign_names_are_left_to_their_leases() -> None:
    me = LeaseIdentity()
    elsewhere = "elsewhere:1:deadbeef:1:abcdef"
    assert me.takeover(elsewhere) is None
    assert me.takeover(f"{me.host}:1:deadbeef") is None  # the name older versions wrote
    assert me.takeover("worker-a") is None
    assert me.takeover(f"orders-1/{elsewhere}") is None  # an id, but not this one's


def test_an_earlier_process_under_the_worker_id_is_taken_over_on_any_host() -> None:
    me = LeaseIdentity("orders-1")
    elsewhere = "elsewhere:1:deadbeef:1:abcdef"
    assert me.takeover(f"orders-1/{elsewhere}") is Takeover.SAME_WORKER_ID
    assert me.takeover(f"orders-2/{elsewhere}") is None
    assert me.takeover(elsewhere) is None


# -- a worker taking runs back ----------------------------------------------------------

EARLIER = "orders-1/elsewhere:4242:deadbeef:123:abcdef"  # an earlier process, another host


def three_steps(calls: list[str]) -> Saga[Any]:
    saga: Saga[Any] = Saga("held")
    for name in ("a", "b", "c"):

        async def action(state: dict[str, Any], ctx: StepContext, name: str = name) -> None:
            calls.append(f"{name}:{ctx.run_id}")

        saga.add_step(action, name=name)
    return saga


async def held_by_earlier(url: str, saga: Saga[Any], count: int, lease: float = 300) -> None:
    """Start ``count`` runs and claim them for `EARLIER`, with a lease of five minutes."""
    async with AsyncEngine(url) as engine:
        for i in range(count):
            await engine.start(saga, run_id=f"r{i}")
        now = time.time()
        claimed = await engine.store.claim_due(
            owner=EARLIER, now=now, lease_until=now + lease, limit=count
        )
        assert len(claimed) == count


async def serve_for(engine: AsyncEngine, seconds: float, until_settled: int = 0) -> Worker:
    """Run a worker of ``engine`` until ``until_settled`` runs completed, or ``seconds``."""
    worker = Worker(engine, poll_interval=0.05, concurrency=3)
    task = asyncio.ensure_future(worker.run())
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        done = await engine.store.list_runs(status=RunStatus.COMPLETED)
        if until_settled and len(done) >= until_settled:
            break
        await asyncio.sleep(0.05)
    worker.stop(0)
    await task
    return worker


def test_a_worker_takes_back_the_runs_of_its_earlier_process_at_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    calls: list[str] = []
    saga = three_steps(calls)

    async def body() -> None:
        await held_by_earlier(url, saga, 7)  # more than one claim's worth (concurrency 3)
        async with AsyncEngine(url, worker_id="orders-2", lease_seconds=300) as other:
            other.register(saga)
            stranger = await serve_for(other, 1.0)
        assert stranger.stats.claimed == 0  # another id: left to the lease
        async with AsyncEngine(url, lease_seconds=300) as plain:
            plain.register(saga)
            anyone = await serve_for(plain, 1.0)
        assert anyone.stats.claimed == 0  # no id, and another host's process
        async with AsyncEngine(url, worker_id="orders-1", lease_seconds=300) as engine:
            engine.register(saga)
            worker = await serve_for(engine, 30.0, until_settled=7)
            runs = await engine.store.list_runs()
        assert {run.status for run in runs} == {RunStatus.COMPLETED}
        assert worker.stats.taken_back == 7
        assert all(run.lease_epoch >= 2 for run in runs)  # each claim bumped it

    asyncio.run(body())
    assert sorted(calls) == sorted(f"{s}:r{i}" for s in "abc" for i in range(7))


def test_another_hosts_runs_are_taken_once_their_lease_lapses(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    calls: list[str] = []
    saga = three_steps(calls)

    async def body() -> None:
        await held_by_earlier(url, saga, 4, lease=1.0)
        async with AsyncEngine(url, lease_seconds=30) as engine:
            engine.register(saga)
            worker = await serve_for(engine, 30.0, until_settled=4)
            runs = await engine.store.list_runs()
        assert {run.status for run in runs} == {RunStatus.COMPLETED}
        assert (worker.stats.claimed, worker.stats.taken_back) == (4, 0)  # by the lease, as ever

    asyncio.run(body())
    assert len(calls) == 12


def test_runs_of_the_earlier_process_on_a_timer_are_taken_back_once_due(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    calls: list[str] = []
    saga = three_steps(calls)

    async def body() -> None:
        await held_by_earlier(url, saga, 2)
        async with AsyncEngine(url, worker_id="orders-1", lease_seconds=300) as engine:
            # r1 waits on a timer due in 2 s, as a run between two tries does.
            record = await engine.store.get_run("r1")
            assert record is not None
            due = time.time() + 2.0
            await engine.store.commit(
                Commit(
                    run_id="r1",
                    lease=Lease(EARLIER, record.lease_epoch),
                    events=(),
                    status=record.status,
                    state=record.state,
                    error=None,
                    at=time.time(),
                    wake_at=due,
                )
            )
            engine.register(saga)
            worker = await serve_for(engine, 30.0, until_settled=2)
            runs = {run.id: run for run in await engine.store.list_runs()}
        assert {run.status for run in runs.values()} == {RunStatus.COMPLETED}
        assert worker.stats.taken_back == 2  # r1 too, within the lease of 300 s
        assert runs["r1"].updated_at >= due

    asyncio.run(body())
