"""The dashboard in a real browser: headless Chromium driven by Playwright.

The application is served by uvicorn on a free local port (in a thread of
this process) over a SQLite store holding runs in every status (the
acceptance tests' runs, plus a second run that needs attention). Playwright
drives Debian's Chromium (``/usr/bin/chromium``; ``scripts/test.sh`` installs
it), never a browser of its own.

Without Chromium or Playwright these tests are skipped, except under
``CI=true``, where that fails them. Each page's screenshot is taken; with
``SAGAKIT_SCREENSHOTS=DIR`` set they are written there (``docs/img`` holds
the documentation's), else into the test's temporary directory.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from acceptance import dashapp
from acceptance.helpers import fails, sagakit
from acceptance.test_dashboard import order, record_runs, status_of
from sagakit import Engine, RunStatus
from sagakit.dashboard import create_app

CHROMIUM = Path(os.environ.get("SAGAKIT_CHROMIUM", "/usr/bin/chromium"))
TIMEOUT_MS = 15_000  # a bound on a hang, not a speed to meet


def _browser_problem() -> str | None:
    if not CHROMIUM.exists():
        return f"no Chromium at {CHROMIUM}: scripts/test.sh installs Debian's chromium"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as exc:
        return f"Playwright is not installed (the dev extra): {exc}"
    return None


def require_browser() -> None:
    """Skip (fail under CI=true) without Chromium or Playwright, as PostgreSQL's tests do."""
    problem = _browser_problem()
    if problem is not None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"CI needs the browser tests' Chromium: {problem}")
        pytest.skip(problem)


# -- fixtures ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM))
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1100, "height": 720})
    context.set_default_timeout(TIMEOUT_MS)
    shown = context.new_page()
    refused: list[str] = []
    # A script or style the CSP blocks shows as a console error: there must be none.
    shown.on("console", lambda msg: refused.append(msg.text) if msg.type == "error" else None)
    yield shown
    context.close()
    assert not [m for m in refused if "Content Security Policy" in m], refused


@pytest.fixture
def url(tmp_path: Path) -> Iterator[str]:
    store = f"sqlite:///{tmp_path / 'runs.db'}"
    record_runs(store)
    dashapp.BROKEN.add("bad-other")
    with Engine(store) as engine:
        engine.register(*dashapp.SAGAS)
        other = engine.run(dashapp.refund, order("bad-other"), run_id="bad-other")
        assert other.status is RunStatus.NEEDS_ATTENTION
    yield store
    dashapp.BROKEN.clear()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Served:
    """uvicorn serving an application in a thread, on a free local port."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self.port = free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "the dashboard did not start"
            assert self.thread.is_alive(), "the dashboard stopped at start"
            time.sleep(0.02)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


@pytest.fixture
def base(url: str) -> Iterator[str]:
    with Served(create_app(url, sagas=dashapp.SAGAS)) as address:
        yield address


def screenshot(page: Any, name: str, tmp_path: Path) -> Path:
    """The page's screenshot, ``dashboard-NAME.png``, where `SAGAKIT_SCREENSHOTS` says."""
    where = Path(os.environ.get("SAGAKIT_SCREENSHOTS") or tmp_path)
    where.mkdir(parents=True, exist_ok=True)
    path = where / f"dashboard-{name}.png"
    page.screenshot(path=str(path))
    assert path.read_bytes().startswith(b"\x89PNG")
    return path


def inbox_entry(page: Any, run_id: str) -> Any:
    return page.locator("section.inbox-run", has=page.get_by_role("link", name=run_id, exact=True))


# -- actions ----------------------------------------------------------------------


