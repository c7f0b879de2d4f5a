"""The dashboard as a Starlette application: its routes, and what each does.

Pages read through `sagakit.dashboard.views` on a worker thread (the
`Engine`'s calls block); the forms post to ``/actions/{action}``, which
checks who asks and the CSRF token, acts through the engine with ``by=``
naming who did it, and sends the browser back to the run's page.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
from collections.abc import AsyncIterator, Callable, Sequence
from importlib import resources
from typing import Any
from urllib.parse import quote

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from sagakit.dashboard import listing, throughput, views
from sagakit.dashboard import sagas as saga_views
from sagakit.dashboard.security import (
    CSRF_COOKIE,
    Auth,
    SecurityHeaders,
    csrf_matches,
    csrf_token,
)
from sagakit.definition import Saga
from sagakit.engine import Engine
from sagakit.errors import DefinitionError, RunNotFound, SagaError
from sagakit.store import RunCursor, open_store
from sagakit.store.encrypted import EncryptedStore, keys_from_environment
from sagakit.timeline import format_duration, printable

MAX_TEXT = 2000
"""The longest note, reason or search a form takes."""

REFRESH_SECONDS = 3
"""How often a page asks for itself again while open, to show runs as they move."""

PARK_AFTER = 2.0
"""An action drives the run here only up to a retry this many seconds away.

Beyond it the run is handed back with its timer for a worker: a request
never waits out a compensation's backoff (minutes, with the default retries).
"""


# What a page says after an action, by the action's name: never text from the request.
_DONE = {
    "retry": "retried",
    "resolve": "resolved",
    "cancel": "cancel requested",
    "signal": "answer sent",
}


class _Refused(Exception):
    """A request refused with a status code and a one-line reason (shown escaped)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _engine_for(db: str, *, read_only: bool) -> Engine:
    """An engine on ``db``: read only (as the CLI's reading commands open it) or not."""
    keys = keys_from_environment()
    if not read_only:
        return Engine(db, encryption_keys=keys)
    store = open_store(db, read_only=True)
    if keys is None:  # reading without keys: encrypted values shown masked
        store = EncryptedStore.masked(store)
    return Engine(db, store=store, encryption_keys=keys)


def create_app(
    db: str | None = None,
    *,
    engine: Engine | None = None,
    sagas: Sequence[Saga[Any]] = (),
    read_only: bool = False,
    auth: Auth | None = None,
) -> Starlette:
    """The dashboard as an ASGI application, to serve or to mount in a FastAPI/Starlette app.

    Args:
        db: The store's URL; the application opens an engine on it and
            closes it when it shuts down (its lifespan). Or pass ``engine``.
        engine: An engine the caller owns (and closes), instead of ``db``.
        sagas: The sagas to register: retry, resolve and answers to a
            paused run call their functions, here.
        read_only: Show runs, hide every form and refuse every POST; the
            store is opened read only (never created or migrated).
        auth: Who makes each request (`sagakit.dashboard.token_auth`, or the
            host application's own check); a request it refuses gets 401.
            Without it, actions are journaled as the client's address.

    Raises:
        SagaError: neither or both of ``db`` and ``engine`` are given.
    """
    if (db is None) == (engine is None):
        raise SagaError("create_app needs a store URL (db=) or an engine (engine=), not both")
    owned = engine is None
    if engine is None:
        assert db is not None
        engine = _engine_for(db, read_only=read_only)
    engine.register(*sagas)
    pages = _Pages(engine, read_only=read_only, auth=auth)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            if owned:
                await run_in_threadpool(engine.close)

    static = resources.files("sagakit.dashboard") / "static"
    app = Starlette(
        routes=[
            Route("/", pages.overview, name="overview"),
            Route("/attention", pages.attention, name="attention"),
            Route("/runs", pages.runs, name="runs"),
            Route("/runs/{run_id}", pages.run, name="run"),
            Route("/sagas/{name:path}", pages.saga, name="saga"),
            Route("/actions/{action}", pages.act, methods=["POST"], name="act"),
            Mount("/static", app=StaticFiles(directory=str(static)), name="static"),
        ],
        lifespan=lifespan,
    )
    app.add_middleware(SecurityHeaders)
    app.state.engine = engine
    return app


