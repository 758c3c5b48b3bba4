"""The oidc flow from Python against a real npm oidc-provider on loopback: login, callback, logout, failures."""

import asyncio
import http.server
import json
import ssl
import threading
import time
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest

from oidc_provider import CLIENT_ID, CLIENT_SECRET, Provider, free_port, http_request, private_jwk, sign_in
from tls_pki import make_test_pki
from zeroserve.core.upstream import UpstreamOptions, Upstreams
from zeroserve.plugins.oidc import flow
from zeroserve.plugins.oidc.discovery import Discovery
from zeroserve.plugins.oidc.http import ProviderClient, ProviderError

REDIRECT_URI = "https://127.0.0.1:9/callback"
SECRET = "flow-test-cookie-secret-0123456789"


@pytest.fixture(scope="module")
def provider(tmp_path_factory):
    """An oidc-provider signing with RS256, client_secret_basic, restartable with new keys."""
    op = Provider(tmp_path_factory.mktemp("op"), [REDIRECT_URI], ["https://127.0.0.1:9/bye"]).start()
    yield op
    op.stop()


def _config(provider, **extra):
    return flow.parse_config(json.dumps({"issuer": provider.issuer, "client_id": CLIENT_ID,
                                         "client_secret": CLIENT_SECRET, "redirect_uri": REDIRECT_URI,
                                         "cookie_secret": SECRET, **extra}))


class Relying:
    """The plugin's per-process pieces, made inside a running event loop."""

    def __init__(self, min_refresh_seconds=0.0):
        self.upstreams = Upstreams(asyncio.get_running_loop(), UpstreamOptions())
        self.client = ProviderClient(self.upstreams, allow_insecure=True)
        self.discovery = Discovery(self.client, min_refresh_seconds=min_refresh_seconds)


def _header(reply, name):
    return [value for key, value in reply.headers if key == name]


def _cookie_pair(set_cookie):
    return set_cookie.split(";", 1)[0]


async def _login(rp, config, return_to="/private"):
    """(callback query, state Cookie header) after a form login at the provider."""
    begin = await flow.begin_login(config, rp.discovery, return_to, secure=True)
    assert begin.status == 302
    location = _header(begin, "location")[0]
    callback = await asyncio.to_thread(sign_in, location, REDIRECT_URI)
    return urlsplit(callback).query, _cookie_pair(_header(begin, "set-cookie")[0]), location


def test_flow_logs_in_and_opens_a_session(provider):
    """begin_login → provider form → callback gives a 302 to return_to with a session holding the user's claims."""
    async def scenario():
        rp = Relying()
        config = _config(provider)
        query, state_cookie, location = await _login(rp, config)
        params = parse_qs(urlsplit(location).query)
        assert params["code_challenge_method"] == ["S256"] and params["client_id"] == [CLIENT_ID]
        reply = await flow.handle_callback(config, rp.discovery, rp.client, query, state_cookie, secure=True)
        assert reply.status == 302, reply.body
        assert _header(reply, "location") == ["/private"]
        session_cookie, cleared = _header(reply, "set-cookie")
        assert session_cookie.startswith("__zs_oidc_session=")
        assert "HttpOnly" in session_cookie and "SameSite=Lax" in session_cookie and "Secure" in session_cookie
        assert cleared.startswith("__zs_oidc_state=;") and "Max-Age=0" in cleared
        claims = flow.session_claims(config.sealer, _cookie_pair(session_cookie))
        assert claims["email"] == "alice@example.test" and claims["sub"] == "alice"
        return query, state_cookie, session_cookie
    asyncio.run(scenario())


def test_flow_refuses_a_replayed_code(provider):
    """The same code and state a second time answers 502 authentication failed."""
    async def scenario():
        rp = Relying()
        config = _config(provider)
        query, state_cookie, _ = await _login(rp, config)
        first = await flow.handle_callback(config, rp.discovery, rp.client, query, state_cookie, secure=True)
        again = await flow.handle_callback(config, rp.discovery, rp.client, query, state_cookie, secure=True)
        return first.status, again.status, again.body
    assert asyncio.run(scenario()) == (302, 502, b"authentication failed")


