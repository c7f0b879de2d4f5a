"""The ``sagakit`` command line: demo, worker, list, show, history, operator actions, YAML."""

from __future__ import annotations

from sagakit.cli.main import main

__all__ = ["main"]
