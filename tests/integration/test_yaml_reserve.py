"""The ``reserve:`` key of YAML steps, run: names filled in from the state,
taken before the action, contended for by two runs, and a name whose field
the state lacks failing the step with one clear line."""

from __future__ import annotations

import textwrap
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest

from sagakit import Engine, EventKind, RunStatus
from sagakit.yamlfile import load_yaml

APP = """
import threading

inside = threading.Event()
go_on = threading.Event()
seen = []


def hold(state, ctx):
    seen.append((ctx.run_id, "hold"))
    if state.get("linger"):
        inside.set()
        assert go_on.wait(20), "the test never let the holder go on"
    return {"held": True}


def undo(state, ctx):
    seen.append((ctx.run_id, "undo"))
"""

SAGA = """
saga: Seats
steps:
  - name: hold
    function: {app}.hold
    compensate: {app}.undo
    retry: {{max_attempts: 1}}
    reserve: {{names: ["seat:{{seat}}", "flight:{{flight}}"], ttl: 60, wait: {wait}}}
"""


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    name = f"seats_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(APP)
    monkeypatch.syspath_prepend(str(tmp_path))
    return __import__(name)


def saga_file(tmp_path: Path, app: Any, *, wait: float) -> Path:
    path = tmp_path / f"seats-{wait}.yaml"
    path.write_text(textwrap.dedent(SAGA.format(app=app.__name__, wait=wait)))
    return path


def test_two_runs_contend_for_the_same_name_through_yaml(
    tmp_path: Path, app: Any, store_url: str
) -> None:
    saga = load_yaml(saga_file(tmp_path, app, wait=0), allowed_modules=[app.__name__])
    with Engine(store_url) as engine:
        finished: list[Any] = []
        holder = threading.Thread(
            target=lambda: finished.append(
                engine.run(saga, {"seat": "F1", "flight": 7, "linger": True}, run_id="first")
            )
        )
        holder.start()
        try:
            assert app.inside.wait(20), "the first run never reached its action"
            # Taken before the action ran, with the state's fields filled in.
            assert sorted(r.name for r in engine.reservations(run_id="first")) == [
                "flight:7",
                "seat:F1",
            ]
            second = engine.run(saga, {"seat": "F1", "flight": 8}, run_id="second")
        finally:
            app.go_on.set()
            holder.join(20)
        assert second.status is RunStatus.FAILED
        assert second.error is not None
        assert second.error.type == "sagakit.errors.ReservationBusy"
        assert "reservation 'seat:F1' is held by run 'first'" in second.error.message
        # All or none: the second run's flight was free but is not held either.
        assert ("second", "hold") not in app.seen
        assert engine.reservations(run_id="second") == []
        (first,) = finished
        assert first.status is RunStatus.COMPLETED
        assert engine.reservations() == []  # freed as the first run finished
        journal = engine.history("first")
        taken = [e for e in journal if e.kind is EventKind.RESERVATION_TAKEN]
        assert [e.data["names"] for e in taken] == [["seat:F1", "flight:7"]]


def test_a_run_waits_for_the_name_then_takes_it(tmp_path: Path, app: Any, store_url: str) -> None:
    saga = load_yaml(saga_file(tmp_path, app, wait=20), allowed_modules=[app.__name__])
    with Engine(store_url) as engine:
        finished: list[Any] = []
        holder = threading.Thread(
            target=lambda: finished.append(
                engine.run(saga, {"seat": "F2", "flight": 1, "linger": True}, run_id="first")
            )
        )
        holder.start()
        try:
            assert app.inside.wait(20)
            threading.Timer(0.3, app.go_on.set).start()
            second = engine.run(saga, {"seat": "F2", "flight": 2}, run_id="second")
        finally:
            app.go_on.set()
            holder.join(20)
        assert second.status is RunStatus.COMPLETED
        assert finished[0].status is RunStatus.COMPLETED
        # The second run's action ran only once the first run had finished.
        assert app.seen.index(("second", "hold")) > app.seen.index(("first", "hold"))


def test_a_name_whose_field_the_state_lacks_fails_the_step_in_one_line(
    tmp_path: Path, app: Any, engine: Engine
) -> None:
    saga = load_yaml(saga_file(tmp_path, app, wait=0), allowed_modules=[app.__name__])
    run = engine.run(saga, {"seat": "F3"}, run_id="no-flight")
    assert run.status is RunStatus.FAILED
    assert run.error is not None
    assert run.error.type == "sagakit.errors.StateError"
    assert run.error.message == (
        "step 'hold' reserves 'seat:{seat}', 'flight:{flight}', but the state has no field "
        "'flight' to fill in; give the run that field or change the name"
    )
    assert "\n" not in run.error.message
    assert app.seen == []  # the action never ran
    assert engine.reservations() == []  # the names are filled in before any is taken