def test_flow_state_failures_answer_400(provider):
    """A missing code, missing cookie, tampered cookie or another login's state answers the original's 400s."""
    async def scenario():
        rp = Relying()
        config = _config(provider)
        query, state_cookie, _ = await _login(rp, config)
        _, other_cookie, _ = await _login(rp, config)
        tampered = state_cookie[:-2] + ("AA" if not state_cookie.endswith("AA") else "BB")
        cases = {
            "missing code or state": ("state=x", state_cookie),
            "missing login state": (query, "other=1"),
            "invalid or expired login state": (query, tampered),
            "state mismatch": (query, other_cookie),
        }
        results = {}
        for body, (q, cookie) in cases.items():
            reply = await flow.handle_callback(config, rp.discovery, rp.client, q, cookie, secure=True)
            results[body] = (reply.status, reply.body.decode())
        return results
    for body, answer in asyncio.run(scenario()).items():
        assert answer == (400, body)


def test_flow_refuses_an_open_redirect_return_to(provider):
    """begin_login with an absolute return_to answers 400 and sets no state cookie."""
    async def scenario():
        return await flow.begin_login(_config(provider), Relying().discovery, "https://evil.example/", secure=True)
    reply = asyncio.run(scenario())
    assert reply.status == 400 and reply.body == b"invalid return_to" and not _header(reply, "set-cookie")


@pytest.mark.parametrize("method", ["client_secret_post", "client_secret_basic"])
def test_flow_authenticates_the_client_both_ways(provider, method):
    """The code exchange works with client_secret_post and client_secret_basic; a wrong secret answers 502."""
    async def scenario():
        rp = Relying()
        answers = []
        for secret in (CLIENT_SECRET, "wrong-secret"):
            config = _config(provider, token_endpoint_auth_method=method, client_secret=secret)
            query, state_cookie, _ = await _login(rp, config)
            reply = await flow.handle_callback(config, rp.discovery, rp.client, query, state_cookie, secure=True)
            answers.append(reply.status)
        return answers
    assert asyncio.run(scenario()) == [302, 502]


def test_flow_follows_a_key_rotation(provider):
    """After the provider restarts with a new key, the cached JWKS is refreshed on the unknown kid and login works."""
    async def scenario():
        rp = Relying()
        config = _config(provider)
        query, state_cookie, _ = await _login(rp, config)
        first = await flow.handle_callback(config, rp.discovery, rp.client, query, state_cookie, secure=True)
        await asyncio.to_thread(provider.restart, "key-rotated")
        query, state_cookie, _ = await _login(rp, config)
        second = await flow.handle_callback(config, rp.discovery, rp.client, query, state_cookie, secure=True)
        return first.status, second.status, second.body
    assert asyncio.run(scenario()) == (302, 302, b"")


def test_flow_logout_goes_through_the_end_session_endpoint(provider):
    """logout clears the session and redirects to end_session_endpoint with id_token_hint and the return URL."""
    async def scenario():
        rp = Relying()
        config = _config(provider)
        query, state_cookie, _ = await _login(rp, config)
        reply = await flow.handle_callback(config, rp.discovery, rp.client, query, state_cookie, secure=True)
        session = _cookie_pair(_header(reply, "set-cookie")[0])
        return await flow.logout(config, rp.discovery, session, "https://127.0.0.1:9/bye", secure=True)
    reply = asyncio.run(scenario())
    assert reply.status == 302
    location = urlsplit(_header(reply, "location")[0])
    assert f"{location.scheme}://{location.netloc}{location.path}" == provider.issuer + "/session/end"
    params = parse_qs(location.query)
    assert params["post_logout_redirect_uri"] == ["https://127.0.0.1:9/bye"] and params["id_token_hint"][0].count(".") == 2
    assert _header(reply, "set-cookie")[0].startswith("__zs_oidc_session=;")
    status, _, page = http_request("GET", _header(reply, "location")[0])  # the provider accepts the hint
    assert status == 200 and b"logout" in page


