"""Onboard three orgs under one name and show what sagakit does with each.

1. Ada onboards an org: a team and an API key are made at the LLM proxy
   (over HTTP), then the Org and its owner are committed: ``completed``.
2. Bob onboards an org with the same name: the commit fails on the unique
   name, so the key and the team are deleted again: ``rolled_back``.
3. Cy does the same while the proxy fails every deletion (HTTP 503): the
   run ``needs_attention``, and the alert names the cause, every failed
   deletion and what is still standing. The operator repairs the proxy and
   retries the run: ``rolled_back``.
4. Dan does the same while the proxy has a bug: every DELETE answers 204
   and deletes nothing, so the undo "succeeds" (``rolled_back``) and Dan's
   team and key are orphaned. ``sagakit reconcile`` (the real command, run
   as a process) finds them, and ``--apply`` removes them; Ada's live team
   and key are left alone.

Then it prints what the proxy still holds and what the database holds, and
exits 0 only if every run ended as described and nothing is orphaned.

Usage: python examples/org_onboarding/main.py [--db FILE_OR_URL]
"""

from __future__ import annotations

import argparse
import os
import secrets
import shlex
import subprocess
import sys
from pathlib import Path

from onboarding import (
    LLMProxy,
    LLMProxyClient,
    Onboarding,
    OrgSummary,
    Team,
    create_tables,
    onboarding_saga,
    read_orgs,
)
from rich.console import Console

from sagakit import AttentionReport, Engine, Run, RunStatus
from sagakit.timeline import build_timeline, render_timeline, short_error

console = Console(highlight=False)
_URL_SCHEMES = ("sqlite:", "postgresql:", "postgres:")


def alert(report: AttentionReport) -> None:
    """The ``on_attention`` hook: what a page to the on-call engineer would say."""
    undo_errors = [e for e in report.errors if e.phase == "compensation"]
    lines = [
        f"ALERT run {report.run.id}: {report.phase} of {report.step} gave up "
        f"after {report.attempts} attempts",
        f"  cause: {short_error(report.cause)}",
    ]
    if undo_errors:
        last = short_error(undo_errors[-1])
        lines.append(f"  the undo failed {len(undo_errors)} times, last: {last}")
    # The state holds what each step made, so the alert can say what still stands.
    lines.append(f"  at the proxy: team {report.state['team_id']}, key {report.state['key_id']}")
    for line in lines:
        console.print(line, style="magenta", soft_wrap=True, markup=False)


def show(engine: Engine, run: Run) -> None:
    """Print a run's timeline, as ``sagakit show`` draws it."""
    console.print(render_timeline(build_timeline(engine.history(run.id), run)))


def heading(text: str) -> None:
    console.print()
    console.print(text, style="bold", soft_wrap=True)


def holdings(teams: list[Team], orgs: list[OrgSummary]) -> None:
    """Print what the proxy and the database hold."""
    heading("what the LLM proxy holds (GET /teams)")
    for team in teams:
        console.print(f"  {team.team_id} {team.alias!r}, keys: {', '.join(team.keys) or '-'}")
    heading("what the application's database holds (Org, OrgMember)")
    for org in orgs:
        console.print(
            f"  {org.name!r}: team {org.llm_team_id}, key {org.llm_key_id}, "
            f"members {', '.join(org.members)} (run {org.onboarding_run})",
            soft_wrap=True,
        )


