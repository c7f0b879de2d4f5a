"""The run id rule: what may name a new run, on every store, from Python and the CLI."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from acceptance.helpers import fails, sagakit
from sagakit import Engine, InvalidRunId, Saga
from sagakit.run import MAX_RUN_ID, check_run_id

saga = Saga("ids")


@saga.step
def only(state: dict[str, Any], ctx: Any) -> None:
    return None


REFUSED = [
    ("", "is empty"),
    ("   ", "is only spaces"),
    ("a" * (MAX_RUN_ID + 1), "is 201 characters long"),
    ("x" * 100_000, "is 100000 characters long"),
    ("order/42", "holds a '/'"),
    ("order\n42", "holds a control or other unprintable character"),
    ("order\r42", "holds a control or other unprintable character"),
    ("order\x1b[2J", "holds a control or other unprintable character"),
    ("order\u202e24", "holds a control or other unprintable character"),
]


@pytest.mark.parametrize(("run_id", "why"), REFUSED)
def test_a_run_id_that_breaks_the_rule_starts_nothing(
    engine: Engine, run_id: str, why: str
) -> None:
    with pytest.raises(InvalidRunId, match="a run id is 1 to 200 printable characters") as caught:
        engine.start(saga, {}, run_id=run_id)
    assert why in str(caught.value)
    assert len(str(caught.value)) < 200  # a 100 kB id is not repeated whole
    with pytest.raises(InvalidRunId):
        engine.run(saga, {}, run_id=run_id)
    assert engine.runs() == []


def test_a_run_id_that_is_not_a_string_is_refused(engine: Engine) -> None:
    with pytest.raises(InvalidRunId, match="is a int, not a string"):
        engine.start(saga, {}, run_id=42)  # type: ignore[arg-type]
    assert engine.runs() == []


@pytest.mark.parametrize("run_id", ["order-42", "ORD 1", "a" * MAX_RUN_ID, "café-ü-注文", "a:b@c"])
def test_run_ids_within_the_rule_are_taken(engine: Engine, run_id: str) -> None:
    assert check_run_id(run_id) == run_id
    assert engine.run(saga, {}, run_id=run_id).id == run_id
    assert engine.get(run_id).status == "completed"


PAYMENT = Path(__file__).resolve().parents[2] / "examples" / "payment"
ORDER = '{"order_id": "o-1", "customer_id": "c-1", "amount": 10.0}'


@pytest.mark.slow
@pytest.mark.parametrize("run_id", ["order\n42", "order/42", ""])
def test_the_cli_refuses_a_bad_run_id_in_one_line_and_stores_nothing(
    tmp_path: Path, run_id: str
) -> None:
    for name in ("payment.yaml", "payment_processor"):
        source = PAYMENT / name
        target = tmp_path / name
        if source.is_dir():
            target.mkdir()
            for file in source.glob("*.py"):
                (target / file.name).write_text(file.read_text())
        else:
            target.write_text(source.read_text())
    done = sagakit(tmp_path, "run", "payment.yaml", "--input", ORDER, "--run-id", run_id)
    err = fails(done)
    lines = [line for line in err.splitlines() if line.strip()]
    # No --db: the command names the default store it uses, then the error.
    assert lines[0] == "using sqlite:///sagakit.db (no --db or SAGAKIT_DB)"
    assert len(lines) == 2, err
    assert lines[1].startswith("Error: run id ")
    db = tmp_path / "sagakit.db"
    if db.exists():
        with sqlite3.connect(db) as conn:
            assert conn.execute("SELECT count(*) FROM runs").fetchone() == (0,)
