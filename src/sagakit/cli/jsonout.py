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

import dataclasses
import json
from collections.abc import Iterable, Sequence
from enum import Enum
from importlib import resources
from typing import Any

import click

from sagakit.cli.common import sensitive_names
from sagakit.engine import Engine
from sagakit.journal import Event
from sagakit.reconcile import ReconcileReport, Verdict
from sagakit.redaction import Redactor
from sagakit.run import Run
from sagakit.timeline.build import Timeline, build_timeline
from sagakit.yamlfile import YamlReport

__all__ = [
    "emit",
    "history_document",
    "list_document",
    "output_schema",
    "reconcile_document",
    "run_document",
    "shown_run_document",
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


def _plain(value: Any) -> Any:
    """A dataclass, enum, tuple or mapping as plain JSON values, recursively."""
    if isinstance(value, Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _document(kind: str, **body: Any) -> dict[str, Any]:
    return {"schema": f"sagakit/{kind}/v{VERSION}", **body}


def pending_json(engine: Engine, run: Run) -> list[dict[str, Any]]:
    """The requests recorded for ``run`` and not yet acted on, as `pending_requests` shows them.

    A signal's payload is left out, as in the text: it may hold fields the
    saga marks sensitive, masked only once it is delivered and journaled.
    No query at all for a run without mail.
    """
    if not run.pending:
        return []
    requests = []
    for mail in engine.pending(run.id):
        data = mail.data if isinstance(mail.data, dict) else {}
        request: dict[str, Any] = {"kind": mail.kind, "at": mail.at}
        if mail.kind == "cancel":
            request["reason"] = data.get("reason")
            request["force"] = bool(data.get("force"))
        else:
            request["name"] = data.get("name")
        requests.append(request)
    return requests


def run_json(run: Run, pending: list[dict[str, Any]], *, state: bool = True) -> dict[str, Any]:
    """A run (already masked) as JSON; without its state when ``state`` is False (``list``)."""
    shown: dict[str, Any] = {
        "id": run.id,
        "saga": run.saga,
        "version": run.version,
        "status": run.status.value,
        "created_at": run.created_at,
        "updated_at": run.updated_at,
        "owner": run.owner,
        "error": _plain(run.error),
        "compensation_errors": _plain(run.compensation_errors),
        "pending": pending,
    }
    if state:
        shown["state"] = run.data
    return shown


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
    shown = _plain(timeline)
    shown["duration"] = timeline.duration
    for row, source in zip(shown["rows"], timeline.rows, strict=True):
        row["duration"] = source.duration
    return _document(
        "run",
        run=run_json(run, pending),
        timeline=shown,
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
    return _document("history", run_id=run_id, events=_plain(list(events)), pending=pending)


def validation_document(report: YamlReport, *, imported: bool) -> dict[str, Any]:
    """``sagakit validate --json``: ``sagakit/validation/v1``, every problem with its line."""
    outline = report.outline
    saga = None
    if report.ok and outline is not None:
        saga = {
            "name": outline.name,
            "version": outline.version,
            "steps": outline.steps,
            "stages": _plain(outline.stages),
        }
    return _document(
        "validation",
        file=report.file,
        ok=report.ok,
        format=report.format,
        imported=imported,
        saga=saga,
        errors=_plain(report.errors),
        notes=_plain(report.notes),
    )


def reconcile_document(db: str, report: ReconcileReport) -> dict[str, Any]:
    """``sagakit reconcile --json``: ``sagakit/reconcile/v1``, every resource and its verdict.

    Errors are masked already (`sagakit.reconcile`), and tracebacks left out.
    """

    def error(info: Any) -> Any:
        return None if info is None else {**_plain(info), "traceback": ""}

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
                "resource": _plain(f.resource),
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
