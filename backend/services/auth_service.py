"""`get_current_user`: the dependency every route uses (the seed's name and place).

It verifies the bearer token with the process's `TokenVerifier` (`services/auth/verifier.py`,
where the rules are) and, on the embedded backend, records the user in `auth.users`.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from errors import InvalidToken
from models import User
from services.auth.verifier import TokenVerifier
from services.observability.metrics import count_auth_failure
from services.storage.embedded_users import EmbeddedUserDirectory

_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="SupabaseAccessToken",
    description="A Supabase Auth access token (the session's `access_token`).",
)


def failure_reason(exc: InvalidToken) -> str:
    """The metrics label of a refused token: its short reason code when the verifier gives one
    (`InvalidToken.reason`), else `invalid_token`. The one place that decides it."""
    return getattr(exc, "reason", None) or "invalid_token"


async def get_current_user(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
) -> User:
    """The verified user of this request; 401 (never FastAPI's 403) for a missing, non-Bearer
    or invalid token. In the embedded backend the user is also recorded in `auth.users`."""
    if credentials is None:
        count_auth_failure("missing")
        raise InvalidToken()
    # app.state.services is services.container.Services (not imported here: it wires this).
    services = request.app.state.services
    verifier: TokenVerifier = services.verifier
    users: EmbeddedUserDirectory | None = services.users
    try:
        user = await verifier.verify(credentials.credentials)
    except InvalidToken as exc:
        count_auth_failure(failure_reason(exc))
        raise
    if users is not None:
        await users.ensure(user)
    return user
