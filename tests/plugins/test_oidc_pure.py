"""The oidc plugin's pure parts: cookie sealing, PKCE, id_token verification, return_to and configuration rules."""

import base64
import hashlib
import json
import time

import jwt
import pytest
from nacl.bindings import crypto_aead_xchacha20poly1305_ietf_decrypt

from oidc_provider import private_jwk
from zeroserve.plugins.oidc import flow
from zeroserve.plugins.oidc.seal import SESSION_AAD, STATE_AAD, Sealer, b64url_decode
from zeroserve.plugins.oidc.tokens import TokenError, UnknownKey, parse_jwks, verify_id_token

SECRET = "a-cookie-secret-of-32-bytes-long"
ISSUER = "https://op.example"
CLIENT = "zeroserve"


def test_seal_round_trip_opens_what_it_sealed():
    """A sealed payload opens under the same secret and purpose, with its expiry added."""
    sealer = Sealer(SECRET)
    value = sealer.seal(SESSION_AAD, {"claims": {"sub": "alice"}}, 60)
    opened = sealer.open(SESSION_AAD, value)
    assert opened["claims"] == {"sub": "alice"}
    assert abs(opened["exp"] - (time.time() + 60)) < 2


def test_seal_format_matches_the_original():
    """The value is base64url(nonce24 || ciphertext || tag) under SHA-256(secret) with the original's AAD."""
    value = Sealer(SECRET).seal(STATE_AAD, {"state": "s"}, 600)
    assert "=" not in value and "+" not in value and "/" not in value
    raw = b64url_decode(value)
    key = hashlib.sha256(SECRET.encode()).digest()
    plaintext = crypto_aead_xchacha20poly1305_ietf_decrypt(raw[24:], b"zeroserve.oidc.state.v1", raw[:24], key)
    assert json.loads(plaintext)["state"] == "s"


def test_seal_refuses_tampered_expired_and_cross_purpose_values():
    """A flipped byte, a passed expiry, another purpose or another secret does not open."""
    sealer = Sealer(SECRET)
    value = sealer.seal(SESSION_AAD, {"claims": {}}, 60)
    raw = bytearray(b64url_decode(value))
    raw[30] ^= 1
    tampered = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    assert sealer.open(SESSION_AAD, tampered) is None
    assert sealer.open(STATE_AAD, value) is None
    assert Sealer(SECRET + "x").open(SESSION_AAD, value) is None
    assert sealer.open(SESSION_AAD, sealer.seal(SESSION_AAD, {}, 60, now=time.time() - 120)) is None
    assert sealer.open(SESSION_AAD, "not base64!") is None
    assert sealer.open(SESSION_AAD, "") is None


def test_seal_refuses_a_short_secret():
    """A cookie secret under 16 bytes is refused with its length in the message."""
    with pytest.raises(ValueError, match="15 bytes"):
        Sealer("x" * 15)


def test_pkce_challenge_matches_rfc7636_appendix_b():
    """The S256 challenge of RFC 7636's example verifier is the RFC's value."""
    assert flow.pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk") == \
        "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


def test_return_to_accepts_only_same_origin_paths():
    """return_to is a path on this site; absolute, scheme-relative and backslash URLs are refused."""
    assert flow.safe_return_to("") == "/"
    assert flow.safe_return_to("/private/page?x=1") == "/private/page?x=1"
    for bad in ("https://evil.example/", "//evil.example/", "/\\evil.example", "evil", "/a\r\nb", "javascript:x"):
        assert flow.safe_return_to(bad) is None, bad


def test_cookie_value_takes_the_first_match():
    """Cookie pairs split on ';' and the first one of a name wins."""
    header = "a=1; __zs_oidc_session=first; __zs_oidc_session=second;b"
    assert flow.cookie_value(header, "__zs_oidc_session") == "first"
    assert flow.cookie_value(header, "missing") is None


