"""`GET /api/me`: who the bearer token says the caller is (a frontend's session check)."""

from __future__ import annotations

from fastapi import APIRouter

from deps import CurrentUserDep
from models import CurrentUserOut, ErrorOut

router = APIRouter(prefix="/api", tags=["auth"])


@router.get(
    "/me",
    summary="The current user: id, role, anonymity and the verified token claims",
    response_model=CurrentUserOut,
    responses={
        401: {"model": ErrorOut, "description": "missing, invalid or expired token"},
        503: {
            "model": ErrorOut,
            "description": "storage unreachable (embedded backend: the"
            " user is recorded on first sight); retry after Retry-After seconds",
        },
    },
)
async def read_me(user: CurrentUserDep) -> CurrentUserOut:
    return CurrentUserOut(
        id=user.id, role=user.role, is_anonymous=user.is_anonymous, claims=user.claims
    )
