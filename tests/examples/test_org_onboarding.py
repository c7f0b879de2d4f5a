"""The org-onboarding example (examples/org_onboarding), end to end.

Its saga talks to the example's LLM proxy over real HTTP and commits the
Org rows as a local transaction, on SQLite and on PostgreSQL. The script
itself is run once as a real process.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from sagakit import AttentionReport, Engine, EventKind, RetryPolicy, Run, RunStatus, Saga

from .helpers import run_example

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "org_onboarding"
if str(EXAMPLE) not in sys.path:
    sys.path.insert(0, str(EXAMPLE))

from onboarding import (  # noqa: E402  (importable once EXAMPLE is on the path)
    ApiKey,
    LLMProxy,
    LLMProxyClient,
    Onboarding,
    OrgSummary,
    ProxyError,
    ProxyRejected,
    Team,
    create_tables,
    onboarding_saga,
    read_orgs,
)

INTEGRITY_ERROR = "sqlalchemy.exc.IntegrityError"
PROXY_ERROR = "onboarding.llm_proxy.ProxyError"
# Deletions give up after three quick attempts, so needs_attention comes at once.
QUICK_DELETIONS = RetryPolicy(max_attempts=3, initial_delay=0.01, max_delay=0.02)


@pytest.fixture
def proxy() -> Iterator[LLMProxy]:
    with LLMProxy() as running:
        yield running


@pytest.fixture
def client(proxy: LLMProxy) -> LLMProxyClient:
    return LLMProxyClient(proxy.url)


@dataclass
class App:
    """The example wired up on one store: the engine, the saga, and what the
    ``on_attention`` hook received."""

    url: str
    schema: str | None
    engine: Engine
    saga: Saga[Onboarding]
    alerts: list[AttentionReport]

    def onboard(self, run_id: str, org: str, email: str) -> Run:
        request = Onboarding(org_name=org, owner_email=email)
        return self.engine.run(self.saga, request, run_id=run_id)

    def orgs(self) -> list[OrgSummary]:
        return read_orgs(self.url, schema=self.schema)


@contextmanager
def _app(url: str, schema: str | None, client: LLMProxyClient) -> Iterator[App]:
    alerts: list[AttentionReport] = []
    with Engine(url, on_attention=alerts.append) as engine:
        # After the engine: on PostgreSQL it creates the test's schema.
        create_tables(url, schema=schema)
        saga = onboarding_saga(client, schema=schema, deletion_retry=QUICK_DELETIONS)
        yield App(url, schema, engine, saga, alerts)


@pytest.fixture(params=["sqlite", "postgresql"])
def app(request: pytest.FixtureRequest, tmp_path: Path, client: LLMProxyClient) -> Iterator[App]:
    """The example on a SQLite file, and on PostgreSQL with the Org tables in
    the test's own schema (so they are dropped with it)."""
    url = f"sqlite:///{tmp_path / 'app.db'}"
    schema = None
    if request.param == "postgresql":
        url = request.getfixturevalue("postgres_url")
        schema = parse_qs(urlsplit(url).query)["schema"][0]
    with _app(url, schema, client) as running:
        yield running


def _journal(app: App, run_id: str) -> list[tuple[str, str | None]]:
    """The run's step and compensation outcomes, in order."""
    wanted = {
        EventKind.STEP_SUCCEEDED,
        EventKind.STEP_FAILED,
        EventKind.COMPENSATION_SUCCEEDED,
        EventKind.COMPENSATION_FAILED,
    }
    return [(e.kind.value, e.step) for e in app.engine.history(run_id) if e.kind in wanted]


# -- the proxy and its client ----------------------------------------------------------


def test_repeated_posts_with_one_idempotency_key_create_once(
    proxy: LLMProxy, client: LLMProxyClient
) -> None:
    team = client.create_team("Acme", idempotency_key="run-1/create_team")
    assert client.create_team("Acme", idempotency_key="run-1/create_team") == team
    key = client.create_key(team.team_id, idempotency_key="run-1/create_key")
    again = client.create_key(team.team_id, idempotency_key="run-1/create_key")
    assert again == key
    assert key.secret.startswith("sk-")
    assert client.teams() == [Team(team.team_id, "Acme", (key.key_id,))]
    assert proxy.teams() == client.teams()

    with pytest.raises(ProxyRejected) as reused:
        client.create_team("Other", idempotency_key="run-1/create_team")
    assert reused.value.status == 422
    other = client.create_team("Acme")  # without a key, every call creates
    assert other.team_id != team.team_id
    assert len(client.teams()) == 2