class _Pages:
    """The route handlers, sharing the engine, the templates and the settings."""

    def __init__(self, engine: Engine, *, read_only: bool, auth: Auth | None) -> None:
        self.engine = engine
        self.read_only = read_only
        self.auth = auth
        self.templates = Environment(
            loader=PackageLoader("sagakit.dashboard", "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
        )
        self.templates.filters["when"] = _when
        self.templates.filters["dom_id"] = _dom_id
        self.templates.filters["segment"] = lambda value: quote(str(value), safe="")
        self.templates.filters["duration"] = format_duration

    # -- plumbing ---------------------------------------------------------------

    def _who(self, request: Request) -> str:
        """Who made the request, as journaled: ``dashboard:NAME``; refused (401) if unknown."""
        if self.auth is None:
            host = request.client.host if request.client else "unknown"
            return f"dashboard:{host}"
        user = self.auth(request)
        if user is None:
            raise _Refused(401, "authentication required")
        return f"dashboard:{printable(user)[:100]}"

    def _render(
        self, request: Request, template: str, code: int = 200, **context: Any
    ) -> HTMLResponse:
        token, new = csrf_token(request)
        root = request.scope.get("root_path", "")
        query = request.url.query
        html = self.templates.get_template(template).render(
            root=root,
            # The address the page polls to refresh itself (see base.html).
            here=request.url.path + (f"?{query}" if query else ""),
            refresh=REFRESH_SECONDS,
            run_url=lambda run_id: f"{root}/runs/{quote(run_id, safe='')}",
            csrf=token,
            read_only=self.read_only,
            **context,
        )
        response = HTMLResponse(html, status_code=code)
        if new:
            response.set_cookie(
                CSRF_COOKIE,
                token,
                path=root or "/",
                httponly=True,
                samesite="strict",
                secure=request.url.scheme == "https",
            )
        return response

    def _error(self, request: Request, refused: _Refused) -> HTMLResponse:
        response = self._render(request, "error.html", code=refused.status, message=refused.message)
        if refused.status == 401:
            response.headers["www-authenticate"] = 'Basic realm="sagakit", charset="UTF-8"'
        return response

    async def _page(self, request: Request, handler: Callable[[Request], Any]) -> Response:
        try:
            self._who(request)  # every page needs auth when it is configured
            result: Response = await handler(request)
            return result
        except _Refused as refused:
            return self._error(request, refused)
        except SagaError as exc:
            # The store cannot be read (down, not a sagakit store, a newer schema):
            # its one-line message (passwords masked), never a traceback.
            return self._error(request, _Refused(503, printable(str(exc))))

    # -- pages ------------------------------------------------------------------

    async def overview(self, request: Request) -> Response:
        """Runs by status per saga, and how many need attention."""

        async def show(request: Request) -> Response:
            data = await run_in_threadpool(views.overview, self.engine)
            chart = await run_in_threadpool(throughput.throughput, self.engine)
            return self._render(
                request,
                "overview.html",
                page="overview",
                overview=data,
                chart=chart,
                loaded=saga_views.loaded_sagas(self.engine),
            )

        return await self._page(request, show)

    async def attention(self, request: Request) -> Response:
        """The inbox: every run that needs attention, what failed and what is left."""

        async def show(request: Request) -> Response:
            page = _page_number(request)
            runs, more = await run_in_threadpool(views.inbox, self.engine, page=page)
            return self._render(
                request, "attention.html", page="attention", shown=runs, number=page, more=more
            )

        return await self._page(request, show)

    async def runs(self, request: Request) -> Response:
        """Runs, newest first: filtered, searched by id, a page at a time by cursor."""

        async def show(request: Request) -> Response:
            try:
                wanted = listing.parse(request.query_params)
            except listing.ListingError as exc:
                raise _Refused(400, str(exc)) from None
            page = _page_number(request)  # ?page=N: links of earlier versions
            if wanted.search is not None:
                found = await run_in_threadpool(views.find_run, self.engine, wanted.search)
                shown = listing.RunsPage(found)
            elif page > 0 and not (wanted.after or wanted.before):
                if wanted.version or wanted.since or wanted.until:
                    raise _Refused(400, "page= takes no version or time filter: use the links")
                runs, more = await run_in_threadpool(
                    views.runs_page,
                    self.engine,
                    status=wanted.status,
                    saga=wanted.saga,
                    page=page,
                )
                shown = listing.RunsPage(runs, older=_last(runs) if more else None)
            else:
                shown = await run_in_threadpool(listing.read_page, self.engine, wanted)
            return self._render(
                request,
                "runs.html",
                page="runs",
                listing=wanted,
                shown=shown,
                statuses=views.statuses(),
            )

        return await self._page(request, show)

    async def run(self, request: Request) -> Response:
        """A run's page: its timeline, state, errors, pending requests and actions."""

        async def show(request: Request) -> Response:
            run_id = request.path_params["run_id"]
            try:
                shown = await run_in_threadpool(views.shown_run, self.engine, run_id)
            except RunNotFound:
                raise _Refused(404, f"no run {printable(run_id)!r}") from None
            done = _DONE.get(request.query_params.get("done", ""))
            return self._render(request, "run.html", page="run", shown=shown, done=done)

        return await self._page(request, show)

    async def saga(self, request: Request) -> Response:
        """A saga's page: its stages drawn, its versions and their runs by status."""

        async def show(request: Request) -> Response:
            name = _text(request.path_params["name"], "saga")
            version = _text(request.query_params.get("version") or None, "version")
            try:
                shown = await run_in_threadpool(
                    saga_views.saga_page, self.engine, name or "", version=version
                )
            except DefinitionError as exc:  # registered sagas are valid: a bug, said in one line
                raise _Refused(500, printable(str(exc))) from None
            if shown is None:
                raise _Refused(404, f"no saga {printable(name or '')!r}: none registered, no runs")
            return self._render(request, "saga.html", page="saga", saga=shown)

        return await self._page(request, show)

    # -- actions ----------------------------------------------------------------

    async def act(self, request: Request) -> Response:
        """Retry, resolve, cancel or answer a run, as the posted form says."""
        try:
            if self.read_only:
                raise _Refused(403, "this dashboard is read-only: it takes no actions")
            who = self._who(request)
            form = await request.form(max_files=0, max_fields=20)
            if not csrf_matches(request, form.get("csrf")):
                raise _Refused(
                    403, "the form's CSRF token is missing or wrong: reload the page and retry"
                )
            action = request.path_params["action"]
            run_id = _text(_field(form.get("run_id")), "run_id")
            if action not in _DONE or not run_id:
                raise _Refused(400, "unknown action, or no run named")
            await run_in_threadpool(self._do, action, run_id, form, who)
        except _Refused as refused:
            return self._error(request, refused)
        root = request.scope.get("root_path", "")
        return RedirectResponse(
            f"{root}/runs/{quote(run_id, safe='')}?done={action}", status_code=303
        )

    def _do(self, action: str, run_id: str, form: Any, who: str) -> None:
        """Carry out one action through the engine (on a worker thread)."""
        note = _text(_field(form.get("note")), "note")
        step = _text(_field(form.get("step")), "step")
        try:
            if action == "retry":
                self.engine.retry(run_id, note=note, step=step, by=who, park_after=PARK_AFTER)
            elif action == "resolve":
                if not note:
                    raise _Refused(400, "resolving needs a note saying what was done by hand")
                self.engine.resolve(run_id, note=note, step=step, by=who, park_after=PARK_AFTER)
            elif action == "cancel":
                reason = _text(_field(form.get("reason")), "reason")
                self.engine.cancel(run_id, reason=reason, by=who, park_after=PARK_AFTER)
            else:
                name = _text(_field(form.get("name")), "name")
                if not name:
                    raise _Refused(400, "an answer needs a signal name")
                self.engine.signal(run_id, name, by=who, park_after=PARK_AFTER)
        except RunNotFound:
            raise _Refused(404, f"no run {printable(run_id)!r}") from None
        except SagaError as exc:
            raise _Refused(409, printable(str(exc))) from None


# -- input ------------------------------------------------------------------------


def _field(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise _Refused(400, "a form field holds a file, not text")
    return value.strip() or None


def _text(value: str | None, name: str) -> str | None:
    if value is not None and len(value) > MAX_TEXT:
        raise _Refused(400, f"{name} is longer than {MAX_TEXT} characters")
    return value


def _page_number(request: Request) -> int:
    raw = request.query_params.get("page", "0")
    # isascii: "²" and other Unicode digits pass isdigit() but not int().
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 6 or int(raw) > views.MAX_PAGE:
        raise _Refused(400, f"page must be a number from 0 to {views.MAX_PAGE}")
    return int(raw)


def _last(runs: Sequence[Any]) -> str | None:
    """The cursor token of the last run of a page, if it has runs."""
    return RunCursor.of(runs[-1]).token() if runs else None


def _dom_id(run_id: str) -> str:
    """A stable HTML id for a run's form fields: the same on every refresh, any run id."""
    return "r" + hashlib.sha256(run_id.encode("utf-8")).hexdigest()[:16]


def _when(at: float | None) -> str:
    from datetime import datetime

    return "" if at is None else datetime.fromtimestamp(at).strftime("%Y-%m-%d %H:%M:%S")


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (or ``localhost``): only this machine reaches it."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
