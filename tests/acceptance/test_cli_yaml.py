"""``sagakit validate``, ``run`` and ``schema``, and workers serving YAML files."""

from __future__ import annotations

import json
import shutil
import signal
import sys
import time
from pathlib import Path

import pytest

from sagakit import Engine, RunStatus, load_yaml
from sagakit.yamlfile import schema_text

from .helpers import fails, ok, sagakit, start_worker

pytestmark = pytest.mark.slow

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "payment"
DOWN = {"order_id": "o-1", "customer_id": "c-1", "amount": 10.0, "carrier": "down-express"}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of the payment example: the YAML files beside their package."""
    target = tmp_path / "project"
    shutil.copytree(EXAMPLE, target, ignore=shutil.ignore_patterns("__pycache__"))
    return target


def test_validate_says_ok_with_the_saga_and_its_stages(project: Path) -> None:
    out = ok(sagakit(project, "validate", "workflow.yaml"))
    assert out.strip() == (
        "workflow.yaml: ok - saga PaymentProcessing version 1.0.0, 4 steps: Create_Order -> "
        "Charge_Payment -> Reserve_Inventory -> Create_Shipment"
    )
    assert "version 1.1.0" in ok(sagakit(project, "validate", "payment.yaml"))


def test_validate_names_file_line_and_step_of_every_problem(project: Path) -> None:
    text = (project / "payment.yaml").read_text()
    text = text.replace("payment_processor.steps.refund_payment", "payment_processor.steps.refnd")
    text = text.replace("timeout: 10\n", "timeout: -1\n", 1)
    (project / "broken.yaml").write_text(text)
    done = sagakit(project, "validate", "broken.yaml")
    fails(done)
    assert done.stderr.splitlines() == [
        "broken.yaml:13: step 'create_order': timeout: Input should be greater than 0",
        "Error: broken.yaml: 1 problem",
    ]
    (project / "broken.yaml").write_text(text.replace("timeout: -1\n", "timeout: 1\n"))
    done = sagakit(project, "validate", "broken.yaml")
    fails(done)
    assert done.stderr.splitlines()[0] == (
        "broken.yaml:17: step 'charge_payment': 'payment_processor.steps' has no attribute 'refnd'"
    )


def test_validate_allows_only_the_modules_given_with_app(project: Path) -> None:
    done = sagakit(project, "validate", "workflow.yaml", "--app", "json")
    fails(done)
    assert (
        "workflow.yaml:10: step 'Create_Order': 'payment_processor.steps.create_order' is "
        "outside the allowed modules: the allowed modules are json"
    ) in done.stderr
    ok(sagakit(project, "validate", "workflow.yaml", "--app", "payment_processor"))


def test_run_executes_the_file_and_prints_its_timeline_and_state(project: Path) -> None:
    out = ok(sagakit(project, "run", "payment.yaml", "--input", json.dumps(DOWN), "--run-id", "r1"))
    assert "status rolled_back" in out
    assert "undo reserve_inventory" in out
    assert '"compensations_run": [\n    "release_inventory",' in out
    # The run is in the default database, for the other commands.
    listed = ok(sagakit(project, "list"))
    assert "r1" in listed
    assert "PaymentProcessing v1.1.0" in listed
    with Engine(f"sqlite:///{project / 'sagakit.db'}") as engine:
        assert engine.get("r1").status is RunStatus.ROLLED_BACK


def test_run_refuses_bad_input_and_broken_files_before_running(project: Path) -> None:
    done = sagakit(project, "run", "payment.yaml", "--input", "{not json")
    fails(done, 2)
    assert "Invalid value for --input: not JSON" in done.stderr
    fails(sagakit(project, "run", "payment.yaml", "--input", "[1]"), 2)
    done = sagakit(project, "run", "payment.yaml", "--input", '{"amount": 1}')
    fails(done)
    assert "order_id" in done.stderr  # the state model refuses it, nothing is recorded
    done = sagakit(project, "run", "absent.yaml")
    fails(done)
    assert "absent.yaml: cannot read the file" in done.stderr
    assert not (project / "sagakit.db").exists() or "o-1" not in ok(sagakit(project, "list"))


def test_schema_prints_the_shipped_json_schema(project: Path) -> None:
    out = ok(sagakit(project, "schema"))
    assert out == schema_text()
    assert json.loads(out)["title"] == "sagakit saga definition"


def test_a_worker_serves_a_yaml_file_and_reports_runs_of_versions_it_lacks(
    project: Path,
) -> None:
    db = project / "runs.db"
    sys.path.insert(0, str(project))
    try:
        newer = load_yaml(project / "payment.yaml", allowed_modules=["payment_processor"])
        older = load_yaml(project / "workflow.yaml", allowed_modules=["payment_processor"])
    finally:
        sys.path.remove(str(project))
    with Engine(f"sqlite:///{db}") as engine:
        engine.start(newer, DOWN, run_id="served")
        engine.start(older, DOWN, run_id="stranded")
    worker = start_worker(project, db, app="payment.yaml")
    try:
        with Engine(f"sqlite:///{db}") as engine:
            deadline = time.monotonic() + 30
            while engine.get("served").status is not RunStatus.ROLLED_BACK:
                assert worker.poll() is None, worker.communicate()
                assert time.monotonic() < deadline, "the worker never finished the run"
                time.sleep(0.05)
            assert engine.get("stranded").status is RunStatus.PENDING
    finally:
        worker.send_signal(signal.SIGTERM)
        out, err = worker.communicate(timeout=30)
    assert worker.returncode == 0, err
    assert "serving PaymentProcessing v1.1.0" in out
    assert (
        "run stranded of saga PaymentProcessing is on version 1.0.0, which this worker does "
        "not have (it has 1.1.0); left untouched until a worker with that version serves it"
    ) in err
    # Shown to an operator too, with what to do.
    shown = ok(sagakit(project, "show", "stranded", "--db", str(db), "--app", "payment.yaml"))
    assert (
        "version 1.0.0 of saga PaymentProcessing is not loaded here (loaded: 1.1.0); only a "
        "worker or --app with version 1.0.0 acts on this run"
    ) in shown
