"""The ``sagakit worker`` command and the set-up of the process it owns.

The command loads the ``--app`` sagas and serves them with a `Worker` until
SIGTERM or Ctrl-C (`_serve`). As the worker owns its process, it also tunes
the garbage collector, logs on stderr from the root logger, imports the
``--on-attention`` hook and the ``--observer`` observers, and exits without
step calls stuck on threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

import click

from sagakit.alerts import Sinks, WebhookSink
from sagakit.cli.apps import load_apps
from sagakit.cli.logsetup import LOG_FORMAT_KEY, log_format_option, stderr_handler
from sagakit.cli.options import Age, Grace, Seconds, db_option, db_source, resolve_db, shown_url
from sagakit.definition import Saga
from sagakit.engine import AsyncEngine, AttentionHook, Worker
from sagakit.engine.identity import check_worker_id
from sagakit.errors import SagaError
from sagakit.observe import Observer
from sagakit.store.encrypted import keys_from_environment
from sagakit.timeline.text import printable

if TYPE_CHECKING:  # the metrics extra is imported only when --metrics-port asks for it
    from sagakit.observe.metrics import Metrics
    from sagakit.observe.prometheus import PrometheusEndpoint

# Bounds on the worker's options. A lease is renewed by heartbeats, so a day
# is ample, and a longer one would leave a crashed worker's runs stranded as
# long; a longer poll or grace, or more than ten thousand runs at once, is a
# typo (and a concurrency beyond 2**63 would overflow the stores' queries).
HOUR = 3600.0
DAY = 24 * HOUR
MAX_CONCURRENCY = 10_000


@click.command()
@db_option
@click.option(
    "--app",
    "apps",
    multiple=True,
    required=True,
    metavar="MODULE[:ATTR]|FILE.yaml",
    help="Import MODULE and serve its sagas, or serve the saga a YAML file defines "
    "(repeatable). ATTR: a Saga or a list of them.",
)
@click.option(
    "--concurrency",
    type=click.IntRange(min=1, max=MAX_CONCURRENCY),
    default=10,
    show_default=True,
    help="At most this many runs driven at once.",
)
@click.option(
    "--lease",
    type=Seconds(minimum=0, min_open=True, maximum=DAY),
    default=30.0,
    show_default=True,
    metavar="SECONDS",
    help="How long a run stays this worker's without a heartbeat (after a crash, "
    "other workers wait this long before taking its runs).",
)
@click.option(
    "--worker-id",
    "worker_id",
    envvar="SAGAKIT_WORKER_ID",
    show_envvar=True,
    metavar="ID",
    callback=lambda ctx, param, value: _checked_worker_id(value),
    help="This worker's identity, unique among live workers (a pod or service name): "
    "restarted under the same ID, it takes back at once the runs its earlier process "
    "held instead of waiting out their lease. Without it, runs of a dead process of "
    "this host are taken back at once (Linux).",
)
@click.option(
    "--poll",
    type=Seconds(minimum=0, min_open=True, maximum=HOUR),
    default=1.0,
    show_default=True,
    metavar="SECONDS",
    help="With nothing to do, look for new work this often.",
)
@click.option(
    "--grace",
    type=Seconds(minimum=0, maximum=DAY),
    default=30.0,
    show_default=True,
    metavar="SECONDS",
    help="On SIGTERM or Ctrl-C, let the calls in flight finish for this long.",
)
@click.option(
    "--hang-grace",
    "hang_grace",
    type=Seconds(minimum=0, maximum=DAY),
    default=30.0,
    show_default=True,
    metavar="SECONDS",
    help="A call that timed out but still runs holds up its step's retry or "
    "compensation for this long after its timeout; then the run needs attention.",
)
@click.option(
    "--commit-patience",
    "commit_patience",
    type=Seconds(minimum=0, maximum=DAY),
    default=None,
    metavar="SECONDS",
    help="Keep retrying a commit the database refuses for a passing reason (a cut "
    "connection, an outage) for this long before a run is given up to be resumed "
    "later. Default: half the lease.",
)
@click.option(
    "--on-attention",
    "on_attention",
    metavar="MODULE:FUNCTION",
    help="Call FUNCTION(report) when a run needs attention (an AttentionReport: run, "
    "step, attempts, every error, the state; report.redacted() masks sensitive fields), "
    "e.g. to page someone.",
)
@click.option(
    "--alert-webhook",
    "alert_webhook",
    metavar="URL",
    help="POST each alert (a run needs attention) to URL as JSON: the report with sensitive "
    "fields masked and an Idempotency-Key header; a failure is retried with backoff. "
    "Needs httpx (pip install -e '.[webhook]' from the repository). Secrets in URL are "
    "never printed.",
)
@click.option(
    "--alert-timeout",
    type=Seconds(minimum=0, min_open=True, maximum=HOUR),
    default=30.0,
    show_default=True,
    metavar="SECONDS",
    help="How long one try at an alert may take (the webhook's request included); should "
    "the worker die during a try, another delivers the alert this long (and a lease) later.",
)
@click.option(
    "--purge-older-than",
    "purge_age",
    type=Age(),
    metavar="AGE",
    help="Also purge completed, rolled_back and cancelled runs last changed longer ago "
    "than AGE (30d, 12h, ...), at start and every --purge-every; see `sagakit purge`.",
)
@click.option(
    "--purge-every",
    type=Seconds(minimum=0, min_open=True, maximum=DAY),
    default=HOUR,
    show_default=True,
    metavar="SECONDS",
    help="How often --purge-older-than purges.",
)
@click.option(
    "--reconcile-every",
    "reconcile_every",
    type=Age(),
    metavar="AGE",
    help="Also reconcile the sagas' external resources at start and every AGE (10m, 1h): "
    "orphans are logged as warnings, and removed with --reconcile-apply; see "
    "`sagakit reconcile`.",
)
@click.option(
    "--reconcile-grace",
    "reconcile_grace",
    type=Grace(),
    default="10m",
    show_default=True,
    metavar="AGE",
    help="With --reconcile-every: leave resources created less than this long ago alone.",
)
@click.option(
    "--reconcile-apply",
    "reconcile_apply",
    is_flag=True,
    help="With --reconcile-every: remove the orphans found (each removal journaled).",
)
@click.option(
    "--observer",
    "observer_specs",
    multiple=True,
    metavar="MODULE:ATTR",
    help="Tell this observer of every journal event the worker commits (repeatable): "
    "ATTR is a sagakit.Observer, a list of them, or a class or function that makes one "
    "(sagakit.observe.otel:Tracing for OpenTelemetry traces); see docs/observability.md.",
)
@click.option(
    "--metrics-port",
    "metrics_port",
    type=click.IntRange(min=0, max=65535),
    metavar="PORT",
    help="Serve Prometheus metrics at http://HOST:PORT/metrics (runs started and finished, "
    "attempts, durations, runs needing attention, backlog, pickup latency, leases lost, "
    "alerts owed); 0 picks a free port. Needs pip install -e '.[metrics]'.",
)
@click.option(
    "--metrics-host",
    "metrics_host",
    default="127.0.0.1",
    show_default=True,
    metavar="HOST",
    help="With --metrics-port: the address to listen on (0.0.0.0 for every interface).",
)
@click.option(
    "--log-level",
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    default="INFO",
    show_default=True,
    help="Log on stderr from this level up.",
)
@log_format_option(default=None)
def worker(
    *,
    db: str,
    apps: tuple[str],
    concurrency: int,
    lease: float,
    worker_id: str | None,
    poll: float,
    grace: float,
    hang_grace: float,
    commit_patience: float | None,
    on_attention: str | None,
    alert_webhook: str | None,
    alert_timeout: float,
    purge_age: float | None,
    purge_every: float,
    reconcile_every: float | None,
    reconcile_grace: float,
    reconcile_apply: bool,
    observer_specs: tuple[str, ...],
    metrics_port: int | None,
    metrics_host: str,
    log_level: str,
    log_format: str | None,
) -> None:
    """Drive the runs of the app's sagas, until SIGTERM or Ctrl-C.

    Takes every run that is due (started with engine.start(), its retry timer
    due, or its last owner gone) and drives it. Any number of workers may
    share a database. On SIGTERM or Ctrl-C the worker starts no new call,
    lets those in flight finish (up to --grace seconds) and hands its runs
    back, then exits 0; a second signal stops it at once.
    """
    url, _ = resolve_db(db)  # the worker may create the database: it migrates it
    webhook = _webhook(alert_webhook, alert_timeout) if alert_webhook is not None else None
    sagas = load_apps(apps)
    if reconcile_apply and reconcile_every is None:
        raise click.UsageError("--reconcile-apply needs --reconcile-every AGE")
    if reconcile_every is not None and not any(saga.reconcilers for saga in sagas):
        raise click.BadParameter(
            "no saga of --app declares a reconciler (see docs/reconcile.md)",
            param_hint="--reconcile-every",
        )
    hook = _import_hook(on_attention) if on_attention else None
    observers = [found for spec in observer_specs for found in _import_observers(spec)]
    if webhook is not None:
        hook = webhook if hook is None else Sinks(hook, webhook)
    if log_format is None:  # `sagakit --log-format json worker` says it once for all
        log_format = click.get_current_context().meta.get(LOG_FORMAT_KEY, "text")
    _log_to_stderr(log_level, log_format)
    # Before the worker says it serves: a port in use stops it first.
    endpoint = None if metrics_port is None else _serve_metrics(metrics_port, metrics_host)
    served = printable(", ".join(f"{saga.name} v{saga.version}" for saga in sagas))
    where = shown_url(url) + db_source()
    click.echo(f"sagakit worker: serving {served} from {where} (up to {concurrency} runs at once)")
    if endpoint is not None:
        observers.append(endpoint.metrics)
        shown_host = printable(f"[{metrics_host}]" if ":" in metrics_host else metrics_host)
        click.echo(f"sagakit worker: metrics at http://{shown_host}:{endpoint.port}/metrics")
    sys.stdout.flush()  # a supervisor reading a pipe sees it now, not at exit
    _tune_garbage_collector()
    try:
        asyncio.run(
            _serve(
                url,
                sagas,
                concurrency=concurrency,
                lease=lease,
                worker_id=worker_id,
                poll=poll,
                grace=grace,
                hang_grace=hang_grace,
                commit_patience=commit_patience,
                on_attention=hook,
                alert_timeout=alert_timeout,
                purge=None if purge_age is None else (purge_age, purge_every),
                reconcile=(
                    None
                    if reconcile_every is None
                    else (reconcile_every, reconcile_grace, reconcile_apply)
                ),
                observers=observers,
                metrics=None if endpoint is None else endpoint.metrics,
            )
        )
    finally:
        if endpoint is not None:
            endpoint.close()
    _abandon_stuck_threads()


def _checked_worker_id(value: str | None) -> str | None:
    """``--worker-id``'s value, if it may name a worker (None: not given, or empty)."""
    if not value:  # an empty SAGAKIT_WORKER_ID, as a template may leave it: no id
        return None
    try:
        return check_worker_id(value)
    except SagaError as exc:
        raise click.BadParameter(str(exc), param_hint="--worker-id") from None


