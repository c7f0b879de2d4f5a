"""Log records about a run: its fields, its masked values, the JSON lines.

The formatter, the adapter and the filter alone; then an engine on the
memory store, whose records (sagakit's, a step's ``ctx.log``, and an
application logger's, on a step's thread too) are caught by a handler with
the filter.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import threading
from collections.abc import Iterator
from contextvars import copy_context
from datetime import datetime
from typing import Annotated, Any

import pytest
from pydantic import BaseModel

from sagakit import (
    AsyncEngine,
    Engine,
    JsonLogFormatter,
    Next,
    PermanentError,
    Redactor,
    RetryPolicy,
    RunLogFilter,
    RunStatus,
    Saga,
    Sensitive,
    StepContext,
)
from sagakit.runlog import RUN_FIELDS, RunFields, RunLogger, bound, current

SECRET = "4111-1111-1111-1111"


def record(msg: str = "hello %s", *args: Any, **attrs: Any) -> logging.LogRecord:
    made = logging.LogRecord("app", logging.INFO, __file__, 1, msg, args or ("world",), None)
    made.__dict__.update(attrs)
    return made


def as_json(made: logging.LogRecord, formatter: logging.Formatter | None = None) -> Any:
    line = (formatter or JsonLogFormatter()).format(made)
    assert "\n" not in line
    return json.loads(line)


def masking(*values: str) -> RunFields:
    redactor = Redactor(frozenset({"card"})).collect(*({"card": value} for value in values))
    return RunFields("r1", "pay", "1", redactor=lambda: redactor)


# -- the formatter ---------------------------------------------------------------------


def test_a_json_line_has_time_level_logger_message_and_the_known_run_fields() -> None:
    made = record(run_id="order-42", saga="pay", version="2", step="charge", attempt=3)
    made.created = 0.25
    line = as_json(made)
    assert line == {
        "time": "1970-01-01T00:00:00.250Z",
        "level": "INFO",
        "logger": "app",
        "message": "hello world",
        "run_id": "order-42",
        "saga": "pay",
        "version": "2",
        "step": "charge",
        "attempt": 3,
    }
    assert datetime.fromisoformat(line["time"]).utcoffset() is not None


def test_unknown_run_fields_are_left_out_and_extras_kept() -> None:
    line = as_json(record(run_id=None, step=None, order={"total": 12}, _private="no"))
    assert "run_id" not in line
    assert "step" not in line
    assert line["order"] == {"total": 12}
    assert "_private" not in line


def test_an_extra_json_cannot_hold_is_written_as_text() -> None:
    line = as_json(record(when=threading.Lock, keyed={(1, 2): "x"}))
    assert isinstance(line["when"], str)
    assert line["keyed"] == "{(1, 2): 'x'}"


def test_an_exception_is_an_object_with_type_message_and_traceback() -> None:
    try:
        raise PermanentError("the card was refused")
    except PermanentError:
        made = logging.LogRecord(
            "sagakit", logging.ERROR, __file__, 1, "failed", (), sys.exc_info()
        )
    exception = as_json(made)["exception"]
    assert exception["type"] == "sagakit.errors.PermanentError"
    assert exception["message"] == "the card was refused"
    assert exception["traceback"].startswith("Traceback (most recent call last):")
    assert "raise PermanentError" in exception["traceback"]


def test_control_characters_cannot_forge_a_line() -> None:
    line = as_json(record("run %s", 'x\n{"level": "ERROR"}\x1b[2J'))
    assert line["message"] == 'run x\n{"level": "ERROR"}\x1b[2J'


def test_the_text_hook_masks_what_the_formatter_writes() -> None:
    formatter = JsonLogFormatter(text=lambda text: text.replace("pw", "***"))
    assert as_json(record("postgresql://u:%s@db", "pw"), formatter)["message"] == (
        "postgresql://u:***@db"
    )


# -- the adapter and the filter -------------------------------------------------------


def test_a_run_logger_keeps_the_call_s_extra_over_the_run_s_fields() -> None:
    caught = Catch()
    logger = logging.getLogger("sagakit.test.adapter")
    logger.addHandler(caught)
    try:
        log = RunLogger(logger, RunFields("r1", "pay", "1"))
        log.warning("plain")
        log.warning("about a step", extra={"step": "charge", "attempt": 2, "order": 7})
    finally:
        logger.removeHandler(caught)
    plain, about = caught.records
    assert (
        plain.__dict__["run_id"],
        plain.__dict__["saga"],
        plain.__dict__["version"],
        plain.__dict__["step"],
    ) == ("r1", "pay", "1", None)
    assert (
        about.__dict__["run_id"],
        about.__dict__["step"],
        about.__dict__["attempt"],
        about.__dict__["order"],
    ) == ("r1", "charge", 2, 7)


def test_the_filter_gives_every_record_the_run_fields_bound_in_its_context() -> None:
    check = RunLogFilter()
    outside = record()
    assert check.filter(outside)
    assert all(getattr(outside, name) is None for name in RUN_FIELDS)
    with bound(RunFields("r1", "pay", "1").at("charge", "action", 2)):
        inside = record()
        check.filter(inside)
        in_thread = record()
        # A thread started with the context (as sagakit starts a sync step) sees it too.
        runner = threading.Thread(target=copy_context().run, args=(check.filter, in_thread))
        runner.start()
        runner.join()
    assert current() is None
    for made in (inside, in_thread):
        assert (made.__dict__["run_id"], made.__dict__["saga"], made.__dict__["version"]) == (
            "r1",
            "pay",
            "1",
        )
        assert (made.__dict__["step"], made.__dict__["phase"], made.__dict__["attempt"]) == (
            "charge",
            "action",
            2,
        )


def test_the_filter_keeps_what_a_record_says_and_another_run_s_fields() -> None:
    check = RunLogFilter()
    with bound(RunFields("r1", "pay", "1", step="charge")):
        mine = record(run_id="r1", step="ship")
        other = record(run_id="r2")
        check.filter(mine)
        check.filter(other)
    assert (mine.__dict__["step"], mine.__dict__["saga"]) == ("ship", "pay")
    assert (other.__dict__["run_id"], other.__dict__["saga"], other.__dict__["step"]) == (
        "r2",
        None,
        None,
    )


def test_the_filter_masks_sensitive_values_in_message_exception_and_extras() -> None:
    check = RunLogFilter()
    try:
        raise ValueError(f"bad card {SECRET}")
    except ValueError:
        info = sys.exc_info()
    made = logging.LogRecord("app", logging.ERROR, __file__, 1, "card %s", (SECRET,), info)
    made.payload = {"card": "1234", "note": f"was {SECRET}"}
    made.detail = f"card {SECRET}"
    with bound(masking(SECRET)):
        check.filter(made)
    line = JsonLogFormatter().format(made)
    text = logging.Formatter().format(made)
    for shown in (line, text):
        assert SECRET not in shown
    parsed = json.loads(line)
    assert parsed["message"] == "card ***"
    assert parsed["exception"]["type"] == "ValueError"
    assert parsed["exception"]["message"] == "bad card ***"
    assert "bad card ***" in parsed["exception"]["traceback"]
    assert parsed["payload"] == {"card": "***", "note": "was ***"}
    assert parsed["detail"] == "card ***"
    assert made.exc_info is None, "no handler gets the exception with the value in it"


def test_an_exception_with_nothing_sensitive_is_left_to_the_handlers() -> None:
    try:
        raise ValueError("nothing to hide")
    except ValueError:
        info = sys.exc_info()
    made = logging.LogRecord("app", logging.ERROR, __file__, 1, "failed", (), info)
    with bound(masking(SECRET)):
        RunLogFilter().filter(made)
    assert made.exc_info is info


def test_the_filter_never_breaks_the_logging_call() -> None:
    def broken() -> Redactor:
        raise RuntimeError("the redactor failed")

    made = record()
    with bound(RunFields("r1", redactor=broken)):
        assert RunLogFilter().filter(made)
    assert made.__dict__["run_id"] == "r1"


# -- an engine's records --------------------------------------------------------------


class Catch(logging.Handler):
    """Keeps the records it is handed, after its filters ran."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.addFilter(RunLogFilter())

    def emit(self, record: logging.LogRecord) -> None:
        self.format(record)
        self.records.append(record)


