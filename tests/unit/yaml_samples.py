"""Hostile and plain YAML material shared by the unit and acceptance tests of the loader."""

from __future__ import annotations

STEPS = """
def act(state, ctx):
    return None


def undo(state, ctx):
    return None
"""

# Nine levels of nine aliases each: 9**9 (387 million) strings once expanded.
LAUGHS = (
    "saga: lol\na: &a ["
    + ", ".join(['"lol"'] * 9)
    + "]\n"
    + "".join(
        f"{b}: &{b} [" + ", ".join([f"*{a}"] * 9) + "]\n"
        for a, b in zip("abcdefgh", "bcdefghi", strict=True)
    )
)
