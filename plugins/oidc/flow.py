"""The relying party's four steps (begin login, callback, session check, logout) as replies the helpers send.

Each step takes the parsed `OidcConfig`, what it needs of the request and the
per-process `Discovery`, and returns a `Reply` (status, headers, body) or, for
the session check, the claims. Nothing here touches script memory.

Behaviour follows the original server (cookie names, bodies, status codes)
with its holes closed: the id_token is verified (see tokens.py), `return_to`
must be a same-origin path, and logout goes through the provider's
end_session_endpoint with an id_token_hint when there is one.
"""

import base64
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import parse_qsl, quote, urlencode

from zeroserve.plugins.oidc.http import ProviderError
from zeroserve.plugins.oidc.seal import SESSION_AAD, STATE_AAD, Sealer, b64url
from zeroserve.plugins.oidc.tokens import TokenError, UnknownKey, key_id, verify_id_token

log = logging.getLogger("zeroserve.oidc")

STATE_COOKIE = "__zs_oidc_state"
SESSION_COOKIE = "__zs_oidc_session"
STATE_LIFETIME = 600
DEFAULT_SCOPE = "openid profile email"
DEFAULT_SESSION_TTL = 3600
AUTH_METHODS = ("client_secret_post", "client_secret_basic")
# Browsers drop cookies above 4096 bytes; the id_token (for logout's id_token_hint) is kept only below this.
SESSION_COOKIE_LIMIT = 3800


class OidcConfigError(ValueError):
    """The script's configuration object is unusable; the message says which key is wrong."""


@dataclass(frozen=True, slots=True)
class OidcConfig:
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    end_session_endpoint: str
    client_id: str
    client_secret: str
    redirect_uri: str
    scope: str
    token_auth_method: str  # "" = the first of AUTH_METHODS the provider supports
    session_ttl: int
    sealer: Sealer


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    headers: tuple  # ((name, value), ...); Set-Cookie may repeat
    body: bytes


def _text(config, key, required=False):
    value = config.get(key)
    if value is None or value == "":
        if required:
            raise OidcConfigError(f"oidc configuration has no {key!r}")
        return ""
    if not isinstance(value, str):
        raise OidcConfigError(f"oidc configuration key {key!r} must be a string")
    return value


def sealer_only(config_text):
    """The Sealer of a configuration's cookie_secret (all zs_oidc_session_verify needs); OidcConfigError otherwise."""
    config = _object(config_text)
    return _sealer(_text(config, "cookie_secret", required=True))


@lru_cache(maxsize=64)
def _sealer(secret):
    try:
        return Sealer(secret)
    except ValueError as error:
        raise OidcConfigError(str(error)) from None


def _object(config_text):
    try:
        config = json.loads(config_text)
    except ValueError:
        raise OidcConfigError("oidc configuration is not JSON") from None
    if not isinstance(config, dict):
        raise OidcConfigError("oidc configuration is not a JSON object")
    return config


@lru_cache(maxsize=64)
def parse_config(config_text):
    """The OidcConfig of a configuration object's JSON text (scripts build the same one on every request)."""
    config = _object(config_text)
    issuer = _text(config, "issuer").rstrip("/")
    authorization = _text(config, "authorization_endpoint")
    token = _text(config, "token_endpoint")
    jwks_uri = _text(config, "jwks_uri")
    if not issuer and not (authorization and token and jwks_uri):
        raise OidcConfigError("oidc configuration needs 'issuer', or 'authorization_endpoint', 'token_endpoint' "
                              "and 'jwks_uri' (the keys that verify id_tokens)")
    method = _text(config, "token_endpoint_auth_method")
    if method and method not in AUTH_METHODS:
        raise OidcConfigError(f"oidc token_endpoint_auth_method {method!r} is not one of {', '.join(AUTH_METHODS)}")
    ttl = config.get("session_ttl_secs", DEFAULT_SESSION_TTL)
    ttl = ttl if isinstance(ttl, int) and not isinstance(ttl, bool) and ttl > 0 else DEFAULT_SESSION_TTL
    return OidcConfig(
        issuer=issuer, authorization_endpoint=authorization, token_endpoint=token, jwks_uri=jwks_uri,
        end_session_endpoint=_text(config, "end_session_endpoint"),
        client_id=_text(config, "client_id", required=True), client_secret=_text(config, "client_secret"),
        redirect_uri=_text(config, "redirect_uri", required=True), scope=_text(config, "scope") or DEFAULT_SCOPE,
        token_auth_method=method, session_ttl=ttl,
        sealer=_sealer(_text(config, "cookie_secret", required=True)),
    )


