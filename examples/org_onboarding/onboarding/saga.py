"""The org-onboarding saga: an LLM-proxy team and key, then the Org rows.

Three steps, in order:

1. ``create_team`` makes a team at the LLM proxy (undone by ``delete_team``);
2. ``create_key`` makes an API key for that team (undone by ``delete_key``);
3. ``commit_org`` writes `Org` and its owner's `OrgMember` to the
   application's database as a *local transaction*: the rows commit in the
   same database transaction as sagakit's record that the step succeeded,
   so they exist exactly once, or not at all.

``commit_org`` is the pivot: once the org is committed the onboarding has
happened and nothing may undo it. Before that, a failure — such as another
org already holding the name — undoes the earlier steps in reverse: the key
is deleted, then the team. If the proxy refuses those deletions too, the
run stops in ``needs_attention`` with the cause and every deletion error,
and its state names the team and key still standing, so nothing is left
behind without someone being told.

The saga also declares two *reconcilers* (keys first, then teams: a team
with keys cannot be deleted): each lists what the proxy holds with the
idempotency key it was made under, so ``sagakit reconcile`` finds a team or
key that no run owns any more (left by a bug, a purged run, a step that
timed out) and removes it when told to.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from sqlalchemy.exc import IntegrityError

from sagakit import Reconciler, Resource, RetryPolicy, Saga, StepContext

from .llm_proxy import LLMProxyClient, ProxyRejected
from .models import Org, OrgMember, session_in

__all__ = ["DELETION_RETRY", "SAGA_NAME", "Onboarding", "onboarding_saga"]

SAGA_NAME = "org-onboarding"

DELETION_RETRY = RetryPolicy(max_attempts=3, initial_delay=0.05, backoff=2.0, max_delay=0.5)
"""How long a deletion at the proxy is retried before a person is asked.

Short, so that the example reaches ``needs_attention`` within a second; a
real deployment would keep sagakit's default (20 attempts over ~17 minutes)
to ride out an outage of the proxy."""

# A proxy that does not answer, or answers 5xx, may answer the next call; one
# that refuses the request (4xx) will refuse it again.
PROXY_RETRY = RetryPolicy(max_attempts=3, initial_delay=0.05, permanent=(ProxyRejected,))

# A locked or busy database is worth another try; a name that is taken is not.
COMMIT_RETRY = RetryPolicy(max_attempts=3, initial_delay=0.05, permanent=(IntegrityError,))


class Onboarding(BaseModel):
    """The run's state: who asked for which org, and what has been made for it.

    Each step adds what its undo (or the next step) needs: the team's id, the
    key's id, the org's id. The key's secret is not kept here: the state is
    stored as plain JSON in the journal.
    """

    org_name: str
    owner_email: str
    team_id: str | None = None
    key_id: str | None = None
    org_id: int | None = None


def _recorded(value: str | None, what: str, ctx: StepContext) -> str:
    """An id an earlier step put in the state.

    It is always there when this is called: a step runs after the steps
    before it succeeded. (A compensation may run after its step timed out,
    with no id recorded: the deletions look the id up by the step's key.)
    """
    if value is None:
        raise RuntimeError(f"run {ctx.run_id}: the state has no {what} id")
    return value


def onboarding_saga(
    proxy: LLMProxyClient,
    *,
    schema: str | None = None,
    deletion_retry: RetryPolicy = DELETION_RETRY,
) -> Saga[Onboarding]:
    """The onboarding saga, talking to ``proxy``.

    Args:
        proxy: The client of the LLM proxy the steps create things at.
        schema: The schema of the Org tables (see `models.create_tables`).
        deletion_retry: The retry policy of both deletions (the compensations).
    """

    def keys() -> list[Resource]:
        return [
            Resource(k.key_id, k.idempotency_key, k.created_at, name=f"of {k.team_id}")
            for k in proxy.list_keys()
        ]

    def teams() -> list[Resource]:
        return [
            Resource(t.team_id, t.idempotency_key, t.created_at, name=t.alias)
            for t in proxy.teams()
        ]

    saga: Saga[Onboarding] = Saga(
        SAGA_NAME,
        state=Onboarding,
        reconcilers=[
            # Keys first: the proxy refuses to delete a team that holds keys.
            Reconciler("key", keys, lambda key: proxy.delete_key(key.id), step="create_key"),
            Reconciler("team", teams, lambda team: proxy.delete_team(team.id), step="create_team"),
        ],
    )

    @saga.step(retry=PROXY_RETRY)
    def create_team(state: Onboarding, ctx: StepContext) -> dict[str, Any]:
        # The idempotency key is the same for every attempt and after a crash,
        # so the proxy makes one team however often this runs.
        team = proxy.create_team(state.org_name, idempotency_key=ctx.idempotency_key)
        return {"team_id": team.team_id}

    @create_team.compensate(retry=deletion_retry)
    def delete_team(state: Onboarding, ctx: StepContext) -> None:
        # No id in the state: create_team timed out and its answer was lost.
        # The proxy knows what was made under the step's idempotency key.
        team_id = state.team_id or next(
            (t.team_id for t in proxy.teams() if t.idempotency_key == ctx.action_key), None
        )
        if team_id is not None:
            proxy.delete_team(team_id)

    @saga.step(retry=PROXY_RETRY)
    def create_key(state: Onboarding, ctx: StepContext) -> dict[str, Any]:
        team_id = _recorded(state.team_id, "team", ctx)
        key = proxy.create_key(team_id, idempotency_key=ctx.idempotency_key)
        # An application would hand key.secret to its secret store here.
        return {"key_id": key.key_id}

    @create_key.compensate(retry=deletion_retry)
    def delete_key(state: Onboarding, ctx: StepContext) -> None:
        key_id = state.key_id or next(
            (k.key_id for k in proxy.list_keys() if k.idempotency_key == ctx.action_key), None
        )
        if key_id is not None:
            proxy.delete_key(key_id)

    @saga.step(kind="pivot", local_transaction=True, retry=COMMIT_RETRY)
    def commit_org(state: Onboarding, ctx: StepContext) -> dict[str, Any]:
        org = Org(
            name=state.org_name,
            llm_team_id=_recorded(state.team_id, "team", ctx),
            llm_key_id=_recorded(state.key_id, "key", ctx),
            onboarding_run=ctx.run_id,
            members=[OrgMember(email=state.owner_email, role="owner")],
        )
        with session_in(ctx.connection, schema=schema) as session:
            session.add(org)
            # flush, not commit: the INSERTs run now (a taken name raises
            # IntegrityError here), and sagakit commits them with the step.
            session.flush()
            return {"org_id": org.id}

    return saga