class _MissingExtra(click.ClickException):
    """An optional extra the options ask for is not installed: a usage error's exit code."""

    exit_code = 2


# How often a worker reads the backlog gauges from the store: a scrape reads
# the last reading, so however often Prometheus scrapes, the database sees
# two cheap indexed counts per worker this often.
METRICS_EVERY = 5.0


def _serve_metrics(port: int, host: str) -> PrometheusEndpoint:
    """The scrape endpoint ``--metrics-port`` asks for, or one line saying why there is none."""
    try:
        from sagakit.observe.prometheus import serve
    except ImportError as exc:
        raise _MissingExtra(
            f"--metrics-port needs the metrics extra (pip install -e '.[metrics]' from the "
            f"repository): {exc}"
        ) from None
    try:
        return serve(port, host)
    except OSError as exc:
        raise click.ClickException(
            f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}"
        ) from None


def _tune_garbage_collector() -> None:
    """Set the worker process's garbage collector for many runs in flight.

    The worker owns its process, so it may do what a library must leave to
    its host. The objects made by imports and start-up live as long as the
    process: frozen, full collections no longer walk them. And a run in
    flight keeps what it allocates alive across awaits, so with thousands of
    runs most young objects survive a young collection anyway: collecting
    every 10,000 allocations instead of every 700 does the same work in far
    fewer passes (see docs/benchmarks.md).
    """
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(10_000, older, oldest)


