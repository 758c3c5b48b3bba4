"""id_token verification: the signature against the provider's JWKS, then the OpenID Connect claim rules.

Signatures are checked with PyJWT (on `cryptography`) for RS256, ES256 and
EdDSA only; the key is chosen by the token's `kid` and must be of the kind its
`alg` names. Claims: `iss` equals the issuer, `aud` holds the client id, `azp`
(required when there are several audiences) is the client id, `exp` and `iat`
are present and checked with a small clock skew, and `nonce` equals the one
sent at login.
"""

import jwt

ALGORITHMS = ("RS256", "ES256", "EdDSA")
CLOCK_SKEW_SECONDS = 60


class TokenError(Exception):
    """The id_token is not acceptable; the message says why (for the log, never for the user)."""


class UnknownKey(TokenError):
    """The id_token names a key the JWKS does not hold (the keys may have rotated: fetch them again)."""


def parse_jwks(document):
    """{kid: PyJWK} of the usable signing keys of a JWKS document (a dict); keys without a kid are keyed by ""."""
    keys = {}
    for entry in document.get("keys", ()) if isinstance(document, dict) else ():
        if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
            continue
        try:
            key = jwt.PyJWK.from_dict(entry)
        except (jwt.PyJWKError, jwt.InvalidKeyError):
            continue  # a key type or curve we do not verify with
        if key.algorithm_name in ALGORITHMS:
            keys.setdefault(entry.get("kid", ""), key)
    return keys


def _header(id_token):
    try:
        return jwt.get_unverified_header(id_token)
    except jwt.DecodeError as error:
        raise TokenError(f"id_token is not a JWS: {error}") from None


def key_id(id_token):
    """The `kid` of an id_token's header ("" when absent); TokenError when the header is unreadable."""
    kid = _header(id_token).get("kid", "")
    return kid if isinstance(kid, str) else ""


def verify_id_token(id_token, keys, *, issuer, client_id, nonce):
    """The claims of `id_token` once signature and claims pass; TokenError (UnknownKey for a missing kid) otherwise.

    `keys` is what parse_jwks gave for the provider's JWKS.
    """
    header = _header(id_token)
    kid = header.get("kid", "")
    key = keys.get(kid) if isinstance(kid, str) else None
    if key is None:
        raise UnknownKey(f"id_token is signed with key {kid!r}, which the provider's JWKS does not hold")
    algorithm = header.get("alg")
    if algorithm not in ALGORITHMS:
        raise TokenError(f"id_token algorithm {algorithm!r} is not one of {', '.join(ALGORITHMS)}")
    if algorithm != key.algorithm_name:
        raise TokenError(f"id_token algorithm {algorithm} does not match key {kid!r} ({key.algorithm_name})")
    try:
        claims = jwt.decode(
            id_token, key.key, algorithms=[algorithm], audience=client_id, issuer=issuer,
            leeway=CLOCK_SKEW_SECONDS, options={"require": ["iss", "aud", "exp", "iat", "sub"]},
        )
    except jwt.PyJWTError as error:
        raise TokenError(f"id_token rejected: {error}") from None
    audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
    azp = claims.get("azp")
    if (len(audiences) > 1 or azp is not None) and azp != client_id:
        raise TokenError(f"id_token azp {azp!r} is not the client id")
    if not nonce or claims.get("nonce") != nonce:
        raise TokenError("id_token nonce does not match the login's")
    return claims
