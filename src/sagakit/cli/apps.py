"""Finding an application's sagas for the command line: ``--app`` values.

An ``--app`` value is a Python module (``module`` or ``module:attribute``),
imported from the current directory as ``python -m`` would, or a YAML
definition file, whose functions may live only in the modules given beside
it. Problems are told as click errors that name the value at fault.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence
from typing import Any

import click

from sagakit.definition import Saga
from sagakit.timeline.text import printable


def _is_yaml(spec: str) -> bool:
    return spec.lower().endswith((".yaml", ".yml"))


def load_apps(specs: Sequence[str]) -> list[Saga[Any]]:
    """The sagas that ``--app`` values name: Python modules and YAML definition files.

    A YAML file may name functions only inside the modules given beside it
    with ``--app`` (which then need not define sagas themselves); with none
    given, inside the modules beside the file or in the current directory.

    Raises:
        click.BadParameter: a module cannot be imported or defines no saga.
        click.ClickException: a YAML file has problems (each with its line).
    """
    files = [spec for spec in specs if _is_yaml(spec)]
    modules = [spec for spec in specs if not _is_yaml(spec)]
    sagas: list[Saga[Any]] = []
    for spec in modules:
        sagas.extend(load_sagas(spec, required=not files))
    allowed = [spec.partition(":")[0] for spec in modules] or None
    for file in files:
        # The YAML loader (PyYAML and its formats) only for the files that need it.
        from sagakit.yamlfile import validate_yaml

        report = validate_yaml(file, allowed_modules=allowed)
        if report.saga is None or report.errors:
            problems = "\n".join(f"  {printable(str(problem))}" for problem in report.errors)
            raise click.ClickException(
                f"{printable(file)} does not define a usable saga:\n{problems}"
            )
        sagas.append(report.saga)
    unique: list[Saga[Any]] = []
    for saga in sagas:
        if not any(saga is other for other in unique):
            unique.append(saga)
    return unique


def _sagas_in(value: object) -> list[Saga[Any]]:
    if isinstance(value, Saga):
        return [value]
    if isinstance(value, list | tuple | set | frozenset):
        return [item for item in value if isinstance(item, Saga)]
    return []


def load_sagas(spec: str, *, required: bool = True) -> list[Saga[Any]]:
    """Import ``module[:attr]`` and return the sagas it defines.

    Without ``attr`` every module-level `Saga`, and every saga in a
    module-level list or tuple, is returned; with it, that attribute (dotted
    paths allowed) must be a saga or a list of them. The current directory is
    put on the import path, as ``python -m`` would. With ``required=False``
    a module without sagas is no error (it serves a YAML file's functions).

    Raises:
        click.BadParameter: the module cannot be found or holds no saga.
        click.ClickException: importing the module raised.
    """
    module_name, _, attr = spec.partition(":")
    if not module_name:
        raise click.BadParameter(f"{spec!r} names no module", param_hint="--app")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if module_name != missing and not module_name.startswith(missing + "."):
            # The module exists but imports something that does not.
            raise click.ClickException(f"importing {module_name!r} failed: {exc}") from exc
        raise click.BadParameter(
            f"cannot import {module_name!r}: {exc}; run sagakit from the directory that "
            "holds it, or add that directory to PYTHONPATH",
            param_hint="--app",
        ) from exc
    except Exception as exc:
        raise click.ClickException(
            f"importing {module_name!r} failed: {type(exc).__name__}: {exc}"
        ) from exc
    if attr:
        value: object = module
        for part in attr.split("."):
            if not hasattr(value, part):
                raise click.BadParameter(
                    f"module {module_name!r} has no attribute {attr!r}", param_hint="--app"
                )
            value = getattr(value, part)
        found = _sagas_in(value)
        if not found:
            raise click.BadParameter(
                f"{spec!r} is {type(value).__name__}, not a Saga or a list of Sagas",
                param_hint="--app",
            )
        return found
    found = []
    seen: set[int] = set()
    for value in vars(module).values():
        for saga in _sagas_in(value):
            if id(saga) not in seen:
                seen.add(id(saga))
                found.append(saga)
    if not found and required:
        raise click.BadParameter(
            f"module {module_name!r} defines no Saga at module level; "
            "name one with --app module:attribute",
            param_hint="--app",
        )
    return found
