"""A small fake LLM proxy (teams and API keys) served over real HTTP, and its client.

`LLMProxy` stands in for a LiteLLM-style proxy: the example starts it on
127.0.0.1 with a port the system picks, in a background thread, and the saga
talks to it only through `LLMProxyClient`, which makes real HTTP requests
with `urllib.request`. Its API:

=======  ===============  =====================================================
method   path             answer
=======  ===============  =====================================================
GET      /teams           every team with the ids of its keys
GET      /keys            every API key (without its secret)
POST     /teams           ``{"alias"}`` creates a team (201)
DELETE   /teams/ID        deletes a team (204); 409 while it still has keys
POST     /keys            ``{"team_id"}`` creates an API key for a team (201)
DELETE   /keys/ID         deletes a key (204)
=======  ===============  =====================================================

A POST with an ``Idempotency-Key`` header is done once: repeating it with the
same key answers what the first call answered and creates nothing more (the
same key with another body is refused with 422, as payment APIs do). An
unknown id answers 404. `LLMProxy.fail_deletions` makes every DELETE answer
an error, so the example can show what happens when the undo itself fails;
`LLMProxy.lose_deletions` makes every DELETE answer 204 and delete nothing
(a bug that makes an undo "succeed" and orphans what it should delete).

Every team and key keeps the ``Idempotency-Key`` it was created under and
when (``created_at``), as a LiteLLM proxy keeps metadata: the saga's
reconcilers list them with it, to find what no run owns any more.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = [
    "ApiKey",
    "LLMProxy",
    "LLMProxyClient",
    "ProxyError",
    "ProxyRejected",
    "Team",
]

log = logging.getLogger(__name__)

JSONObject = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Team:
    """A team at the proxy, with the ids of the API keys it holds.

    ``idempotency_key`` and ``created_at`` are what it was created under, and
    when; they do not count when teams are compared.
    """

    team_id: str
    alias: str
    keys: tuple[str, ...] = ()
    idempotency_key: str | None = field(default=None, compare=False)
    created_at: float | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class ApiKey:
    """An API key at the proxy; ``secret`` is what an LLM client would send.

    A key listed (``GET /keys``) has an empty ``secret``: the proxy shows it
    only when it makes the key.
    """

    key_id: str
    team_id: str
    secret: str
    idempotency_key: str | None = field(default=None, compare=False)
    created_at: float | None = field(default=None, compare=False)


# -- the server ------------------------------------------------------------------------


@dataclass
class _Ledger:
    """What the proxy holds. Every access goes through ``lock``: requests are
    served on threads of their own."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    teams: dict[str, str] = field(default_factory=dict)  # team id -> alias
    keys: dict[str, ApiKey] = field(default_factory=dict)  # key id -> key
    # id -> (the Idempotency-Key it was created under, when)
    tags: dict[str, tuple[str | None, float]] = field(default_factory=dict)
    # (path, Idempotency-Key) -> (request body, status, answer) of the first call
    replies: dict[tuple[str, str], tuple[JSONObject, int, JSONObject]] = field(default_factory=dict)
    serial: int = 0
    failing_deletions: HTTPStatus | None = None
    losing_deletions: bool = False

    def next_id(self, prefix: str) -> str:
        self.serial += 1
        return f"{prefix}-{self.serial}"

    def create(self, path: str, body: JSONObject, key: str | None) -> tuple[int, JSONObject]:
        """Create a team (``/teams``) or a key (``/keys``) tagged ``key``; the status and answer."""
        status, answer = self._create_team(body) if path == "/teams" else self._create_key(body)
        made = answer.get("team_id" if path == "/teams" else "key_id")
        if status == HTTPStatus.CREATED and isinstance(made, str):
            self.tags[made] = (key, time.time())
        return status, answer

    def _create_team(self, body: JSONObject) -> tuple[int, JSONObject]:
        alias = body.get("alias")
        if not isinstance(alias, str) or not alias:
            return HTTPStatus.BAD_REQUEST, {"error": "a team needs an alias"}
        team_id = self.next_id("team")
        self.teams[team_id] = alias
        return HTTPStatus.CREATED, {"team_id": team_id, "alias": alias}

    def _create_key(self, body: JSONObject) -> tuple[int, JSONObject]:
        team_id = body.get("team_id")
        if not isinstance(team_id, str) or team_id not in self.teams:
            return HTTPStatus.NOT_FOUND, {"error": f"no team {team_id!r}"}
        key = ApiKey(self.next_id("key"), team_id, f"sk-{secrets.token_hex(12)}")
        self.keys[key.key_id] = key
        return HTTPStatus.CREATED, {"key_id": key.key_id, "team_id": team_id, "key": key.secret}

    def delete(self, kind: str, ident: str) -> tuple[int, JSONObject | None]:
        """Delete a team or a key; the status and the answer (None: no body)."""
        if self.failing_deletions is not None:
            return self.failing_deletions, {"error": "deletions are failing at the proxy"}
        if self.losing_deletions:  # the bug: "done", and nothing is deleted
            return HTTPStatus.NO_CONTENT, None
        if kind == "keys":
            if self.keys.pop(ident, None) is None:
                return HTTPStatus.NOT_FOUND, {"error": f"no key {ident!r}"}
            return HTTPStatus.NO_CONTENT, None
        if ident not in self.teams:
            return HTTPStatus.NOT_FOUND, {"error": f"no team {ident!r}"}
        held = sorted(k.key_id for k in self.keys.values() if k.team_id == ident)
        if held:
            # Deleting a team must not orphan its keys: they go first.
            return HTTPStatus.CONFLICT, {"error": f"team {ident!r} still has keys {held}"}
        del self.teams[ident]
        return HTTPStatus.NO_CONTENT, None

    def listing(self) -> list[Team]:
        held: dict[str, list[str]] = {team_id: [] for team_id in self.teams}
        for key in self.keys.values():
            held[key.team_id].append(key.key_id)
        return [
            Team(team_id, alias, tuple(held[team_id]), *self.tags.get(team_id, (None, None)))
            for team_id, alias in self.teams.items()
        ]

    def key_listing(self) -> list[ApiKey]:
        return [
            ApiKey(k.key_id, k.team_id, "", *self.tags.get(k.key_id, (None, None)))
            for k in self.keys.values()
        ]


