"""``sagakit validate --no-import``: an untrusted file is checked and nothing is imported.

Issue 23: plain ``validate`` imports the modules beside the file, so their
top-level code runs. Here a module and a package beside the file leave a
mark when imported; through a real ``python -m sagakit``, ``--no-import``
leaves none and plain ``validate`` leaves both.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .helpers import fails, ok, sagakit

pytestmark = pytest.mark.slow

MARKING = """
from pathlib import Path

Path(__file__).with_name("imported-" + __name__.replace(".", "-")).write_text("ran")


def act(state, ctx):
    return None


def undo(state, ctx):
    return None
"""

SAGA = """\
saga: order
version: "3"
steps:
  - {name: charge, function: shopsteps.act, compensate: shoppkg.undo}
  - parallel:
      - {name: hold, function: shoppkg.act, compensate: shopsteps.undo}
      - {name: book, function: shopsteps.act, compensate: shopsteps.undo}
  - {name: ship, function: shopsteps.act, kind: pivot}
"""


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A file beside a module and a package that each leave a mark when imported."""
    (tmp_path / "shopsteps.py").write_text(MARKING)
    (tmp_path / "shoppkg").mkdir()
    (tmp_path / "shoppkg" / "__init__.py").write_text(MARKING)
    (tmp_path / "saga.yaml").write_text(SAGA)
    return tmp_path


def marks(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("imported-*"))


def test_no_import_runs_no_code_and_plain_validate_does(folder: Path) -> None:
    out = ok(sagakit(folder, "validate", "--no-import", "saga.yaml"))
    assert out == (
        "saga.yaml: ok - saga order version 3, 4 steps: charge -> [hold | book] -> ship "
        "(nothing imported: the paths were checked for form only)\n"
    )
    assert marks(folder) == []

    out = ok(sagakit(folder, "validate", "saga.yaml"))
    assert out == (
        "saga.yaml: ok - saga order version 3, 4 steps: charge -> [hold | book] -> ship\n"
    )
    assert marks(folder) == ["imported-shoppkg", "imported-shopsteps"]


def test_no_import_reports_problems_with_their_lines(folder: Path) -> None:
    (folder / "bad.yaml").write_text(
        SAGA.replace("shoppkg.undo", "os.system").replace("kind: pivot", "kind: retriable")
        + "  - {name: notify, function: shopsteps._private}\n"
    )
    stderr = fails(sagakit(folder, "validate", "--no-import", "bad.yaml"))
    assert stderr.splitlines() == [
        "bad.yaml:4: step 'charge': 'os.system' is outside the allowed modules: only modules "
        "beside the file or in the current directory are allowed (shoppkg, shopsteps); "
        "allow others with allowed_modules= or --app MODULE",
        "bad.yaml:8: step 'ship' of saga 'order' is retriable but no pivot step comes before "
        "it; retriable steps follow the pivot (declare one with kind='pivot') or make it "
        "compensatable",
        "bad.yaml:9: step 'notify': 'shopsteps._private' names a private attribute; name a "
        "public one",
        "Error: bad.yaml: 3 problems",
    ]
    assert marks(folder) == []


def test_no_import_with_app_names_the_modules_without_importing_them(tmp_path: Path) -> None:
    # A file alone in its folder, as CI might check it: the modules live elsewhere.
    (tmp_path / "saga.yaml").write_text(SAGA)
    stderr = fails(sagakit(tmp_path, "validate", "--no-import", "saga.yaml"))
    assert stderr.splitlines()[-1] == "Error: saga.yaml: 7 problems"
    assert "(none found)" in stderr
    out = ok(
        sagakit(
            tmp_path,
            "validate",
            "--no-import",
            "saga.yaml",
            "--app",
            "shopsteps",
            "--app",
            "shoppkg",
        )
    )
    assert out.startswith("saga.yaml: ok - saga order version 3, 4 steps")
