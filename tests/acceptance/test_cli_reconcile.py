"""``sagakit reconcile`` as a process: the table, ``--json``, ``--apply``, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from sagakit import Engine, EventKind, RunStatus

from . import reconcileapp
from .helpers import fails, sagakit

APP = Path(__file__).parent
SCHEMA = json.loads((APP.parents[1] / "src/sagakit/schema/output.schema.json").read_text())


@pytest.fixture
def cloud(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "cloud.json"
    monkeypatch.setenv("RECONCILE_CLOUD", str(path))
    return path


@pytest.fixture
def db(tmp_path: Path, cloud: Path) -> Path:
    path = tmp_path / "runs.db"
    with Engine(f"sqlite:///{path}") as engine:
        assert engine.run(reconcileapp.saga, {}, run_id="kept").status is RunStatus.COMPLETED
        undone = engine.run(reconcileapp.saga, {"fail": True, "api_key": reconcileapp.API_KEY})
        assert undone.status is RunStatus.ROLLED_BACK
        engine.run(reconcileapp.saga, {"fail": True}, run_id="undone-2")
    reconcileapp.create("purged-run/make_bucket")
    reconcileapp.create("fresh-run/make_bucket", age=0)
    return path


def reconcile(db: Path, *args: str) -> tuple[int, str, str]:
    done = sagakit(
        db.parent, "reconcile", "--app", "reconcileapp", "--db", str(db), *args, pythonpath=APP
    )
    assert "Traceback" not in done.stdout + done.stderr
    return done.returncode, done.stdout, done.stderr


def test_a_dry_run_lists_every_resource_and_removes_nothing(db: Path, cloud: Path) -> None:
    code, out, _ = reconcile(db)
    assert code == 0
    assert out.count("step_compensated") == 2
    assert "unknown_run" in out
    assert "in_grace" in out
    assert "owned" in out
    assert "3 orphaned, 2 live, 0 not made by a saga step" in out
    assert "pass --apply to remove the orphans" in out
    assert len(json.loads(cloud.read_text())["buckets"]) == 5


def test_json_follows_the_schema(db: Path) -> None:
    code, out, _ = reconcile(db, "--json")
    assert code == 0
    doc = json.loads(out)
    jsonschema.validate(doc, SCHEMA)
    assert doc["schema"] == "sagakit/reconcile/v1"
    assert doc["counts"]["orphan"] == 3
    assert {f["reason"] for f in doc["findings"]} == {
        "owned",
        "step_compensated",
        "unknown_run",
        "in_grace",
    }


def test_apply_removes_and_journals_and_a_failed_removal_exits_1_masked(
    db: Path, cloud: Path
) -> None:
    with Engine(f"sqlite:///{db}") as engine:
        undone = next(r for r in engine.runs() if r.id not in ("kept", "undone-2"))
    broken = undone.data["bucket"]
    reconcileapp.break_removal(broken)

    code, out, _ = reconcile(db, "--apply", "--json")
    assert code == 1
    doc = json.loads(out)
    jsonschema.validate(doc, SCHEMA)
    assert reconcileapp.API_KEY not in out
    outcome = {f["resource"]["id"]: f["outcome"] for f in doc["findings"]}
    assert outcome[broken] == "failed"
    assert sorted(outcome.values()) == ["failed", "kept", "kept", "removed", "removed"]
    failed = next(f for f in doc["findings"] if f["outcome"] == "failed")
    assert "403 for" in failed["error"]["message"]
    assert "***" in failed["error"]["message"]
    left = json.loads(cloud.read_text())["buckets"]
    assert sorted(left) == sorted([broken, "bucket-1", "bucket-5"])
    with Engine(f"sqlite:///{db}") as engine:
        last = engine.history("undone-2")[-1]
        assert last.kind is EventKind.ORPHAN_REMOVED
        assert engine.history(undone.id)[-1].kind is EventKind.RUN_FINISHED

    # The text table says the same; the removal that failed is still failing.
    code, out, _ = reconcile(db, "--apply")
    assert code == 1
    assert "failed: 403 for" in out
    assert reconcileapp.API_KEY not in out


def test_bad_input_is_one_line(db: Path) -> None:
    err = fails(sagakit(db.parent, "reconcile", "--app", "no_such_module", "--db", str(db)), 2)
    assert "cannot import 'no_such_module'" in err
    err = fails(
        sagakit(db.parent, "reconcile", "--app", "cardapp", "--db", str(db), pythonpath=APP)
    )
    assert "declares a reconciler" in err
    assert len(err.strip().splitlines()) == 1
    err = fails(sagakit(db.parent, "reconcile", "--db", str(db)), 2)
    assert "--app" in err
    _, _, err = reconcile(db, "--grace", "soon")
    assert "not an age" in err
    code, _, err = reconcile(db, "--saga", "nope")
    assert code == 1
    assert "no saga named 'nope'" in err
    err = fails(
        sagakit(
            db.parent,
            "reconcile",
            "--app",
            "reconcileapp",
            "--db",
            str(db.parent / "missing.db"),
            pythonpath=APP,
        )
    )
    assert "no sagakit database" in err


def test_apply_on_the_default_store_is_refused_and_removes_nothing(db: Path, cloud: Path) -> None:
    (db.parent / "sagakit.db").write_bytes(db.read_bytes())  # the file a bare command falls to
    before = cloud.read_text()
    done = sagakit(
        db.parent,
        "reconcile",
        "--app",
        "reconcileapp",
        "--apply",
        pythonpath=APP,
        environ={"SAGAKIT_DB": None},
    )
    err = fails(done, 2)
    assert "name the store the runs are in with --db or SAGAKIT_DB" in err
    assert cloud.read_text() == before


def test_a_worker_reconciles_every_so_often(
    db: Path, cloud: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    from .helpers import start_worker
    from .test_worker_cli import terminate

    monkeypatch.setenv("PYTHONPATH", str(APP))
    worker = start_worker(
        db.parent,
        db,
        "--reconcile-every",
        "1s",
        "--reconcile-grace",
        "0",
        "--reconcile-apply",
        app="reconcileapp",
    )
    try:
        give_up = time.monotonic() + 30
        while len(json.loads(cloud.read_text())["buckets"]) > 1:
            assert worker.poll() is None, worker.communicate()
            assert time.monotonic() < give_up, "the worker removed nothing"
            time.sleep(0.1)
    finally:
        _, err = terminate(worker)
    # Only the completed run's bucket stays; every pass is logged.
    assert list(json.loads(cloud.read_text())["buckets"]) == ["bucket-1"]
    assert "reconciliation: " in err
    assert "removed orphaned bucket" in err


def test_worker_reconcile_options_are_checked(db: Path) -> None:
    err = fails(
        sagakit(
            db.parent,
            *("worker", "--app", "cardapp", "--db", str(db), "--reconcile-every", "1m"),
            pythonpath=APP,
        ),
        2,
    )
    assert "declares a reconciler" in err
    err = fails(
        sagakit(
            db.parent,
            *("worker", "--app", "reconcileapp", "--db", str(db), "--reconcile-apply"),
            pythonpath=APP,
        ),
        2,
    )
    assert "--reconcile-apply needs --reconcile-every" in err
