"""Where a big state's peak memory comes from: the peak after each phase of one process.

Runs `bench_state_size.py`'s sequence in one process (two runs of one step,
two of 21 steps, then the run read back with ``engine.get``) and prints,
after each, the peak resident set over what the process held before it
built the state (``ru_maxrss``, as `bench_state_size.py` measures it), the
resident set now, and what C's allocator holds (glibc's ``mallinfo2``: the
heap it took from the system, what of it is in use and free, and what it
mapped apart), so that memory freed but not given back shows apart from
memory in use.

    .venv/bin/python benchmarks/bench_state_phases.py --store sqlite --shape keys
    .venv/bin/python benchmarks/bench_state_phases.py --store postgresql --shape blob
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import ctypes.util
import resource
import sys
import tempfile
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_state_size as bench

from sagakit import AsyncEngine

MIB = 2**20


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _mallinfo() -> str:
    """What glibc's allocator holds, or nothing where there is no ``mallinfo2``."""
    name = ctypes.util.find_library("c")
    try:
        fn = ctypes.CDLL(name).mallinfo2 if name else None
    except (OSError, AttributeError):
        fn = None
    if fn is None:
        return ""
    fn.restype = _MallInfo2
    info = fn()
    return (
        f"  heap {info.arena / MIB:5.1f}  in use {info.uordblks / MIB:5.1f}"
        f"  free {info.fordblks / MIB:5.1f}  mapped {info.hblkhd / MIB:5.1f} MiB"
    )


def _peak() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


async def phases(store: str, shape: str, size: str) -> None:
    schema = f"bench_state_{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory() as tmp:
        url = {"memory": "memory://", "sqlite": f"sqlite:///{Path(tmp) / 'bench.db'}"}.get(
            store, f"{bench.PG_URL}?schema={schema}"
        )
        try:
            async with AsyncEngine(url) as engine:
                await engine.run(bench.make_saga(shape, 2_000, 1), {"a": 1}, run_id="warm-up")
                base = bench.rss_now()

                def show(label: str) -> None:
                    print(
                        f"{label:12} peak {(_peak() - base) / MIB:5.1f} MiB"
                        f"  now {(bench.rss_now() - base) / MIB:5.1f} MiB{_mallinfo()}"
                    )

                show("before")
                state = bench.initial_state(shape, bench.SIZES[size])
                show("state built")
                sagas = (
                    ("one", bench.make_saga(shape, bench.SIZES[size], 1)),
                    ("many", bench.make_saga(shape, bench.SIZES[size], 21)),
                )
                for label, saga in sagas:
                    for r in range(2):
                        run = await engine.run(saga, state, run_id=f"{label}-{r}")
                        run.raise_for_status()
                        show(f"{label}-{r}")
                await engine.get("many-0")
                show("read back")
        finally:
            if store == "postgresql":
                await bench.drop_schema(schema)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default="sqlite", help="memory, sqlite, postgresql")
    parser.add_argument("--shape", default="keys", help="keys, blob")
    parser.add_argument("--size", default="10mb", help="small, 1mb, 10mb")
    args = parser.parse_args()
    asyncio.run(phases(args.store, args.shape, args.size))


if __name__ == "__main__":
    main()
