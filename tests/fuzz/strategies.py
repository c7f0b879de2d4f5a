"""Hostile values for the command line: text, JSON, run ids, numbers, store URLs, argv lists.

Free text never names a path outside the example's folder (no leading
``/``, no ``..``) nor a module whose import has effects outside the test
(``antigravity`` opens a browser), since a fuzzed ``--db`` may be created
and a fuzzed ``--app`` is imported. NUL is left out of command-line values:
an operating system cannot pass it in ``argv``. Lone surrogates stay in: they
are how Python hands over ``argv`` bytes that are not UTF-8.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

from sagakit.journal import RunStatus

from .cliapp import RUNS

PASSWORD = "Pw-n0t-t0-be-seen"

# Characters a terminal acts on, invisible ones, and ones that change the
# direction of text: the classic ways to forge or hide output.
SPECIAL_CHARS = "\x01\x07\x08\t\n\r\x1b\x7f\x85\x9b\u200b\u200e\u202e\u2028\u2029\ufeff\ufffd"
# What Python makes of argv bytes that are not UTF-8 (surrogateescape): the
# only lone surrogates a command line can hold.
ARGV_SURROGATES = st.integers(0xDC80, 0xDCFF).map(chr)
SURROGATES = st.integers(0xD800, 0xDFFF).map(chr)

# Any character but NUL, with the special ones and lone surrogates drawn often.
arg_char = st.one_of(
    st.characters(exclude_characters="\x00"),
    st.sampled_from(SPECIAL_CHARS),
    ARGV_SURROGATES,
)

UNSAFE_MODULES = {"antigravity", "this", "webbrowser", "turtle", "tkinter", "idlelib", "pdb"}


def _safe(text: str) -> bool:
    module = text.partition(":")[0].split(".")[0].strip()
    return (
        not text.startswith(("/", "~"))
        and ".." not in text
        and module not in UNSAFE_MODULES
        and not module.startswith("__")
    )


free_text = st.one_of(
    st.text(arg_char, max_size=40),
    st.sampled_from(["", " ", "-", "--", "@", ":", "\\", "%s", "%(x)s", "{}", "[bold]x[/bold]"]),
    st.sampled_from(["\x1b[31mred", "a\nb", "a\rb", "\u202eevil", ":fire:", "ü✓漢字🙂"]),
).filter(_safe)

run_ids = st.one_of(
    st.sampled_from(sorted(RUNS)),
    st.sampled_from(["", " ", "/", "a/b", "done-1/", "done-1\n", "done-1\x1b", "DONE-1", "\t"]),
    st.integers(150, 20_000).map(lambda n: "r" * n),
    st.builds(lambda a, b: a + b, st.sampled_from(sorted(RUNS)), st.text(arg_char, max_size=5)),
    free_text,
).filter(_safe)

NUMBER_WORDS = [
    "0", "-0", "-1", "1", "+5", " 5 ", "5\n", "1e3", "1.5", "nan", "-nan", "NaN", "inf", "-inf",
    "Infinity", "1e308", "1e309", "-1e308", "5e-324", "1e-320", "0x10", "0o7", "1_000", "٣",
    "9" * 25, "9" * 5_000, "86401", "3601", "1e5",
]  # fmt: skip

numbers = st.one_of(
    st.sampled_from(NUMBER_WORDS),
    st.integers(-(10**30), 10**30).map(str),
    st.floats().map(repr),
    free_text,
)

_option_keys = st.sampled_from(
    ["busy_timeout", "pool_size", "schema", "password", "sslmode", "connect_timeout", "x", ""]
)
_options = st.lists(
    st.builds(lambda k, v: f"{k}={v}", _option_keys, st.one_of(numbers, free_text)), max_size=3
).map(lambda items: "?" + "&".join(items) if items else "")

_relative = st.one_of(
    st.sampled_from(["runs.db", "missing.db", "payload.json", "good.yaml", ".", "", " ", "%41"]),
    st.text(arg_char.filter(lambda c: c != "/"), min_size=1, max_size=20),
).filter(_safe)

# Stores: the example's own SQLite file, files that are not stores, odd
# schemes, options with hostile values, and PostgreSQL at a closed port
# (refused at once, never a real server), always with a password to hide.
db_urls = st.one_of(
    _relative,
    st.builds(lambda p, o: f"sqlite:///{p}{o}", _relative, _options),
    st.builds(lambda p: f"sqlite:{p}", _relative),
    st.sampled_from(["sqlite:", "sqlite://", "sqlite:///", "sqlite://host/x.db", "sqlite:///?"]),
    st.builds(lambda n, o: f"memory://{n}{o}", st.text(arg_char, max_size=10), _options),
    st.builds(
        lambda scheme, o: f"{scheme}://fuzz:{PASSWORD}@127.0.0.1:1/db{o}",
        st.sampled_from(["postgresql", "postgres", "postgresq", "PostgreSQL", "mysql", "http"]),
        _options,
    ),
    st.sampled_from(
        [
            f"postgresql://127.0.0.1:1/db?password={PASSWORD}",
            f"host=127.0.0.1 port=1 password={PASSWORD}",
            "://",
            "file:runs.db",
            "sqlite+pysqlite:///runs.db",
        ]
    ),
)

# JSON that is valid, nearly valid, or valid but unusable.
_json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(st.one_of(st.characters(), st.sampled_from(SPECIAL_CHARS + "\x00"), SURROGATES)),
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.text(max_size=8), children, max_size=4),
    ),
    max_leaves=20,
)


def _dumps(value: Any, ascii_only: bool) -> str:
    return json.dumps({"answer": value}, ensure_ascii=ascii_only)


json_texts = st.one_of(
    st.builds(_dumps, _json_values, st.booleans()),
    st.integers(1, 5_000).map(lambda n: '{"a": ' + "[" * n + "]" * n + "}"),
    st.integers(1, 3_000).map(lambda n: '{"a": ' + '{"b": ' * n + "1" + "}" * n + "}"),
    st.integers(1, 20_000).map(lambda n: '{"a": ' + "9" * n + "}"),
    st.sampled_from(
        ["NaN", "Infinity", "-Infinity", "1e999", "-1e400", "1e-400", "-0", "1E+308"]
    ).map(lambda x: '{"a": ' + x + "}"),
    st.sampled_from(
        [
            '{"a": "\\ud800"}',
            '{"a": "\\udfff\\ud800"}',
            '{"\\ud83d": 1}',
            '{"a": "\\u0000"}',
            '{"a": 1, "a": 2}',
            "\ufeff{}",
            '{"a": 1} trailing',
            "{",
            "",
            "null",
            "[]",
            '"text"',
            "1",
            "{'a': 1}",
        ]
    ),
    st.builds(lambda s: '{"a": "' + s + '"}', st.text(arg_char, max_size=20)),
    st.text(arg_char, max_size=40),
)

statuses = st.one_of(st.sampled_from([s.value for s in RunStatus]), free_text)

APPS = [
    "fuzz.cliapp",
    "fuzz.cliapp:fuzzed",
    "fuzz.cliapp:nothing",
    "fuzz.cliapp:NOT_A_SAGA",
    "fuzz.cliapp:on_attention",
    "fuzz.cliapp:",
    "nosuch_module_zz",
    "nosuch.pkg:attr",
    "json",
    "json:loads",
    ":",
    "",
    "good.yaml",
    "bad.yaml",
    "missing.yaml",
    "payload.json",
    "fuzz.cliapp:fuzzed.name",
]
apps = st.one_of(st.sampled_from(APPS), free_text)

FILES = ["good.yaml", "bad.yaml", "missing.yaml", "payload.json", "latin1.json", ".", ""]
at_files = st.sampled_from(
    ["@payload.json", "@latin1.json", "@missing.json", "@", "@.", "@/dev/null", "-"]
)

COMMAND_NAMES = [
    "demo", "list", "show", "history", "cancel", "signal", "retry", "resolve", "recover",
    "worker", "migrate", "validate", "run", "schema",
]  # fmt: skip

OPTION_NAMES = [
    "--db", "--app", "--status", "--saga", "--limit", "--reason", "--force", "--payload",
    "--note", "--step", "--concurrency", "--lease", "--poll", "--grace", "--on-attention",
    "--log-level", "--input", "--run-id", "--no-import", "-h", "--help", "-v", "--verbose",
    "-V", "--version", "--", "-", "--db=runs.db", "--limit=", "--lease=nan",
]  # fmt: skip

tokens = st.one_of(
    st.sampled_from(COMMAND_NAMES),
    st.sampled_from(OPTION_NAMES),
    st.sampled_from(OPTION_NAMES),
    run_ids,
    numbers,
    apps,
    db_urls,
    json_texts,
    statuses,
    st.sampled_from(FILES),
    at_files,
    st.sampled_from(["answer", "go", "DEBUG", "debug", "LOUD"]),
)

argvs = st.builds(
    lambda verbose, command, rest: [*verbose, *command, *rest],
    st.lists(st.sampled_from(["-v", "--verbose"]), max_size=1),
    st.lists(st.sampled_from(COMMAND_NAMES), min_size=0, max_size=1),
    st.lists(tokens, max_size=8),
)
