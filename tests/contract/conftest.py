"""The store contract's tests live in the package (`sagakit.store.testing`)."""

from __future__ import annotations

import pytest

# Rewrite their asserts as pytest rewrites a test module's, so that a failure
# shows its values; this must run before any test module imports them.
pytest.register_assert_rewrite("sagakit.store.testing")
