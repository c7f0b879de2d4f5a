"""Alerts: owed in the commit that halts a run, delivered at least once, journaled.

Engines and workers on every store; the webhook sink against a local HTTP
server (the standard library's, on a thread).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Annotated, Any

import pytest
from pydantic import BaseModel

from sagakit import (
    AsyncEngine,
    AttentionReport,
    Engine,
    Event,
    EventKind,
    PermanentError,
    RetryPolicy,
    RunStatus,
    Saga,
    SagaError,
    Sensitive,
    StepContext,
    WebhookSink,
    Worker,
)
from sagakit.alerts import IDEMPOTENCY_HEADER, Sinks
from sagakit.timeline import AlertStatus, build_timeline

from .helpers import halting_saga

FAST_RETRY = RetryPolicy(
    max_attempts=None, initial_delay=0.05, backoff=2.0, max_delay=1.0, jitter=0
)


def alerts_of(events: list[Event]) -> list[tuple[EventKind, Any, int | None]]:
    kinds = (EventKind.ALERT_SENT, EventKind.ALERT_FAILED)
    return [(e.kind, e.data.get("sink"), e.attempt) for e in events if e.kind in kinds]


async def until(check: Callable[[], Awaitable[bool]], timeout: float = 20.0) -> None:
    give_up = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < give_up, "timed out"
        await asyncio.sleep(0.02)


async def sent(engine: AsyncEngine, run_id: str) -> bool:
    return any(e.kind is EventKind.ALERT_SENT for e in await engine.history(run_id))


async def serve(engine: AsyncEngine, body: Callable[[], Awaitable[None]]) -> Worker:
    """Run a worker on ``engine`` while ``body`` runs, then stop it."""
    worker = Worker(engine, poll_interval=0.05)
    task = asyncio.ensure_future(worker.run())
    try:
        await body()
    finally:
        worker.stop(grace=5.0)
        await asyncio.wait_for(task, 20.0)
    return worker


# -- the engine's own hook --------------------------------------------------------------


def test_an_engine_hook_gets_the_alert_once_and_it_is_journaled(store_url: str) -> None:
    reports: list[AttentionReport] = []

    def page(report: AttentionReport) -> None:
        reports.append(report)

    with Engine(store_url, on_attention=page) as engine:
        run = engine.run(halting_saga(), run_id="h1")
        assert run.status == RunStatus.NEEDS_ATTENTION
        history = engine.history("h1")

    async def row() -> Any:
        async with AsyncEngine(store_url) as reader:
            return await reader.store.get_run("h1")

    record = asyncio.run(row())
    halt = next(e for e in history if e.kind is EventKind.NEEDS_ATTENTION)
    assert [(r.run.id, r.step, r.seq, r.idempotency_key) for r in reports] == [
        ("h1", "book", halt.seq, f"h1/attention/{halt.seq}")
    ]
    assert reports[0].cause is not None
    assert reports[0].cause.message == "declined"
    sink = f"{__name__}.test_an_engine_hook_gets_the_alert_once_and_it_is_journaled.<locals>.page"
    assert alerts_of(history) == [(EventKind.ALERT_SENT, sink, 1)]
    assert history[-1].data["seq"] == halt.seq
    assert record is not None
    assert (record.status, record.owner, record.wake_at) == (RunStatus.NEEDS_ATTENTION, None, None)
    timeline = build_timeline(history)
    assert timeline.alert is not None
    assert (timeline.alert.status, timeline.alert.sink) == (AlertStatus.SENT, sink)


def test_a_failing_hook_is_retried_with_backoff_then_sent(store_url: str) -> None:
    calls: list[float] = []

    async def flaky(report: AttentionReport) -> None:
        calls.append(time.monotonic())
        if len(calls) < 3:
            raise ConnectionError(f"pager unreachable (try {len(calls)})")

    async def body() -> list[Event]:
        async with AsyncEngine(store_url, on_attention=flaky, alert_retry=FAST_RETRY) as engine:
            run = await engine.run(halting_saga(), run_id="f1")
            assert run.status == RunStatus.NEEDS_ATTENTION
            await until(lambda: sent(engine, "f1"))
            return await engine.history("f1")

    history = asyncio.run(body())
    sink = f"{__name__}.test_a_failing_hook_is_retried_with_backoff_then_sent.<locals>.flaky"
    assert alerts_of(history) == [
        (EventKind.ALERT_FAILED, sink, 1),
        (EventKind.ALERT_FAILED, sink, 2),
        (EventKind.ALERT_SENT, sink, 3),
    ]
    failed = [e for e in history if e.kind is EventKind.ALERT_FAILED]
    assert [e.error.message for e in failed if e.error] == [
        "pager unreachable (try 1)",
        "pager unreachable (try 2)",
    ]
    # Exponential: the second wait is twice the first (no jitter here). Each
    # failure is journaled a claim after the hook failed (later on a loaded
    # machine), so from its journal time the wait is at most the policy's;
    # the hook's own calls show it was never tried again sooner.
    waits = [e.data["retry_at"] - e.at for e in failed]
    for wait, policy in zip(waits, [0.05, 0.1], strict=True):
        assert wait <= policy + 0.001
    assert calls[1] - calls[0] >= 0.05
    assert calls[2] - calls[1] >= 0.1


def test_a_hook_that_never_answers_fails_at_the_alert_timeout(store_url: str) -> None:
    hang = asyncio.Event()

    async def stuck(report: AttentionReport) -> None:
        await hang.wait()

    async def body() -> list[Event]:
        async with AsyncEngine(
            store_url,
            on_attention=stuck,
            alert_timeout=0.2,
            alert_retry=RetryPolicy(max_attempts=None, initial_delay=60),
        ) as engine:
            await engine.run(halting_saga(), run_id="t1")
            return await engine.history("t1")

    history = asyncio.run(body())
    failed = [e for e in history if e.kind is EventKind.ALERT_FAILED]
    assert len(failed) == 1
    assert failed[0].error is not None
    assert failed[0].error.message == "the sink did not answer within 0.2s"


def test_an_engine_without_a_hook_leaves_the_alert_to_a_worker(
    store_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    saga = halting_saga()
    reports: list[AttentionReport] = []

    async def body() -> list[Event]:
        async with AsyncEngine(store_url) as plain:
            with caplog.at_level(logging.ERROR, logger="sagakit"):
                assert (await plain.run(saga, run_id="w1")).status == RunStatus.NEEDS_ATTENTION
            owed = await plain.store.get_run("w1")
            assert owed is not None
            assert owed.wake_at is not None  # the owed alert is the run's timer
            assert alerts_of(await plain.history("w1")) == []
        async with AsyncEngine(store_url, on_attention=reports.append) as engine:
            engine.register(saga)
            await serve(engine, lambda: until(lambda: sent(engine, "w1")))
            return await engine.history("w1")

    history = asyncio.run(body())
    assert "its alert is owed until a worker" in caplog.text
    assert [r.run.id for r in reports] == ["w1"]
    assert [(k, a) for k, _, a in alerts_of(history)] == [(EventKind.ALERT_SENT, 1)]


def test_a_worker_without_a_hook_delivers_to_its_log(
    store_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    saga = halting_saga()

    async def body() -> list[Event]:
        async with AsyncEngine(store_url) as plain:
            await plain.run(saga, run_id="l1")
        async with AsyncEngine(store_url) as engine:
            engine.register(saga)
            with caplog.at_level(logging.ERROR, logger="sagakit"):
                worker = await serve(engine, lambda: until(lambda: sent(engine, "l1")))
            assert worker.stats.alerted == 1
            assert engine.alerts.to_log is False  # the engine is itself again
            return await engine.history("l1")

    history = asyncio.run(body())
    assert alerts_of(history) == [(EventKind.ALERT_SENT, "log", 1)]
    assert "run l1 needs attention: compensation of step 'book'" in caplog.text


def test_an_alert_is_moot_once_an_operator_acted(store_url: str) -> None:
    saga = halting_saga()
    reports: list[AttentionReport] = []

    async def body() -> list[Event]:
        async with AsyncEngine(store_url) as plain:
            await plain.run(saga, run_id="m1")
            resolved = await plain.resolve("m1", note="refunded by hand")
            assert resolved.status == RunStatus.ROLLED_BACK
            record = await plain.store.get_run("m1")
            assert record is not None
            assert record.wake_at is None  # nothing owed any more
        async with AsyncEngine(store_url, on_attention=reports.append) as engine:
            engine.register(saga)

            async def a_while() -> None:
                await asyncio.sleep(0.5)

            await serve(engine, a_while)
            return await engine.history("m1")

    history = asyncio.run(body())
    assert reports == []
    assert alerts_of(history) == []
    timeline = build_timeline(history)
    assert timeline.alert is not None
    assert timeline.alert.status is AlertStatus.MOOT


def test_a_run_halted_twice_owes_two_alerts(store_url: str) -> None:
    saga = halting_saga()
    reports: list[AttentionReport] = []
    with Engine(store_url, on_attention=reports.append) as engine:
        engine.run(saga, run_id="twice")
        assert engine.retry("twice").status == RunStatus.NEEDS_ATTENTION
        history = engine.history("twice")
    halts = [e.seq for e in history if e.kind is EventKind.NEEDS_ATTENTION]
    assert [r.seq for r in reports] == halts
    assert len({r.idempotency_key for r in reports}) == 2
    assert [e.data["seq"] for e in history if e.kind is EventKind.ALERT_SENT] == halts


# -- the webhook sink -------------------------------------------------------------------


class Receiver:
    """A local HTTP server that records each POST and answers with the next status."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses
        self.posts: list[tuple[dict[str, str], Any]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.posts.append((dict(self.headers), json.loads(body)))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


class Card(BaseModel):
    order: str = "o-1"
    card: Annotated[str, Sensitive()] = "4111111111111111"


def card_saga() -> Saga[Card]:
    saga: Saga[Card] = Saga("card-halts", state=Card)

    @saga.step
    def hold(state: Card, ctx: StepContext) -> None:
        return None

    @hold.compensate(retry=RetryPolicy(max_attempts=1))
    def unhold(state: Card, ctx: StepContext) -> None:
        raise RuntimeError(f"cannot release card {state.card}")

    @saga.step
    def charge(state: Card, ctx: StepContext) -> None:
        raise PermanentError("declined")

    return saga


def test_the_webhook_gets_the_redacted_report_with_an_idempotency_key(store_url: str) -> None:
    with Receiver([500, 200]) as receiver:
        sink = WebhookSink(receiver.url + "/hooks/alerts?token=s3cr3t-token", timeout=5)
        with Engine(store_url, on_attention=sink, alert_retry=FAST_RETRY) as engine:
            assert engine.run(card_saga(), Card(), run_id="c1").status == (
                RunStatus.NEEDS_ATTENTION
            )
            give_up = time.monotonic() + 20
            while not any(e.kind is EventKind.ALERT_SENT for e in engine.history("c1")):
                assert time.monotonic() < give_up
                time.sleep(0.02)
            history = engine.history("c1")
    halt = next(e for e in history if e.kind is EventKind.NEEDS_ATTENTION)
    assert len(receiver.posts) == 2  # a 500, retried, then a 200
    (first_headers, first), (headers, body) = receiver.posts
    key = f"c1/attention/{halt.seq}"
    assert first_headers[IDEMPOTENCY_HEADER] == headers[IDEMPOTENCY_HEADER] == key
    # The same report, but for the row's time of change (the run was handed back between).
    assert {**first, "run": None} == {**body, "run": None}
    assert headers["Content-Type"] == "application/json"
    assert body["type"] == "sagakit.needs_attention"
    assert (body["version"], body["idempotency_key"], body["seq"]) == (1, key, halt.seq)
    assert (body["run"]["id"], body["step"], body["phase"]) == ("c1", "hold", "compensation")
    assert body["cause"]["message"] == "declined"
    assert body["state"] == {"order": "o-1", "card": "***"}
    assert body["run"]["state"] == {"order": "o-1", "card": "***"}
    assert "4111111111111111" not in json.dumps(body)
    assert [e["message"] for e in body["errors"]] == ["declined", "cannot release card ***"]
    shown = receiver.url + "/..."
    assert alerts_of(history) == [
        (EventKind.ALERT_FAILED, f"webhook {shown}", 1),
        (EventKind.ALERT_SENT, f"webhook {shown}", 2),
    ]
    failure = next(e for e in history if e.kind is EventKind.ALERT_FAILED).error
    assert failure is not None
    assert failure.message == f"{shown} answered 500 Internal Server Error"
    assert "s3cr3t" not in json.dumps([e.data for e in history])


def test_an_unreachable_webhook_fails_without_printing_its_secrets() -> None:
    with Receiver([]) as receiver:
        url = receiver.url
    sink = WebhookSink(url.replace("http://", "http://bot:pa55word@") + "/t/XYZ-token", timeout=2)
    assert "pa55word" not in repr(sink) + sink.sink_name
    assert "XYZ-token" not in repr(sink) + sink.sink_name
    report = _report()
    with pytest.raises(SagaError) as raised:
        asyncio.run(sink(report))
    text = str(raised.value)
    assert text.startswith(f"could not POST to {url}/...: ConnectError")
    assert "pa55word" not in text
    assert "XYZ-token" not in text


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://h/x", "must start with http:// or https://"),
        ("http://:80/x", "names no host"),
        ("http://h:99999/x", "is not valid"),
        ("", "must be a non-empty string"),
    ],
)
def test_a_bad_webhook_url_is_refused_in_one_line(url: str, message: str) -> None:
    with pytest.raises(SagaError, match=message):
        WebhookSink(url)


def test_sinks_deliver_to_each_and_fail_if_any_fails() -> None:
    got: list[str] = []

    def one(report: AttentionReport) -> None:
        got.append("one")
        raise RuntimeError("one is down")

    async def two(report: AttentionReport) -> None:
        got.append("two")

    sinks = Sinks(one, two)
    assert sinks.sink_name == f"{__name__}.{one.__qualname__} + {__name__}.{two.__qualname__}"
    with pytest.raises(RuntimeError, match="one is down"):
        asyncio.run(sinks(_report()))
    assert got == ["one", "two"]


def _report() -> AttentionReport:
    from sagakit import Phase, Run

    run = Run(
        id="r",
        saga="s",
        version="1",
        status=RunStatus.NEEDS_ATTENTION,
        state={},
        data={},
        error=None,
        compensation_errors=(),
        created_at=0.0,
        updated_at=0.0,
    )
    return AttentionReport(
        run=run,
        cause=None,
        step="x",
        phase=Phase.ACTION,
        reason="r",
        attempts=1,
        errors=(),
        state={},
        seq=3,
    )