@dataclass(frozen=True, slots=True)
class Endpoints:
    """Where this login goes: configured endpoints, completed by discovery when an issuer is given."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    end_session_endpoint: str
    token_auth_method: str


async def endpoints(config, discovery):
    """The Endpoints of `config` (discovering what it does not name); ProviderError when discovery fails."""
    if config.authorization_endpoint and config.token_endpoint and config.jwks_uri:
        return Endpoints(config.issuer, config.authorization_endpoint, config.token_endpoint, config.jwks_uri,
                         config.end_session_endpoint, config.token_auth_method or AUTH_METHODS[0])
    meta = await discovery.metadata(config.issuer)
    method = config.token_auth_method or next((m for m in AUTH_METHODS if m in meta.token_auth_methods),
                                              AUTH_METHODS[1])
    return Endpoints(config.issuer, config.authorization_endpoint or meta.authorization_endpoint,
                     config.token_endpoint or meta.token_endpoint, config.jwks_uri or meta.jwks_uri,
                     config.end_session_endpoint or meta.end_session_endpoint, method)


# -- cookies and replies ------------------------------------------------------------------


def cookie_value(cookie_header, name):
    """The value of cookie `name` in a Cookie header ("name=value" pairs split on ';', first match wins), or None."""
    for pair in cookie_header.split(";"):
        key, sep, value = pair.strip().partition("=")
        if sep and key == name:
            return value
    return None


def set_cookie(name, value, max_age, secure):
    attributes = f"{name}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}"
    return ("set-cookie", attributes + "; Secure" if secure else attributes)


def _text_reply(status, body, *headers):
    return Reply(status, (("content-type", "text/plain; charset=utf-8"), *headers), body.encode())


def _redirect(location, *headers):
    return Reply(302, (("location", location), *headers), b"")


def failed(reason):
    """The 502 the user sees when the provider or its answer fails; the reason goes to the log only."""
    log.warning("[oidc] authentication failed: %s", reason)
    return _text_reply(502, "authentication failed")


def safe_return_to(return_to):
    """`return_to` when it is a path on this origin ("" means "/"), else None (an open redirect)."""
    if not return_to:
        return "/"
    if (not return_to.startswith("/") or return_to.startswith("//") or "\\" in return_to
            or any(ord(ch) < 0x21 or ord(ch) == 0x7f for ch in return_to)):
        return None
    return return_to


def _with_query(url, params):
    return url + ("&" if "?" in url else "?") + urlencode(params, quote_via=quote)


# -- the four steps -----------------------------------------------------------------------


async def begin_login(config, discovery, return_to, secure):
    """302 to the provider's authorization endpoint with a sealed state cookie (state, nonce, PKCE S256 verifier)."""
    target = safe_return_to(return_to)
    if target is None:
        log.warning("[oidc] return_to %r refused: only a path on this site is accepted", return_to)
        return _text_reply(400, "invalid return_to")
    try:
        where = await endpoints(config, discovery)
    except ProviderError as error:
        return failed(f"discovery: {error}")
    state, nonce, verifier = b64url(os.urandom(16)), b64url(os.urandom(16)), b64url(os.urandom(32))
    location = _with_query(where.authorization_endpoint, {
        "response_type": "code", "client_id": config.client_id, "redirect_uri": config.redirect_uri,
        "scope": config.scope, "state": state, "nonce": nonce, "code_challenge": pkce_challenge(verifier),
        "code_challenge_method": "S256",
    })
    sealed = config.sealer.seal(STATE_AAD, {"state": state, "nonce": nonce, "code_verifier": verifier,
                                            "return_to": target}, STATE_LIFETIME)
    return _redirect(location, set_cookie(STATE_COOKIE, sealed, STATE_LIFETIME, secure))


def pkce_challenge(verifier):
    """The S256 code_challenge of a code_verifier (RFC 7636 §4.2)."""
    return b64url(hashlib.sha256(verifier.encode("ascii")).digest())


