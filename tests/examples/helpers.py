"""Running an example's script the way a reader of its README would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def run_example(name: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``python -W error examples/NAME/main.py ARGS`` in a process of its own.

    Output is plain text, 100 columns wide, whatever terminal runs the tests,
    and any warning the script causes is an error.
    """
    plain = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE")}
    return subprocess.run(
        [sys.executable, "-W", "error", str(EXAMPLES / name / "main.py"), *args],
        env={**plain, "NO_COLOR": "1", "COLUMNS": "100"},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
