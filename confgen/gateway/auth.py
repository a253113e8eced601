"""custom_auth for the LiteLLM proxy: every request needs a valid key, compared in constant time.

LiteLLM's own key checks need its Prisma database, which cannot be installed here; without it a
wrong key comes back as 400 "No connected db" instead of 401 (FINDINGS). We own auth instead.
"""

from __future__ import annotations

import hmac
import os

from fastapi import Request
from litellm.proxy._types import LitellmUserRoles, ProxyErrorTypes, ProxyException, UserAPIKeyAuth

MASTER_KEY_ENV = "LITELLM_MASTER_KEY"


def _unauthorized(message: str) -> ProxyException:
    return ProxyException(message=message, type=ProxyErrorTypes.auth_error, param="api_key", code=401)


async def user_api_key_auth(request: Request, api_key: str) -> UserAPIKeyAuth:
    """Named in config.yaml as general_settings.custom_auth."""
    master = os.environ.get(MASTER_KEY_ENV, "")
    if not api_key:
        raise _unauthorized("No API key: send 'Authorization: Bearer <key>' (or x-api-key)")
    if master and hmac.compare_digest(api_key.encode(), master.encode()):
        return UserAPIKeyAuth(api_key=api_key, user_role=LitellmUserRoles.PROXY_ADMIN, key_alias="master")
    raise _unauthorized("Invalid API key")
