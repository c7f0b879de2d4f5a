"""Which OpenTelemetry SDK versions sagakit's direct paths into the SDK were tested with.

`Tracing` hands finished spans straight to the SDK's span processors and
`Metrics` hands its histograms' values straight to the SDK's aggregations
(`sagakit.observe.sdk_histograms`): both read private attributes of the SDK,
checked against the SDK's own path by the tests up to `NEWEST_TESTED_SDK`.
A newer SDK may mean something else by them, so past it both take the SDK's
public path.
"""

from __future__ import annotations

__all__ = ["NEWEST_TESTED_SDK", "minor_version", "sdk_tested"]

# The newest OpenTelemetry SDK (major, minor) the direct paths were tested
# with (tests/integration/test_tracing.py and test_sdk_histograms.py export
# through them and through the SDK's own path, and compare).
NEWEST_TESTED_SDK = (1, 45)


def minor_version(version: str) -> tuple[int, int]:
    """``"1.45.2"`` as ``(1, 45)``; a version it cannot read as newer than any."""
    try:
        major, minor = version.split(".")[:2]
        return int(major), int(minor)
    except ValueError:
        return (10**6, 0)


def sdk_tested() -> bool:
    """Whether the installed SDK is one the direct paths were tested with (False without it)."""
    try:
        from opentelemetry.sdk.version import __version__ as sdk_version
    except ImportError:
        return False
    return minor_version(sdk_version) <= NEWEST_TESTED_SDK
