"""Why a bearer token was refused: a short code for logs and metrics, and a description for the
client (RFC 6750 `error_description`) saying what to fix.

Every refusal is still a 401, but "expired" and "signed with another key" call for different
fixes, so the client is told which. Neither the code nor the description ever holds anything
taken from the token: both are fixed strings chosen here, safe to log and to use as a metric
label (`InvalidToken.reason`).
"""

from __future__ import annotations

from enum import StrEnum

import jwt

from errors import InvalidToken


class Reason(StrEnum):
    MISSING = "missing"
    MALFORMED = "malformed"
    TOO_LARGE = "too_large"
    UNSUPPORTED_ALG = "unsupported_alg"
    UNKNOWN_KEY = "unknown_key"
    JWKS_UNAVAILABLE = "jwks_unavailable"
    BAD_SIGNATURE = "bad_signature"
    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"
    WRONG_AUDIENCE = "wrong_audience"
    WRONG_ISSUER = "wrong_issuer"
    MISSING_CLAIM = "missing_claim"
    SERVICE_ROLE = "service_role"
    NOT_A_USER = "not_a_user"
    BAD_SUBJECT = "bad_subject"
    BAD_CLAIM = "bad_claim"
    ANONYMOUS_REFUSED = "anonymous_refused"
    INVALID = "invalid"


# RFC 6750 allows only printable ASCII without `"` and `\` in error_description.
DESCRIPTIONS: dict[Reason, str] = {
    Reason.MISSING: "missing bearer token: send Authorization: Bearer <access token>",
    Reason.MALFORMED: "the bearer token is not a JWT (header.payload.signature)",
    Reason.TOO_LARGE: "the bearer token is too large to be an access token",
    Reason.UNSUPPORTED_ALG: "the token's alg has no key here: HS256 needs SUPABASE_JWT_SECRET,"
    " ES256/RS256 the project's JWKS; none is never accepted",
    Reason.UNKNOWN_KEY: "no key of the project's JWKS matches the token's kid and alg",
    Reason.JWKS_UNAVAILABLE: "the project's JWKS could not be fetched to verify the token:"
    " retry later",
    Reason.BAD_SIGNATURE: "bad signature: the token was not signed with this server's key"
    " (another project, or another dev secret: see make token)",
    Reason.EXPIRED: "the access token has expired: refresh the session or get a new token",
    Reason.NOT_YET_VALID: "the access token is not valid yet (nbf/iat in the future):"
    " check the clocks",
    Reason.WRONG_AUDIENCE: "the token's aud is not authenticated: send a signed-in user's"
    " access token",
    Reason.WRONG_ISSUER: "the token's iss is not the configured SUPABASE_JWT_ISSUER",
    Reason.MISSING_CLAIM: "the token lacks a required claim (exp, sub, aud, role; iss when"
    " an issuer is configured)",
    Reason.SERVICE_ROLE: "a service-role key is not a user's access token: send the signed-in"
    " user's access token",
    Reason.NOT_A_USER: "the token's role is not authenticated (an anon key is not a user):"
    " send the signed-in user's access token",
    Reason.BAD_SUBJECT: "the token's sub is not a user id (a UUID)",
    Reason.BAD_CLAIM: "the token's is_anonymous claim is not a boolean",
    Reason.ANONYMOUS_REFUSED: "anonymous sign-ins are refused here (AUTH_ALLOW_ANONYMOUS=false)",
    Reason.INVALID: "invalid bearer token",
}


def refused(reason: Reason) -> InvalidToken:
    """The 401 for `reason`: its description as `detail` and `error_description`."""
    return InvalidToken(DESCRIPTIONS[reason], reason=reason.value)


def reason_for(exc: jwt.PyJWTError) -> Reason:
    """What PyJWT's refusal means (subclasses first: an expired token is also an invalid one)."""
    checks: list[tuple[type[jwt.PyJWTError], Reason]] = [
        (jwt.ExpiredSignatureError, Reason.EXPIRED),
        (jwt.ImmatureSignatureError, Reason.NOT_YET_VALID),
        (jwt.InvalidAudienceError, Reason.WRONG_AUDIENCE),
        (jwt.InvalidIssuerError, Reason.WRONG_ISSUER),
        (jwt.MissingRequiredClaimError, Reason.MISSING_CLAIM),
        (jwt.InvalidSignatureError, Reason.BAD_SIGNATURE),
        (jwt.InvalidAlgorithmError, Reason.UNSUPPORTED_ALG),
        (jwt.exceptions.InvalidSubjectError, Reason.BAD_SUBJECT),
        (jwt.DecodeError, Reason.MALFORMED),
    ]
    return next((reason for kind, reason in checks if isinstance(exc, kind)), Reason.INVALID)
