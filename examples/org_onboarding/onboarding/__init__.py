"""The org-onboarding example of sagakit (the OpenHands case).

An LLM-proxy team and API key are created over HTTP, then the `Org` and
`OrgMember` rows are committed in the application's database as a local
transaction; if that commit fails, the team and key are deleted again, and
if the deletion fails too, the run needs attention. See ``saga.py``.
"""

from __future__ import annotations

from .llm_proxy import ApiKey, LLMProxy, LLMProxyClient, ProxyError, ProxyRejected, Team
from .models import Org, OrgMember, OrgSummary, create_tables, read_orgs
from .saga import DELETION_RETRY, SAGA_NAME, Onboarding, onboarding_saga

__all__ = [
    "DELETION_RETRY",
    "SAGA_NAME",
    "ApiKey",
    "LLMProxy",
    "LLMProxyClient",
    "Onboarding",
    "Org",
    "OrgMember",
    "OrgSummary",
    "ProxyError",
    "ProxyRejected",
    "Team",
    "create_tables",
    "onboarding_saga",
    "read_orgs",
]
