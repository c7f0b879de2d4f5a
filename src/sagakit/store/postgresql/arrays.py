"""The columns of a batched write, sent to PostgreSQL as binary arrays.

A group commit sends one array per column (see
`sagakit.store.postgresql.writes`). psycopg dumps a plain list as a text
array literal, quoting each element after a regular expression search (22
µs per commit of five no-op steps' batch, on the benchmark machine), or, for
a ``%b`` placeholder, as a binary array after finding the list's element
type anew at each call (8 µs). A column here is a list of a type that says
what its elements are (`Texts`, `Int8s`, `Int4s`, `Float8s`, `Bools`), and
its dumper writes PostgreSQL's binary array format in one pass, numbers in
one ``struct`` call (4 µs), short ASCII texts in one join. `register` adds
those dumpers to a connection (each of the store's connections, as it is
made).

Elements may be None (NULL). An element of the wrong type is refused with
`psycopg.DataError`, as psycopg refuses a value it cannot dump.
"""

from __future__ import annotations

import struct
from typing import Any, Final

import psycopg
from psycopg.abc import AdaptContext
from psycopg.adapt import Dumper
from psycopg.pq import Format

# The header of a one-dimensional array: dimensions, has NULLs, element oid,
# length, lower bound (1).
_HEAD: Final = struct.Struct("!iiIii")
# An array with no dimensions: empty.
_EMPTY: Final = struct.Struct("!iiI")
_LENGTH: Final = struct.Struct("!i")
_NULL: Final = b"\xff\xff\xff\xff"  # an element's length of -1
# An ASCII text's length as the four characters whose Latin-1 bytes are its
# length in the array format, for the texts shorter than this table (`_TextsDumper`).
_PREFIXES: Final = [_LENGTH.pack(size).decode("latin-1") for size in range(4096)]


class Texts(list[Any]):
    """A column of str or None, sent as ``text[]``."""


class Int8s(list[Any]):
    """A column of int or None, sent as ``int8[]``."""


class Int4s(list[Any]):
    """A column of int or None, sent as ``int4[]``."""


class Float8s(list[Any]):
    """A column of float (or int) or None, sent as ``float8[]``."""


class Bools(list[Any]):
    """A column of bool or None, sent as ``bool[]``."""


def _refused(obj: list[Any], exc: Exception) -> psycopg.DataError:
    return psycopg.DataError(f"cannot send a column of {type(obj).__name__}: {exc}")


class _TextsDumper(Dumper):
    format = Format.BINARY
    oid = 1009  # text[]

    def dump(self, obj: list[Any]) -> bytes:
        n = len(obj)
        if not n:
            return _EMPTY.pack(0, 0, 25)
        nones = obj.count(None)
        if nones == n:  # a column nobody set (most often the errors)
            return _HEAD.pack(1, 1, 25, n, 1) + _NULL * n
        try:
            if not nones and all(map(str.isascii, obj)):  # a flag read: no scan
                # The common column (ids, statuses, most JSON), written
                # without a loop in Python: each element's length as the
                # four characters whose Latin-1 bytes are that length in
                # the array format, then the element, encoded at once.
                parts: list[str] = [""] * (2 * n)
                parts[0::2] = map(_PREFIXES.__getitem__, map(len, obj))
                parts[1::2] = obj
                return _HEAD.pack(1, 0, 25, n, 1) + "".join(parts).encode("latin-1")
        except (IndexError, TypeError):
            pass  # a long text or one not a str: the loop sends or refuses it
        chunks: list[bytes] = [b""]  # the header, once NULLs are known
        append = chunks.append
        nulls = 0
        try:
            for item in obj:
                if item is None:
                    append(_NULL)
                    nulls = 1
                else:
                    data = item.encode()
                    append(_LENGTH.pack(len(data)))
                    append(data)
        except (AttributeError, TypeError, UnicodeError) as exc:
            raise _refused(obj, exc) from exc
        chunks[0] = _HEAD.pack(1, nulls, 25, n, 1)
        return b"".join(chunks)


def _fixed_dumper(array_oid: int, element_oid: int, code: str, size: int) -> type[Dumper]:
    """A dumper of a column of fixed-size elements (``code`` for `struct`, ``size`` bytes)."""
    one = struct.Struct(f"!i{code}")
    pair = f"i{code}"

    class _FixedDumper(Dumper):
        format = Format.BINARY
        oid = array_oid

        def dump(self, obj: list[Any]) -> bytes:
            n = len(obj)
            if not n:
                return _EMPTY.pack(0, 0, element_oid)
            try:
                if None not in obj:
                    # Every element with its length before it, in one call.
                    flat: list[Any] = [size] * (2 * n)
                    flat[1::2] = obj
                    return _HEAD.pack(1, 0, element_oid, n, 1) + struct.pack("!" + pair * n, *flat)
                parts = [_HEAD.pack(1, 1, element_oid, n, 1)]
                for item in obj:
                    parts.append(_NULL if item is None else one.pack(size, item))
                return b"".join(parts)
            except struct.error as exc:
                raise _refused(obj, exc) from exc

    return _FixedDumper


_DUMPERS: Final[tuple[tuple[type[list[Any]], type[Dumper]], ...]] = (
    (Texts, _TextsDumper),
    (Int8s, _fixed_dumper(1016, 20, "q", 8)),
    (Int4s, _fixed_dumper(1007, 23, "i", 4)),
    (Float8s, _fixed_dumper(1022, 701, "d", 8)),
    (Bools, _fixed_dumper(1000, 16, "?", 1)),
)


def register(context: AdaptContext) -> None:
    """Add the column types' dumpers to ``context`` (a connection: its own adapters only)."""
    adapters = context.adapters
    for cls, dumper in _DUMPERS:
        adapters.register_dumper(cls, dumper)
