"""`StepContext`: what a step's action or compensation learns about its call."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from sagakit.journal import JSON, ErrorInfo, Phase

logger = logging.getLogger("sagakit")


def idempotency_key(run_id: str, step: str, phase: Phase) -> str:
    """The stable key of a step's action or compensation within a run.

    The same for every attempt and after a crash, so an external service that
    deduplicates on it sees one operation, however often sagakit calls it.
    """
    base = f"{run_id}/{step}"
    return base if phase is Phase.ACTION else f"{base}/compensate"


@dataclass(frozen=True, slots=True)
class StepContext:
    """Handed to every action and compensation as its second argument.

    Attributes:
        run_id: The run.
        saga: The saga's name.
        version: The saga's version.
        step: The step's name.
        phase: ``"action"`` or ``"compensation"``.
        attempt: This attempt's number, from 1.
        idempotency_key: Stable across attempts and crashes; pass it to
            external services. A compensation has its own key.
        started_at: When this attempt started (the engine's clock).
        reason: For a compensation: why the run is undoing (``"failure"``).
        error: For a compensation: the error that made the run roll back.
        step_result: For a compensation: what its forward step returned.
        step_finished_at: For a compensation: when its forward step finished
            (or last failed, when its outcome is unknown).
        log: A logger whose records carry the run id and step.
    """

    run_id: str
    saga: str
    version: str
    step: str
    phase: Phase
    attempt: int
    idempotency_key: str
    started_at: float
    reason: str | None = None
    error: ErrorInfo | None = None
    step_result: JSON | None = None
    step_finished_at: float | None = None
    log: logging.LoggerAdapter[logging.Logger] = field(
        default_factory=lambda: logging.LoggerAdapter(logger)
    )

    @property
    def is_compensation(self) -> bool:
        """True when this call undoes the step."""
        return self.phase is Phase.COMPENSATION

    @property
    def since_step_finished(self) -> float | None:
        """Seconds from the forward step's end to this compensation's start.

        Lets a business rule depend on elapsed time (a full refund within
        24 hours, a fee after).
        """
        if self.step_finished_at is None:
            return None
        return self.started_at - self.step_finished_at


def run_logger(run_id: str, saga: str, step: str | None = None) -> logging.LoggerAdapter[Any]:
    """A logger whose every record carries ``run_id``, ``saga`` and ``step``."""
    return logging.LoggerAdapter(logger, {"run_id": run_id, "saga": saga, "step": step})
