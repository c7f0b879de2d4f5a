"""Running the ``sagakit`` command line as a subprocess, shared by the acceptance tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def sagakit(
    cwd: Path,
    *args: str,
    pythonpath: Path | None = None,
    environ: dict[str, str | None] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m sagakit ARGS`` in ``cwd``, wide enough that nothing wraps.

    ``environ`` sets variables (a None value removes one).
    """
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    env.pop("PYTHONPATH", None)
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    for name, value in (environ or {}).items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return subprocess.run(
        [sys.executable, "-m", "sagakit", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    assert "Traceback" not in done.stderr
    return done.stdout


def fails(done: subprocess.CompletedProcess[str], code: int = 1) -> str:
    assert done.returncode == code, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    assert "Traceback" not in done.stderr + done.stdout
    return done.stderr


def env(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]),
        "NO_COLOR": "1",
    }


def start_worker(
    tmp_path: Path, db: Path, *options: str, app: str = "workerapp"
) -> subprocess.Popen[str]:
    """``sagakit worker --app APP`` on ``db``, in ``tmp_path``, polling every 50 ms."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sagakit",
            "worker",
            "--db",
            f"sqlite:///{db}",
            "--app",
            app,
            "--poll",
            "0.05",
            "--lease",
            "5",
            *options,
        ],
        cwd=tmp_path,
        env=env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