def reconcile(db: str, proxy_url: str, *options: str) -> int:
    """Run ``sagakit reconcile --app onboarding.app`` as its own process; print what it prints."""
    command = ["sagakit", "reconcile", "--app", "onboarding.app", "--db", db, *options]
    console.print(f"$ {shlex.join(command)}", style="bold", soft_wrap=True, markup=False)
    here = str(Path(__file__).resolve().parent)
    path = os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "LLM_PROXY_URL": proxy_url, "PYTHONPATH": path}
    # Wide enough for the table's idempotency keys on one line.
    env["COLUMNS"] = str(max(console.width, 120))
    done = subprocess.run(
        [sys.executable, "-m", "sagakit", *command[1:]],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    console.print(done.stdout.rstrip(), markup=False, soft_wrap=True)
    if done.stderr.strip():
        console.print(done.stderr.rstrip(), style="red", markup=False, soft_wrap=True)
    return done.returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--db",
        default="org-onboarding.db",
        metavar="FILE_OR_URL",
        help="the database of the runs and of the org tables: a SQLite file, or a "
        "store URL such as postgresql://app@localhost/app (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    url = args.db if args.db.startswith(_URL_SCHEMES) else f"sqlite:///{args.db}"
    # Each invocation gets its own names and run ids: the file may hold
    # earlier invocations' orgs, while the proxy starts empty every time.
    batch = secrets.token_hex(3)
    org_name = f"Acme {batch}"
    ends: dict[str, RunStatus] = {}

    with LLMProxy() as proxy, Engine(url, on_attention=alert) as engine:
        create_tables(url)  # after the engine has made sure the database is there
        console.print(f"LLM proxy at {proxy.url}; runs and orgs in {args.db}", soft_wrap=True)
        client = LLMProxyClient(proxy.url)
        saga = onboarding_saga(client)

        def onboard(person: str, email: str) -> Run:
            request = Onboarding(org_name=org_name, owner_email=email)
            run = engine.run(saga, request, run_id=f"onboard-{batch}-{person}")
            ends[run.id] = run.status
            return run

        heading(f"1. ada@example.com onboards {org_name!r}")
        show(engine, onboard("ada", "ada@example.com"))

        heading(f"2. bob@example.com onboards {org_name!r} too: the name is taken")
        show(engine, onboard("bob", "bob@example.com"))

        heading(f"3. cy@example.com onboards {org_name!r}; the proxy fails deletions (503)")
        proxy.fail_deletions(503)
        halted = onboard("cy", "cy@example.com")
        show(engine, halted)

        heading("the operator repairs the proxy and retries the run")
        proxy.fail_deletions(None)
        retried = engine.retry(halted.id, note="the LLM proxy accepts deletions again")
        ends[f"{retried.id} after retry"] = retried.status
        show(engine, retried)

        heading(f"4. dan@example.com onboards {org_name!r}; a proxy bug loses deletions")
        proxy.lose_deletions(True)
        lost = onboard("dan", "dan@example.com")
        proxy.lose_deletions(False)
        console.print(
            f"run {lost.id} is {lost.status}, yet the proxy still holds its team "
            f"{lost.data['team_id']} and key {lost.data['key_id']}",
            soft_wrap=True,
        )

        # --grace 0: the runs above are seconds old; by default (10m) a
        # resource that new is never touched, in case its step is in flight.
        heading("reconciliation finds the orphans (a dry run)")
        found = reconcile(args.db, proxy.url, "--grace", "0")
        heading("and removes them; Ada's live team and key stay")
        removed = reconcile(args.db, proxy.url, "--grace", "0", "--apply")
        if (found, removed) != (0, 0):
            ends["sagakit reconcile"] = RunStatus.FAILED
        heading(f"{lost.id} journaled each removal")
        show(engine, engine.get(lost.id))

        teams = client.teams()
    orgs = [o for o in read_orgs(url) if o.onboarding_run.startswith(f"onboard-{batch}-")]
    holdings(teams, orgs)

    expected = {
        f"onboard-{batch}-ada": RunStatus.COMPLETED,
        f"onboard-{batch}-bob": RunStatus.ROLLED_BACK,
        f"onboard-{batch}-cy": RunStatus.NEEDS_ATTENTION,
        f"onboard-{batch}-cy after retry": RunStatus.ROLLED_BACK,
        f"onboard-{batch}-dan": RunStatus.ROLLED_BACK,
    }
    problems = [
        f"run {run} ended {ends.get(run)}, not {want}"
        for run, want in expected.items()
        if ends.get(run) != want
    ]
    # Nothing orphaned: the proxy holds exactly the team and key of each org.
    at_proxy = {(team.team_id, key) for team in teams for key in team.keys or ("no key",)}
    in_database = {(org.llm_team_id, org.llm_key_id) for org in orgs}
    if at_proxy != in_database:
        problems.append(f"the proxy holds {sorted(at_proxy)}, the orgs {sorted(in_database)}")
    console.print()
    if problems:
        for problem in problems:
            console.print(f"UNEXPECTED: {problem}", style="bold red", soft_wrap=True)
        return 1
    console.print("every team and key at the proxy belongs to an org: nothing is orphaned")
    command = f"sagakit show onboard-{batch}-cy --db {shlex.quote(args.db)}"
    console.print(f"try: {command}", soft_wrap=True, markup=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
