"""The ``--json`` output of the commands: one JSON document on stdout, versioned.

Every document is an object whose ``"schema"`` names its kind and version,
``"sagakit/<kind>/v<N>"``; the JSON Schema of every kind ships in the
package as ``sagakit/schema/output.schema.json`` (`output_schema`). Within
a version fields are only ever added; a field removed, renamed or given
another meaning takes the next version.

The documents are built here, in one place, from what the text output shows
(`Run`, `Event`, `Timeline`, `YamlReport`), after the same masking: fields
marked sensitive read ``***``, store URLs have their password masked.
Timestamps are seconds since the epoch (floats), as the journal keeps them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from importlib import resources
from typing import Any

import click

from sagakit.cli.common import sensitive_names
from sagakit.definition import Saga
from sagakit.engine import CheckReport, Engine, MisfitKind
from sagakit.journal import Event
from sagakit.reconcile import ReconcileReport, Verdict
from sagakit.redaction import Redactor
from sagakit.run import Run
from sagakit.store import Reservation
from sagakit.store.encrypted import Rotation
from sagakit.timeline.build import Timeline, build_timeline
from sagakit.timeline.document import pending_requests, plain, run_json, timeline_json
from sagakit.yamlfile import YamlReport

__all__ = [
    "action_document",
    "check_document",
    "emit",
    "history_document",
    "key_document",
    "list_document",
    "masked",
    "migration_document",
    "output_schema",
    "purge_document",
    "reconcile_document",
    "recovery_document",
    "reservations_document",
    "rotation_document",
    "run_document",
    "shown_run_document",
    "start_document",
    "validation_document",
]

VERSION = 1
"""The version every kind of document has today (``.../v1``)."""

json_option = click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print one JSON document on stdout instead of text (see `sagakit --help`, docs/cli.md).",
)


def _document(kind: str, **body: Any) -> dict[str, Any]:
    return {"schema": f"sagakit/{kind}/v{VERSION}", **body}


def pending_json(engine: Engine, run: Run) -> list[dict[str, Any]]:
    """The requests recorded for ``run`` and not yet acted on (`pending_requests`).

    No query at all for a run without mail.
    """
    if not run.pending:
        return []
    return pending_requests(engine.pending(run.id))


def list_document(
    db: str, runs: Iterable[tuple[Run, list[dict[str, Any]]]], *, limit: int
) -> dict[str, Any]:
    """``sagakit list --json``: ``sagakit/runs/v1``, the runs newest first, without their state."""
    shown = [run_json(run, pending, state=False) for run, pending in runs]
    return _document("runs", db=db, limit=limit, truncated=len(shown) == limit, runs=shown)


def run_document(
    run: Run,
    timeline: Timeline,
    pending: list[dict[str, Any]],
    *,
    loaded_versions: Sequence[str],
) -> dict[str, Any]:
    """``sagakit show --json`` and ``run --json``: ``sagakit/run/v1``, a run and its timeline."""
    return _document(
        "run",
        run=run_json(run, pending),
        timeline=timeline_json(timeline),
        loaded_versions=list(loaded_versions),
    )


def shown_run_document(engine: Engine, run: Run) -> dict[str, Any]:
    """`run_document` for a run as `print_run` shows it: its sensitive fields masked."""
    events = engine.history(run.id)
    redactor = Redactor.for_run(events, sensitive_names(engine, run.saga), run.data)
    run = run.redacted(redactor)
    timeline = build_timeline(redactor.events(events), run)
    return run_document(
        run, timeline, pending_json(engine, run), loaded_versions=engine.versions(run.saga)
    )


def history_document(
    run_id: str, events: Iterable[Event], pending: list[dict[str, Any]]
) -> dict[str, Any]:
    """``sagakit history --json``: ``sagakit/history/v1``, the run's journal (already masked)."""
    return _document("history", run_id=run_id, events=plain(list(events)), pending=pending)


