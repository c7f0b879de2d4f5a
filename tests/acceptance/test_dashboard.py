"""The web dashboard on SQLite and PostgreSQL: every page, every action, its defences.

The application (`sagakit.dashboard.create_app`) is driven through
Starlette's test client over a store holding runs that completed, rolled
back, need attention, are paused, and are paused with a cancel recorded and
not acted on; ``sagakit dashboard`` itself runs as a subprocess.
"""

from __future__ import annotations

import re
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.testclient import TestClient

from sagakit import Engine, RunStatus
from sagakit.dashboard import create_app, token_auth

from . import dashapp
from .dashapp import CARD, QUESTION
from .helpers import fails, sagakit
from .stores import sql_store_url

__all__ = ["sql_store_url"]  # a fixture, used by name

APP = Path(__file__).parent
TOKEN = "correct-horse-battery-staple"
XSS_ID = "\"'><b onmouseover=alert(1)>x"
XSS_VALUE = "<img src=x onerror=alert(2)>"


def record_runs(url: str) -> None:
    """Runs in every status the pages show, one paused with a cancel pending."""
    dashapp.BROKEN.clear()
    dashapp.BROKEN.add("bad-stuck")
    with Engine(url) as engine:
        engine.register(*dashapp.SAGAS)
        assert engine.run(dashapp.refund, order("ok"), run_id="ok-1").status is RunStatus.COMPLETED
        rolled = engine.run(dashapp.refund, order("bad-rolled"), run_id="bad-rolled")
        assert rolled.status is RunStatus.ROLLED_BACK
        stuck = engine.run(dashapp.refund, order("bad-stuck"), run_id="bad-stuck")
        assert stuck.status is RunStatus.NEEDS_ATTENTION
        for run_id in ("approval-1", "approval-cancel"):
            assert engine.run(dashapp.approval, {}, run_id=run_id).status is RunStatus.PAUSED
        hostile = engine.run(dashapp.refund, order(XSS_VALUE), run_id=XSS_ID)
        assert hostile.status is RunStatus.COMPLETED
    # An engine that does not know the saga only records the cancel: it stays pending.
    with Engine(url) as bystander:
        bystander.cancel("approval-cancel", reason="customer left")
        assert bystander.get("approval-cancel").pending == 1


def order(order_id: str) -> dict[str, str]:
    return {"order_id": order_id, "card": CARD}


@pytest.fixture
def url(sql_store_url: str) -> Iterator[str]:
    record_runs(sql_store_url)
    yield sql_store_url
    dashapp.BROKEN.clear()


@pytest.fixture
def client(url: str) -> Iterator[TestClient]:
    with TestClient(create_app(url, sagas=dashapp.SAGAS)) as test_client:
        yield test_client


def page(client: TestClient, path: str, code: int = 200) -> str:
    response = client.get(path)
    assert response.status_code == code, response.text
    assert CARD not in response.text, f"the card number shows on {path}"
    return response.text


