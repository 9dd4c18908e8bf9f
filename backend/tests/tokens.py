"""Supabase-shaped access tokens for tests: the claim set Supabase Auth issues, signed with
HS256 (a legacy project secret) or an ES256/RS256 key served as a JWKS."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

TEST_JWT_SECRET = "test-secret-with-at-least-thirty-two-characters!"
TEST_ISSUER = "http://127.0.0.1:54321/auth/v1"
TEST_JWKS_URL = "https://test-project.supabase.test/auth/v1/.well-known/jwks.json"


def supabase_claims(
    user_id: uuid.UUID | str | None = None, *, lifetime: int = 3600, **overrides: Any
) -> dict[str, Any]:
    """The claims of a Supabase access token for a signed-in (email) user."""
    now = int(time.time())
    user_id = str(user_id or uuid.uuid4())
    claims: dict[str, Any] = {
        "iss": TEST_ISSUER,
        "sub": user_id,
        "aud": "authenticated",
        "exp": now + lifetime,
        "iat": now,
        "email": f"{user_id[:8]}@example.test",
        "phone": "",
        "app_metadata": {"provider": "email", "providers": ["email"]},
        "user_metadata": {},
        "role": "authenticated",
        "aal": "aal1",
        "amr": [{"method": "password", "timestamp": now}],
        "session_id": str(uuid.uuid4()),
        "is_anonymous": False,
    }
    claims.update(overrides)
    return claims


def hs256_token(claims: dict[str, Any], secret: str = TEST_JWT_SECRET) -> str:
    return jwt.encode(claims, secret, algorithm="HS256", headers={"typ": "JWT"})


def user_token(user_id: uuid.UUID | str | None = None, **overrides: Any) -> str:
    """A valid HS256 token (TEST_JWT_SECRET) for user_id (a new user when None)."""
    return hs256_token(supabase_claims(user_id, **overrides))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass(frozen=True)
class SigningKey:
    """An asymmetric key pair as Supabase holds one: it signs, its public half is in the JWKS."""

    kid: str
    algorithm: str  # "ES256" or "RS256"
    private_key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

    def public_jwk(self) -> dict[str, Any]:
        """The key as Supabase's JWKS endpoint publishes it."""
        public = self.private_key.public_key()
        if isinstance(public, ec.EllipticCurvePublicKey):
            jwk = ECAlgorithm.to_jwk(public, as_dict=True)
        else:
            jwk = RSAAlgorithm.to_jwk(public, as_dict=True)
        return {**jwk, "kid": self.kid, "alg": self.algorithm, "use": "sig", "key_ops": ["verify"]}

    def public_pem(self) -> bytes:
        return self.private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def sign(self, claims: dict[str, Any], *, kid: str | None = None) -> str:
        headers = {"typ": "JWT", "kid": kid or self.kid}
        return jwt.encode(claims, self.private_key, algorithm=self.algorithm, headers=headers)


def ec_key(kid: str) -> SigningKey:
    return SigningKey(kid, "ES256", ec.generate_private_key(ec.SECP256R1()))


def rsa_key(kid: str) -> SigningKey:
    return SigningKey(kid, "RS256", rsa.generate_private_key(public_exponent=65537, key_size=2048))


ES256_KEY = ec_key("es256-key-1")
RS256_KEY = rsa_key("rs256-key-1")


def jwks_document(*keys: SigningKey) -> dict[str, Any]:
    """The body of `GET /auth/v1/.well-known/jwks.json` publishing `keys`."""
    return {"keys": [key.public_jwk() for key in keys]}


JWKS_HEADERS = {"Cache-Control": "public, max-age=600", "Content-Type": "application/json"}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def raw_token(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    """A compact JWS assembled by hand (what an attacker sends), no library checks involved."""
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
    return f"{signing_input}.{b64url(signature)}"


def hmac_token(claims: dict[str, Any], secret: bytes, **header: Any) -> str:
    """HS256 signed by hand with any bytes as the secret (PyJWT refuses a PEM key as one)."""
    head = {"alg": "HS256", "typ": "JWT", **header}
    unsigned = raw_token(head, claims).rsplit(".", 1)[0]
    signature = hmac.new(secret, unsigned.encode(), hashlib.sha256).digest()
    return f"{unsigned}.{b64url(signature)}"


def with_payload(token: str, claims: dict[str, Any]) -> str:
    """`token` with its payload replaced and its header and signature kept (tampering)."""
    header, _, signature = token.split(".")
    return f"{header}.{b64url(json.dumps(claims).encode())}.{signature}"