def validation_document(report: YamlReport, *, imported: bool) -> dict[str, Any]:
    """``sagakit validate --json``: ``sagakit/validation/v1``, every problem with its line."""
    outline = report.outline
    saga = None
    if report.ok and outline is not None:
        saga = {
            "name": outline.name,
            "version": outline.version,
            "steps": outline.steps,
            "stages": plain(outline.stages),
        }
    return _document(
        "validation",
        file=report.file,
        ok=report.ok,
        format=report.format,
        imported=imported,
        saga=saga,
        errors=plain(report.errors),
        notes=plain(report.notes),
    )


def reconcile_document(db: str, report: ReconcileReport) -> dict[str, Any]:
    """``sagakit reconcile --json``: ``sagakit/reconcile/v1``, every resource and its verdict.

    Errors are masked already (`sagakit.reconcile`), and tracebacks left out.
    """

    def error(info: Any) -> Any:
        return None if info is None else {**plain(info), "traceback": ""}

    counts = {verdict.value: 0 for verdict in Verdict}
    for finding in report.findings:
        counts[finding.verdict.value] += 1
    return _document(
        "reconcile",
        db=db,
        at=report.at,
        grace=report.grace,
        applied=report.applied,
        ok=report.ok,
        counts={**counts, "removed": len(report.removed), "failed": len(report.failed)},
        findings=[
            {
                "saga": f.saga,
                "kind": f.kind,
                "resource": plain(f.resource),
                "verdict": f.verdict.value,
                "reason": f.reason.value,
                "run_id": f.run_id,
                "step": f.step,
                "run_status": None if f.run_status is None else f.run_status.value,
                "outcome": f.outcome.value,
                "error": error(f.error),
                "journaled": f.journaled,
            }
            for f in report.findings
        ],
        listing_failures=[
            {"saga": x.saga, "kind": x.kind, "error": error(x.error)}
            for x in report.listing_failures
        ],
    )


def check_document(
    db: str, report: CheckReport, sagas: Sequence[Saga[Any]], *, at: float
) -> dict[str, Any]:
    """``sagakit check --json``: ``sagakit/check/v1``, the runs in flight that would not fit.

    Args:
        db: The store, its password masked.
        report: What the check found.
        sagas: The definitions checked against (``--app``).
        at: When the check ran.
    """
    counts = {kind.value: 0 for kind in MisfitKind}
    for misfit in report.misfits:
        counts[misfit.kind.value] += 1
    return _document(
        "check",
        db=db,
        at=at,
        saga=report.saga,
        definitions=[{"saga": s.name, "version": s.version} for s in sagas],
        checked=report.checked,
        ok=report.ok,
        counts=counts,
        misfits=[
            {
                "run_id": m.run_id,
                "saga": m.saga,
                "version": m.version,
                "status": m.status.value,
                "kind": m.kind.value,
                "reasons": list(m.reasons),
            }
            for m in report.misfits
        ],
    )


def masked(engine: Engine, run: Run) -> Run:
    """``run`` with every field its journal or its saga marks sensitive read as ``***``."""
    redactor = Redactor.for_run(engine.history(run.id), sensitive_names(engine, run.saga), run.data)
    return run.redacted(redactor)


ACTION_OUTCOMES = ("applied", "recorded", "nothing_to_do")
"""What an operator action did: acted here, recorded for a worker, or changed nothing."""


def action_document(
    engine: Engine, action: str, run: Run, *, outcome: str, signal: str | None = None
) -> dict[str, Any]:
    """``retry``, ``resolve``, ``cancel``, ``signal --json``: ``sagakit/action/v1``.

    Args:
        engine: The engine the action went through (to mask the run).
        action: ``retry``, ``resolve``, ``cancel`` or ``signal``.
        run: The run as it is afterwards.
        outcome: One of `ACTION_OUTCOMES`: ``applied`` (the action was carried
            out here: the run is as it left it), ``recorded`` (a cancel or a
            signal posted for a worker to act on; the status is unchanged
            until then), or ``nothing_to_do`` (a retry of a run that does not
            need attention).
        signal: The signal's name, for ``signal``.
    """
    assert outcome in ACTION_OUTCOMES, outcome
    shown = masked(engine, run)
    return _document(
        "action",
        action=action,
        run_id=run.id,
        outcome=outcome,
        signal=signal,
        run=run_json(shown, pending_json(engine, shown)),
    )


