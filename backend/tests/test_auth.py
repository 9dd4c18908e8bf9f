"""`get_current_user` through the app: real signed tokens against `GET /api/me` on the embedded
backend, HS256 with the project secret and ES256/RS256 from a JWKS served by respx."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import httpx
import jwt
import pytest
import respx
from fastapi import FastAPI

from services.auth.jwks import JwksCache
from services.auth.reasons import DESCRIPTIONS, Reason
from services.auth.verified_tokens import VerifiedTokenCache
from services.auth.verifier import MAX_TOKEN_CHARS, TokenVerifier
from services.container import Services
from services.storage.embedded_postgres import EmbeddedPostgres
from tests.conftest import asgi_client, make_settings, running_app
from tests.tokens import (
    ES256_KEY,
    JWKS_HEADERS,
    RS256_KEY,
    TEST_ISSUER,
    TEST_JWKS_URL,
    TEST_JWT_SECRET,
    b64url,
    bearer,
    ec_key,
    hmac_token,
    hs256_token,
    jwks_document,
    raw_token,
    supabase_claims,
    with_payload,
)

LEEWAY = 10


class FakeClock:
    """A monotonic clock the test moves by hand (no sleeping)."""

    def __init__(self) -> None:
        self.now = (
            time.time()
        )  # serves as the JWKS cache's monotonic and the token cache's wall clock

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class ObservedJwksCache(JwksCache):
    """Counts the lookups that reached the cache, so a test can hold the JWKS reply until a
    whole burst of requests is inside (each then waits on the lock or has been answered)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lookups = 0
        self._target = 0
        self.all_in = asyncio.Event()

    def expect_lookups(self, more: int) -> asyncio.Event:
        self._target = self.lookups + more
        self.all_in = asyncio.Event()
        return self.all_in

    async def key_for(self, kid: str | None, algorithm: str) -> Any:
        self.lookups += 1
        if self.lookups >= self._target:
            self.all_in.set()
        return await super().key_for(kid, algorithm)


@dataclasses.dataclass
class JwksServer:
    """The project's JWKS endpoint (respx) and the clock of the app's fresh JWKS cache."""

    route: respx.Route
    clock: FakeClock
    cache: ObservedJwksCache

    @property
    def fetches(self) -> int:
        return int(self.route.call_count)

    def publish(self, *keys: Any, headers: dict[str, str] = JWKS_HEADERS) -> None:
        self.route.side_effect = None
        self.route.return_value = httpx.Response(200, json=jwks_document(*keys), headers=headers)

    def hold_replies_until(self, lookups: int, reply: httpx.Response | Exception) -> None:
        """Answer fetches only once `lookups` more requests have reached the cache."""
        all_in = self.cache.expect_lookups(lookups)

        async def held(request: httpx.Request) -> httpx.Response:
            await all_in.wait()
            if isinstance(reply, Exception):
                raise reply
            return reply

        self.route.side_effect = held


async def _serve(settings_overrides: dict[str, Any], data_dir: Any) -> AsyncIterator[FastAPI]:
    async with running_app(make_settings(data_dir=data_dir, **settings_overrides)) as app:
        yield app


@pytest.fixture(scope="module")
async def app(embedded_server: EmbeddedPostgres) -> AsyncIterator[FastAPI]:
    """The embedded backend (joining the session's server) with a secret, a JWKS and an iss."""
    overrides = {
        "supabase_jwt_secret": TEST_JWT_SECRET,
        "supabase_jwks_url": TEST_JWKS_URL,
        "supabase_jwt_issuer": TEST_ISSUER,
        "auth_leeway_seconds": LEEWAY,
    }
    async for served in _serve(overrides, embedded_server.pgdata.parent):
        yield served


@pytest.fixture(scope="module")
async def strict_app(embedded_server: EmbeddedPostgres) -> AsyncIterator[FastAPI]:
    """AUTH_ALLOW_ANONYMOUS=false, the legacy secret only (no JWKS, no issuer)."""
    overrides = {"supabase_jwt_secret": TEST_JWT_SECRET, "auth_allow_anonymous": False}
    async for served in _serve(overrides, embedded_server.pgdata.parent):
        yield served


