"""`WebhookSink`: an alert as an HTTP POST of the redacted report, as JSON.

Needs httpx: ``pip install -e '.[webhook]'`` from the repository. The receiver gets the
report with every sensitive field masked (`AttentionReport.redacted`), and
an ``Idempotency-Key`` header that is the same for every delivery of one
alert (``run_id/attention/seq``): alerts are delivered at least once, so a
receiver drops the repeats by that key. A 2xx answer is a delivery; any
other answer, a timeout or a connection error fails the try, which the
engine journals and retries with backoff.

The URL may hold a secret (a password, a token in its path or query): it is
never printed. Messages and the journal show the scheme, host and port only.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Final
from urllib.parse import urlsplit

from sagakit.errors import SagaError
from sagakit.journal import JSON, ErrorInfo
from sagakit.run import AttentionReport, Run

IDEMPOTENCY_HEADER: Final = "Idempotency-Key"
"""The header that carries `AttentionReport.idempotency_key`."""

PAYLOAD_VERSION: Final = 1
"""The version of the JSON shape `report_json` writes."""


class WebhookError(SagaError):
    """A webhook did not take an alert: an answer other than 2xx, or no answer."""


def report_json(report: AttentionReport) -> JSON:
    """The report as the JSON object a webhook receives (version `PAYLOAD_VERSION`).

    Masks nothing itself: pass ``report.redacted()`` for a report that leaves
    the process.
    """
    return {
        "type": "sagakit.needs_attention",
        "version": PAYLOAD_VERSION,
        "idempotency_key": report.idempotency_key,
        "seq": report.seq,
        "run": _run_json(report.run),
        "step": report.step,
        "phase": report.phase.value,
        "reason": report.reason,
        "attempts": report.attempts,
        "cause": _error_json(report.cause),
        "errors": [_error_json(e) for e in report.errors],
        "state": report.state,
    }


def _run_json(run: Run) -> JSON:
    return {
        "id": run.id,
        "saga": run.saga,
        "version": run.version,
        "status": run.status.value,
        "created_at": run.created_at,
        "updated_at": run.updated_at,
        "error": _error_json(run.error),
        "compensation_errors": [_error_json(e) for e in run.compensation_errors],
        "state": run.data,
    }


def _error_json(error: ErrorInfo | None) -> JSON | None:
    return None if error is None else error.to_json()


def shown_url(url: str) -> str:
    """The URL as it may be printed: scheme, host and port, never a secret it may hold."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "<an invalid URL>"
    host = parts.hostname or "?"
    if ":" in host:
        host = f"[{host}]"
    where = f"{parts.scheme}://{host}" + (f":{port}" if port is not None else "")
    rest = parts.path not in ("", "/") or parts.query or parts.fragment
    return f"{where}/..." if rest else where


def check_url(url: object) -> str:
    """``url`` if a webhook may be sent to it; raises `SagaError` in one line if not."""
    if not isinstance(url, str) or not url.strip():
        raise SagaError("a webhook URL must be a non-empty string")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (a bad port raises here)
    except ValueError as exc:
        raise SagaError(f"the webhook URL {shown_url(url)} is not valid: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise SagaError(f"the webhook URL {shown_url(url)} must start with http:// or https://")
    if not parts.hostname:
        raise SagaError(f"the webhook URL {shown_url(url)} names no host")
    if not url.isprintable():
        raise SagaError(f"the webhook URL {shown_url(url)} holds an unprintable character")
    return url


_WEBHOOK_URLS: set[str] = set()
"""The URLs of the webhooks made here, as httpx writes them (secrets and all)."""


class _HideWebhookUrls(logging.Filter):
    """Shows a webhook's URL in httpx's own log records without its secrets.

    httpx logs each request's URL at INFO ("HTTP Request: POST <url> ..."),
    user info, path and query included; a worker logging at INFO would
    print a webhook's password or token. Other URLs are left as they are.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and any(str(a) in _WEBHOOK_URLS for a in args):
            record.args = tuple(shown_url(str(a)) if str(a) in _WEBHOOK_URLS else a for a in args)
        return True


_HIDE_WEBHOOK_URLS = _HideWebhookUrls()


class WebhookSink:
    """Sends each alert as an HTTP POST of the redacted report, as JSON.

    Pass it as ``on_attention`` (``AsyncEngine(on_attention=WebhookSink(url))``),
    or run ``sagakit worker --alert-webhook URL``.

    Args:
        url: Where to POST: ``http://`` or ``https://``. A ``user:password@``
            in it is sent as HTTP basic authentication.
        timeout: Seconds for the whole request (connect, send, answer).
        headers: More headers to send (an ``Authorization`` token, say).

    Raises:
        SagaError: the URL is not one to POST to, or httpx is not installed.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 10.0,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self._url = check_url(url)
        if not timeout > 0:
            raise SagaError(f"a webhook's timeout must be positive, got {timeout}")
        try:
            import httpx  # an optional extra: needed only by whoever sends alerts so
        except ImportError:
            raise SagaError(
                "the webhook sink needs httpx: pip install -e '.[webhook]' from the repository"
            ) from None
        self._httpx = httpx
        try:
            _WEBHOOK_URLS.update((url, str(httpx.URL(url))))
        except httpx.InvalidURL as exc:
            raise SagaError(f"the webhook URL {shown_url(url)} is not valid: {exc}") from None
        log = logging.getLogger("httpx")
        if _HIDE_WEBHOOK_URLS not in log.filters:
            log.addFilter(_HIDE_WEBHOOK_URLS)
        self.timeout = timeout
        self.headers = dict(headers or {})

    @property
    def sink_name(self) -> str:
        """``webhook`` and the URL without its secrets: how the journal names this sink."""
        return f"webhook {shown_url(self._url)}"

    def __repr__(self) -> str:
        return f"WebhookSink({shown_url(self._url)!r}, timeout={self.timeout:g})"

    async def __call__(self, report: AttentionReport) -> None:
        """POST the redacted report.

        Raises:
            WebhookError: the receiver answered other than 2xx, or did not answer.
        """
        httpx = self._httpx
        body = report_json(report.redacted())
        headers = {**self.headers, IDEMPOTENCY_HEADER: report.idempotency_key}
        shown = shown_url(self._url)
        try:
            async with httpx.AsyncClient(timeout=self.timeout, follow_redirects=False) as client:
                answer = await client.post(self._url, json=body, headers=headers)
        except httpx.TimeoutException:
            raise WebhookError(f"{shown} did not answer within {self.timeout:g}s") from None
        except httpx.HTTPError as exc:
            why = f"{type(exc).__name__}: {self._masked(str(exc))}"
            raise WebhookError(f"could not POST to {shown}: {why}") from None
        if not answer.is_success:
            raise WebhookError(f"{shown} answered {answer.status_code} {answer.reason_phrase}")

    def _masked(self, text: str) -> str:
        """``text`` (an error's message) without the URL or any part of it that may be secret."""
        parts = urlsplit(self._url)
        for secret in (self._url, parts.netloc, parts.path, parts.query, parts.fragment):
            if len(secret) > 1:
                text = text.replace(secret, "***")
        return text
