"""The operator's web dashboard: which runs did not finish undoing, what is left, what to do.

An ASGI application (Starlette, Jinja2 templates, forms that need no script;
a vendored htmx refreshes open pages) to serve with
``sagakit dashboard`` or to mount in a FastAPI or Starlette service::

    from sagakit.dashboard import create_app, token_auth

    app.mount("/sagas", create_app(engine=engine, sagas=[order], auth=token_auth(TOKEN)))

Pages: an overview (runs by status per saga, runs finished per minute over
the last hour as a chart), the needs-attention inbox
(what failed, every error, what is left to undo; retry, resolve with a
note, cancel), the runs list (filters, search by id, pages) and a run's
page (its timeline as ``sagakit show`` draws it, its state masked, its
errors with tracebacks, pending requests; a paused run's answers as
buttons). Every action is journaled with who did it (``by=``).

Needs the ``dashboard`` extra: ``pip install 'sagakit[dashboard]'``.
"""

from __future__ import annotations

from sagakit.dashboard.app import create_app, is_loopback
from sagakit.dashboard.security import (
    TOKEN_ENVVAR,
    Auth,
    auth_from_environment,
    token_auth,
)

__all__ = [
    "TOKEN_ENVVAR",
    "Auth",
    "auth_from_environment",
    "create_app",
    "is_loopback",
    "token_auth",
]
