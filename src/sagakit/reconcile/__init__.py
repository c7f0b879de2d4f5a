"""Reconciliation: find the external resources no run owns any more, and remove them.

A saga declares `Reconciler`s (`sagakit.definition.reconciler`): how to list
the resources of one kind with the idempotency key each was created under,
and how to remove one. A pass (`reconcile`, behind `AsyncEngine.reconcile`
and ``sagakit reconcile``) matches each key back to its run and step
(`match`, pure) and judges the resource: an *orphan* if its step was undone,
if its run ended without the step succeeding, or if no run of that id is
stored; *live* if a run owns it or may still (younger than the grace period,
or its run still going). Orphans are removed only when asked, each removal
journaled on its run (``orphan_removed``).
"""

from __future__ import annotations

from sagakit.reconcile.match import Reason, Verdict, classify, parse_key, step_fate
from sagakit.reconcile.reconciling import (
    Finding,
    ListingFailure,
    Outcome,
    ReconcileReport,
    reconcile,
)

__all__ = [
    "Finding",
    "ListingFailure",
    "Outcome",
    "Reason",
    "ReconcileReport",
    "Verdict",
    "classify",
    "parse_key",
    "reconcile",
    "step_fate",
]
