"""`Sinks`: one alert delivered to several sinks, as one ``on_attention`` hook."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable

from sagakit.run import AttentionReport

Sink = Callable[[AttentionReport], Awaitable[None] | None]


def _name(sink: Sink) -> str:
    named = getattr(sink, "sink_name", None)
    if isinstance(named, str):
        return named
    qualname = getattr(sink, "__qualname__", None) or type(sink).__qualname__
    return f"{getattr(sink, '__module__', None) or type(sink).__module__}.{qualname}"


class Sinks:
    """Delivers each alert to every sink, in order; fails if any of them fails.

    A try that fails is made again whole, so the sinks that took the alert
    get it again: each delivery carries the same idempotency key.

    Args:
        sinks: The sinks (sync or async callables taking the report).
    """

    def __init__(self, *sinks: Sink) -> None:
        self.sinks = sinks

    @property
    def sink_name(self) -> str:
        """The sinks' names, joined by ``+``."""
        return " + ".join(map(_name, self.sinks))

    async def __call__(self, report: AttentionReport) -> None:
        """Deliver to every sink (a sync one on a thread).

        Raises:
            Exception: the first error a sink raised, once each has been tried.
        """
        errors: list[Exception] = []
        for sink in self.sinks:
            try:
                if inspect.iscoroutinefunction(sink) or inspect.iscoroutinefunction(
                    getattr(sink, "__call__", None)  # noqa: B004
                ):
                    outcome = sink(report)
                else:
                    outcome = await asyncio.get_running_loop().run_in_executor(None, sink, report)
                if inspect.isawaitable(outcome):
                    await outcome
            except Exception as exc:
                errors.append(exc)
        if errors:
            raise errors[0]
