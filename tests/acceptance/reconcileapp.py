"""A saga whose buckets live in a JSON file, for ``sagakit reconcile`` run as a process.

The "cloud" is the file ``RECONCILE_CLOUD`` names: the test and the command
line both see it. The compensation has a bug (it deletes nothing), and a
bucket listed in ``broken`` cannot be removed (the error quotes the run's
API key, which the saga marks sensitive).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from sagakit import PermanentError, Resource, RetryPolicy, Saga, StepContext

API_KEY = "ak-live-0123456789"


def _file() -> Path:
    return Path(os.environ["RECONCILE_CLOUD"])


def _read() -> dict[str, Any]:
    path = _file()
    return json.loads(path.read_text()) if path.exists() else {"buckets": {}, "broken": []}


def _write(cloud: dict[str, Any]) -> None:
    # Written aside and renamed into place: the test reads the file while the
    # worker writes it, and must never see it half written.
    path = _file()
    aside = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    aside.write_text(json.dumps(cloud))
    aside.replace(path)


def create(key: str, *, age: float = 3600.0) -> str:
    cloud = _read()
    for ident, bucket in cloud["buckets"].items():
        if bucket["key"] == key:
            return str(ident)
    ident = f"bucket-{len(cloud['buckets']) + 1}"
    cloud["buckets"][ident] = {"key": key, "created_at": time.time() - age}
    _write(cloud)
    return ident


def break_removal(ident: str) -> None:
    cloud = _read()
    cloud["broken"].append(ident)
    _write(cloud)


def buckets() -> list[Resource]:
    return [
        Resource(ident, bucket["key"], bucket["created_at"])
        for ident, bucket in _read()["buckets"].items()
    ]


def remove(resource: Resource) -> None:
    cloud = _read()
    if resource.id in cloud["broken"]:
        raise RuntimeError(f"403 for {resource.id}: key {API_KEY} may not delete")
    cloud["buckets"].pop(resource.id, None)
    _write(cloud)


saga = Saga("buckets", sensitive=["api_key"])


@saga.step(retry=RetryPolicy(max_attempts=1))
def make_bucket(state: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    return {"bucket": create(ctx.idempotency_key)}


@make_bucket.compensate
def drop_bucket(state: dict[str, Any], ctx: StepContext) -> None:
    pass  # the bug: it says it deleted the bucket and leaves it


@saga.step(retry=RetryPolicy(max_attempts=1))
def finish(state: dict[str, Any], ctx: StepContext) -> None:
    if state.get("fail"):
        raise PermanentError("finishing failed")


@saga.reconciler("bucket", remove=remove, step="make_bucket")
def listed() -> list[Resource]:
    return buckets()
