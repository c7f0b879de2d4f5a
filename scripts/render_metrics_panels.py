"""Render the main panels of docs/grafana-dashboard.json from a real worker's metrics.

Starts ``sagakit worker --metrics-port`` on a fresh SQLite file, feeds it
runs of a saga that completes, rolls back or needs attention (its steps
sleep a few to a few hundred milliseconds), scrapes ``/metrics`` every two
seconds for about half a minute, and draws what the dashboard's queries
would show, computed from the scrapes as Prometheus computes them (``rate``
over the last window, ``histogram_quantile`` on bucket increases), into a
PNG. Needs the ``metrics`` and ``bench`` extras (matplotlib)::

    .venv/bin/python scripts/render_metrics_panels.py                # docs/metrics-panels.png
    .venv/bin/python scripts/render_metrics_panels.py --seconds 20 --out panels.png
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from collections import defaultdict
from pathlib import Path
from typing import Any

APP = """
import random, time
from sagakit import PermanentError, Saga

orders = Saga("order")


@orders.step
def reserve(state, ctx):
    time.sleep(random.uniform(0.005, 0.06))


@reserve.compensate
def release(state, ctx):
    time.sleep(random.uniform(0.005, 0.03))
    if state["order"] == "stuck":
        raise PermanentError("the warehouse refused")


@orders.step
def charge(state, ctx):
    time.sleep(random.uniform(0.02, 0.3))
    if state["order"] != "ok":
        raise PermanentError("card declined")


def page(report):
    pass
"""

# One family's samples: (sample name, labels, value).
Samples = list[tuple[str, dict[str, str], float]]
Scrape = dict[str, Samples]
# A panel's lines: the scrapes' times, and each series' values then.
Lines = tuple[list[float], dict[tuple[str, ...], list[float]]]


def the_saga() -> Any:
    """The app's saga as this process declares it: only to start runs of it."""
    from sagakit import Saga

    orders: Saga[Any] = Saga("order")

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


def scrape(port: int) -> Scrape:
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    return {
        family.name: [(s.name, dict(s.labels), s.value) for s in family.samples]
        for family in text_string_to_metric_families(text)
    }


