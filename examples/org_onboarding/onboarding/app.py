"""The onboarding saga for the command line: ``sagakit reconcile --app onboarding.app``.

The saga talks to the LLM proxy at ``LLM_PROXY_URL`` (``main.py`` starts
one and runs ``sagakit reconcile`` against it with this variable set).
"""

from __future__ import annotations

import os

from .llm_proxy import LLMProxyClient
from .saga import onboarding_saga

__all__ = ["PROXY_URL_ENVVAR", "saga"]

PROXY_URL_ENVVAR = "LLM_PROXY_URL"

_url = os.environ.get(PROXY_URL_ENVVAR)
if not _url:
    raise RuntimeError(f"set {PROXY_URL_ENVVAR} to the LLM proxy's URL (http://host:port)")

saga = onboarding_saga(LLMProxyClient(_url))