def test_deletions_go_keys_first_and_can_be_made_to_fail(
    proxy: LLMProxy, client: LLMProxyClient
) -> None:
    team = client.create_team("Acme")
    key = client.create_key(team.team_id)
    with pytest.raises(ProxyRejected) as busy:
        client.delete_team(team.team_id)
    assert busy.value.status == 409
    assert key.key_id in busy.value.detail

    proxy.fail_deletions(503)
    with pytest.raises(ProxyError) as failing:
        client.delete_key(key.key_id)
    assert type(failing.value) is ProxyError  # a 5xx: worth retrying, not a rejection
    assert failing.value.status == 503
    assert str(failing.value) == (
        f"DELETE /keys/{key.key_id} answered HTTP 503 Service Unavailable: "
        "deletions are failing at the proxy"
    )
    assert proxy.teams() == [Team(team.team_id, "Acme", (key.key_id,))]

    proxy.fail_deletions(None)
    assert client.delete_key(key.key_id) is True
    assert client.delete_key(key.key_id) is False  # already gone: a repeated undo is fine
    assert client.delete_team(team.team_id) is True
    assert client.teams() == []
    with pytest.raises(ProxyRejected) as unknown:
        client.create_key(team.team_id)
    assert unknown.value.status == 404


# -- the saga ----------------------------------------------------------------------------


def _team(run: Run) -> Team:
    """The team (with its key) that ``run`` made at the proxy."""
    state: Onboarding = run.state
    assert state.team_id is not None
    assert state.key_id is not None
    return Team(state.team_id, state.org_name, (state.key_id,))


def _org(run: Run) -> OrgSummary:
    """The org ``run`` commits, as `read_orgs` reads it back."""
    state: Onboarding = run.state
    team = _team(run)
    return OrgSummary(state.org_name, team.team_id, team.keys[0], run.id, (state.owner_email,))


def test_a_new_org_completes_with_team_key_and_rows(app: App, client: LLMProxyClient) -> None:
    run = app.onboard("onboard-ada", "Acme", "ada@example.com")

    assert run.status is RunStatus.COMPLETED
    assert run.error is None
    assert run.state.org_id is not None
    assert client.teams() == [_team(run)]
    assert app.orgs() == [_org(run)]
    # The proxy numbers what it makes: the team first, then its key.
    assert client.teams() == [Team("team-1", "Acme", ("key-2",))]
    assert app.orgs() == [
        OrgSummary("Acme", "team-1", "key-2", "onboard-ada", ("ada@example.com",))
    ]
    assert _journal(app, "onboard-ada") == [
        ("step_succeeded", "create_team"),
        ("step_succeeded", "create_key"),
        ("step_succeeded", "commit_org"),
    ]
    assert app.alerts == []


def test_a_taken_name_rolls_back_and_deletes_the_team_and_key(
    app: App, client: LLMProxyClient
) -> None:
    ada = app.onboard("onboard-ada", "Acme", "ada@example.com")
    bob = app.onboard("onboard-bob", "Acme", "bob@example.com")

    assert bob.status is RunStatus.ROLLED_BACK
    assert bob.error is not None
    assert (bob.error.type, bob.error.step, bob.error.phase, bob.error.attempt) == (
        INTEGRITY_ERROR,
        "commit_org",
        "action",
        1,  # a permanent error: not retried
    )
    assert "orgs.name" in bob.error.message or "orgs_name_key" in bob.error.message
    # The journal keeps the message, but not the row's values.
    assert "[SQL parameters hidden due to hide_parameters=True]" in bob.error.message
    assert bob.compensation_errors == ()
    # The key went first (the proxy refuses to delete a team that has keys).
    assert _journal(app, "onboard-bob") == [
        ("step_succeeded", "create_team"),
        ("step_succeeded", "create_key"),
        ("step_failed", "commit_org"),
        ("compensation_succeeded", "create_key"),
        ("compensation_succeeded", "create_team"),
    ]
    # Bob's team and key were made, and are gone; Ada's stand, with her org only.
    assert _team(bob) != _team(ada)
    assert client.teams() == [_team(ada)]
    assert app.orgs() == [_org(ada)]
    assert bob.state.org_id is None
    assert app.alerts == []


