"""The batched writes' columns, sent to PostgreSQL as binary arrays (store/postgresql/arrays.py)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import pytest

from conftest import require_postgres  # the shared PostgreSQL test server
from sagakit.store.postgresql.arrays import Bools, Float8s, Int4s, Int8s, Texts, register

psycopg = pytest.importorskip("psycopg")


@pytest.fixture
def conn() -> Iterator[Any]:
    with psycopg.connect(require_postgres(), autocommit=True) as connection:
        register(connection)
        yield connection


def _back(conn: Any, column: list[Any], sql_type: str) -> list[Any]:
    row = conn.execute(f"SELECT %b::{sql_type}[]", (column,)).fetchone()
    assert row is not None
    result: list[Any] = row[0]
    return result


@pytest.mark.parametrize(
    "values",
    [
        ["a", "", "NULL", "null", 'quo"te', "back\\slash", "{braces}", "a,b", " spaced "],
        ["é ü 中文 🙂", "\u2028", "\t\n"],
        ['{"result": null}', "{}"],
        [None, "x", None],
        [None],
        [None, None],
        [],
        # Around the end of the table of ASCII lengths (4,096), and past it.
        ["x" * 4095, "y" * 4096, "z" * 70000, "w"],
        ["ascii", "é", "ascii again"],
        [type("Sub", (str,), {})("a str subclass"), "b"],
    ],
)
def test_texts_arrive_as_sent(conn: Any, values: list[Any]) -> None:
    # A text array literal needs quoting for most of these; binary sends them as they are.
    assert _back(conn, Texts(values), "text") == values


@pytest.mark.parametrize(
    ("kind", "sql_type", "values"),
    [
        (Int8s, "int8", [0, 1, -1, 2**63 - 1, -(2**63)]),
        (Int8s, "int8", [None, 7]),
        (Int4s, "int4", [1, 2**31 - 1, None]),
        (Float8s, "float8", [1.5, -0.0, 1796636023.4916809, math.inf]),
        (Float8s, "float8", [None, 2.25]),
        (Bools, "bool", [True, False, None]),
        (Int8s, "int8", []),
        (Bools, "bool", []),
    ],
)
def test_numbers_arrive_as_sent(
    conn: Any, kind: type[list[Any]], sql_type: str, values: list[Any]
) -> None:
    assert _back(conn, kind(values), sql_type) == values


def test_a_time_column_may_mix_int_and_float(conn: Any) -> None:
    # A plain list of 5 and 5.5 is refused by psycopg ("cannot dump lists of
    # mixed types"): a commit's time given as an int beside another's float.
    assert _back(conn, Float8s([5, 5.5]), "float8") == [5.0, 5.5]


@pytest.mark.parametrize(
    ("column", "sql_type"),
    [
        (Texts([1]), "text"),
        (Texts(["a", 1]), "text"),
        (Texts(["a", None, b"bytes"]), "text"),
        (Int8s([2**63]), "int8"),
        (Int4s([2**31]), "int4"),
        (Int8s(["1"]), "int8"),
        (Float8s(["x"]), "float8"),
    ],
)
def test_an_element_of_the_wrong_type_is_refused(
    conn: Any, column: list[Any], sql_type: str
) -> None:
    with pytest.raises(psycopg.DataError, match="cannot send a column"):
        _back(conn, column, sql_type)