def test_the_overview_leads_to_the_inbox_and_retry_rolls_back(
    page: Any, base: str, url: str, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    page.goto(f"{base}/")
    expect(page.locator(".attention-count")).to_contain_text("2 runs need attention")
    expect(page.locator("table")).to_contain_text("dash-refund")
    # ok-1, bad-rolled and the hostile run finished just now: the chart counts them.
    expect(page.locator(".throughput-total")).to_have_text("3")
    screenshot(page, "overview", tmp_path)

    page.get_by_role("link", name="runs need attention").click()
    page.wait_for_url(f"{base}/attention")
    entry = inbox_entry(page, "bad-stuck")
    expect(entry).to_contain_text("the rollback is incomplete")
    expect(entry).to_contain_text("left to undo, in order: reserve")
    expect(entry).not_to_contain_text(dashapp.CARD)
    screenshot(page, "inbox", tmp_path)

    dashapp.BROKEN.discard("bad-stuck")  # the stock service is fixed
    entry.locator("form[action$='/actions/retry'] input[name=note]").fill("stock service fixed")
    entry.get_by_role("button", name="retry").click()
    page.wait_for_url(f"{base}/runs/bad-stuck?done=retry")
    expect(page.locator("h1 .status")).to_have_text("rolled_back")
    expect(page.locator("table.timeline")).to_contain_text("retried by dashboard:127.0.0.1")
    assert status_of(url, "bad-stuck") is RunStatus.ROLLED_BACK

    page.get_by_role("link", name="needs attention").click()
    expect(page.locator("main")).not_to_contain_text("bad-stuck")
    expect(inbox_entry(page, "bad-other")).to_be_visible()


def test_resolve_with_a_note_shows_it_in_the_timeline(page: Any, base: str, url: str) -> None:
    from playwright.sync_api import expect

    note = "released the stock by hand in the warehouse UI"
    page.goto(f"{base}/attention")
    entry = inbox_entry(page, "bad-other")
    entry.locator("form[action$='/actions/resolve'] input[name=note]").fill(note)
    entry.get_by_role("button", name="resolve").click()
    page.wait_for_url(f"{base}/runs/bad-other?done=resolve")
    timeline = page.locator("table.timeline")
    expect(timeline).to_contain_text(f"done by hand: {note}")
    expect(timeline).to_contain_text("resolved by dashboard:127.0.0.1")
    assert status_of(url, "bad-other") is RunStatus.ROLLED_BACK
    assert status_of(url, "bad-stuck") is RunStatus.NEEDS_ATTENTION, "only that run moved"


def test_a_paused_run_is_answered_with_a_button_and_completes(
    page: Any, base: str, url: str, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    page.goto(f"{base}/runs/approval-1")
    question = page.locator("section.question")
    expect(question).to_contain_text(dashapp.QUESTION)
    expect(question.get_by_role("button")).to_have_count(2)
    screenshot(page, "run", tmp_path)
    question.get_by_role("button", name="approve").click()
    page.wait_for_url(f"{base}/runs/approval-1?done=signal")
    expect(page.locator("h1 .status")).to_have_text("completed")
    expect(page.locator("section.question")).to_have_count(0)
    expect(page.locator("table.timeline")).to_contain_text("publish")
    assert status_of(url, "approval-1") is RunStatus.COMPLETED


def test_a_completed_run_is_cancelled(page: Any, base: str, url: str, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    page.goto(f"{base}/runs")
    expect(page.locator("main table")).to_contain_text("approval-cancel")
    screenshot(page, "runs", tmp_path)
    page.get_by_role("link", name="ok-1", exact=True).click()
    page.locator("input[name=reason]").fill("goods returned")
    page.get_by_role("button", name="cancel").click()
    page.wait_for_url(f"{base}/runs/ok-1?done=cancel")
    expect(page.locator("h1 .status")).to_have_text("cancelled")
    assert status_of(url, "ok-1") is RunStatus.CANCELLED


def test_a_sagas_page_draws_its_steps_and_counts_its_runs(
    page: Any, base: str, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    page.goto(base)
    page.get_by_role("link", name="dash-refund").first.click()
    page.wait_for_url(f"{base}/sagas/dash-refund")
    diagram = page.locator("svg").first
    expect(diagram).to_be_visible()
    expect(diagram).to_contain_text("reserve")
    expect(diagram).to_contain_text("charge")
    expect(page.locator("main")).to_contain_text("needs_attention")
    screenshot(page, "saga", tmp_path)


# -- defences ---------------------------------------------------------------------


def test_a_post_without_the_csrf_token_is_refused(page: Any, base: str, url: str) -> None:
    page.goto(f"{base}/attention")  # the browser holds the CSRF cookie now
    refused = page.request.post(
        f"{base}/actions/resolve", form={"run_id": "bad-stuck", "note": "by hand"}
    )
    assert refused.status == 403
    assert "CSRF" in refused.text()
    assert status_of(url, "bad-stuck") is RunStatus.NEEDS_ATTENTION


def test_a_read_only_dashboard_shows_no_buttons(page: Any, url: str) -> None:
    from playwright.sync_api import expect

    with Served(create_app(url, sagas=dashapp.SAGAS, read_only=True)) as base:
        for path in ("/", "/attention", "/runs", "/runs/bad-stuck", "/runs/approval-1"):
            page.goto(f"{base}{path}")
            expect(page.locator("header .badge")).to_have_text("read-only")
            expect(page.locator("form[method=post]")).to_have_count(0)
            for name in ("retry", "resolve", "cancel", "approve", "reject"):
                expect(page.get_by_role("button", name=name, exact=True)).to_have_count(0)
    assert status_of(url, "approval-1") is RunStatus.PAUSED


def test_a_non_local_address_without_auth_refuses_to_start(tmp_path: Path, url: str) -> None:
    port = free_port()
    done = sagakit(
        tmp_path,
        *("dashboard", "--db", url, "--host", "0.0.0.0", "--port", str(port)),
        environ={"SAGAKIT_DASHBOARD_TOKEN": None},
    )
    err = fails(done, code=2)
    assert "SAGAKIT_DASHBOARD_TOKEN" in err
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", port)) != 0, "nothing listens"


# -- live refresh -----------------------------------------------------------------


def test_pages_show_runs_moving_without_a_reload(page: Any, base: str, url: str) -> None:
    from playwright.sync_api import expect

    page.goto(f"{base}/runs/approval-1")
    expect(page.locator("h1 .status")).to_have_text("paused")
    # A reload would drop this: it shows the page was refreshed in place.
    page.evaluate("window.notReloaded = true")

    inbox = page.context.new_page()
    inbox.goto(f"{base}/attention")
    typed = "half typed, not sent"
    inbox_entry(inbox, "bad-other").locator(
        "form[action$='/actions/resolve'] input[name=note]"
    ).fill(typed)
    inbox.evaluate("window.notReloaded = true")

    with Engine(url) as engine:  # another process's worker, as far as the pages know
        engine.register(*dashapp.SAGAS)
        assert engine.signal("approval-1", "approve").status is RunStatus.COMPLETED
        dashapp.BROKEN.discard("bad-stuck")
        assert engine.retry("bad-stuck").status is RunStatus.ROLLED_BACK

    expect(page.locator("h1 .status")).to_have_text("completed")
    expect(page.locator("table.timeline")).to_contain_text("publish")
    assert page.evaluate("window.notReloaded") is True

    expect(inbox.locator("main")).not_to_contain_text("bad-stuck")
    kept = inbox_entry(inbox, "bad-other").locator(
        "form[action$='/actions/resolve'] input[name=note]"
    )
    expect(kept).to_have_value(typed)
    assert inbox.evaluate("window.notReloaded") is True
