"""`sagakit recover` does what a worker does: a run waiting on a retry is handed back."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from sagakit import Engine

APP = """
from sagakit import RetryPolicy, Saga

saga = Saga("cli-flaky")


@saga.step(retry=RetryPolicy(max_attempts=3, initial_delay=600.0, jitter=0.0))
def charge(state, ctx):
    if ctx.attempt == 1:
        raise ConnectionError("gateway busy")
"""


def test_sagakit_recover_says_a_run_was_handed_back_to_wait_for_its_retry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sagakit.cli.operator import recover

    (tmp_path / "recoverapp.py").write_text(APP)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    with Engine(url) as engine:
        engine.start(__import__("recoverapp").saga, run_id="c1")
    args = ["--db", url, "--app", "recoverapp"]
    first = CliRunner().invoke(recover, args)
    second = CliRunner().invoke(recover, args)
    assert first.exit_code == 0, first.output
    assert "run c1 recovered: now running; handed back to wait for its next retry" in " ".join(
        first.output.split()
    )
    assert second.output.strip() == "nothing to recover: no run of these sagas is due now"
