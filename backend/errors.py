"""Domain errors. Services and repositories raise these; one handler in `main.py` renders them.

Each carries the HTTP status it stands for, so the mapping lives in one place and the OpenAPI
`responses=` of each route can name the statuses it may answer.
"""

from __future__ import annotations


class ServiceError(Exception):
    """Base class: `detail` is safe to show to the client (no SQL, no secrets)."""

    status_code: int = 500
    detail: str = "internal error"

    def __init__(self, detail: str | None = None) -> None:
        if detail is not None:
            self.detail = detail
        super().__init__(self.detail)

    @property
    def headers(self) -> dict[str, str] | None:
        return None


class InvalidToken(ServiceError):
    """401. `reason` is a short fixed code saying why (`services.auth.reasons.Reason`: for logs
    and metric labels); `detail` says what to fix and is also sent as RFC 6750's
    `error_description`. Neither ever holds anything taken from the token."""

    status_code = 401
    detail = "invalid bearer token"

    def __init__(self, detail: str | None = None, *, reason: str = "invalid") -> None:
        super().__init__(detail)
        self.reason = reason

    @property
    def headers(self) -> dict[str, str] | None:
        if self.reason == "missing":  # RFC 6750 3.1: no error code when no token was sent
            return {"WWW-Authenticate": "Bearer"}
        return {
            "WWW-Authenticate": (f'Bearer error="invalid_token", error_description="{self.detail}"')
        }


class Forbidden(ServiceError):
    status_code = 403
    detail = "not allowed"


class ChatLimitReached(ServiceError):
    """A chat turn past the child's daily limit or the per-minute rate: nothing was stored.
    `detail` is written for the child's app to show as it is."""

    status_code = 429
    detail = "You have chatted a lot! Take a little break and try again soon."

    def __init__(self, detail: str | None = None, *, retry_after_seconds: int) -> None:
        super().__init__(detail)
        self.retry_after_seconds = max(1, retry_after_seconds)

    @property
    def headers(self) -> dict[str, str] | None:
        return {"Retry-After": str(self.retry_after_seconds)}


class UnknownField(ServiceError):
    status_code = 404
    detail = "unknown memory field"


class ItemNotFound(ServiceError):
    status_code = 404
    detail = "no such item"


class WrongFieldKind(ServiceError):
    status_code = 405
    detail = "method not allowed on this kind of field"

    def __init__(self, detail: str | None = None, *, allow: str) -> None:
        super().__init__(detail)
        self.allow = allow

    @property
    def headers(self) -> dict[str, str] | None:
        return {"Allow": self.allow}


class Conflict(ServiceError):
    status_code = 409
    detail = "conflict"


class NothingToReport(Conflict):
    detail = "there is no conversation since the last report"


class ReportRaceLost(Conflict):
    detail = "another report on these conversations was stored at the same time; read it"


class IdempotencyConflict(Conflict):
    detail = "this Idempotency-Key was used with a different body"


class VersionMismatch(ServiceError):
    status_code = 412
    detail = "the memory changed since that version (If-Match)"


class PayloadTooLarge(ServiceError):
    status_code = 413
    detail = "request body too large"


class InvalidValue(ServiceError):
    status_code = 422
    detail = "invalid value"


class StorageUnavailable(ServiceError):
    """The database or Supabase is unreachable, timed out or answered 5xx: retry later."""

    status_code = 503
    detail = "storage temporarily unavailable"
    retry_after_seconds = 1

    @property
    def headers(self) -> dict[str, str] | None:
        return {"Retry-After": str(self.retry_after_seconds)}


class StorageError(ServiceError):
    """Storage answered with an error we have no better name for; never shown as empty memory."""

    status_code = 502
    detail = "storage rejected the request"


class LLMNotConfigured(ServiceError):
    status_code = 503
    detail = "chat is not configured: set LLM_BASE_URL and LLM_MODEL (and LLM_API_KEY if needed)"


class UpstreamError(ServiceError):
    status_code = 502
    detail = "the language model upstream failed"


class UpstreamTimeout(ServiceError):
    status_code = 504
    detail = "the language model upstream timed out"