def test_flow_provider_down_answers_502():
    """With nothing listening at the issuer, login answers 502 authentication failed."""
    async def scenario():
        config = flow.parse_config(json.dumps({"issuer": f"http://127.0.0.1:{free_port()}", "client_id": "c",
                                               "redirect_uri": REDIRECT_URI, "cookie_secret": SECRET}))
        return await flow.begin_login(config, Relying().discovery, "/", secure=True)
    reply = asyncio.run(scenario())
    assert (reply.status, reply.body) == (502, b"authentication failed")


# -- a provider that answers with chosen id_tokens ---------------------------------------------


class ChosenTokenProvider:
    """A loopback HTTP provider whose token endpoint answers `self.id_token` (set by each test), with an RS256 JWKS."""

    def __init__(self, tls=None):
        self.jwk, self.key = private_jwk("RS256", "good-key")
        self.id_token = ""
        self.fetches = []  # the paths GET asked for, in order
        provider = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                provider.fetches.append(self.path)
                documents = {"/.well-known/openid-configuration": {
                    "issuer": provider.issuer, "authorization_endpoint": provider.issuer + "/auth",
                    "token_endpoint": provider.issuer + "/token", "jwks_uri": provider.issuer + "/jwks"},
                    "/jwks": {"keys": [{k: v for k, v in provider.jwk.items() if k not in ("d", "p", "q", "dp", "dq", "qi")}]}}
                self._answer(documents.get(self.path, {}))

            def do_POST(self):
                self.rfile.read(int(self.headers["content-length"]))
                self._answer({"id_token": provider.id_token, "token_type": "Bearer", "access_token": "a"})

            def _answer(self, document):
                body = json.dumps(document).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        port = self.server.server_address[1]
        self.issuer = f"https://localhost:{port}" if tls is not None else f"http://127.0.0.1:{port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def token(self, nonce, key=None, kid="good-key", **overrides):
        now = int(time.time())
        claims = {"iss": self.issuer, "aud": CLIENT_ID, "sub": "mallory", "nonce": nonce, "iat": now,
                  "exp": now + 300, **overrides}
        return jwt.encode(claims, key or self.key, algorithm="RS256", headers={"kid": kid})


@pytest.fixture(scope="module")
def chosen():
    provider = ChosenTokenProvider()
    yield provider
    provider.server.shutdown()


@pytest.mark.parametrize("case, reason", [
    ("wrong nonce", "nonce does not match"),
    ("wrong audience", "Audience"),
    ("expired", "Signature has expired"),
    ("unknown key", "key 'rogue-key'"),
    ("good", None),
])
def test_flow_callback_refuses_bad_id_tokens(chosen, case, reason, caplog):
    """Wrong nonce, wrong audience, an expired token or a key not in the JWKS answer 502 with the reason logged."""
    async def scenario():
        rp = Relying()
        config = _config(chosen)
        begin = await flow.begin_login(config, rp.discovery, "/", secure=True)
        params = parse_qs(urlsplit(_header(begin, "location")[0]).query)
        nonce = params["nonce"][0]
        chosen.id_token = {
            "wrong nonce": lambda: chosen.token("another-nonce"),
            "wrong audience": lambda: chosen.token(nonce, aud="someone-else"),
            "expired": lambda: chosen.token(nonce, exp=int(time.time()) - 3600, iat=int(time.time()) - 7200),
            "unknown key": lambda: chosen.token(nonce, key=private_jwk("RS256", "rogue-key")[1], kid="rogue-key"),
            "good": lambda: chosen.token(nonce),
        }[case]()
        return await flow.handle_callback(config, rp.discovery, rp.client, f"code=c&state={params['state'][0]}",
                                          _cookie_pair(_header(begin, "set-cookie")[0]), secure=True)
    with caplog.at_level("WARNING", logger="zeroserve.oidc"):
        reply = asyncio.run(scenario())
    if reason is None:
        assert reply.status == 302
    else:
        assert (reply.status, reply.body) == (502, b"authentication failed")
        assert reason in caplog.text and "[oidc] authentication failed" in caplog.text


