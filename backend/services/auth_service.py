"""`get_current_user`: the dependency every route uses (the seed's name and place).

It verifies the bearer token with the process's `TokenVerifier` (`services/auth/verifier.py`,
where the rules are) and, on the embedded backend, records the user in `auth.users`.
"""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from errors import InvalidToken
from models import User
from services.auth.reasons import Reason, refused
from services.auth.verifier import TokenVerifier
from services.observability.metrics import count_auth_failure
from services.storage.embedded_users import EmbeddedUserDirectory

logger = logging.getLogger(__name__)

_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="SupabaseAccessToken",
    description="A Supabase Auth access token (the session's `access_token`).",
)


async def get_current_user(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
) -> User:
    """The verified user of this request; 401 (never FastAPI's 403) for a missing, non-Bearer
    or invalid token. In the embedded backend the user is also recorded in `auth.users`."""
    # app.state.services is services.container.Services (not imported here: it wires this).
    services = request.app.state.services
    verifier: TokenVerifier = services.verifier
    users: EmbeddedUserDirectory | None = services.users
    try:
        if credentials is None:
            raise refused(Reason.MISSING)
        user = await verifier.verify(credentials.credentials)
    except InvalidToken as exc:
        # Why, at the default level (a newcomer's 401 must be explainable from the log);
        # the reason is a fixed code, never anything from the token.
        logger.info(
            "401 for %s %s: token refused (%s)", request.method, request.url.path, exc.reason
        )
        count_auth_failure(exc.reason)
        raise
    if users is not None:
        await users.ensure(user)
    return user