async def handle_callback(config, discovery, client, query, cookie_header, secure):
    """Checks the state, exchanges the code, verifies the id_token: 302 to return_to with the session cookie."""
    params = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        params.setdefault(key, value)
    code, state = params.get("code"), params.get("state")
    if not code or not state:
        return _text_reply(400, "missing code or state")
    sealed = cookie_value(cookie_header, STATE_COOKIE)
    if not sealed:
        return _text_reply(400, "missing login state")
    login = config.sealer.open(STATE_AAD, sealed)
    if login is None:
        return _text_reply(400, "invalid or expired login state")
    if login.get("state") != state:
        return _text_reply(400, "state mismatch")
    try:
        where = await endpoints(config, discovery)
        id_token = await _exchange_code(config, where, client, code, login["code_verifier"])
        keys = await discovery.keys(where.jwks_uri)
        try:
            claims = verify_id_token(id_token, keys, issuer=where.issuer or None, client_id=config.client_id,
                                     nonce=login.get("nonce"))
        except UnknownKey:
            keys = await discovery.keys(where.jwks_uri, kid=key_id(id_token))
            claims = verify_id_token(id_token, keys, issuer=where.issuer or None, client_id=config.client_id,
                                     nonce=login.get("nonce"))
    except (ProviderError, TokenError) as error:
        return failed(str(error))
    lifetime = config.session_ttl
    session = config.sealer.seal(SESSION_AAD, {"claims": claims, "id_token": id_token}, lifetime)
    if len(session) > SESSION_COOKIE_LIMIT:
        session = config.sealer.seal(SESSION_AAD, {"claims": claims}, lifetime)
    return _redirect(login.get("return_to") or "/", set_cookie(SESSION_COOKIE, session, lifetime, secure),
                     set_cookie(STATE_COOKIE, "", 0, secure))


async def _exchange_code(config, where, client, code, verifier):
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": config.redirect_uri,
            "code_verifier": verifier}
    headers = [("content-type", "application/x-www-form-urlencoded")]
    if where.token_auth_method == "client_secret_basic":
        pair = f"{quote(config.client_id, safe='')}:{quote(config.client_secret, safe='')}"
        headers.append(("authorization", "Basic " + base64.b64encode(pair.encode()).decode("ascii")))
    else:
        form.update(client_id=config.client_id, client_secret=config.client_secret)
    reply = await client.request("POST", where.token_endpoint, headers, urlencode(form).encode())
    answer = reply.json() if reply.body else {}
    if reply.status >= 400 or "error" in answer:
        raise ProviderError(f"token endpoint answered {reply.status}: {answer.get('error', '')} "
                            f"{answer.get('error_description', '')}".rstrip())
    id_token = answer.get("id_token")
    if not isinstance(id_token, str) or not id_token:
        raise ProviderError("token endpoint answered no id_token")
    return id_token


def session_claims(sealer, cookie_header):
    """The id_token claims of a valid, unexpired session cookie, or None."""
    sealed = cookie_value(cookie_header, SESSION_COOKIE)
    session = sealer.open(SESSION_AAD, sealed) if sealed else None
    claims = session.get("claims") if session else None
    return claims if isinstance(claims, dict) else None


async def logout(config, discovery, cookie_header, url, secure):
    """Clears the session; through the provider's end_session_endpoint (with id_token_hint) when it has one."""
    clear = set_cookie(SESSION_COOKIE, "", 0, secure)
    end_session = ""
    if config is not None:
        try:
            end_session = (await endpoints(config, discovery)).end_session_endpoint
        except ProviderError as error:
            log.warning("[oidc] logout without the provider: %s", error)
    if end_session:
        sealed = cookie_value(cookie_header, SESSION_COOKIE)
        session = config.sealer.open(SESSION_AAD, sealed) if sealed else None
        params = {"client_id": config.client_id}
        if session and session.get("id_token"):
            params["id_token_hint"] = session["id_token"]
        if url:
            params["post_logout_redirect_uri"] = url
        return _redirect(_with_query(end_session, params), clear)
    if url:
        return _redirect(url, clear)
    return _text_reply(200, "logged out", clear)