def test_discovery_caches_and_refreshes_on_unknown_kid(chosen):
    """Metadata and keys are fetched once per TTL; an unknown kid refetches the keys, at most once per interval."""
    now = [1000.0]

    async def scenario():
        discovery = Discovery(Relying().client, ttl=3600, min_refresh_seconds=5, clock=lambda: now[0])
        chosen.fetches.clear()
        meta = await discovery.metadata(chosen.issuer)
        await discovery.metadata(chosen.issuer)
        assert set(await discovery.keys(meta.jwks_uri)) == {"good-key"}
        await discovery.keys(meta.jwks_uri, kid="good-key")
        await discovery.keys(meta.jwks_uri, kid="new-key")  # within the interval: no fetch
        counts = [len(chosen.fetches)]
        now[0] += 6
        await discovery.keys(meta.jwks_uri, kid="new-key")
        counts.append(len(chosen.fetches))
        now[0] += 3600
        await discovery.metadata(chosen.issuer)
        counts.append(len(chosen.fetches))
        return counts
    assert asyncio.run(scenario()) == [2, 3, 4]
    assert chosen.fetches == ["/.well-known/openid-configuration", "/jwks", "/jwks",
                              "/.well-known/openid-configuration"]


def test_provider_client_refuses_plain_http_without_the_test_flag(chosen):
    """Without --oidc-allow-insecure-issuer an http:// issuer is refused before any connection."""
    async def scenario():
        client = ProviderClient(Upstreams(asyncio.get_running_loop(), UpstreamOptions()), allow_insecure=False)
        with pytest.raises(ProviderError, match="not https"):
            await client.request("GET", chosen.issuer + "/jwks")
    chosen.fetches.clear()
    asyncio.run(scenario())
    assert chosen.fetches == []


def test_provider_client_uses_tls_checked_against_the_ca(tmp_path):
    """Discovery over https:// works with the provider's CA and fails with the system CAs (unknown issuer)."""
    pki = make_test_pki(tmp_path)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(pki.leaf_cert, pki.leaf_key)
    provider = ChosenTokenProvider(tls)

    async def scenario(ca_file):
        client = ProviderClient(Upstreams(asyncio.get_running_loop(), UpstreamOptions(ca_file=ca_file)))
        return await Discovery(client).metadata(provider.issuer)
    try:
        assert asyncio.run(scenario(str(pki.ca_cert))).token_endpoint == provider.issuer + "/token"
        with pytest.raises(ProviderError):
            asyncio.run(scenario(None))
    finally:
        provider.server.shutdown()


@pytest.mark.parametrize("alg", ["ES256", "EdDSA"])
def test_flow_verifies_ec_and_edwards_signed_id_tokens(alg, tmp_path):
    """A provider signing id_tokens with ES256 or EdDSA: the login completes with the user's claims."""
    op = Provider(tmp_path, [REDIRECT_URI], alg=alg).start()

    async def scenario():
        rp = Relying()
        config = _config(op)
        query, state_cookie, _ = await _login(rp, config)
        reply = await flow.handle_callback(config, rp.discovery, rp.client, query, state_cookie, secure=True)
        return flow.session_claims(config.sealer, _cookie_pair(_header(reply, "set-cookie")[0]))
    try:
        assert asyncio.run(scenario())["email"] == "alice@example.test"
    finally:
        op.stop()
