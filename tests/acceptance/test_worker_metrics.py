"""A real ``sagakit worker --metrics-port``, scraped over HTTP while it drives runs.

This process starts runs that complete, roll back and need attention; the
worker drives them and serves its metrics; the scrape is parsed with
Prometheus's own parser and its counts checked.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from sagakit import Engine, RunStatus, Saga

from .helpers import fails, sagakit, start_worker

pytestmark = pytest.mark.slow

APP = """
from sagakit import PermanentError, Saga

orders = Saga("metered-order")


@orders.step
def reserve(state, ctx):
    return {"reserved": True}


@reserve.compensate
def release(state, ctx):
    if state["order"] == "stuck":
        raise PermanentError("the warehouse refused")


@orders.step
def charge(state, ctx):
    if state["order"] != "ok":
        raise PermanentError("card declined")
    return {"charged": True}


def page(report):
    raise RuntimeError("the pager is down")
"""

ORDERS = {"ok": 3, "bad": 2, "stuck": 1}


def the_saga() -> Saga[Any]:
    """The app's saga as this process declares it, to start runs of it."""
    orders: Saga[Any] = Saga("metered-order")

    @orders.step
    def reserve(state: dict[str, Any], ctx: object) -> None:
        raise AssertionError("run by the worker only")

    @reserve.compensate
    def release(state: dict[str, Any], ctx: object) -> None:
        raise AssertionError("run by the worker only")

    @orders.step
    def charge(state: dict[str, Any], ctx: object) -> None:
        raise AssertionError("run by the worker only")

    return orders


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def scrape(port: int) -> dict[str, list[tuple[str, dict[str, str], float]]]:
    """The scrape's samples by family: (sample name, labels, value)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        assert answer.headers["Content-Type"].startswith("text/plain")
        text = answer.read().decode()
    return {
        family.name: [(s.name, s.labels, s.value) for s in family.samples]
        for family in text_string_to_metric_families(text)
    }


def values(
    families: dict[str, list[tuple[str, dict[str, str], float]]],
    name: str,
    *keys: str,
) -> dict[tuple[str, ...], float]:
    """The samples called ``name``, by the values of the labels ``keys``."""
    family = name.removesuffix("_total").removesuffix("_count")
    return {
        tuple(labels[k] for k in keys): value
        for sample, labels, value in families.get(family, [])
        if sample == name
    }


def settled(families: dict[str, list[tuple[str, dict[str, str], float]]]) -> bool:
    finished = values(families, "sagakit_runs_finished_total", "status")
    attention = values(families, "sagakit_runs_needing_attention", "saga")
    owed = values(families, "sagakit_alerts_owed")
    return (
        finished == {("completed",): 3.0, ("rolled_back",): 2.0}
        and attention == {("metered-order",): 1.0}
        and owed == {(): 1.0}
    )


def test_a_worker_serves_metrics_that_count_what_it_drove(tmp_path: Path) -> None:
    (tmp_path / "meterapp.py").write_text(textwrap.dedent(APP))
    db = tmp_path / "runs.db"
    port = free_port()
    with Engine(f"sqlite:///{db}") as engine:
        for order, count in ORDERS.items():
            for i in range(count):
                engine.start(the_saga(), {"order": order}, run_id=f"{order}-{i}")
        proc = start_worker(
            tmp_path,
            db,
            *("--metrics-port", str(port), "--on-attention", "meterapp:page", "--grace", "5"),
            app="meterapp",
        )
        try:
            assert proc.stdout is not None
            banner = [proc.stdout.readline(), proc.stdout.readline()]
            assert f"metrics at http://127.0.0.1:{port}/metrics" in banner[1], banner
            runs = {
                f"{order}-{i}": engine.wait(f"{order}-{i}", timeout=60)
                for order, count in ORDERS.items()
                for i in range(count)
            }
            # Observers count just after each commit; the store's gauges are
            # read every few seconds: scrape until both have caught up.
            give_up = time.monotonic() + 30
            while True:
                assert proc.poll() is None, proc.communicate()
                try:
                    families = scrape(port)
                except (urllib.error.URLError, ConnectionError):
                    families = {}
                if settled(families):
                    break
                assert time.monotonic() < give_up, families
                time.sleep(0.2)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                _, err = proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                raise
    assert proc.returncode == 0, err
    # The tracebacks logged are the pager's; no observer raised, no scrape failed.
    assert "the pager is down" in err
    assert "observer" not in err, err
    assert "sagakit/observe" not in err, err
    statuses = {run_id: run.status for run_id, run in runs.items()}
    assert list(statuses.values()).count(RunStatus.NEEDS_ATTENTION) == 1

    attempts = values(families, "sagakit_attempts_total", "step", "phase", "outcome")
    assert attempts == {
        ("reserve", "action", "succeeded"): 6.0,
        ("charge", "action", "succeeded"): 3.0,
        ("charge", "action", "failed"): 3.0,
        ("reserve", "compensation", "succeeded"): 2.0,
        ("reserve", "compensation", "failed"): 1.0,
    }
    durations = values(
        families, "sagakit_attempt_duration_seconds_count", "step", "phase", "outcome"
    )
    assert durations == attempts
    run_durations = values(families, "sagakit_run_duration_seconds_count", "status")
    assert run_durations == {("completed",): 3.0, ("rolled_back",): 2.0}
    attention = values(families, "sagakit_runs_attention_total", "saga", "phase")
    assert attention == {("metered-order", "compensation"): 1.0}
    # Every run was new when the worker claimed it: each pickup timed once.
    pickups = values(families, "sagakit_pickup_latency_seconds_count", "saga")
    assert pickups == {("metered-order",): 6.0}
    # The halted run's alert failed (the pager is down): it is owed, and due
    # again after a backoff; nothing else is due.
    [due] = values(families, "sagakit_runs_due").values()
    assert due in (0.0, 1.0)
    [age] = values(families, "sagakit_runs_due_oldest_age_seconds").values()
    assert 0.0 <= age < 60.0
    alerts = values(families, "sagakit_alerts_total", "outcome")
    assert set(alerts) == {("failed",)}
    assert alerts[("failed",)] >= 1.0  # tried again with backoff: perhaps more than once
    assert values(families, "sagakit_leases_lost_total", "saga") == {}
    # The runs were started by this process, not the worker: started counts there.
    assert values(families, "sagakit_runs_started_total", "saga") == {}


def test_a_port_in_use_is_one_line_and_exit_1(tmp_path: Path) -> None:
    (tmp_path / "meterapp.py").write_text(textwrap.dedent(APP))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = sagakit(
            tmp_path,
            "worker",
            "--db",
            f"sqlite:///{tmp_path / 'runs.db'}",
            "--app",
            "meterapp",
            "--metrics-port",
            str(port),
            pythonpath=tmp_path,
        )
    err = fails(done, code=1)
    assert err.strip().splitlines() == [
        f"Error: cannot serve metrics on 127.0.0.1:{port}: Address already in use"
    ]
    assert "serving" not in done.stdout


def test_without_the_metrics_extra_the_worker_says_which_to_install(tmp_path: Path) -> None:
    (tmp_path / "meterapp.py").write_text(textwrap.dedent(APP))
    # A module on the path that hides the exporter, as if it were not installed.
    blocker = tmp_path / "blocked"
    (blocker / "prometheus_client").mkdir(parents=True)
    (blocker / "prometheus_client" / "__init__.py").write_text(
        "raise ImportError(\"No module named 'prometheus_client'\")\n"
    )
    done = sagakit(
        tmp_path,
        "worker",
        "--db",
        f"sqlite:///{tmp_path / 'runs.db'}",
        "--app",
        "meterapp",
        "--metrics-port",
        "0",
        pythonpath=blocker,
        environ={"PYTHONPATH": f"{blocker}:{tmp_path}"},
    )
    err = fails(done, code=2)
    [line] = err.strip().splitlines()
    assert "--metrics-port needs the metrics extra" in line
    assert "pip install -e '.[metrics]'" in line