def _webhook(url: str, timeout: float) -> WebhookSink:
    """The sink an ``--alert-webhook`` names, or one line saying why there is none."""
    try:
        return WebhookSink(url, timeout=timeout)
    except SagaError as exc:
        raise click.BadParameter(str(exc), param_hint="--alert-webhook") from None


def _import_attr(spec: str, option: str, what: str) -> object:
    """The ``module:attr`` an option names, imported, or one line saying why not."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise click.BadParameter(f"{spec!r} is not MODULE:{what}", param_hint=option)
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        value: object = importlib.import_module(module_name)
        for part in attr.split("."):
            value = getattr(value, part)
    except (ImportError, AttributeError) as exc:
        raise click.BadParameter(f"cannot load {spec!r}: {exc}", param_hint=option) from exc
    except Exception as exc:  # the module itself fails as it loads: a SyntaxError, a raise
        raise click.BadParameter(
            f"cannot load {spec!r}: {type(exc).__name__}: {exc}", param_hint=option
        ) from exc
    return value


def _import_observers(spec: str) -> list[Observer]:
    """The observers an ``--observer`` names: an instance, a list, or what makes one."""
    value = _import_attr(spec, "--observer", "ATTR")
    if isinstance(value, type) or (callable(value) and not hasattr(value, "on_event")):
        try:
            value = value()
        except Exception as exc:
            raise click.BadParameter(
                f"making the observer {spec!r} failed: {type(exc).__name__}: {exc}",
                param_hint="--observer",
            ) from exc
    given = list(value) if isinstance(value, list | tuple) else [value]
    found: list[Observer] = []
    for observer in given:
        if not callable(getattr(observer, "on_event", None)):
            raise click.BadParameter(
                f"{spec!r} is not an observer (a sagakit.Observer, a list of them, or a "
                f"class or function that makes one); got {type(observer).__name__}",
                param_hint="--observer",
            )
        found.append(cast(Observer, observer))  # duck-typed: any object with on_event
    return found


def _import_hook(spec: str) -> AttentionHook:
    """The ``module:function`` an ``--on-attention`` names, imported."""
    value = _import_attr(spec, "--on-attention", "FUNCTION")
    if not callable(value):
        raise click.BadParameter(f"{spec!r} is not callable", param_hint="--on-attention")
    hook: AttentionHook = value
    return hook


def _abandon_stuck_threads() -> None:
    """Exit now if synchronous step calls cut short by a stop still run on threads.

    Their runs were handed back already; but Python waits for every thread
    of an executor before it exits, so one call stuck for an hour would keep
    a stopped worker alive for an hour.
    """
    deadline = time.monotonic() + 1.0
    stuck = 0
    for thread in threading.enumerate():
        if thread.name.startswith("sagakit-step"):
            # Idle threads of the pool end as soon as they see its shutdown.
            thread.join(max(0.0, deadline - time.monotonic()))
            stuck += thread.is_alive()
    if stuck:
        logging.getLogger("sagakit").warning(
            "%d step call(s) cut short are still running on threads; exiting without them",
            stuck,
        )
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def _log_to_stderr(level: str, log_format: str) -> None:
    # On the root logger, so that the application's own logs show as well, with
    # the fields of the run they were logged for.
    handler = stderr_handler(log_format, "%(asctime)s %(levelname)s %(name)s: %(message)s")
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level.upper())


async def _serve(
    url: str,
    sagas: Sequence[Saga[Any]],
    *,
    concurrency: int,
    lease: float,
    poll: float,
    grace: float,
    worker_id: str | None = None,
    hang_grace: float = 30.0,
    commit_patience: float | None = None,
    on_attention: AttentionHook | None = None,
    alert_timeout: float = 30.0,
    purge: tuple[float, float] | None = None,
    reconcile: tuple[float, float, bool] | None = None,
    observers: Sequence[Observer] = (),
    metrics: Metrics | None = None,
) -> None:
    log = logging.getLogger("sagakit")
    keys = keys_from_environment()
    async with AsyncEngine(
        url,
        lease_seconds=lease,
        worker_id=worker_id,
        on_attention=on_attention,
        encryption_keys=keys,
        alert_timeout=alert_timeout,
        hang_grace=hang_grace,
        commit_patience=commit_patience,
        observers=observers,
    ) as engine:
        engine.register(*sagas)
        runner = Worker(engine, concurrency=concurrency, poll_interval=poll)
        signals = 0

        def on_signal(received: signal.Signals) -> None:
            nonlocal signals
            signals += 1
            if signals == 1:
                log.info(
                    "%s: stopping; calls in flight may finish for %gs (send it again to stop "
                    "at once)",
                    received.name,
                    grace,
                )
                runner.stop(grace)
            else:
                log.info("%s again: stopping at once", received.name)
                runner.stop(0)

        loop = asyncio.get_running_loop()
        handled: list[signal.Signals] = []
        for which in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(which, on_signal, which)
                handled.append(which)
            except (NotImplementedError, RuntimeError):  # not on this platform or thread
                pass
        # Off the worker's own loop of claims: a task of its own, every purge[1] seconds.
        # Purging and reconciling are imported only when asked for: their
        # modules share the printing commands' imports, which a worker
        # restarting to take back its runs should not wait for.
        purging = None
        if purge is not None:
            from sagakit.cli.purge import purge_periodically

            purging = asyncio.create_task(purge_periodically(engine.store, *purge))
        # The backlog gauges, read on this loop (the store's); scrapes read the last reading.
        sampling = (
            None
            if metrics is None
            else asyncio.create_task(
                metrics.sample_periodically(engine.store, every=METRICS_EVERY, clock=engine.clock)
            )
        )
        reconciling = None
        if reconcile is not None:
            from sagakit.cli.reconcile import reconcile_periodically

            every, reconcile_grace, apply = reconcile
            reconciling = asyncio.create_task(
                reconcile_periodically(engine, every, grace=reconcile_grace, apply=apply)
            )
        try:
            await runner.run()
        finally:
            for task in (purging, reconciling, sampling):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            for which in handled:
                loop.remove_signal_handler(which)
