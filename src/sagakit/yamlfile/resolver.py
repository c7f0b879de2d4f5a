"""Resolving a definition file's function paths, only inside the allowed modules.

`Resolver` imports ``module.attribute`` paths, refusing private names and
anything defined outside the modules the application allows (by default the
ones `modules_beside` finds beside the file or in the current directory).
`PathChecker` checks the same paths by their form alone and imports nothing,
for a file that is checked but not loaded (``validate --no-import``).
"""

from __future__ import annotations

import builtins
import importlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from pydantic import BaseModel

# -- resolving function paths ---------------------------------------------------------


class Resolver:
    """Imports ``module.attribute`` paths, only inside the allowed modules."""

    def __init__(self, allowed: Sequence[str], default: bool) -> None:
        self.allowed = tuple(allowed)
        self.default = default

    def _allows(self, module: str) -> bool:
        return any(module == a or module.startswith(a + ".") for a in self.allowed)

    def _refusal(self, path: str) -> str:
        if self.default:
            scope = (
                "only modules beside the file or in the current directory are allowed "
                f"({', '.join(self.allowed) or 'none found'}); allow others with "
                "allowed_modules= or --app MODULE"
            )
        else:
            scope = f"the allowed modules are {', '.join(self.allowed)}"
        return f"{path!r} is outside the allowed modules: {scope}"

    def _parts(self, path: str) -> list[str]:
        """The parts of a public dotted path (raises ValueError for any other)."""
        parts = path.split(".")
        if any(p.startswith("_") for p in parts):
            raise ValueError(f"{path!r} names a private attribute; name a public one")
        if len(parts) < 2:
            raise ValueError(f"{path!r} is not a dotted path such as package.module.function")
        return parts

    def _inside(self, parts: Sequence[str]) -> bool:
        """Whether some module a path could start with is allowed."""
        return any(self._allows(".".join(parts[:end])) for end in range(1, len(parts)))

    def resolve(self, path: str) -> Any:
        """The object ``path`` names. Raises ValueError with a readable reason."""
        parts = self._parts(path)
        for end in range(len(parts) - 1, 0, -1):
            module_name = ".".join(parts[:end])
            if not self._allows(module_name):
                continue
            try:
                module = importlib.import_module(module_name)
            except ModuleNotFoundError as exc:
                missing = exc.name or ""
                if module_name == missing or module_name.startswith(missing + "."):
                    continue  # not a module: perhaps an attribute of a shorter one
                raise ValueError(f"importing {module_name!r} failed: {exc}") from exc
            except Exception as exc:
                raise ValueError(
                    f"importing {module_name!r} failed: {type(exc).__name__}: {exc}"
                ) from exc
            value: Any = module
            for i, attr in enumerate(parts[end:], start=end):
                if not hasattr(value, attr):
                    where = ".".join(parts[:i])
                    raise ValueError(f"{where!r} has no attribute {attr!r}")
                value = getattr(value, attr)
            origin = getattr(value, "__module__", None)
            if isinstance(origin, str) and not self._allows(origin):
                # e.g. `from os import system` re-exported by an allowed module
                raise ValueError(
                    f"{path!r} is {origin}.{getattr(value, '__qualname__', parts[-1])}, "
                    f"defined outside the allowed modules; {self._refusal(path).split(': ', 1)[1]}"
                )
            return value
        if not self._inside(parts):
            raise ValueError(self._refusal(path))
        raise ValueError(f"cannot import a module from {path!r}")

    def function(self, path: str) -> Any:
        """The function a dotted path names.

        Raises:
            ValueError: the path names no function, or lies outside the allowed modules.
        """
        value = self.resolve(path)
        if isinstance(value, type) or not callable(value):
            raise ValueError(f"{path!r} is {type(value).__name__}, not a function")
        return value

    def model(self, path: str) -> Any:
        """The pydantic model class a dotted path names (raises ValueError otherwise)."""
        value = self.resolve(path)
        if not (isinstance(value, type) and issubclass(value, BaseModel)):
            raise ValueError(f"{path!r} is not a pydantic model class")
        return value

    def exception(self, path: str) -> type[BaseException]:
        """The exception class a path names: a builtin by name, or a dotted path."""
        builtin = _builtin_exception(path)
        if builtin is not None:
            return builtin
        value = self.resolve(path)
        if not (isinstance(value, type) and issubclass(value, BaseException)):
            raise ValueError(f"{path!r} is not an exception class")
        return _retriable(path, value)