def collect(seconds: float, every: float, rate: float, workdir: Path) -> list[tuple[float, Scrape]]:
    """Run a worker, feed it runs for ``seconds``, and scrape it every ``every``."""
    from sagakit import Engine

    (workdir / "panelsapp.py").write_text(textwrap.dedent(APP))
    db = workdir / "runs.db"
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(workdir), os.environ.get("PYTHONPATH", "")]),
    }
    command = [
        sys.executable,
        "-m",
        "sagakit",
        "worker",
        "--db",
        f"sqlite:///{db}",
        "--app",
        "panelsapp",
        "--on-attention",
        "panelsapp:page",
        "--concurrency",
        "4",
        "--poll",
        "0.1",
        "--metrics-port",
        str(port),
        "--grace",
        "5",
    ]
    scrapes: list[tuple[float, Scrape]] = []
    chooser = random.Random(7)
    with Engine(f"sqlite:///{db}") as engine:
        engine.register(the_saga())  # makes the tables before the worker looks
        worker = subprocess.Popen(
            command,
            cwd=workdir,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            began = time.monotonic()
            next_scrape = began + 1.0
            started, owed, last, burst = 0, 0.0, began, False
            while (now := time.monotonic()) < began + seconds:
                owed += (now - last) * rate
                last = now
                if not burst and now - began > seconds / 3:
                    # A batch of more runs than the worker takes at once: the
                    # backlog grows, then drains.
                    owed += 25 * rate
                    burst = True
                while started < owed:
                    order = chooser.choices(["ok", "bad", "stuck"], weights=[85, 12, 3])[0]
                    engine.start(the_saga(), {"order": order}, run_id=f"{order}-{started}")
                    started += 1
                if now >= next_scrape:
                    if worker.poll() is not None:
                        raise SystemExit(f"the worker exited: {worker.communicate()[1]}")
                    with contextlib.suppress(OSError):  # not listening yet
                        scrapes.append((now - began, scrape(port)))
                    next_scrape += every
                time.sleep(0.02)
        finally:
            worker.send_signal(signal.SIGTERM)
            worker.wait(30)
    return scrapes


def series(scrape: Scrape, name: str, by: tuple[str, ...]) -> dict[tuple[str, ...], float]:
    """The samples called ``name``, summed by the labels ``by``."""
    family = name.removesuffix("_total").removesuffix("_bucket")
    out: dict[tuple[str, ...], float] = defaultdict(float)
    for sample, labels, value in scrape.get(family, []):
        if sample == name:
            out[tuple(labels.get(k, "") for k in by)] += value
    return out


def rates(
    scrapes: list[tuple[float, Scrape]], name: str, by: tuple[str, ...], window: int
) -> Lines:
    """Per-second increase of a counter over the last ``window`` scrapes, by ``by``."""
    times, out = [], defaultdict(list)
    keys = {k for _, s in scrapes for k in series(s, name, by)}
    for i in range(window, len(scrapes)):
        (t0, old), (t1, new) = scrapes[i - window], scrapes[i]
        before, after = series(old, name, by), series(new, name, by)
        times.append(t1)
        for key in keys:
            out[key].append(max(0.0, after.get(key, 0.0) - before.get(key, 0.0)) / (t1 - t0))
    return times, out


def quantiles(
    scrapes: list[tuple[float, Scrape]],
    name: str,
    q: float,
    by: tuple[str, ...],
    *,
    window: int,
    where: dict[str, str] | None = None,
) -> Lines:
    """``histogram_quantile(q, sum by (le, by) (increase(name_bucket[window])))``."""
    family = name
    times: list[float] = []
    out: dict[tuple[str, ...], list[float]] = defaultdict(list)

    def buckets(scrape: Scrape) -> dict[tuple[str, ...], dict[float, float]]:
        got: dict[tuple[str, ...], dict[float, float]] = defaultdict(lambda: defaultdict(float))
        for sample, labels, value in scrape.get(family, []):
            if sample != f"{name}_bucket":
                continue
            if where and any(labels.get(k) != v for k, v in where.items()):
                continue
            got[tuple(labels.get(k, "") for k in by)][float(labels["le"])] += value
        return got

    keys = {k for _, s in scrapes for k in buckets(s)}
    for i in range(window, len(scrapes)):
        old, new = buckets(scrapes[i - window][1]), buckets(scrapes[i][1])
        times.append(scrapes[i][0])
        for key in keys:
            bounds = sorted(new.get(key, {}))
            counts = [new.get(key, {}).get(b, 0.0) - old.get(key, {}).get(b, 0.0) for b in bounds]
            out[key].append(_quantile(q, bounds, counts))
    return times, out


def _quantile(q: float, bounds: list[float], cumulative: list[float]) -> float:
    """Prometheus's histogram_quantile: linear within the bucket the rank falls in."""
    if not cumulative or cumulative[-1] <= 0:
        return float("nan")
    rank = q * cumulative[-1]
    for i, (bound, count) in enumerate(zip(bounds, cumulative, strict=True)):
        if count >= rank:
            if bound == float("inf"):
                return bounds[i - 1] if i else float("nan")
            lower = bounds[i - 1] if i else 0.0
            below = cumulative[i - 1] if i else 0.0
            inside = count - below
            return lower + (bound - lower) * ((rank - below) / inside if inside else 1.0)
    return float("nan")


def gauge(scrapes: list[tuple[float, Scrape]], name: str, by: tuple[str, ...] = ()) -> Lines:
    """A gauge's value at each scrape, by ``by`` (NaN where a scrape lacks it)."""
    times: list[float] = []
    out: dict[tuple[str, ...], list[float]] = defaultdict(list)
    keys = {k for _, s in scrapes for k in series(s, name, by)}
    for t, s in scrapes:
        times.append(t)
        now = series(s, name, by)
        for key in keys:
            out[key].append(now.get(key, float("nan")))
    return times, out


def render(scrapes: list[tuple[float, Scrape]], out: Path, window: int) -> None:
    """Draw six of the dashboard's panels into ``out``; ``window``: scrapes per rate."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 8, "axes.titlesize": 9, "legend.fontsize": 7})
    fig, axes = plt.subplots(2, 3, figsize=(12, 6), dpi=80)

    def label(key: tuple[str, ...]) -> str:
        return " ".join(k for k in key if k) or "all"

    def draw(
        ax: Any, title: str, unit: str, lines: list[tuple[str, list[float], list[float]]]
    ) -> None:
        lines = [line for line in lines if line[2]]  # a metric not (yet) written: no line
        for name, xs, ys in lines:
            ax.plot(xs, ys, label=name, linewidth=1.4)
        ax.set_title(title)
        ax.set_ylabel(unit)
        ax.grid(alpha=0.3)
        ax.set_xlabel("seconds into the run")
        if lines:
            ax.legend(loc="upper left")

    t, got = rates(scrapes, "sagakit_runs_finished_total", ("status",), window)
    ts, begun = rates(scrapes, "sagakit_runs_started_total", (), window)
    draw(
        axes[0][0],
        "Runs finished by status (per second)",
        "runs/s",
        [(label(k), t, v) for k, v in sorted(got.items())]
        # Runs are counted as started by the process that starts them: not a worker.
        + ([("started", ts, begun[()])] if begun.get(()) else []),
    )
    t, got = rates(scrapes, "sagakit_attempts_total", ("phase", "outcome"), window)
    draw(
        axes[0][1],
        "Attempts by outcome (per second)",
        "attempts/s",
        [(label(k), t, v) for k, v in sorted(got.items())],
    )
    lines = []
    for q in (0.5, 0.95):
        t, got = quantiles(
            scrapes,
            "sagakit_attempt_duration_seconds",
            q,
            ("step",),
            window=window,
            where={"phase": "action"},
        )
        lines += [(f"p{int(q * 100)} {label(k)}", t, v) for k, v in sorted(got.items())]
    draw(axes[0][2], "Attempt duration p50 / p95 (actions)", "seconds", lines)
    lines = []
    for q in (0.5, 0.95):
        t, got = quantiles(scrapes, "sagakit_run_duration_seconds", q, (), window=window)
        lines += [(f"p{int(q * 100)}", t, v) for v in got.values()]
    draw(axes[1][0], "Run duration p50 / p95", "seconds", lines)
    t, got = gauge(scrapes, "sagakit_runs_needing_attention", ("saga",))
    draw(axes[1][1], "Runs needing attention", "runs", [(label(k), t, v) for k, v in got.items()])
    ax = axes[1][2]
    t, due = gauge(scrapes, "sagakit_runs_due")
    t, age = gauge(scrapes, "sagakit_runs_due_oldest_age_seconds")
    draw(ax, "Backlog: runs due, oldest's wait", "runs", [("runs due", t, due.get((), []))])
    if age.get(()):
        twin = ax.twinx()
        twin.plot(t, age[()], color="tab:red", linewidth=1.4, label="oldest wait (s, right)")
        twin.set_ylabel("seconds")
        twin.legend(loc="upper right")
    title = "sagakit worker metrics, scraped from a real run"
    fig.suptitle(f"{title} (rates and quantiles over the last {window * 2} s)", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=80)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="how long to feed the worker")
    parser.add_argument("--rate", type=float, default=4.0, help="runs started per second")
    parser.add_argument("--out", type=Path, default=Path("docs/metrics-panels.png"))
    parser.add_argument("--keep", type=Path, help="also write the scrapes to this JSON file")
    parser.add_argument(
        "--replay", type=Path, help="draw the scrapes of a --keep file; run nothing"
    )
    args = parser.parse_args()
    if args.replay:
        scrapes = [(t, s) for t, s in json.loads(args.replay.read_text())]
    else:
        with tempfile.TemporaryDirectory() as workdir:
            scrapes = collect(args.seconds, 2.0, args.rate, Path(workdir))
    if args.keep:
        args.keep.write_text(json.dumps(scrapes))
    if len(scrapes) < 4:
        raise SystemExit(f"only {len(scrapes)} scrapes: too few to draw rates")
    render(scrapes, args.out, window=3)
    print(f"{len(scrapes)} scrapes drawn into {args.out} ({args.out.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