def test_config_rejects_missing_keys_and_weak_secrets():
    """A configuration without client_id, redirect_uri, issuer or with a short secret is an OidcConfigError."""
    good = {"issuer": ISSUER, "client_id": CLIENT, "redirect_uri": "https://rp/cb", "cookie_secret": SECRET}
    config = flow.parse_config(json.dumps(good))
    assert config.scope == "openid profile email" and config.session_ttl == 3600
    assert flow.parse_config(json.dumps({**good, "session_ttl_secs": -5})).session_ttl == 3600
    for key in ("client_id", "redirect_uri", "issuer", "cookie_secret"):
        with pytest.raises(flow.OidcConfigError, match=key):
            flow.parse_config(json.dumps({k: v for k, v in good.items() if k != key}))
    with pytest.raises(flow.OidcConfigError, match="at least 16"):
        flow.parse_config(json.dumps({**good, "cookie_secret": "short"}))
    with pytest.raises(flow.OidcConfigError, match="not a JSON object"):
        flow.parse_config("[1]")


# -- id_token verification ------------------------------------------------------------------


@pytest.fixture(scope="module", params=["RS256", "ES256", "EdDSA"])
def signer(request):
    """(algorithm, private key, keys as parse_jwks gives them) for one algorithm."""
    jwk, key = private_jwk(request.param, f"kid-{request.param}")
    public = {k: v for k, v in jwk.items() if k not in ("d", "p", "q", "dp", "dq", "qi")}
    return request.param, key, parse_jwks({"keys": [public]})


def _token(signer, **overrides):
    alg, key, _ = signer
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": CLIENT, "sub": "alice", "email": "alice@example.test", "nonce": "n-1",
              "iat": now, "exp": now + 300, **overrides}
    claims = {k: v for k, v in claims.items() if v is not None}
    return jwt.encode(claims, key, algorithm=alg, headers={"kid": f"kid-{alg}"})


def _verify(signer, token, nonce="n-1"):
    return verify_id_token(token, signer[2], issuer=ISSUER, client_id=CLIENT, nonce=nonce)


def test_id_token_verifies_with_the_provider_key(signer):
    """A token signed with the JWKS key and right claims gives its claims, for RS256, ES256 and EdDSA."""
    assert _verify(signer, _token(signer))["email"] == "alice@example.test"
    assert _verify(signer, _token(signer, aud=[CLIENT, "other"], azp=CLIENT))["sub"] == "alice"


@pytest.mark.parametrize("overrides, reason", [
    ({"iss": "https://evil.example"}, "issuer"),
    ({"aud": "someone-else"}, "audience"),
    ({"aud": [CLIENT, "other"]}, "azp"),
    ({"azp": "other"}, "azp"),
    ({"exp": int(time.time()) - 600}, "expired"),
    ({"iat": int(time.time()) + 600}, "iat"),
    ({"iat": None}, "iat"),
    ({"nonce": "n-2"}, "nonce"),
    ({"nonce": None}, "nonce"),
])
def test_id_token_claim_failures_are_refused(signer, overrides, reason):
    """Wrong iss, aud, azp, expired, future or missing iat and a wrong or missing nonce are refused."""
    with pytest.raises(TokenError, match=f"(?i){reason}"):
        _verify(signer, _token(signer, **overrides))


def test_id_token_small_clock_skew_is_allowed(signer):
    """A token that expired 30 s ago still passes (60 s of skew)."""
    assert _verify(signer, _token(signer, exp=int(time.time()) - 30))["sub"] == "alice"


def test_id_token_signed_by_another_key_is_refused(signer):
    """A token with the right kid but another key's signature fails; an unknown kid is UnknownKey."""
    alg = signer[0]
    _, other = private_jwk(alg, "other")
    forged = jwt.encode({"iss": ISSUER, "aud": CLIENT, "sub": "x", "nonce": "n-1", "iat": int(time.time()),
                         "exp": int(time.time()) + 60}, other, algorithm=alg, headers={"kid": f"kid-{alg}"})
    with pytest.raises(TokenError, match="(?i)signature"):
        _verify(signer, forged)
    unknown = jwt.encode({"sub": "x"}, other, algorithm=alg, headers={"kid": "not-in-jwks"})
    with pytest.raises(UnknownKey):
        _verify(signer, unknown)


def test_id_token_unsigned_or_hmac_is_refused(signer):
    """alg none and HS256 (the JWKS key used as an HMAC secret) are refused."""
    alg = signer[0]
    for algorithm, key in (("none", None), ("HS256", "s" * 32)):
        token = jwt.encode({"sub": "x"}, key, algorithm=algorithm, headers={"kid": f"kid-{alg}"})
        with pytest.raises(TokenError, match="algorithm"):
            _verify(signer, token)