class _Server(ThreadingHTTPServer):
    ledger: _Ledger


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        if self.path == "/keys":
            with self.server.ledger.lock:
                keys = self.server.ledger.key_listing()
            shown = [
                {
                    "key_id": k.key_id,
                    "team_id": k.team_id,
                    "idempotency_key": k.idempotency_key,
                    "created_at": k.created_at,
                }
                for k in keys
            ]
            self._answer(HTTPStatus.OK, {"keys": shown})
            return
        if self.path != "/teams":
            self._answer(HTTPStatus.NOT_FOUND, {"error": f"no such resource {self.path}"})
            return
        with self.server.ledger.lock:
            teams = self.server.ledger.listing()
        listing = [
            {
                "team_id": t.team_id,
                "alias": t.alias,
                "keys": list(t.keys),
                "idempotency_key": t.idempotency_key,
                "created_at": t.created_at,
            }
            for t in teams
        ]
        self._answer(HTTPStatus.OK, {"teams": listing})

    def do_POST(self) -> None:
        if self.path not in ("/teams", "/keys"):
            self._answer(HTTPStatus.NOT_FOUND, {"error": f"no such resource {self.path}"})
            return
        try:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        except ValueError:
            self._answer(HTTPStatus.BAD_REQUEST, {"error": "the body is not JSON"})
            return
        if not isinstance(body, dict):
            self._answer(HTTPStatus.BAD_REQUEST, {"error": "the body must be a JSON object"})
            return
        key = self.headers.get("Idempotency-Key")
        ledger = self.server.ledger
        with ledger.lock:
            first = ledger.replies.get((self.path, key)) if key else None
            if first is None:
                status, answer = ledger.create(self.path, body, key)
                if key:
                    ledger.replies[(self.path, key)] = (body, status, answer)
            elif first[0] != body:
                status, answer = (
                    HTTPStatus.UNPROCESSABLE_ENTITY,
                    {"error": f"Idempotency-Key {key!r} was used with another request"},
                )
            else:
                _, status, answer = first  # a repeated call: the first answer, nothing new
        self._answer(status, answer)

    def do_DELETE(self) -> None:
        kind, _, ident = self.path.strip("/").partition("/")
        if kind not in ("teams", "keys") or not ident or "/" in ident:
            self._answer(HTTPStatus.NOT_FOUND, {"error": f"no such resource {self.path}"})
            return
        with self.server.ledger.lock:
            status, answer = self.server.ledger.delete(kind, ident)
        self._answer(status, answer)

    def _answer(self, status: int, body: JSONObject | None) -> None:
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        if body is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        # The default writes every request to stderr; the example's output is
        # its timelines, so requests go to the debug log instead.
        log.debug("llm proxy: " + format, *args)


