"""sagakit's pytest plugin, as a user's test suite meets it: through the installed entry point.

Each test writes a user's test file into a fresh directory and runs pytest
on it in a subprocess (pytest's own ``pytester``), with no conftest and no
``-p``: the fixtures are there because sagakit is installed.
"""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

pytestmark = pytest.mark.timeout(120)

USER_TESTS = """
from datetime import timedelta

from sagakit import RetryPolicy, RunStatus, Saga
from sagakit.testing import SkippingClock


def refund_saga(fails: int) -> Saga:
    saga = Saga("refund")
    tries = {"refund": 0}

    @saga.step
    def charge(state, ctx):
        return {"charged_at": ctx.now()}

    @charge.compensate
    def refund(state, ctx):
        tries["refund"] += 1
        if tries["refund"] <= fails:
            raise ConnectionError("the card processor is down")
        return {"since": ctx.since_step_finished}

    return saga


def test_engine_and_clock(saga_engine, saga_clock):
    assert isinstance(saga_clock, SkippingClock)
    saga = refund_saga(fails=5)
    assert saga_engine.run(saga, {}, run_id="r").status is RunStatus.COMPLETED
    saga_clock.advance(timedelta(days=1))
    run = saga_engine.cancel("r")
    assert run.status is RunStatus.CANCELLED
    assert run.state["since"] > 86_400  # a day, and the backoff of five failures


def test_sqlite_engine_and_drive(saga_engine_sqlite, saga_drive, saga_clock):
    saga = Saga("slow")
    tries = {"n": 0}

    @saga.step(retry=RetryPolicy(max_attempts=3, initial_delay=3600, max_delay=3600, jitter=0))
    def ping(state, ctx):
        tries["n"] += 1
        if tries["n"] < 3:
            raise ConnectionError("no answer")

    saga_engine_sqlite.start(saga, {}, run_id="s")
    assert saga_drive(saga_engine_sqlite, "s").status is RunStatus.COMPLETED
    assert saga_clock.elapsed == 7200
    assert str(saga_engine_sqlite.store.url).startswith("sqlite:")
"""


def test_the_fixtures_are_there_once_sagakit_is_installed(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_user=USER_TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q")
    result.assert_outcomes(passed=2)


def test_the_fixtures_are_listed_with_their_docs(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_nothing="def test_nothing():\n    pass\n")
    result = pytester.runpytest_subprocess("--fixtures", "-p", "no:cacheprovider")
    result.stdout.fnmatch_lines(
        [
            "*saga_clock*",
            "*A clock that skips time*",
            "*saga_engine -- *",
            "*saga_engine_sqlite*",
            "*saga_drive*",
        ]
    )
    assert result.ret == 0


def test_the_plugin_can_be_turned_off(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_user="def test_it(saga_engine):\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:sagakit", "-p", "no:cacheprovider")
    result.stdout.fnmatch_lines(["*fixture 'saga_engine' not found*"])
    result.assert_outcomes(errors=1)