def test_a_failing_deletion_needs_attention_then_retry_rolls_back(
    app: App, proxy: LLMProxy, client: LLMProxyClient
) -> None:
    ada = app.onboard("onboard-ada", "Acme", "ada@example.com")
    proxy.fail_deletions(503)
    cy = app.onboard("onboard-cy", "Acme", "cy@example.com")

    assert cy.status is RunStatus.NEEDS_ATTENTION
    # Both errors are kept: the commit's, and every failed deletion.
    assert cy.error is not None
    assert (cy.error.type, cy.error.step) == (INTEGRITY_ERROR, "commit_org")
    assert [(e.type, e.step, e.phase, e.attempt) for e in cy.compensation_errors] == [
        (PROXY_ERROR, "create_key", "compensation", 1),
        (PROXY_ERROR, "create_key", "compensation", 2),
        (PROXY_ERROR, "create_key", "compensation", 3),
    ]
    failed_delete = (
        f"DELETE /keys/{cy.state.key_id} answered HTTP 503 Service Unavailable: "
        "deletions are failing at the proxy"
    )
    assert {e.message for e in cy.compensation_errors} == {failed_delete}
    # The undo halted at the key: the team's deletion was not even tried.
    assert _journal(app, "onboard-cy")[3:] == [("compensation_failed", "create_key")] * 3

    # Nothing is orphaned silently: the alert says what failed and what stands.
    [report] = app.alerts
    assert (report.run.id, report.step, report.phase, report.attempts) == (
        "onboard-cy",
        "create_key",
        "compensation",
        3,
    )
    assert report.cause == cy.error
    assert [e.type for e in report.errors] == [INTEGRITY_ERROR] + [PROXY_ERROR] * 3
    assert (report.state["team_id"], report.state["key_id"]) == (
        cy.state.team_id,
        cy.state.key_id,
    )
    assert client.teams() == [_team(ada), _team(cy)]
    assert app.orgs() == [_org(ada)]

    # The operator repairs the proxy and retries: the undo resumes at the key.
    proxy.fail_deletions(None)
    retried = app.engine.retry("onboard-cy", note="the proxy accepts deletions again")

    assert retried.status is RunStatus.ROLLED_BACK
    assert retried.error == cy.error
    assert _journal(app, "onboard-cy")[-2:] == [
        ("compensation_succeeded", "create_key"),
        ("compensation_succeeded", "create_team"),
    ]
    assert client.teams() == [_team(ada)]
    assert app.orgs() == [_org(ada)]
    assert len(app.alerts) == 1


class _LosesFirstKeyAnswer(LLMProxyClient):
    """A client whose first ``create_key`` answer is lost after the proxy made the key."""

    lost = False

    def create_key(self, team_id: str, *, idempotency_key: str | None = None) -> ApiKey:
        key = super().create_key(team_id, idempotency_key=idempotency_key)
        if not self.lost:
            self.lost = True
            raise ConnectionResetError("the connection dropped before the answer arrived")
        return key


def test_a_lost_answer_is_retried_without_a_second_key(
    tmp_path: Path, proxy: LLMProxy, client: LLMProxyClient
) -> None:
    flaky = _LosesFirstKeyAnswer(proxy.url)
    with _app(f"sqlite:///{tmp_path / 'app.db'}", None, flaky) as app:
        run = app.onboard("onboard-ada", "Acme", "ada@example.com")

        assert run.status is RunStatus.COMPLETED
        failures = [
            (e.step, e.attempt, e.error.type if e.error else None)
            for e in app.engine.history(run.id)
            if e.kind is EventKind.STEP_FAILED
        ]
        assert failures == [("create_key", 1, "ConnectionResetError")]
        # The retry sent the same Idempotency-Key: the proxy answered with the
        # key it had made, and made no second one.
        assert client.teams() == [_team(run)]
        assert app.orgs() == [_org(run)]


# -- the script --------------------------------------------------------------------------


@pytest.mark.slow
def test_main_runs_every_scenario(tmp_path: Path) -> None:
    db = tmp_path / "onboarding.db"
    done = run_example("org_onboarding", "--db", str(db))

    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stderr == ""
    out = done.stdout
    assert "every team and key at the proxy belongs to an org: nothing is orphaned" in out
    assert "status completed" in out
    assert out.count("status rolled_back") == 3  # bob, cy, and dan (twice shown)
    assert "status needs_attention" in out
    assert "compensation of create_key gave up after 3 attempts" in out
    assert "IntegrityError" in out
    assert "HTTP 503 Service Unavailable" in out
    # What the script left in the file is what it printed.
    with Engine(f"sqlite:///{db}") as engine:
        ends = {run.id.rsplit("-", 1)[-1]: run.status for run in engine.runs()}
    assert ends == {
        "ada": RunStatus.COMPLETED,
        "bob": RunStatus.ROLLED_BACK,
        "cy": RunStatus.ROLLED_BACK,
        "dan": RunStatus.ROLLED_BACK,
    }
    # sagakit reconcile found dan's team and key (a dry run), then removed them.
    assert out.count("step_compensated  found") == 2
    assert out.count("step_compensated  removed") == 2
    assert "2 orphaned, 2 removed, 2 live" in out
    assert "orphan removed" in out
    [org] = read_orgs(f"sqlite:///{db}")
    assert org.members == ("ada@example.com",)
    assert f"team {org.llm_team_id}, key {org.llm_key_id}" in out


