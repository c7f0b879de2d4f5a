"""Fuzzing the ``sagakit`` command line (issue 23): any input gives exit 0, 1 or 2, at once.

Each example runs one command in-process (click's CliRunner) on a fresh
copy of a small SQLite store, with hostile JSON for ``--payload`` and
``--input`` (inline, ``@FILE`` or stdin), run ids, numbers for ``--limit``,
``--lease``, ``--poll``, ``--grace`` and ``--concurrency``, store URLs, and
random argv lists drawn from the real commands and options. Every example
must exit 0, 1 or 2 with no traceback, print nothing a terminal would act
on, never show a password, and leave the store byte for byte as it was
when the command only reads or was refused (see `harness.check`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from . import harness
from .harness import fuzz_settings
from .strategies import (
    PASSWORD,
    apps,
    argvs,
    at_files,
    db_urls,
    free_text,
    json_texts,
    numbers,
    run_ids,
    statuses,
)

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return harness.make_template(tmp_path_factory.mktemp("cli-fuzz") / "template")


def run(template: Path, args: Sequence[str], stdin: str | bytes = "") -> str:
    """Run ``sagakit ARGS`` in a fresh workspace, check it, and return its output.

    A password given in a store URL never shows; given as a file name, a
    note or a run id it is just text, and may.
    """
    with harness.workspace(template) as folder:
        before = harness.snapshot(folder)
        result = harness.invoke(args, folder, stdin)
        harness.check(result, args, before, harness.snapshot(folder))
        elsewhere = any(
            PASSWORD in arg and not (i and args[i - 1] == "--db") for i, arg in enumerate(args)
        )
        if not elsewhere:
            assert PASSWORD not in result.output, result.output
        return result.output


@fuzz_settings
@given(
    text=json_texts,
    how=st.sampled_from(["inline", "file", "stdin"]),
    run_id=st.sampled_from(["paused-1", "done-1", "nope"]),
    with_app=st.booleans(),
)
@example(text='{"a": ' + "[" * 10_000 + "]" * 10_000 + "}", how="inline", run_id="paused-1",
         with_app=False)  # fmt: skip
@example(text='{"a": ' + "9" * 5_000 + "}", how="stdin", run_id="paused-1", with_app=True)
@example(text='{"answer": "\\ud800"}', how="inline", run_id="paused-1", with_app=True)
@example(text='{"answer": "\\ud800"}', how="inline", run_id="paused-1", with_app=False)
def test_json_options(template: Path, text: str, how: str, run_id: str, with_app: bool) -> None:
    app = ["--app", "fuzz.cliapp"] if with_app else []
    stdin: str | bytes = ""
    value = text
    if how == "file":
        value = "@hostile.json"
    elif how == "stdin":
        value, stdin = "-", text.encode("utf-8", "surrogatepass")
    with harness.workspace(template) as folder:
        if how == "file":
            (folder / "hostile.json").write_bytes(text.encode("utf-8", "surrogatepass"))
        for args in (
            ["signal", run_id, "answer", "--payload", value, "--db", harness.STORE, *app],
            ["run", "good.yaml", "--app", "fuzz.cliapp", "--input", value, "--db", harness.STORE],
        ):
            before = harness.snapshot(folder)
            result = harness.invoke(args, folder, stdin)
            harness.check(result, args, before, harness.snapshot(folder))


@fuzz_settings
@given(
    command=st.sampled_from(["show", "history", "cancel", "retry", "resolve", "signal", "run"]),
    run_id=run_ids,
    extra=st.sampled_from([[], ["--app", "fuzz.cliapp"], ["--step", "charge"], ["--force"]]),
)
@example(command="show", run_id="", extra=[])
@example(command="cancel", run_id="r" * 20_000, extra=["--app", "fuzz.cliapp"])
@example(command="run", run_id="a/b", extra=[])
@example(command="run", run_id="r\x1b[31m", extra=[])
def test_run_ids(template: Path, command: str, run_id: str, extra: list[str]) -> None:
    if command == "run":
        args = ["run", "good.yaml", "--app", "fuzz.cliapp", "--run-id", run_id]
    elif command == "signal":
        args = ["signal", run_id, "answer", *[e for e in extra if e != "--force"]]
    elif command == "resolve":
        args = ["resolve", run_id, "--note", "done by hand", *[e for e in extra if e != "--force"]]
    elif command == "cancel":
        args = ["cancel", run_id, *[e for e in extra if e != "--step"]]
    else:
        args = [command, run_id, *[e for e in extra if e not in ("--force", "--step", "charge")]]
    run(template, [*args, "--db", harness.STORE])


@fuzz_settings
@given(
    limit=numbers,
    status=st.one_of(st.none(), statuses),
    saga=st.one_of(st.none(), free_text),
)
@example(limit="100000000000000000000", status=None, saga=None)
@example(limit="nan", status="paused", saga="fuzzed")
def test_list_options(template: Path, limit: str, status: str | None, saga: str | None) -> None:
    args = ["list", "--db", harness.STORE, "--limit", limit]
    args += ["--status", status] if status is not None else []
    args += ["--saga", saga] if saga is not None else []
    run(template, args)


@fuzz_settings
@given(
    option=st.sampled_from(["--lease", "--poll", "--grace", "--concurrency"]),
    value=numbers,
    hook=st.one_of(st.none(), apps),
    level=st.one_of(st.none(), st.sampled_from(["debug", "LOUD", ""])),
)
@example(option="--lease", value="nan", hook=None, level=None)
@example(option="--poll", value="inf", hook=None, level=None)
@example(option="--lease", value="1e-320", hook=None, level=None)
def test_worker_options(
    template: Path, option: str, value: str, hook: str | None, level: str | None
) -> None:
    # The worker's loop is never started (harness.invoke): its options are.
    args = ["worker", "--app", "fuzz.cliapp", "--db", harness.STORE, option, value]
    args += ["--on-attention", hook] if hook is not None else []
    args += ["--log-level", level] if level is not None else []
    run(template, args)


@fuzz_settings
@given(
    command=st.sampled_from(["list", "show", "history", "cancel", "migrate", "recover", "demo"]),
    db=db_urls,
)
@example(command="list", db=f"postgresql://fuzz:{PASSWORD}@127.0.0.1:1/db")
@example(command="migrate", db="sqlite:///runs.db?busy_timeout=nan")
@example(command="list", db="memory://?x=1")
@example(command="show", db="payload.json")
def test_store_urls(template: Path, command: str, db: str) -> None:
    args = [command, "done-1"] if command in ("show", "history", "cancel") else [command]
    run(template, [*args, "--db", db])


@fuzz_settings
@given(argv=argvs, stdin=st.one_of(st.just(""), json_texts))
@example(argv=["list", "--\x1b[31m"], stdin="")
@example(argv=["\x1b[31m"], stdin="")
@example(argv=["signal", "paused-1", "answer", "--payload", "-"], stdin="{")
def test_random_argv(template: Path, argv: list[str], stdin: str) -> None:
    run(template, argv, stdin.encode("utf-8", "surrogatepass"))


@fuzz_settings
@given(file=st.sampled_from(["good.yaml", "bad.yaml", "missing.yaml", "payload.json", "."]),
       app=st.one_of(st.none(), apps), no_import=st.booleans(), at=at_files)  # fmt: skip
def test_yaml_commands(
    template: Path, file: str, app: str | None, no_import: bool, at: str
) -> None:
    options = ["--app", app] if app is not None else []
    run(template, ["validate", file, *options, *(["--no-import"] if no_import else [])])
    run(template, ["run", file, *options, "--input", at, "--db", harness.STORE])
