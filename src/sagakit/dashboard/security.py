"""Who may use the dashboard, and the checks every request goes through.

- **Authentication** is a callable that reads a request and returns who
  made it, or None to refuse it (`Auth`). `token_auth` checks a shared
  token, sent as HTTP Basic's password (a browser asks for it; the user
  name is who the journal names) or as ``Authorization: Bearer``; a host
  application passes its own callable to use its own sessions.
- **CSRF**: a random token in a cookie (``SameSite=Strict``, ``HttpOnly``)
  that every form repeats in a hidden field; a state-changing request whose
  two copies differ, or lack, is refused (a double-submit cookie: another
  site can neither read the cookie nor set it).
- **Headers** on every response: a content security policy that allows
  only the dashboard's own script (the vendored htmx that refreshes the
  pages, from ``/static``; no inline script, no ``eval``) and requests
  back to the dashboard only, no framing, no caching of pages that hold a
  run's state.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
import secrets
from collections.abc import Callable

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sagakit.errors import SagaError

TOKEN_ENVVAR = "SAGAKIT_DASHBOARD_TOKEN"
"""The environment variable `sagakit dashboard` reads its token from (`auth_from_environment`)."""

MIN_TOKEN_LENGTH = 16
"""The shortest token taken: a guessable one would make the check pointless."""

CSRF_COOKIE = "sagakit_csrf"
"""The cookie that holds the CSRF token; forms repeat it in the field ``csrf``."""

Auth = Callable[[Request], "str | None"]
"""Who made a request (a user name), or None to refuse it with 401."""

HEADERS = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'self'; "
        "img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}


def token_auth(token: str) -> Auth:
    """An `Auth` that admits requests carrying ``token``, compared in constant time.

    The token is taken as HTTP Basic's password (the user name, if any, is
    who the journal names: ``dashboard:alice``; else ``token``) or as
    ``Authorization: Bearer TOKEN`` (named ``token``).

    Raises:
        SagaError: the token is shorter than `MIN_TOKEN_LENGTH` characters.
    """
    if len(token) < MIN_TOKEN_LENGTH:
        raise SagaError(
            f"the dashboard's token must be at least {MIN_TOKEN_LENGTH} characters long"
        )
    expected = token.encode("utf-8")

    def check(request: Request) -> str | None:
        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        user, given = "token", ""
        if scheme.lower() == "bearer":
            given = value.strip()
        elif scheme.lower() == "basic":
            try:
                decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                return None
            name, _, given = decoded.partition(":")
            user = name.strip() or user
        if not hmac.compare_digest(given.encode("utf-8"), expected):
            return None
        return user

    return check


def auth_from_environment() -> Auth | None:
    """`token_auth` with the token in `TOKEN_ENVVAR`, or None when it is not set.

    Raises:
        SagaError: the token is too short.
    """
    token = os.environ.get(TOKEN_ENVVAR)
    return token_auth(token) if token else None


def csrf_token(request: Request) -> tuple[str, bool]:
    """The request's CSRF token, and whether it is new (to be set as the cookie)."""
    current = request.cookies.get(CSRF_COOKIE, "")
    if 20 <= len(current) <= 100 and current.replace("-", "").replace("_", "").isalnum():
        return current, False
    return secrets.token_urlsafe(32), True


def csrf_matches(request: Request, submitted: object) -> bool:
    """Whether a form's ``csrf`` field repeats the request's CSRF cookie."""
    cookie = request.cookies.get(CSRF_COOKIE, "")
    if not cookie or not isinstance(submitted, str) or not submitted:
        return False
    return hmac.compare_digest(cookie.encode("utf-8"), submitted.encode("utf-8"))


class SecurityHeaders:
    """ASGI middleware: `HEADERS` on every HTTP response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on, adding the headers to the response's start."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in HEADERS.items():
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, send_with_headers)