@pytest.fixture
def jwks(app: FastAPI) -> Iterator[JwksServer]:
    """A JWKS publishing ES256_KEY and RS256_KEY, and a fresh, empty JWKS cache in the app."""
    services: Services = app.state.services
    clock = FakeClock()
    cache = ObservedJwksCache(services.http, TEST_JWKS_URL, cache_seconds=600, clock=clock)
    verifier = TokenVerifier(services.settings, cache, verified=VerifiedTokenCache(clock=clock))
    app.state.services = dataclasses.replace(services, verifier=verifier)
    with respx.mock(assert_all_called=False) as router:
        server = JwksServer(router.get(TEST_JWKS_URL), clock, cache)
        router.route().pass_through()
        server.publish(ES256_KEY, RS256_KEY)
        yield server
    app.state.services = services


async def _client_for(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(app) as client:
        yield client


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async for c in _client_for(app):
        yield c


@pytest.fixture
async def strict_client(strict_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async for c in _client_for(strict_app):
        yield c


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every token `jwt.decode` parses during the test (the real work of a verification)."""
    seen: list[str] = []
    original = jwt.decode

    def spy(token: str, *args: Any, **kwargs: Any) -> Any:
        seen.append(token)
        return original(token, *args, **kwargs)

    monkeypatch.setattr(jwt, "decode", spy)
    return seen


@pytest.fixture
def wall_clock(app: FastAPI) -> Iterator[FakeClock]:
    """A fresh verifier whose verified-token cache runs on a clock the test moves."""
    services: Services = app.state.services
    clock = FakeClock()
    verifier = TokenVerifier(services.settings, None, verified=VerifiedTokenCache(clock=clock))
    app.state.services = dataclasses.replace(services, verifier=verifier)
    yield clock
    app.state.services = services


async def me(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.get("/api/me", headers=bearer(token))


ROLE_REASONS: dict[Any, Reason] = {
    "anon": Reason.NOT_A_USER,
    "service_role": Reason.SERVICE_ROLE,
    "postgres": Reason.NOT_A_USER,
    "": Reason.NOT_A_USER,
    None: Reason.MISSING_CLAIM,
}


def assert_refused(response: httpx.Response, reason: Reason | None = None) -> None:
    """A 401 whose detail is one of the fixed descriptions (`reason`'s when given), sent as
    RFC 6750's error_description too (no error code when no token was sent at all)."""
    assert response.status_code == 401, response.text
    detail = response.json()["detail"]
    assert detail in DESCRIPTIONS.values(), detail
    if reason is not None:
        assert detail == DESCRIPTIONS[reason], (reason, detail)
    if detail == DESCRIPTIONS[Reason.MISSING]:
        assert response.headers["www-authenticate"] == "Bearer"
    else:
        expected = f'Bearer error="invalid_token", error_description="{detail}"'
        assert response.headers["www-authenticate"] == expected


def assert_accepted(response: httpx.Response, claims: dict[str, Any]) -> None:
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"] == claims["sub"]
    assert body["role"] == "authenticated"
    assert body["is_anonymous"] is claims["is_anonymous"]
    assert body["claims"] == claims


class TestAccepted:
    async def test_hs256_with_the_project_secret(
        self, client: httpx.AsyncClient, app: FastAPI
    ) -> None:
        claims = supabase_claims()
        response = await me(client, hs256_token(claims))
        assert_accepted(response, claims)
        dsn = app.state.services.embedded.dsn
        conn = await asyncpg.connect(dsn)
        try:
            row = await conn.fetchrow(
                "select aud, role, email, is_anonymous from auth.users where id = $1",
                uuid.UUID(claims["sub"]),
            )
        finally:
            await conn.close()
        assert row is not None, "the embedded backend records a new user on first sight"
        assert dict(row) == {
            "aud": "authenticated",
            "role": "authenticated",
            "email": claims["email"],
            "is_anonymous": False,
        }

    async def test_hs256_carrying_a_kid(self, client: httpx.AsyncClient) -> None:
        """Supabase's legacy secret has a key id once signing keys are in use."""
        claims = supabase_claims()
        token = jwt.encode(claims, TEST_JWT_SECRET, algorithm="HS256", headers={"kid": "legacy"})
        assert_accepted(await me(client, token), claims)

    async def test_es256_from_the_jwks(self, client: httpx.AsyncClient, jwks: JwksServer) -> None:
        claims = supabase_claims()
        assert_accepted(await me(client, ES256_KEY.sign(claims)), claims)
        assert jwks.fetches == 1

    async def test_rs256_from_the_jwks(self, client: httpx.AsyncClient, jwks: JwksServer) -> None:
        claims = supabase_claims()
        assert_accepted(await me(client, RS256_KEY.sign(claims)), claims)

    async def test_audience_list_holding_authenticated(self, client: httpx.AsyncClient) -> None:
        claims = supabase_claims(aud=["other-app", "authenticated"])
        assert_accepted(await me(client, hs256_token(claims)), claims)

    async def test_expired_within_the_leeway(self, client: httpx.AsyncClient) -> None:
        claims = supabase_claims(exp=int(time.time()) - LEEWAY // 2)
        assert_accepted(await me(client, hs256_token(claims)), claims)

    async def test_anonymous_sign_in_by_default(self, client: httpx.AsyncClient) -> None:
        claims = supabase_claims(is_anonymous=True, email="")
        response = await me(client, hs256_token(claims))
        assert_accepted(response, claims)
        assert response.json()["is_anonymous"] is True

    async def test_user_metadata_grants_nothing(self, client: httpx.AsyncClient) -> None:
        """A user may write `role: service_role` into their own metadata: it changes nothing."""
        claims = supabase_claims(user_metadata={"role": "service_role", "is_admin": True})
        response = await me(client, hs256_token(claims))
        assert_accepted(response, claims)
        assert response.json()["role"] == "authenticated"


class TestRefusedTokens:
    async def test_expired(self, client: httpx.AsyncClient) -> None:
        claims = supabase_claims(exp=int(time.time()) - LEEWAY - 60)
        assert_refused(await me(client, hs256_token(claims)), Reason.EXPIRED)

    async def test_not_yet_valid(self, client: httpx.AsyncClient) -> None:
        claims = supabase_claims(nbf=int(time.time()) + LEEWAY + 60)
        assert_refused(await me(client, hs256_token(claims)), Reason.NOT_YET_VALID)

    async def test_no_exp(self, client: httpx.AsyncClient) -> None:
        claims = supabase_claims()
        del claims["exp"]
        assert_refused(await me(client, hs256_token(claims)), Reason.MISSING_CLAIM)

    @pytest.mark.parametrize("aud", ["anon", ["other-app"], "", None])
    async def test_wrong_audience(self, client: httpx.AsyncClient, aud: Any) -> None:
        claims = supabase_claims(aud=aud)
        if aud is None:
            del claims["aud"]
        assert_refused(
            await me(client, hs256_token(claims)),
            Reason.MISSING_CLAIM if aud in (None, "") else Reason.WRONG_AUDIENCE,
        )

    async def test_wrong_issuer(self, client: httpx.AsyncClient) -> None:
        claims = supabase_claims(iss="https://someone-else.supabase.co/auth/v1")
        assert_refused(await me(client, hs256_token(claims)), Reason.WRONG_ISSUER)

    async def test_no_issuer_when_one_is_configured(self, client: httpx.AsyncClient) -> None:
        claims = supabase_claims()
        del claims["iss"]
        assert_refused(await me(client, hs256_token(claims)), Reason.MISSING_CLAIM)

    @pytest.mark.parametrize("alg", ["none", "None", "NONE", ""])
    async def test_alg_none(self, client: httpx.AsyncClient, alg: str) -> None:
        token = raw_token({"alg": alg, "typ": "JWT"}, supabase_claims())
        assert_refused(await me(client, token), Reason.UNSUPPORTED_ALG)

    @pytest.mark.parametrize("signing_key", [ES256_KEY, RS256_KEY], ids=["es256", "rs256"])
    async def test_hs256_signed_with_the_jwks_public_key(
        self, client: httpx.AsyncClient, jwks: JwksServer, signing_key: Any
    ) -> None:
        """The classic key confusion: the public key (as PEM, or as its JWK JSON) used as an
        HMAC secret, with and without the key's kid."""
        claims = supabase_claims()
        for secret in (signing_key.public_pem(), str(signing_key.public_jwk()).encode()):
            assert_refused(await me(client, hmac_token(claims, secret, kid=signing_key.kid)))
            assert_refused(await me(client, hmac_token(claims, secret)))

    async def test_asymmetric_alg_with_the_secret(self, client: httpx.AsyncClient) -> None:
        """The secret never verifies anything but HS256 (and the header names no JWKS key)."""
        claims = supabase_claims()
        signature = jwt.encode(claims, TEST_JWT_SECRET, algorithm="HS256").rsplit(".", 1)[1]
        unsigned = raw_token({"alg": "ES256", "typ": "JWT"}, claims).rsplit(".", 1)[0]
        assert_refused(await me(client, f"{unsigned}.{signature}"))

    async def test_alg_switched_for_a_jwks_key(
        self, client: httpx.AsyncClient, jwks: JwksServer
    ) -> None:
        """An ES256 key's kid with `alg: RS256`: the key decides the algorithm, not the header."""
        token = ES256_KEY.sign(supabase_claims())
        _, payload, signature = token.split(".")
        forged = raw_token({"alg": "RS256", "typ": "JWT", "kid": ES256_KEY.kid}, {})
        assert_refused(await me(client, f"{forged.split('.')[0]}.{payload}.{signature}"))

    async def test_wrong_secret(self, client: httpx.AsyncClient) -> None:
        token = hs256_token(supabase_claims(), secret="another-secret-with-more-than-32-chars!!")
        assert_refused(await me(client, token), Reason.BAD_SIGNATURE)

    async def test_tampered_hs256_payload(self, client: httpx.AsyncClient) -> None:
        claims = supabase_claims()
        token = hs256_token(claims)
        assert_refused(
            await me(client, with_payload(token, {**claims, "sub": str(uuid.uuid4())})),
            Reason.BAD_SIGNATURE,
        )

    async def test_tampered_es256_payload(
        self, client: httpx.AsyncClient, jwks: JwksServer
    ) -> None:
        claims = supabase_claims()
        token = ES256_KEY.sign(claims)
        assert (await me(client, token)).status_code == 200
        assert_refused(
            await me(client, with_payload(token, {**claims, "sub": str(uuid.uuid4())})),
            Reason.BAD_SIGNATURE,
        )

    async def test_unknown_kid_after_one_refetch(
        self, client: httpx.AsyncClient, jwks: JwksServer
    ) -> None:
        assert (await me(client, ES256_KEY.sign(supabase_claims()))).status_code == 200
        assert jwks.fetches == 1
        stranger = ec_key("not-in-the-jwks")
        assert_refused(await me(client, stranger.sign(supabase_claims())), Reason.UNKNOWN_KEY)
        assert jwks.fetches == 2, "an unknown kid refetches the JWKS once"

    async def test_known_kid_but_another_key(
        self, client: httpx.AsyncClient, jwks: JwksServer
    ) -> None:
        impostor = ec_key(ES256_KEY.kid)
        assert_refused(await me(client, impostor.sign(supabase_claims())), Reason.BAD_SIGNATURE)

    @pytest.mark.parametrize("role", ["anon", "service_role", "postgres", "", None])
    async def test_role_not_authenticated(self, client: httpx.AsyncClient, role: Any) -> None:
        claims = supabase_claims(role=role)
        if role is None:
            del claims["role"]
        assert_refused(await me(client, hs256_token(claims)), ROLE_REASONS[role])

    async def test_supabase_anon_key(self, client: httpx.AsyncClient) -> None:
        """The legacy anon API key as Supabase issues it: signed with the secret, no user."""
        now = int(time.time())
        claims = {"iss": "supabase", "ref": "abc", "role": "anon", "iat": now, "exp": now + 9999}
        assert_refused(await me(client, hs256_token(claims)))

    async def test_no_sub(self, client: httpx.AsyncClient) -> None:
        claims = supabase_claims()
        del claims["sub"]
        assert_refused(await me(client, hs256_token(claims)), Reason.MISSING_CLAIM)

    @pytest.mark.parametrize(
        "sub",
        [
            "not-a-uuid",
            "",
            "12345",
            uuid.uuid4().hex,
            "{" + str(uuid.uuid4()) + "}",
            "0123456789abcdef0123456789abcdef----",
            42,
        ],
    )
    async def test_sub_not_a_uuid(self, client: httpx.AsyncClient, sub: Any) -> None:
        assert_refused(await me(client, hs256_token(supabase_claims(sub=sub))), Reason.BAD_SUBJECT)

    @pytest.mark.parametrize("value", ["true", 1, "yes"])
    async def test_is_anonymous_not_a_boolean(self, client: httpx.AsyncClient, value: Any) -> None:
        assert_refused(
            await me(client, hs256_token(supabase_claims(is_anonymous=value))), Reason.BAD_CLAIM
        )

    async def test_100_kb_token_refused_before_decoding(
        self, client: httpx.AsyncClient, decodes: list[str]
    ) -> None:
        """Validly signed, but 100 KB: refused on its size alone, no parsing done."""
        claims = supabase_claims(user_metadata={"padding": "x" * 100_000})
        token = hs256_token(claims)
        assert len(token) > MAX_TOKEN_CHARS
        assert_refused(await me(client, token), Reason.TOO_LARGE)
        assert decodes == []
        assert (await me(client, hs256_token(supabase_claims()))).status_code == 200
        assert decodes, "the spy sees ordinary verification"


class TestRefusalLog:
    """The server log says why a token was refused, at the default level, and never holds the
    token (a newcomer's 401 was unexplained: the log said nothing)."""

    @pytest.mark.parametrize(
        ("make_token", "reason"),
        [
            (lambda: hs256_token(supabase_claims(exp=int(time.time()) - 3600)), "expired"),
            (lambda: hs256_token(supabase_claims(), secret="x" * 40), "bad_signature"),
            (lambda: hs256_token(supabase_claims(role="service_role")), "service_role"),
        ],
        ids=["expired", "bad-signature", "service-role"],
    )
    async def test_reason_logged_at_info_without_the_token(
        self,
        client: httpx.AsyncClient,
        caplog: pytest.LogCaptureFixture,
        make_token: Any,
        reason: str,
    ) -> None:
        token = make_token()
        with caplog.at_level(logging.INFO, logger="services.auth_service"):
            assert (await me(client, token)).status_code == 401
        refusals = [r for r in caplog.records if "token refused" in r.getMessage()]
        assert len(refusals) == 1 and refusals[0].levelno == logging.INFO
        assert refusals[0].getMessage() == f"401 for GET /api/me: token refused ({reason})"
        logged = "\n".join(r.getMessage() for r in caplog.records)
        assert token not in logged and token.split(".")[1] not in logged

    async def test_missing_header_logged(
        self, client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
    ) -> None:
        with caplog.at_level(logging.INFO, logger="services.auth_service"):
            assert (await client.get("/api/memory")).status_code == 401
        assert "401 for GET /api/memory: token refused (missing)" in caplog.messages


class TestRefusedHeaders:
    async def test_no_authorization_header(self, client: httpx.AsyncClient) -> None:
        assert_refused(await client.get("/api/me"), Reason.MISSING)

    async def test_basic_scheme(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/api/me", headers={"Authorization": "Basic dXNlcjpwYXNz"})
        assert_refused(response, Reason.MISSING)

    async def test_basic_scheme_carrying_a_valid_token(self, client: httpx.AsyncClient) -> None:
        token = hs256_token(supabase_claims())
        assert_refused(
            await client.get("/api/me", headers={"Authorization": f"Basic {token}"}), Reason.MISSING
        )

    @pytest.mark.parametrize(
        "value",
        [
            "Bearer",
            "Bearer ",
            "Bearer not-a-jwt",
            "Bearer a.b.c",
            "Bearer ....",
            "Bearer eyJhbGciOiJIUzI1NiJ9.e30",
            "Bearer eyJhbGciOiJIUzI1NiJ9.!!!.abc",
            "Bearer W10.e30.e30",
            "Token abc",
            "bearer",
        ],
    )
    async def test_malformed(self, client: httpx.AsyncClient, value: str) -> None:
        assert_refused(await client.get("/api/me", headers={"Authorization": value}))

    async def test_two_tokens(self, client: httpx.AsyncClient) -> None:
        token = hs256_token(supabase_claims())
        response = await client.get("/api/me", headers={"Authorization": f"Bearer {token} {token}"})
        assert_refused(response, Reason.MALFORMED)

    async def test_lowercase_scheme_is_fine(self, client: httpx.AsyncClient) -> None:
        claims = supabase_claims()
        response = await client.get(
            "/api/me", headers={"Authorization": f"bearer {hs256_token(claims)}"}
        )
        assert_accepted(response, claims)


class TestAnonymousRefused:
    async def test_anonymous_refused_when_the_setting_says_so(
        self, strict_client: httpx.AsyncClient
    ) -> None:
        token = hs256_token(supabase_claims(is_anonymous=True))
        assert_refused(await me(strict_client, token), Reason.ANONYMOUS_REFUSED)

    async def test_signed_in_user_still_accepted(self, strict_client: httpx.AsyncClient) -> None:
        claims = supabase_claims()
        assert_accepted(await me(strict_client, hs256_token(claims)), claims)

    async def test_asymmetric_token_without_a_jwks_source(
        self, strict_client: httpx.AsyncClient
    ) -> None:
        assert_refused(
            await me(strict_client, ES256_KEY.sign(supabase_claims())), Reason.UNSUPPORTED_ALG
        )


class TestJwksCache:
    async def test_unreachable_jwks_is_401(
        self, client: httpx.AsyncClient, jwks: JwksServer
    ) -> None:
        jwks.route.side_effect = httpx.ConnectError("connection refused")
        assert_refused(await me(client, ES256_KEY.sign(supabase_claims())), Reason.JWKS_UNAVAILABLE)
        assert jwks.fetches == 1

    @pytest.mark.parametrize(
        "reply",
        [
            httpx.Response(500, json={"error": "boom"}),
            httpx.Response(404),
            httpx.Response(200, text="<html>not json</html>"),
            httpx.Response(200, json={"keys": "nope"}),
            httpx.Response(200, json=[1, 2]),
        ],
        ids=["500", "404", "html", "keys-not-list", "not-object"],
    )
    async def test_broken_jwks_is_401(
        self, client: httpx.AsyncClient, jwks: JwksServer, reply: httpx.Response
    ) -> None:
        jwks.route.side_effect = None
        jwks.route.return_value = reply
        assert_refused(await me(client, ES256_KEY.sign(supabase_claims())), Reason.JWKS_UNAVAILABLE)
        assert jwks.fetches == 1

    async def test_symmetric_key_in_the_jwks_verifies_nothing(
        self, client: httpx.AsyncClient, jwks: JwksServer
    ) -> None:
        """A JWKS that (wrongly) publishes an HMAC key: tokens signed with it stay refused."""
        secret = b"a-symmetric-key-that-should-never-be-in-a-jwks"
        oct_jwk = {"kty": "oct", "k": b64url(secret), "kid": "sym", "alg": "HS256"}
        document = {"keys": [oct_jwk, ES256_KEY.public_jwk()]}
        jwks.route.return_value = httpx.Response(200, json=document, headers=JWKS_HEADERS)
        assert (await me(client, ES256_KEY.sign(supabase_claims()))).status_code == 200
        assert_refused(await me(client, hmac_token(supabase_claims(), secret, kid="sym")))
        forged = raw_token({"alg": "ES256", "typ": "JWT", "kid": "sym"}, supabase_claims())
        assert_refused(await me(client, forged))

    async def test_jwks_timeout_is_401(self, client: httpx.AsyncClient, jwks: JwksServer) -> None:
        jwks.route.side_effect = httpx.ReadTimeout("slow")
        assert_refused(await me(client, RS256_KEY.sign(supabase_claims())), Reason.JWKS_UNAVAILABLE)

    async def test_failing_jwks_is_not_asked_by_every_request(
        self, client: httpx.AsyncClient, jwks: JwksServer
    ) -> None:
        tokens = [ES256_KEY.sign(supabase_claims()) for _ in range(20)]
        jwks.hold_replies_until(len(tokens), httpx.ConnectError("connection refused"))
        responses = await asyncio.gather(*(me(client, t) for t in tokens))
        for response in responses:
            assert_refused(response)
        assert jwks.fetches == 1
        jwks.publish(ES256_KEY)
        jwks.clock.advance(5)
        assert (await me(client, tokens[0])).status_code == 200, "it recovers after a backoff"
        assert jwks.fetches == 2

    async def test_keys_are_cached(self, client: httpx.AsyncClient, jwks: JwksServer) -> None:
        for _ in range(5):
            assert (await me(client, ES256_KEY.sign(supabase_claims()))).status_code == 200
            assert (await me(client, RS256_KEY.sign(supabase_claims()))).status_code == 200
        assert jwks.fetches == 1

    async def test_cache_expires_after_max_age(
        self, client: httpx.AsyncClient, jwks: JwksServer
    ) -> None:
        jwks.publish(ES256_KEY, headers={"Cache-Control": "public, max-age=60"})
        token = ES256_KEY.sign(supabase_claims())
        assert (await me(client, token)).status_code == 200
        jwks.clock.advance(59)
        assert (await me(client, token)).status_code == 200
        assert jwks.fetches == 1
        jwks.clock.advance(2)
        assert (await me(client, token)).status_code == 200
        assert jwks.fetches == 2

    async def test_cache_never_longer_than_600_seconds(
        self, client: httpx.AsyncClient, jwks: JwksServer
    ) -> None:
        jwks.publish(ES256_KEY, headers={"Cache-Control": "public, max-age=86400"})
        token = ES256_KEY.sign(supabase_claims())
        assert (await me(client, token)).status_code == 200
        jwks.clock.advance(601)
        assert (await me(client, token)).status_code == 200
        assert jwks.fetches == 2

    async def test_removed_key_stops_verifying_after_expiry(
        self, client: httpx.AsyncClient, jwks: JwksServer
    ) -> None:
        """A revoked key leaves the JWKS: once the cache expires its tokens fail (fail closed)."""
        token = RS256_KEY.sign(supabase_claims())
        assert (await me(client, token)).status_code == 200
        jwks.publish(ES256_KEY)
        jwks.clock.advance(601)
        assert_refused(await me(client, token))

    async def test_expired_cache_with_jwks_down_is_401(
        self, client: httpx.AsyncClient, jwks: JwksServer
    ) -> None:
        token = ES256_KEY.sign(supabase_claims())
        assert (await me(client, token)).status_code == 200
        jwks.route.side_effect = httpx.ConnectError("down")
        jwks.clock.advance(601)
        assert_refused(await me(client, token))

    async def test_rotated_key_found_by_refetch(
        self, client: httpx.AsyncClient, jwks: JwksServer
    ) -> None:
        assert (await me(client, ES256_KEY.sign(supabase_claims()))).status_code == 200
        new_key = ec_key("es256-key-2")
        jwks.publish(ES256_KEY, new_key)
        claims = supabase_claims()
        assert_accepted(await me(client, new_key.sign(claims)), claims)
        assert jwks.fetches == 2

    async def test_burst_of_unknown_kids_refetches_once_per_interval(
        self, client: httpx.AsyncClient, jwks: JwksServer
    ) -> None:
        assert (await me(client, ES256_KEY.sign(supabase_claims()))).status_code == 200
        strangers = [ec_key(f"forged-{i}") for i in range(3)]
        tokens = [strangers[i % 3].sign(supabase_claims(), kid=f"kid-{i}") for i in range(60)]
        reply = httpx.Response(200, json=jwks_document(ES256_KEY), headers=JWKS_HEADERS)
        jwks.hold_replies_until(len(tokens), reply)
        responses = await asyncio.gather(*(me(client, t) for t in tokens))
        for response in responses:
            assert_refused(response)
        assert jwks.fetches == 2, "a burst of unknown kids shares one refetch"
        jwks.clock.advance(300)
        assert_refused(await me(client, tokens[0]))
        assert jwks.fetches == 2, "no second refetch within the interval"
        jwks.clock.advance(301)  # the interval (the 600 s cache time) is over
        assert_refused(await me(client, tokens[1]))
        assert jwks.fetches == 3

    async def test_concurrent_first_requests_share_one_fetch(
        self, client: httpx.AsyncClient, jwks: JwksServer
    ) -> None:
        tokens = [ES256_KEY.sign(supabase_claims()) for _ in range(30)]
        reply = httpx.Response(200, json=jwks_document(ES256_KEY), headers=JWKS_HEADERS)
        jwks.hold_replies_until(len(tokens), reply)
        responses = await asyncio.gather(*(me(client, t) for t in tokens))
        assert [r.status_code for r in responses] == [200] * 30
        assert jwks.fetches == 1


class TestVerifiedTokenCache:
    async def test_a_seen_token_is_not_verified_again(
        self, client: httpx.AsyncClient, wall_clock: FakeClock, decodes: list[str]
    ) -> None:
        claims = supabase_claims()
        token = hs256_token(claims)
        for _ in range(3):
            assert_accepted(await me(client, token), claims)
        assert decodes == [token]

    async def test_entry_never_outlives_exp(
        self, client: httpx.AsyncClient, wall_clock: FakeClock, decodes: list[str]
    ) -> None:
        token = hs256_token(supabase_claims(exp=int(wall_clock.now) + 30))
        assert (await me(client, token)).status_code == 200
        wall_clock.advance(29)
        assert (await me(client, token)).status_code == 200
        assert len(decodes) == 1
        wall_clock.advance(2)  # past exp by the cache's clock: verified afresh
        await me(client, token)
        assert len(decodes) == 2

    async def test_entry_lasts_a_minute_at_most(
        self, client: httpx.AsyncClient, wall_clock: FakeClock, decodes: list[str]
    ) -> None:
        token = hs256_token(supabase_claims())
        assert (await me(client, token)).status_code == 200
        wall_clock.advance(61)
        assert (await me(client, token)).status_code == 200
        assert len(decodes) == 2

    async def test_refused_tokens_are_not_remembered(
        self, client: httpx.AsyncClient, wall_clock: FakeClock, decodes: list[str]
    ) -> None:
        token = hs256_token(supabase_claims(role="anon"))
        assert_refused(await me(client, token))
        assert_refused(await me(client, token))
        assert len(decodes) == 2


def test_every_reason_has_an_rfc_6750_safe_description() -> None:
    """error_description allows printable ASCII without `"` and `\\`; every code has one."""
    assert set(DESCRIPTIONS) == set(Reason)
    for description in DESCRIPTIONS.values():
        assert all(0x20 <= ord(c) <= 0x7E and c not in '"\\' for c in description), description
    assert len(set(DESCRIPTIONS.values())) == len(DESCRIPTIONS), "each reason reads differently"
