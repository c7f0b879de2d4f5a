"""The ``sagakit`` command line: run the demo, list runs, show and repair them.

Every command takes ``--db``: a store URL (``sqlite:///runs.db``) or a plain
path to a SQLite file; without it, ``SAGAKIT_DB``; without either,
``sagakit.db`` in the current directory, which the command names in one line
on stderr. Commands that read or repair runs never create a
database: a missing file is an error, so a typo in ``--db`` cannot hide
behind an empty listing. The commands that only read (``list``, ``show``,
``history``) never create, migrate or write anything either: a database that
holds no sagakit store, or one of an older schema, is refused in one line.

``--app module[:attr]`` imports the application's module (or reads a YAML
file, see `sagakit.cli.main.apps`) and registers its sagas, which ``retry`` and
``resolve`` need in order to call its functions.

``sagakit worker`` drives the runs that ``engine.start()`` or ``sagakit
start`` records, until SIGTERM or Ctrl-C; ``sagakit migrate`` creates or upgrades a store's schema.
Both may create the database.

The group is here, and each command is imported when it is called
(`COMMANDS`): ``demo``, the commands that read runs and ``migrate`` are in
`sagakit.cli.runs`, the operator's commands in `sagakit.cli.operator`, the
worker in `sagakit.cli.worker`, the YAML-file commands in
`sagakit.cli.yamlfile`; what they share is in `sagakit.cli.options` (``--db``,
``--app``) and `sagakit.cli.common` (the engine, a run's printout). So
``sagakit worker`` starts without importing what only the printing commands
use (rich, the YAML loader, the dashboard): a worker restarted to take back
its runs is waiting on its start.

Exit codes: 0 success, 1 an error (no such database or run, a saga that is
not registered, a run that still needs attention afterwards), 2 bad usage.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Sequence
from typing import Any

import click

from sagakit import __version__
from sagakit.cli.apps import load_apps, load_sagas
from sagakit.cli.logsetup import LOG_FORMAT_KEY, log_format_option, stderr_handler
from sagakit.cli.options import DEFAULT_DB, resolve_db
from sagakit.errors import SagaError
from sagakit.store import redact_url
from sagakit.timeline.text import printable

__all__ = ["COMMANDS", "DEFAULT_DB", "cli", "load_apps", "load_sagas", "main", "resolve_db"]


COMMANDS: dict[str, str] = {
    "cancel": "sagakit.cli.operator:cancel",
    "check": "sagakit.cli.check:check",
    "dashboard": "sagakit.cli.dashboard:dashboard",
    "demo": "sagakit.cli.runs:demo",
    "history": "sagakit.cli.runs:history",
    "keys": "sagakit.cli.keys:keys",
    "list": "sagakit.cli.runs:list_runs",
    "migrate": "sagakit.cli.runs:migrate",
    "purge": "sagakit.cli.purge:purge",
    "reconcile": "sagakit.cli.reconcile:reconcile",
    "recover": "sagakit.cli.operator:recover",
    "reservations": "sagakit.cli.runs:reservations",
    "resolve": "sagakit.cli.operator:resolve",
    "retry": "sagakit.cli.operator:retry",
    "run": "sagakit.cli.yamlfile:run_file",
    "schema": "sagakit.cli.yamlfile:schema",
    "show": "sagakit.cli.runs:show",
    "signal": "sagakit.cli.operator:signal_run",
    "start": "sagakit.cli.start:start",
    "test": "sagakit.cli.explore:explore_command",
    "validate": "sagakit.cli.yamlfile:validate",
    "worker": "sagakit.cli.worker:worker",
}
"""Every command by name, as ``module:attribute``: imported when it is run or listed."""


class _Group(click.Group):
    """Turns every `SagaError` into a one-line message and exit code 1.

    Every error message, click's own included ("No such option: ...", "Got
    unexpected extra argument ..."), reaches the terminal with its control
    characters escaped and any password masked, since it may quote what was
    typed.

    Its commands are imported as they are asked for (`COMMANDS`): running
    one imports that command's module alone; ``--help`` imports them all.
    """

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(COMMANDS) | set(self.commands))

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        try:
            return super().resolve_command(ctx, args)
        except click.UsageError:
            # click (8.4 on) suggests close names among the commands added so
            # far: here only those imported yet. A name not found is rare
            # enough to import them all and ask again ("Did you mean").
            if set(COMMANDS) <= set(self.commands):
                raise
            for name in COMMANDS:
                self.get_command(ctx, name)
            return super().resolve_command(ctx, args)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = self.commands.get(cmd_name)
        if command is None and cmd_name in COMMANDS:
            module, _, attribute = COMMANDS[cmd_name].partition(":")
            command = getattr(importlib.import_module(module), attribute)
            assert isinstance(command, click.Command), COMMANDS[cmd_name]
            self.add_command(command, cmd_name)
        return command

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        # Bytes that are not UTF-8 reach Python's argv as lone surrogates,
        # which no store, URL or terminal can encode: refuse them here, once.
        for arg in args:
            try:
                arg.encode("utf-8")
            except UnicodeEncodeError:
                try:  # the bytes as given
                    shown = repr(arg.encode("utf-8", "surrogateescape"))
                except UnicodeEncodeError:
                    shown = repr(arg)
                raise click.UsageError(
                    f"an argument is not UTF-8 text: {_printable_lines(shown, usage=True)}", ctx
                ) from None
        try:
            return super().parse_args(ctx, args)
        except click.ClickException as exc:
            # click types `message` as Final, yet formats the error from it
            # only when showing it: set here, it is what the user sees.
            exc.message = _printable_lines(exc.message, usage=True)  # type: ignore[misc]
            raise

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SagaError as exc:
            # Messages quote what came from outside with repr; this keeps any
            # other control character (from an application's error, a driver's
            # message) off the terminal too, line by line.
            raise click.ClickException(_printable_lines(str(exc))) from exc
        except click.ClickException as exc:
            usage = isinstance(exc, click.UsageError)
            exc.message = _printable_lines(exc.message, usage=usage)  # type: ignore[misc]
            raise


def _printable_lines(message: str, *, usage: bool = False) -> str:
    # A store URL typed where a command or a value was expected is quoted back
    # in a usage error ("No such command 'postgresql://u:pw@...'"): mask its
    # password. Other messages name URLs through redact_url already.
    lines = message.split("\n")
    return "\n".join(printable(redact_url(line) if usage else line) for line in lines)


# -- commands -----------------------------------------------------------------------


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", "-V", prog_name="sagakit")
@click.option("-v", "--verbose", is_flag=True, help="Log what the engine does, on stderr.")
@log_format_option(default="text")
@click.pass_context
def cli(ctx: click.Context, verbose: bool, log_format: str) -> None:
    """sagakit: durable sagas (compensating transactions).

    Start with `sagakit demo`, then `sagakit list` and `sagakit show RUN_ID`.
    """
    logger = logging.getLogger("sagakit")
    ctx.meta[LOG_FORMAT_KEY] = log_format  # the worker's default
    if ctx.invoked_subcommand == "worker":
        return  # a worker always logs, as its --log-level says
    if verbose:
        logger.setLevel(logging.INFO)
        logger.addHandler(stderr_handler(log_format, "%(asctime)s %(levelname)s %(message)s"))
    else:
        # The commands print outcomes themselves; without a handler, Python's
        # last-resort handler would repeat the engine's warnings on stderr.
        logger.addHandler(logging.NullHandler())


# The commands are added as they are asked for (`_Group.get_command`).


def main(argv: Sequence[str] | None = None) -> None:
    """The console script: ``sagakit``."""
    cli.main(args=list(argv) if argv is not None else None, prog_name="sagakit")
