"""``sagakit test``: the explorer from the command line, on a YAML file and on --app."""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import jsonschema

from sagakit.cli.jsonout import output_schema

from .helpers import fails, ok, sagakit

PAYMENT = Path(__file__).resolve().parents[2] / "examples" / "payment"
ORDER = '{"order_id": "ORD-1", "customer_id": "CUST-1", "amount": 12.5}'

# A refund that reads the charge's id from the state: a charge that timed out
# (its outcome unknown) left none, so the refund fails at every attempt.
SHOP = textwrap.dedent(
    """
    from sagakit import RetryPolicy, Saga

    shop = Saga("shop")

    @shop.step
    def charge(state, ctx):
        return {"charge_id": "ch-1"}

    @charge.compensate(retry=RetryPolicy(max_attempts=2, initial_delay=3600))
    def refund(state, ctx):
        if state.get("charge_id") is None:
            raise LookupError("no charge id in the state")

    @shop.step
    def ship(state, ctx):
        return None
    """
)


def project(tmp_path: Path) -> Path:
    shutil.copytree(PAYMENT / "payment_processor", tmp_path / "payment_processor")
    shutil.copy(PAYMENT / "payment.yaml", tmp_path / "payment.yaml")
    (tmp_path / "shopapp.py").write_text(SHOP)
    return tmp_path


def test_a_yaml_saga_passes_every_scenario(tmp_path: Path) -> None:
    cwd = project(tmp_path)
    done = sagakit(
        cwd, "test", "payment.yaml", "--app", "payment_processor", "--input", ORDER, "--pairs", "5"
    )
    out = " ".join(ok(done).split())  # the summary line wraps
    assert "crash before the success of charge_payment is recorded" in out
    assert "the undo of charge_payment fails once (rolled back by: reserve_inventory fails" in out
    assert "cancel the next day, after another run completed" in out
    assert "checked sagakit's invariants only (no check was given): all passed" in out
    assert "5 of " in out


def test_a_failure_exits_1_with_the_smallest_scenario_and_its_timeline(tmp_path: Path) -> None:
    cwd = project(tmp_path)
    done = sagakit(cwd, "test", "--app", "shopapp:shop", "--pairs", "0", "--failed-only")
    fails(done, 1)
    out = done.stdout
    assert "FAILED: the run needs attention, which no injected fault explains" in out
    assert "smallest scenario #" in out
    assert "charge takes effect, then times out (every attempt)" in out
    assert "undo charge" in out
    assert "LookupError: no charge id in the state" in out
    # Only the failed scenarios are listed; the retries an hour apart cost nothing.
    assert "no fault (baseline)" not in out


def test_json_is_a_test_document(tmp_path: Path) -> None:
    cwd = project(tmp_path)
    done = sagakit(cwd, "test", "--app", "shopapp", "--pairs", "3", "--json", "--store", "sqlite")
    fails(done, 1)
    doc = json.loads(done.stdout)
    jsonschema.validate(doc, output_schema())
    assert doc["schema"] == "sagakit/test/v1"
    shown = (doc["saga"], doc["store"], doc["ok"], doc["checked"])
    assert shown == ("shop", "sqlite", False, False)
    assert doc["pairs_run"] == 3
    assert doc["scenarios"][0]["text"] == "no fault (baseline)"
    assert doc["scenarios"][0]["passed"] is True
    (failure,) = doc["failures"]
    smallest = doc["scenarios"][failure["smallest"]]
    assert smallest["faults"][0]["kind"] == "timeout"
    assert smallest["problems"] == [failure["finding"]]


def test_bad_input_is_one_line_and_nothing_runs(tmp_path: Path) -> None:
    cwd = project(tmp_path)
    bad = sagakit(cwd, "test", "payment.yaml", "--app", "payment_processor", "--input", "{}")
    line = fails(bad, 1)
    assert line.startswith("Error: --input does not fit the state of saga 'PaymentProcessing'")
    assert len(line.strip().splitlines()) == 1
    nothing = sagakit(cwd, "test")
    assert "give a YAML file, or --app MODULE[:SAGA]" in fails(nothing, 2)
    many = sagakit(cwd, "test", "--app", "shopapp", "--saga", "nope")
    assert "no saga named 'nope'" in fails(many, 2)
