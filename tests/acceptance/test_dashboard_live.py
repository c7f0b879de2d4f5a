"""The pages' live refresh, as served: each page polls its own address, under any mount.

That a page really changes in place while a run moves is checked in a
browser (tests/browser); here, what the server sends for it.
"""

from __future__ import annotations

import re
from pathlib import Path

from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.testclient import TestClient

from sagakit import Engine
from sagakit.dashboard import create_app


def live(html: str) -> dict[str, str]:
    found = re.search(r"<main([^>]*)>", html)
    assert found is not None
    return dict(re.findall(r'([\w-]+)="([^"]*)"', found.group(1)))


def test_each_page_polls_its_own_address_under_the_mount(tmp_path: Path) -> None:
    with Engine(f"sqlite:///{tmp_path / 'runs.db'}") as engine:
        host = Starlette(routes=[Mount("/sagas", app=create_app(engine=engine))])
        with TestClient(host) as client:
            for path in ("/sagas/", "/sagas/attention", "/sagas/runs?status=paused&page=0"):
                attributes = live(client.get(path).text)
                assert attributes["hx-get"] == path.replace("&", "&amp;")
                assert attributes["hx-trigger"] == "every 3s"
                assert attributes["hx-select"] == "#live"
            script = client.get("/sagas/static/htmx.min.js")
            assert script.status_code == 200
            assert "javascript" in script.headers["content-type"]
            assert 'version:"2.0.11"' in script.text
            missing = client.get("/sagas/runs/no-such-run")
            assert missing.status_code == 404
            assert "hx-get" not in live(missing.text), "an error page does not poll"
