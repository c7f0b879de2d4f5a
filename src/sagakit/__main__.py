"""``python -m sagakit``: the same as the ``sagakit`` command."""

from __future__ import annotations

from sagakit.cli import main

if __name__ == "__main__":
    main()
