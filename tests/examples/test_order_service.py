"""The FastAPI order service, as its README runs it, on PostgreSQL.

uvicorn serves ``examples/order_service/app.py`` in a subprocess, two
``sagakit worker`` subprocesses drive the runs, all on a fresh PostgreSQL
schema. Orders are posted over HTTP: one completes, one is declined and
rolls back; their public views are polled until they settle, and the
dashboard answers under ``/sagas/``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.slow

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "order_service"
BIN = Path(sys.executable).parent
CARD = "4242424242424242"
DECLINED = "4000000000000002"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def stop(process: subprocess.Popen[str]) -> str:
    """SIGTERM, then SIGKILL if it lingers; what it wrote."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    out, _ = process.communicate()
    return out or ""


@pytest.fixture
def service(postgres_url: str) -> Iterator[str]:
    env = {**os.environ, "SAGAKIT_DB": postgres_url, "NO_COLOR": "1"}
    env.pop("SAGAKIT_DASHBOARD_TOKEN", None)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    web = subprocess.Popen(
        [str(BIN / "uvicorn"), "app:app", "--host", "127.0.0.1", "--port", str(port)],
        cwd=EXAMPLE,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    processes = [web]
    try:
        deadline = time.monotonic() + 60
        while True:  # the web process creates the store's tables before workers start
            assert web.poll() is None, stop(web)
            try:
                if httpx.get(f"{base}/orders/none", timeout=2).status_code == 404:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the service did not start"
            time.sleep(0.2)
        for _ in range(2):
            processes.append(
                subprocess.Popen(
                    [str(BIN / "sagakit"), "worker", "--app", "order_saga", "--poll", "0.2"],
                    cwd=EXAMPLE,
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                )
            )
        yield base
    finally:
        for process in processes:
            output = stop(process)
            assert "Traceback" not in output, output


def settled(base: str, order_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:
        response = httpx.get(f"{base}/orders/{order_id}", timeout=5)
        assert response.status_code == 200, response.text
        view: dict[str, Any] = response.json()
        if view["finished"]:
            return view
        assert time.monotonic() < deadline, view
        time.sleep(0.2)


def place(base: str, order_id: str, card: str) -> None:
    body = {"order_id": order_id, "item": "kettle", "quantity": 2, "card": card}
    response = httpx.post(f"{base}/orders", json=body, timeout=5)
    assert response.status_code == 202, response.text
    assert response.json()["run_id"] == order_id
    assert response.json()["status"] == "pending"


def test_orders_are_driven_by_workers_and_shown(service: str) -> None:
    place(service, "o-ok", CARD)
    place(service, "o-declined", DECLINED)

    done = settled(service, "o-ok")
    assert done["run"]["status"] == "completed"
    assert done["current_step"] is None
    rows = [(r["step"], r["phase"], r["outcome"]) for r in done["timeline"]["rows"]]
    assert [step for step, _, _ in rows] == [
        "reserve_stock",
        "charge_card",
        "ship_order",
        "send_confirmation",
    ]
    assert "state" not in done["run"]

    back = settled(service, "o-declined")
    assert back["run"]["status"] == "rolled_back"
    rows = [(r["step"], r["phase"], r["outcome"]) for r in back["timeline"]["rows"]]
    assert ("reserve_stock", "compensation", "compensated") in rows
    assert DECLINED not in str(back)  # the card is marked sensitive

    dashboard = httpx.get(f"{service}/sagas/", timeout=5)
    assert dashboard.status_code == 200
    assert "overview" in dashboard.text
    assert 'href="/sagas/sagas/order"' in dashboard.text
    diagram = httpx.get(f"{service}/sagas/sagas/order", timeout=5)
    assert diagram.status_code == 200
    assert 'data-step="ship_order" data-kind="pivot"' in diagram.text

    assert httpx.get(f"{service}/orders/nope", timeout=5).status_code == 404
    bad = {"order_id": "o-bad", "item": "kettle", "quantity": 0, "card": CARD}
    assert httpx.post(f"{service}/orders", json=bad, timeout=5).status_code == 422
