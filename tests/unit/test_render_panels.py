"""scripts/render_metrics_panels.py computes what the dashboard's queries show
(``rate``, ``histogram_quantile``) as Prometheus does, and draws a PNG."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "render_metrics_panels.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("render_metrics_panels", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["render_metrics_panels"] = module
    spec.loader.exec_module(module)
    return module


panels = _load()

INF = float("inf")


def test_quantile_interpolates_within_the_bucket_the_rank_falls_in() -> None:
    # 10 observations: 4 up to 0.1, 4 more up to 0.5, 2 more up to 1.
    bounds, cumulative = [0.1, 0.5, 1.0, INF], [4.0, 8.0, 10.0, 10.0]
    assert panels._quantile(0.5, bounds, cumulative) == pytest.approx(0.1 + 0.4 * (1 / 4))
    assert panels._quantile(0.2, bounds, cumulative) == pytest.approx(0.05)  # from 0
    assert panels._quantile(0.95, bounds, cumulative) == pytest.approx(0.5 + 0.5 * (1.5 / 2))


def test_quantile_in_the_inf_bucket_is_the_highest_finite_bound_and_empty_is_nan() -> None:
    assert panels._quantile(0.99, [0.1, 1.0, INF], [1.0, 2.0, 10.0]) == 1.0
    assert math.isnan(panels._quantile(0.5, [0.1, INF], [0.0, 0.0]))


def scrape(finished: dict[str, float], buckets: dict[float, float]) -> dict[str, list[object]]:
    """A parsed scrape with runs finished by status and one histogram."""
    return {
        "sagakit_runs_finished": [
            ("sagakit_runs_finished_total", {"saga": "order", "status": status}, n)
            for status, n in finished.items()
        ],
        "sagakit_run_duration_seconds": [
            ("sagakit_run_duration_seconds_bucket", {"saga": "order", "le": str(le)}, n)
            for le, n in buckets.items()
        ],
    }


def test_rates_and_quantiles_are_taken_over_the_window_of_scrapes() -> None:
    scrapes = [
        (0.0, scrape({"completed": 0}, {0.1: 0, 1.0: 0, INF: 0})),
        (2.0, scrape({"completed": 4, "rolled_back": 2}, {0.1: 6, 1.0: 6, INF: 6})),
        (4.0, scrape({"completed": 10, "rolled_back": 2}, {0.1: 6, 1.0: 12, INF: 12})),
    ]
    times, by_status = panels.rates(scrapes, "sagakit_runs_finished_total", ("status",), 1)
    assert times == [2.0, 4.0]
    assert by_status[("completed",)] == [2.0, 3.0]
    # A series missing from an earlier scrape counts from zero.
    assert by_status[("rolled_back",)] == [1.0, 0.0]
    times, p50 = panels.quantiles(scrapes, "sagakit_run_duration_seconds", 0.5, (), window=1)
    # The second window saw only the 6 runs between 0.1 s and 1 s.
    assert p50[()] == [pytest.approx(0.05), pytest.approx(0.55)]


def test_render_draws_a_png(tmp_path: Path) -> None:
    scrapes = [
        (float(t), scrape({"completed": 3 * t}, {0.1: t, 1.0: 2 * t, INF: 2 * t}))
        for t in range(0, 20, 2)
    ]
    out = tmp_path / "panels.png"
    panels.render(scrapes, out, window=2)
    assert out.read_bytes().startswith(b"\x89PNG")