class LLMProxy:
    """The fake LLM proxy, served over HTTP on 127.0.0.1 from a background thread.

    Use as a context manager, or call `start` and `stop`::

        with LLMProxy() as proxy:
            client = LLMProxyClient(proxy.url)

    Attributes:
        url: ``http://127.0.0.1:PORT`` once started.
    """

    def __init__(self) -> None:
        self._ledger = _Ledger()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    def start(self) -> LLMProxy:
        """Bind a free port on 127.0.0.1 and serve requests in a background thread."""
        if self._server is not None:
            raise RuntimeError("the LLM proxy is already running")
        server = _Server(("127.0.0.1", 0), _Handler)
        server.ledger = self._ledger
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, name="llm-proxy", kwargs={"poll_interval": 0.05}
        )
        self._thread.start()
        host, port = server.server_address[:2]
        self.url = f"http://{host!s}:{port}"
        return self

    def stop(self) -> None:
        """Stop serving and close the listening socket. Stopping twice is harmless."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None or thread is None:
            return
        server.shutdown()
        thread.join()
        server.server_close()

    def __enter__(self) -> LLMProxy:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def fail_deletions(self, status: int | None = HTTPStatus.SERVICE_UNAVAILABLE) -> None:
        """Make every DELETE answer ``status`` (a 5xx), or work again with None.

        The switch an example flips to show an undo that cannot get through.
        """
        if status is not None and not 500 <= status <= 599:
            raise ValueError(f"deletions fail with a server error (5xx), not {status}")
        with self._ledger.lock:
            self._ledger.failing_deletions = None if status is None else HTTPStatus(status)

    def lose_deletions(self, losing: bool = True) -> None:
        """Make every DELETE answer 204 and delete nothing (a bug), or work again with False.

        The switch an example flips to show an undo that "succeeds" and
        leaves its team and key behind: reconciliation finds them.
        """
        with self._ledger.lock:
            self._ledger.losing_deletions = losing

    def teams(self) -> list[Team]:
        """What the proxy holds now, seen from inside (the client asks over HTTP)."""
        with self._ledger.lock:
            return self._ledger.listing()


# -- the client ------------------------------------------------------------------------


class ProxyError(Exception):
    """The proxy answered with an error status.

    Attributes:
        status: The HTTP status.
        method: The request's method.
        path: The request's path.
        detail: The proxy's own explanation.
    """

    def __init__(self, status: int, method: str, path: str, detail: str) -> None:
        phrase = _phrase(status)
        super().__init__(f"{method} {path} answered HTTP {status} {phrase}: {detail}")
        self.status = status
        self.method = method
        self.path = path
        self.detail = detail


class ProxyRejected(ProxyError):
    """The proxy refused the request itself (a 4xx): sending it again cannot help."""


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


class LLMProxyClient:
    """Talks to an LLM proxy over HTTP (``urllib.request``; no third-party client).

    Errors: a 4xx answer raises `ProxyRejected`, a 5xx `ProxyError`; a proxy
    that cannot be reached raises `urllib.error.URLError` (an `OSError`).

    Args:
        base_url: ``http://host:port`` of the proxy.
        timeout: Seconds to wait for a connection or an answer.
    """

    def __init__(self, base_url: str, *, timeout: float = 5.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    def create_team(self, alias: str, *, idempotency_key: str | None = None) -> Team:
        """Create a team; with the same ``idempotency_key``, the team the first call made."""
        answer = self._call("POST", "/teams", {"alias": alias}, idempotency_key)
        return Team(answer["team_id"], answer["alias"])

    def create_key(self, team_id: str, *, idempotency_key: str | None = None) -> ApiKey:
        """Create an API key for a team; with the same ``idempotency_key``, the same key."""
        answer = self._call("POST", "/keys", {"team_id": team_id}, idempotency_key)
        return ApiKey(answer["key_id"], answer["team_id"], answer["key"])

    def delete_team(self, team_id: str) -> bool:
        """Delete a team; False if it was already gone (a repeated undo is not an error)."""
        return self._delete(f"/teams/{team_id}")

    def delete_key(self, key_id: str) -> bool:
        """Delete an API key; False if it was already gone."""
        return self._delete(f"/keys/{key_id}")

    def teams(self) -> list[Team]:
        """Every team at the proxy, with its keys."""
        answer = self._call("GET", "/teams")
        return [
            Team(
                t["team_id"],
                t["alias"],
                tuple(t["keys"]),
                t.get("idempotency_key"),
                t.get("created_at"),
            )
            for t in answer["teams"]
        ]

    def list_keys(self) -> list[ApiKey]:
        """Every API key at the proxy (their secrets are not shown)."""
        answer = self._call("GET", "/keys")
        return [
            ApiKey(k["key_id"], k["team_id"], "", k.get("idempotency_key"), k.get("created_at"))
            for k in answer["keys"]
        ]

    def _delete(self, path: str) -> bool:
        try:
            self._call("DELETE", path)
        except ProxyRejected as exc:
            if exc.status == HTTPStatus.NOT_FOUND:
                return False
            raise
        return True

    def _call(
        self,
        method: str,
        path: str,
        body: JSONObject | None = None,
        idempotency_key: str | None = None,
    ) -> JSONObject:
        request = urllib.request.Request(self.base_url + path, method=method)
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            request.add_header("Content-Type", "application/json")
        if idempotency_key is not None:
            request.add_header("Idempotency-Key", idempotency_key)
        try:
            with urllib.request.urlopen(request, data, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            with exc:  # it holds the response open; closing it avoids a ResourceWarning
                detail = _detail(exc.read())
            error = ProxyRejected if 400 <= exc.code < 500 else ProxyError
            raise error(exc.code, method, path, detail) from None
        answer: JSONObject = json.loads(raw) if raw else {}
        return answer


def _detail(raw: bytes) -> str:
    """The ``error`` of a JSON error answer, else the answer as text."""
    try:
        parsed = json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace").strip() or "(no detail)"
    if isinstance(parsed, dict) and isinstance(parsed.get("error"), str):
        return str(parsed["error"])
    return json.dumps(parsed)
