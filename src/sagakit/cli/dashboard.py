"""``sagakit dashboard``: serve the web dashboard (`sagakit.dashboard`) with uvicorn.

It listens on 127.0.0.1 unless told otherwise; any other address is
refused (one line, exit 2) unless ``SAGAKIT_DASHBOARD_TOKEN`` configures a
token, since the pages show the runs' state and the forms act on runs.
"""

from __future__ import annotations

import click

from sagakit.cli.common import open_engine
from sagakit.cli.options import app_option, db_option, shown_url
from sagakit.errors import SagaError


class _Refused(click.ClickException):
    """A usage refused in one line (``Error: ...``), exit code 2."""

    exit_code = 2


@click.command()
@db_option
@app_option
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="The address to listen on; other than a loopback one, SAGAKIT_DASHBOARD_TOKEN "
    "must be set.",
)
@click.option(
    "--port", type=click.IntRange(1, 65535), default=8765, show_default=True, help="The port."
)
@click.option("--read-only", is_flag=True, help="Show runs; hide every form, refuse every POST.")
def dashboard(db: str, apps: tuple[str, ...], host: str, port: int, read_only: bool) -> None:
    """Serve the web dashboard: overview, needs-attention inbox, runs, a run's timeline.

    Retry, resolve, cancel and answers to paused runs are journaled with who
    did it (the token's user name, or the client's address). Stop it with
    Ctrl-C.
    """
    try:
        import uvicorn
        from starlette.middleware.trustedhost import TrustedHostMiddleware
        from starlette.types import ASGIApp

        from sagakit.dashboard import TOKEN_ENVVAR, auth_from_environment, create_app, is_loopback
    except ImportError as exc:
        raise click.ClickException(
            f"the dashboard needs the dashboard extra ({exc.name} is missing): "
            "pip install 'sagakit[dashboard]'"
        ) from None
    try:
        auth = auth_from_environment()
    except SagaError as exc:
        raise _Refused(f"{TOKEN_ENVVAR}: {exc}") from None
    if auth is None and not is_loopback(host):
        raise _Refused(
            f"refusing to listen on {host!r} without authentication: set {TOKEN_ENVVAR} "
            "(or listen on 127.0.0.1)"
        )
    with open_engine(db, apps, read_only=read_only) as engine:
        app: ASGIApp = create_app(engine=engine, read_only=read_only, auth=auth)
        if auth is None:
            # Without a token the only guard is that the server is on loopback.
            # A page of another site whose name was re-pointed at 127.0.0.1
            # (DNS rebinding) would be same-origin with us and could read the
            # pages and post the forms: only our own names are answered.
            app = TrustedHostMiddleware(app, allowed_hosts=_own_names(host))
        shown_host = f"[{host}]" if ":" in host else host
        mode = " (read-only)" if read_only else ""
        click.echo(
            f"sagakit dashboard{mode} on http://{shown_host}:{port}/ for {shown_url(db)}; "
            "Ctrl-C stops it"
        )
        uvicorn.run(app, host=host, port=port, log_level="warning")


def _own_names(host: str) -> list[str]:
    """The Host header values a dashboard listening on ``host`` answers without a token."""
    names = ["localhost", "127.0.0.1", "[::1]", host, f"[{host}]" if ":" in host else host]
    return list(dict.fromkeys(names))