def recovery_document(
    engine: Engine, db: str, recovered: Iterable[Run], untouched: Iterable[Run]
) -> dict[str, Any]:
    """``sagakit recover --json``: ``sagakit/recovery/v1``.

    ``recovered``: the runs driven, as they are now (a run still pending,
    running or compensating was handed back to wait for a retry timer);
    ``untouched``: active runs of sagas or versions not registered. Both
    without their state, as in `list_document`.
    """

    def shown(runs: Iterable[Run]) -> list[dict[str, Any]]:
        return [
            run_json(run, pending_json(engine, run), state=False)
            for run in (masked(engine, r) for r in runs)
        ]

    return _document("recovery", db=db, recovered=shown(recovered), untouched=shown(untouched))


def reservations_document(
    db: str, run_id: str | None, held: Iterable[Reservation], *, at: float
) -> dict[str, Any]:
    """``sagakit reservations --json``: ``sagakit/reservations/v1``, those held at ``at``."""
    return _document(
        "reservations",
        db=db,
        run_id=run_id,
        at=at,
        reservations=[
            {"name": r.name, "run_id": r.run_id, "expires_at": r.expires_at} for r in held
        ],
    )


def purge_document(
    db: str,
    *,
    dry_run: bool,
    before: float,
    counts: dict[str, int],
    archive: str | None,
    stopped: str | None,
) -> dict[str, Any]:
    """``sagakit purge --json``: ``sagakit/purge/v1``.

    ``counts`` is by status: what was purged, or with ``dry_run`` what would
    be. ``stopped`` says why a purge stopped early (the archive could not be
    written): the counts are then what was purged before it.
    """
    return _document(
        "purge",
        db=db,
        dry_run=dry_run,
        before=before,
        statuses=list(counts),
        counts=counts,
        total=sum(counts.values()),
        archive=archive,
        stopped=stopped,
    )


def migration_document(db: str, before: int, after: int) -> dict[str, Any]:
    """``sagakit migrate --json``: ``sagakit/migration/v1``, the schema version before and after."""
    return _document("migration", db=db, before=before, after=after, changed=before != after)


def key_document(key: str) -> dict[str, Any]:
    """``sagakit keys generate --json``: ``sagakit/key/v1``, the new key (its whole purpose)."""
    return _document("key", key=key, algorithm="fernet")


def rotation_document(db: str, done: Rotation, *, encrypt_plain: bool) -> dict[str, Any]:
    """``sagakit keys rotate --json``: ``sagakit/rotation/v1``; counts only, never a key."""
    return _document(
        "rotation",
        db=db,
        reencrypted=done.reencrypted,
        current=done.current,
        plain=done.plain,
        plain_encrypted=encrypt_plain,
        rewritten=plain(done.rewritten),
    )


def start_document(engine: Engine, db: str, run: Run) -> dict[str, Any]:
    """``sagakit start --json``: ``sagakit/start/v1``, the run as recorded (state masked).

    ``created`` is false when a run of that id and the same input was there
    already (starting is idempotent): ``run`` is then that run as it stands.
    """
    shown = masked(engine, run)
    return _document(
        "start",
        db=db,
        run_id=run.id,
        created=run.created,
        run=run_json(shown, pending_json(engine, shown)),
    )


def emit(document: dict[str, Any]) -> None:
    """Print a document on stdout, as one JSON text.

    Non-ASCII characters are escaped: no character a terminal acts on
    (control characters, bidirectional overrides) can reach it raw.
    """
    click.echo(json.dumps(document, indent=2, ensure_ascii=True))


def output_schema() -> dict[str, Any]:
    """The JSON Schema of every ``--json`` document, as shipped in the package."""
    text = resources.files("sagakit").joinpath("schema/output.schema.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema
