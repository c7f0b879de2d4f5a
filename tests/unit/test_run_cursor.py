"""A `RunCursor` as opaque text: read back exactly, anything else refused in one line."""

from __future__ import annotations

import base64

import pytest

from sagakit import RunCursor
from sagakit.journal import RunStatus
from sagakit.store.base import RunRecord


@pytest.mark.parametrize(
    "cursor",
    [
        RunCursor(1_700_000_000.123456789, "order-1"),
        RunCursor(0.1 + 0.2, "ünï/cödé id?&=#"),
        RunCursor(-5.0, "x"),
        RunCursor(1e300, "y" * 300),
    ],
)
def test_a_token_reads_back_to_the_same_cursor(cursor: RunCursor) -> None:
    token = cursor.token()
    assert all(c.isalnum() or c in "-_" for c in token), "safe in a URL as it is"
    again = RunCursor.from_token(token)
    assert again == cursor
    assert again.created_at.hex() == cursor.created_at.hex(), "the exact float, not a rounding"


def test_the_cursor_of_a_run_is_its_creation_and_id() -> None:
    run = RunRecord("r1", "order", "1", RunStatus.PENDING, {}, None, 12.5, 13.0)
    assert RunCursor.of(run) == RunCursor(12.5, "r1")


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode()


@pytest.mark.parametrize(
    "token",
    [
        "",
        "not base64 !!",
        "@@@@",
        _b64("not json"),
        _b64("[1.0]"),
        _b64('[1.0, "a", 3]'),
        _b64('["1.0", "a"]'),
        _b64('[true, "a"]'),
        _b64('[1.0, ""]'),
        _b64("[1.0, 5]"),
        _b64('{"at": 1.0, "id": "a"}'),
        _b64('[NaN, "a"]'),
        _b64('[Infinity, "a"]'),
        base64.urlsafe_b64encode(b'\xff\xfe[1, "a"]').decode(),
        "A" * 5000,
    ],
)
def test_anything_else_is_refused_in_one_line(token: str) -> None:
    with pytest.raises(ValueError, match=r"^not a cursor of the runs list$"):
        RunCursor.from_token(token)
