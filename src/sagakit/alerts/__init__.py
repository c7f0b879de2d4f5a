"""Sinks that alerts are delivered to, beside a Python ``on_attention`` hook.

`WebhookSink` POSTs the `AttentionReport` (redacted) as JSON to a URL. Any
sink is a callable taking the report, so it is passed as ``on_attention``;
the engine delivers each alert at least once (see `sagakit.engine.attention`).
"""

from __future__ import annotations

from sagakit.alerts.sinks import Sinks
from sagakit.alerts.webhook import IDEMPOTENCY_HEADER, WebhookError, WebhookSink, report_json

__all__ = ["IDEMPOTENCY_HEADER", "Sinks", "WebhookError", "WebhookSink", "report_json"]