def csrf(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found is not None, "no form on the page"
    return found.group(1)


def status_of(url: str, run_id: str) -> RunStatus:
    with Engine(url) as engine:
        return engine.get(run_id).status


def journal_kinds(url: str, run_id: str) -> list[str]:
    with Engine(url) as engine:
        return [event.kind.value for event in engine.history(run_id)]


# -- pages ------------------------------------------------------------------------


def test_every_page_renders_and_no_sensitive_value_shows(client: TestClient) -> None:
    overview = page(client, "/")
    assert "1</strong> runs need attention" in overview
    assert "dash-refund" in overview
    assert "dash-approval" in overview
    inbox = page(client, "/attention")
    assert "bad-stuck" in inbox
    assert "incomplete" in inbox
    assert "stock service refused release for card ***" in inbox
    assert "card *** declined" in inbox, "the original error shows beside the compensation's"
    assert "left to undo, in order: <code>reserve</code>" in inbox
    runs = page(client, "/runs")
    for run_id in ("ok-1", "bad-rolled", "bad-stuck", "approval-1", "approval-cancel"):
        assert f">{run_id}</a>" in runs
        shown = page(client, f"/runs/{run_id}")
        assert f"<code>{run_id}</code>" in shown
        if run_id.startswith(("ok", "bad")):
            assert "&#34;card&#34;: &#34;***&#34;" in shown, "the state shows, masked"
    cancelling = page(client, "/runs/approval-cancel")
    assert "cancel (customer left)" in cancelling
    assert "not acted on yet" in cancelling
    rolled = page(client, "/runs/bad-rolled")
    assert "undo reserve" in rolled
    assert "rolled_back" in rolled
    assert "traceback" in rolled


def test_the_runs_list_filters_searches_and_pages(client: TestClient) -> None:
    paused = page(client, "/runs?status=paused")
    assert "approval-1" in paused
    assert "ok-1" not in paused
    by_saga = page(client, "/runs?saga=dash-approval")
    assert "approval-cancel" in by_saga
    assert "bad-rolled" not in by_saga
    found = page(client, "/runs?q=bad-stuck")
    assert ">bad-stuck</a>" in found
    assert "ok-1" not in found
    assert "no run nothing-like-it" in page(client, "/runs?q=nothing-like-it")
    assert ">ok-1</a>" not in page(client, "/runs?page=1"), "one page holds them all"


def test_a_paused_run_is_answered_with_a_button(client: TestClient, url: str) -> None:
    shown = page(client, "/runs/approval-1")
    assert QUESTION in shown
    assert 'name="name" value="approve"' in shown
    assert 'name="name" value="reject"' in shown
    done = client.post(
        "/actions/signal", data={"csrf": csrf(shown), "run_id": "approval-1", "name": "approve"}
    )
    assert done.status_code == 200
    assert str(done.url).endswith("/runs/approval-1?done=signal")
    assert status_of(url, "approval-1") is RunStatus.COMPLETED
    assert "signal received by dashboard:testclient" in done.text
    assert "answer sent." in done.text


def test_retry_from_the_inbox_rolls_the_run_back(client: TestClient, url: str) -> None:
    inbox = page(client, "/attention")
    dashapp.BROKEN.discard("bad-stuck")  # the stock service is fixed
    done = client.post(
        "/actions/retry",
        data={"csrf": csrf(inbox), "run_id": "bad-stuck", "step": "reserve", "note": "fixed"},
    )
    assert done.status_code == 200
    assert status_of(url, "bad-stuck") is RunStatus.ROLLED_BACK
    assert "retried by dashboard:testclient" in done.text
    assert "no run needs attention" in page(client, "/attention")


def test_resolve_with_a_note_shows_the_note_and_who(client: TestClient, url: str) -> None:
    inbox = page(client, "/attention")
    note = "released the stock by hand in the warehouse UI"
    done = client.post(
        "/actions/resolve", data={"csrf": csrf(inbox), "run_id": "bad-stuck", "note": note}
    )
    assert done.status_code == 200
    assert status_of(url, "bad-stuck") is RunStatus.ROLLED_BACK
    assert "resolved by dashboard:testclient" in done.text
    assert f"done by hand: {note}" in done.text
    with Engine(url) as engine:
        (resolved,) = [e for e in engine.history("bad-stuck") if e.kind.value == "resolved"]
    assert resolved.data["by"] == "dashboard:testclient"
    assert resolved.note == note


def test_a_completed_run_is_cancelled(client: TestClient, url: str) -> None:
    shown = page(client, "/runs/ok-1")
    done = client.post(
        "/actions/cancel", data={"csrf": csrf(shown), "run_id": "ok-1", "reason": "returned"}
    )
    assert done.status_code == 200
    assert status_of(url, "ok-1") is RunStatus.CANCELLED
    assert "cancel requested by dashboard:testclient" in done.text


def test_a_refused_action_says_why_and_changes_nothing(client: TestClient, url: str) -> None:
    shown = page(client, "/attention")  # a finished run's page has no form: post as if it had
    before = journal_kinds(url, "bad-rolled")
    refused = client.post(
        "/actions/resolve", data={"csrf": csrf(shown), "run_id": "bad-rolled", "note": "x"}
    )
    assert refused.status_code == 409
    assert "run &#39;bad-rolled&#39; is rolled_back; resolve applies only" in refused.text
    assert journal_kinds(url, "bad-rolled") == before
    assert (
        client.post(
            "/actions/resolve", data={"csrf": csrf(shown), "run_id": "bad-stuck"}
        ).status_code
        == 400
    ), "resolve needs a note"


# -- defences ---------------------------------------------------------------------


def test_a_post_without_the_csrf_token_is_refused(client: TestClient, url: str) -> None:
    page(client, "/attention")  # the cookie is set
    before = journal_kinds(url, "bad-stuck")
    for data in ({"run_id": "bad-stuck"}, {"run_id": "bad-stuck", "csrf": "x" * 43}):
        refused = client.post("/actions/resolve", data={**data, "note": "by hand"})
        assert refused.status_code == 403
        assert "CSRF" in refused.text
    fresh = TestClient(client.app)  # no cookie at all, the right token copied
    token = csrf(page(client, "/attention"))
    refused = fresh.post(
        "/actions/resolve", data={"csrf": token, "run_id": "bad-stuck", "note": "by hand"}
    )
    assert refused.status_code == 403
    assert journal_kinds(url, "bad-stuck") == before
    assert status_of(url, "bad-stuck") is RunStatus.NEEDS_ATTENTION


def test_the_overview_shows_the_backlog_of_runs_no_worker_holds(url: str) -> None:
    def due(html: str) -> int:
        if "no run is waiting for a worker" in html:
            return 0
        match = re.search(r"backlog: <strong>(\d+)</strong> runs due", html)
        assert match is not None, html
        return int(match.group(1))

    with TestClient(create_app(url, sagas=dashapp.SAGAS)) as client:
        before = due(page(client, "/"))
        with Engine(url) as engine:  # recorded, not driven: due for any worker
            engine.start(dashapp.refund, order("later-1"), run_id="later-1")
            engine.start(dashapp.refund, order("later-2"), run_id="later-2")
        overview = page(client, "/")
        assert due(overview) == before + 2
        assert "the oldest waiting" in overview
        assert "<title>overview · sagakit</title>" in overview


def test_without_its_saga_loaded_only_cancel_is_offered_and_recorded(url: str) -> None:
    with TestClient(create_app(url)) as client:  # no sagas: it cannot carry runs on
        inbox = page(client, "/attention")
        assert "bad-stuck" in inbox
        assert "/actions/retry" not in inbox
        assert "/actions/resolve" not in inbox
        assert "retry and resolve carry the run on here" in inbox
        assert "/actions/cancel" in inbox
        shown = page(client, "/runs/bad-stuck")
        assert "is not registered here" in shown
        done = client.post(
            "/actions/cancel", data={"csrf": csrf(shown), "run_id": "ok-1", "reason": "returned"}
        )
        assert done.status_code == 200  # after the redirect to the run's page
    with Engine(url) as engine:  # recorded for a worker, not acted on here
        assert [m.kind for m in engine.pending("ok-1")] == ["cancel"]
        assert engine.get("ok-1").status is RunStatus.COMPLETED


def test_read_only_hides_forms_and_refuses_posts(url: str) -> None:
    with TestClient(create_app(url, sagas=dashapp.SAGAS, read_only=True)) as client:
        for path in ("/", "/attention", "/runs", "/runs/bad-stuck", "/runs/approval-1"):
            html = page(client, path)
            assert 'method="post"' not in html
            assert "read-only" in html
        cookie_token = client.cookies.get("sagakit_csrf")
        refused = client.post(
            "/actions/retry", data={"csrf": cookie_token or "", "run_id": "bad-stuck"}
        )
        assert refused.status_code == 403
        assert "read-only" in refused.text
    assert journal_kinds(url, "bad-stuck")[-1] == "needs_attention"


def test_with_a_token_every_request_needs_it_and_actions_name_the_user(url: str) -> None:
    with TestClient(create_app(url, sagas=dashapp.SAGAS, auth=token_auth(TOKEN))) as client:
        denied = client.get("/")
        assert denied.status_code == 401
        assert "basic" in denied.headers["www-authenticate"].lower()
        wrong = client.get("/", auth=("alice", "not-the-token-at-all"))
        assert wrong.status_code == 401
        html = page_with(client, "/runs/approval-1", ("alice", TOKEN))
        assert (
            client.post(
                "/actions/signal",
                data={"csrf": csrf(html), "run_id": "approval-1", "name": "reject"},
            ).status_code
            == 401
        ), "a POST without the token is refused"
        assert status_of(url, "approval-1") is RunStatus.PAUSED
        done = client.post(
            "/actions/signal",
            data={"csrf": csrf(html), "run_id": "approval-1", "name": "reject"},
            auth=("alice", TOKEN),
        )
        assert done.status_code == 200
        assert "signal received by dashboard:alice" in done.text
        bearer = client.get("/", headers={"authorization": f"Bearer {TOKEN}"})
        assert bearer.status_code == 200
    assert status_of(url, "approval-1") is RunStatus.ROLLED_BACK


def page_with(client: TestClient, path: str, auth: tuple[str, str]) -> str:
    response = client.get(path, auth=auth)
    assert response.status_code == 200
    return response.text


def test_short_tokens_are_refused() -> None:
    from sagakit.errors import SagaError

    with pytest.raises(SagaError, match="at least 16 characters"):
        token_auth("short")


def test_security_headers(client: TestClient) -> None:
    response = client.get("/runs/bad-stuck")
    policy = response.headers["content-security-policy"]
    assert "default-src 'none'" in policy
    assert "script-src 'self';" in policy, "the dashboard's own script only"
    assert "unsafe" not in policy, "no inline script or style, no eval"
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["cache-control"] == "no-store"
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie
    assert "samesite=strict" in cookie


def test_hostile_input_is_refused_or_escaped(client: TestClient) -> None:
    assert "no run &#39;no-such-run&#39;" in page(client, "/runs/no-such-run", 404)
    assert "page must be a number" in page(client, "/runs?page=abc", 400)
    assert "page must be a number" in page(client, "/attention?page=99999999", 400)
    assert "page must be a number" in page(client, "/runs?page=%C2%B2", 400)  # a Unicode digit
    assert "unknown status" in page(client, "/runs?status=<b>x</b>", 400)
    assert "<b>x</b>" not in page(client, "/runs?status=<b>x</b>", 400)
    listed = page(client, "/runs")
    assert XSS_ID not in listed
    assert "&#34;&#39;&gt;&lt;b onmouseover=alert(1)&gt;x" in listed
    shown = page(client, "/runs/%22%27%3E%3Cb%20onmouseover%3Dalert(1)%3Ex")
    assert XSS_ID not in shown
    assert XSS_VALUE not in shown
    assert "&lt;img src=x onerror=alert(2)&gt;" in shown
    assert client.get("/runs?q=" + "x" * 3000).status_code == 400


def test_create_app_needs_one_store() -> None:
    from sagakit.errors import SagaError

    with pytest.raises(SagaError, match="not both"):
        create_app()


# -- the command ------------------------------------------------------------------


def test_a_non_local_host_without_a_token_refuses_to_start(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    with Engine(f"sqlite:///{db}"):
        pass
    done = sagakit(
        tmp_path,
        *("dashboard", "--db", str(db), "--host", "0.0.0.0"),
        environ={"SAGAKIT_DASHBOARD_TOKEN": None},
    )
    err = fails(done, code=2)
    assert err.strip().count("\n") == 0
    assert "SAGAKIT_DASHBOARD_TOKEN" in err
    assert "Traceback" not in err
    short = sagakit(
        tmp_path,
        *("dashboard", "--db", str(db), "--host", "0.0.0.0"),
        environ={"SAGAKIT_DASHBOARD_TOKEN": "short"},
    )
    assert "at least 16 characters" in fails(short, code=2)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.mark.slow
def test_the_command_serves_the_pages_and_masks_the_password(postgres_url: str) -> None:
    # The test server trusts every local connection, so a password is taken and ignored.
    url = postgres_url.replace("postgres@", "postgres:s3cret-pw@", 1)
    record_runs(url)
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "sagakit", "dashboard", "--db", url, "--port", str(port)],
        cwd=APP,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={"PYTHONPATH": str(APP), "PATH": "/usr/bin:/bin"},
    )
    try:
        body = ""
        for _ in range(100):
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/attention", timeout=5)
            except httpx.TransportError:
                time.sleep(0.1)
                continue
            body = response.text
            break
        assert "bad-stuck" in body
        assert CARD not in body
        assert httpx.get(f"http://localhost:{port}/attention", timeout=5).status_code == 200
        # A page of another site re-pointed at 127.0.0.1 (DNS rebinding) is not answered.
        rebound = httpx.get(
            f"http://127.0.0.1:{port}/attention", headers={"Host": "evil.example"}, timeout=5
        )
        assert rebound.status_code == 400
        assert "bad-stuck" not in rebound.text
    finally:
        process.terminate()
        out, err = process.communicate(timeout=30)
    assert f"on http://127.0.0.1:{port}/" in out
    assert "s3cret-pw" not in out + err