def _lose_dan(app: App, proxy: LLMProxy) -> Run:
    """Ada onboards; Dan onboards the same name while the proxy's deletions are lost."""
    app.onboard("ada", "Acme", "ada@example.com")
    proxy.lose_deletions(True)
    try:
        dan = app.onboard("dan", "Acme", "dan@example.com")
    finally:
        proxy.lose_deletions(False)
    assert dan.status is RunStatus.ROLLED_BACK
    return dan


def test_reconcile_removes_what_a_lost_deletion_left_and_keeps_the_live_org(
    app: App, proxy: LLMProxy, client: LLMProxyClient
) -> None:
    dan = _lose_dan(app, proxy)
    ada = app.engine.get("ada")
    assert client.teams() == [_team(ada), _team(dan)]

    # Seconds old: within the default grace, nothing is an orphan yet.
    young = app.engine.reconcile()
    assert {f.reason.value for f in young.findings} == {"in_grace"}

    dry = app.engine.reconcile(grace=0)
    orphans = {(f.kind, f.resource.id, f.reason.value) for f in dry.orphans}
    assert orphans == {
        ("key", dan.data["key_id"], "step_compensated"),
        ("team", dan.data["team_id"], "step_compensated"),
    }
    assert client.teams() == [_team(ada), _team(dan)]  # a dry run removes nothing

    applied = app.engine.reconcile(grace=0, apply=True)
    assert applied.ok
    assert len(applied.removed) == 2
    assert client.teams() == [_team(ada)]
    removed = [e for e in app.engine.history("dan") if e.kind is EventKind.ORPHAN_REMOVED]
    # The keys' reconciler is declared first: the key goes before its team.
    assert [(e.step, e.data["resource"]) for e in removed] == [
        ("create_key", dan.data["key_id"]),
        ("create_team", dan.data["team_id"]),
    ]
    assert app.engine.get("dan").status is RunStatus.ROLLED_BACK


@pytest.mark.slow
def test_sagakit_reconcile_on_the_example(tmp_path: Path, proxy: LLMProxy) -> None:
    import json
    import os
    import subprocess

    import jsonschema

    from sagakit.cli.jsonout import output_schema

    db = tmp_path / "onboarding.db"
    url = f"sqlite:///{db}"
    with Engine(url) as engine:
        create_tables(url)
        app = App(url, None, engine, onboarding_saga(LLMProxyClient(proxy.url)), [])
        dan = _lose_dan(app, proxy)

    def sagakit(*args: str, proxy_url: str | None = proxy.url) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "PYTHONPATH": str(EXAMPLE), "COLUMNS": "200", "NO_COLOR": "1"}
        env.pop("LLM_PROXY_URL", None)
        if proxy_url is not None:
            env["LLM_PROXY_URL"] = proxy_url
        return subprocess.run(
            [sys.executable, "-m", "sagakit", "reconcile", "--db", str(db), *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    done = sagakit("--app", "onboarding.app", "--grace", "0", "--json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    jsonschema.validate(doc, output_schema())
    assert doc["schema"] == "sagakit/reconcile/v1"
    assert doc["applied"] is False
    assert doc["counts"] == {"orphan": 2, "live": 2, "ignored": 0, "removed": 0, "failed": 0}
    assert len(proxy.teams()) == 2

    done = sagakit("--app", "onboarding.app", "--grace", "0", "--apply")
    assert done.returncode == 0, done.stderr
    assert "2 orphaned, 2 removed, 2 live" in done.stdout
    assert [t.team_id for t in proxy.teams()] != [dan.data["team_id"]]
    assert len(proxy.teams()) == 1

    # The proxy gone: removals fail; the listing failure is one line, exit 1.
    done = sagakit("--app", "onboarding.app", "--grace", "0", proxy_url="http://127.0.0.1:9")
    assert done.returncode == 1
    assert "listing failed" in done.stdout
    assert "Traceback" not in done.stdout + done.stderr
    # Without the proxy's URL the app cannot be imported: one line, exit 1.
    done = sagakit("--app", "onboarding.app", proxy_url=None)
    assert done.returncode == 1
    assert "LLM_PROXY_URL" in done.stderr
    assert "Traceback" not in done.stderr