@pytest.fixture
def caught() -> Iterator[Catch]:
    handler = Catch()
    handler.setFormatter(JsonLogFormatter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


class Card(BaseModel):
    order: str
    card: Annotated[str, Sensitive()]
    tries: int = 0


app_log = logging.getLogger("cardshop")
cards: Saga[Card] = Saga("card-shop", state=Card)
FAST = RetryPolicy(max_attempts=3, initial_delay=0.0, jitter=0.0)


@cards.step(retry=FAST)
def hold(state: Card, ctx: StepContext) -> dict[str, Any]:
    app_log.info("holding order %s on a thread", state.order)
    if ctx.attempt < 2:
        raise ConnectionError(f"the bank timed out for {state.card}")
    return {"tries": ctx.attempt}


@hold.compensate
async def release(state: Card, ctx: StepContext) -> None:
    ctx.log.info("releasing the hold on %s", state.card)
    app_log.warning("released (attempt %d)", ctx.attempt)


@cards.step
async def capture(state: Card, ctx: StepContext) -> None:
    raise PermanentError(f"the card {state.card} is blocked")


@capture.on_failure
def declined(state: Card, ctx: StepContext, error: Any) -> Next:
    raise RuntimeError(f"the handler choked on {state.card}")


def test_an_engine_s_records_carry_the_run_and_hide_its_sensitive_values(caught: Catch) -> None:
    with Engine("memory://") as engine:
        run = engine.run(cards, {"order": "o-1", "card": SECRET}, run_id="shop-1")
    assert run.status is RunStatus.ROLLED_BACK
    records = [r for r in caught.records if r.name in ("sagakit", "cardshop")]
    assert records
    lines = [JsonLogFormatter().format(r) for r in records]
    for line in lines:
        assert SECRET not in line, line
    for made in records:
        assert made.__dict__["run_id"] == "shop-1", made.getMessage()
        assert made.__dict__["saga"] == "card-shop"
        assert made.__dict__["version"] == "1"

    def fields(message: str) -> tuple[Any, ...]:
        found = [r for r in records if message in r.getMessage()]
        assert found, message
        return tuple(
            (r.__dict__["step"], r.__dict__["phase"], r.__dict__["attempt"]) for r in found
        )

    # The application's logger, on the step's thread, at each attempt.
    assert fields("holding order o-1") == (("hold", "action", 1), ("hold", "action", 2))
    # sagakit's record of the failed attempt, its message masked.
    assert fields("the bank timed out for ***") == (("hold", "action", 1),)
    assert fields("the card *** is blocked") == (("capture", "action", 1),)
    # The failure handler's traceback quoted the card: masked too.
    (handler,) = [r for r in records if "handler of step 'capture'" in r.getMessage()]
    assert handler.exc_info is None
    assert "the handler choked on ***" in (handler.exc_text or "")
    # A compensation's ctx.log and the application's logger in a coroutine.
    assert fields("releasing the hold on ***") == (("hold", "compensation", 1),)
    assert fields("released (attempt 1)") == (("hold", "compensation", 1),)


def test_records_of_runs_driven_at_once_keep_apart(caught: Catch) -> None:
    racing: Saga[dict[str, Any]] = Saga("racing")

    @racing.step
    async def work(state: dict[str, Any], ctx: StepContext) -> None:
        for _ in range(3):
            app_log.info("working on %s", state["n"])
            await asyncio.sleep(0.001)

    async def main() -> None:
        async with AsyncEngine("memory://") as engine:
            runs = await asyncio.gather(
                *(engine.run(racing, {"n": f"n{n}"}, run_id=f"race-{n}") for n in range(5))
            )
        assert {run.status for run in runs} == {RunStatus.COMPLETED}

    asyncio.run(main())
    seen: dict[str, set[str | None]] = {}
    for made in caught.records:
        if made.name == "cardshop":
            seen.setdefault(made.getMessage().split()[-1], set()).add(made.__dict__["run_id"])
    assert seen == {f"n{n}": {f"race-{n}"} for n in range(5)}


def test_the_text_format_masks_url_passwords_in_a_traceback_already_formatted() -> None:
    from sagakit.cli.logsetup import stderr_handler

    handler = stderr_handler("text", "%(message)s")
    try:
        raise ConnectionError("cannot reach postgresql://app:hunter2@db/orders")
    except ConnectionError:
        record = logging.LogRecord("sagakit", logging.ERROR, __file__, 1, "lost", None, None)
        record.exc_info = sys.exc_info()
    # What a plain handler before this one leaves behind: the traceback as text.
    record.exc_text = logging.Formatter().formatException(record.exc_info)
    record.stack_info = "Stack (most recent call last):\n  postgresql://app:hunter2@db/orders"
    assert handler.formatter is not None
    text = handler.formatter.format(record)
    assert "hunter2" not in text
    assert "cannot reach postgresql://app:***@db/orders" in text