def test_mounted_under_a_prefix_in_a_host_application(url: str) -> None:
    from starlette.applications import Starlette
    from starlette.routing import Mount

    with Engine(url) as engine:  # the host owns the engine, and closes it
        host = Starlette(
            routes=[Mount("/sagas", app=create_app(engine=engine, sagas=dashapp.SAGAS))]
        )
        with TestClient(host) as client:
            first = client.get("/sagas/")
            assert "path=/sagas;" in first.headers["set-cookie"].lower(), "the cookie is scoped"
            overview = page(client, "/sagas/")
            assert 'href="/sagas/attention"' in overview
            assert client.get("/sagas/static/style.css").status_code == 200
            shown = page(client, "/sagas/runs/approval-1")
            assert 'action="/sagas/actions/signal"' in shown
            done = client.post(
                "/sagas/actions/signal",
                data={"csrf": csrf(shown), "run_id": "approval-1", "name": "approve"},
            )
            assert done.status_code == 200
            assert str(done.url).endswith("/sagas/runs/approval-1?done=signal")
        assert engine.get("approval-1").status is RunStatus.COMPLETED


def test_a_store_that_cannot_be_read_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE invoices (id INTEGER)")
    with TestClient(create_app(f"sqlite:///{other}", read_only=True)) as client:
        response = client.get("/runs")
        assert response.status_code == 503
        assert "Traceback" not in response.text
        assert "sagakit" in response.text
    with sqlite3.connect(other) as conn:
        tables = [row[0] for row in conn.execute("SELECT name FROM sqlite_master")]
    assert tables == ["invoices"], "a read-only dashboard creates nothing"