class PathChecker(Resolver):
    """Checks a file's paths by their form alone: nothing is imported.

    A path must be a public dotted path that starts with an allowed module,
    and a bare exception name must be a builtin exception (the `builtins`
    module is always loaded, so looking in it imports nothing). Whether the
    module exists, holds the attribute, or holds an object of the right sort
    cannot be known without running its code, so it is not checked.

    What it returns stands in for the real object, so that the rules between
    step kinds can still be checked: a function that refuses to run
    (`not_imported`), no state model (a plain dict), and an exception class
    no code raises.
    """

    def resolve(self, path: str) -> Any:
        """Check ``path``'s form and scope; returns None (nothing is imported)."""
        parts = self._parts(path)
        if not self._inside(parts):
            raise ValueError(self._refusal(path))
        return None

    def function(self, path: str) -> Any:
        """`not_imported`, once ``path`` passes `resolve`'s checks."""
        self.resolve(path)
        return not_imported

    def model(self, path: str) -> Any:
        """None (a plain dict state), once ``path`` passes `resolve`'s checks."""
        self.resolve(path)
        return None

    def exception(self, path: str) -> type[BaseException]:
        """A builtin exception by name, or a stand-in class for a dotted path."""
        builtin = _builtin_exception(path)
        if builtin is not None:
            return builtin
        self.resolve(path)
        return NotImported


def not_imported(state: Any, ctx: Any, *args: Any, **kwargs: Any) -> NoReturn:
    """Stands for a function of a file checked without importing anything; never runs.

    It takes any arguments so that it passes for an action, a compensation
    and a handler alike: signatures are among what such a check cannot see.
    """
    raise RuntimeError(
        "this saga was checked without importing its functions and cannot run; "
        "load the file with its functions resolved"
    )


class NotImported(Exception):
    """Stands for an exception class of a file checked without importing anything."""


def _builtin_exception(path: str) -> type[BaseException] | None:
    """The builtin exception a name without a dot means; None for a dotted path."""
    name = path.removeprefix("builtins.")
    builtin = getattr(builtins, name, None)
    if isinstance(builtin, type) and issubclass(builtin, BaseException):
        return _retriable(path, builtin)
    if "." not in path:
        raise ValueError(
            f"{path!r} is not a builtin exception; name one (ValueError) or give "
            "module.ExceptionClass"
        )
    return None


def _retriable(path: str, kind: type[BaseException]) -> type[BaseException]:
    # SystemExit, KeyboardInterrupt, GeneratorExit... stop the worker instead of
    # failing an attempt, so listing one as permanent would promise what never happens.
    if not issubclass(kind, Exception):
        raise ValueError(
            f"{path!r} is not a subclass of Exception; SystemExit, KeyboardInterrupt "
            "and the like stop the worker, not an attempt, so they cannot be permanent"
        )
    return kind


def modules_beside(*directories: Path) -> list[str]:
    """The top-level modules and packages in ``directories``."""
    found: list[str] = []
    for directory in directories:
        if not directory.is_dir():
            continue
        for entry in sorted(directory.iterdir()):
            if entry.suffix == ".py" and entry.stem.isidentifier():
                found.append(entry.stem)
            elif entry.is_dir() and (entry / "__init__.py").is_file() and entry.name.isidentifier():
                found.append(entry.name)
    return list(dict.fromkeys(found))
