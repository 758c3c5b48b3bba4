"""The oidc plugin in a real server: the sso example site behind a real npm oidc-provider, driven over HTTPS."""

import http.client
import json
import os
import shutil
import subprocess
import ssl
import time
from urllib.parse import parse_qs, urlsplit

import pytest

from harness import REPO, start_server, write_tree
from oidc_provider import CLIENT_ID, CLIENT_SECRET, Provider, free_port, node_modules, sign_in
from tls_pki import make_test_pki
from zeroserve.core import pack
from zeroserve.core.compile import ScriptCompiler
from zeroserve.plugins.oidc.discovery import MIN_REFRESH_SECONDS
from zeroserve.plugins.oidc.seal import SESSION_AAD, Sealer

COOKIE_SECRET = "server-test-cookie-secret-0123456789"
# A test-only script: /login?return_to=... starts a login that comes back to return_to, and
# /down starts one at a provider that is not running.
LOGIN_SCRIPT = r"""
#include "zeroserve.h"

ZS_ENTRY zs_u64 entry(void)
{
    char path[64], return_to[256];
    zs_req_path(path, sizeof path);
    if (zs_strcmp(path, "/login") == 0) {
        zs_s64 len = zs_req_query_param(ZS_STR("return_to"), return_to, sizeof return_to);
        zs_oidc_begin_login(zs_load_static_json(ZS_STR(".zeroserve/oidc.json")), return_to, (zs_u64)len);
    } else if (zs_strcmp(path, "/down") == 0) {
        zs_oidc_begin_login(zs_load_static_json(ZS_STR(".zeroserve/oidc-down.json")), ZS_STR("/"));
    }
    return 0;
}
"""


class Site:
    """The running server, the provider, and an HTTPS client trusting the test CA."""

    def __init__(self, server, port, provider, ca_file):
        self.server = server
        self.port = port
        self.provider = provider
        self.origin = f"https://localhost:{port}"
        self.ca_file = ca_file
        self.tls = ssl.create_default_context(cafile=str(ca_file))

    def get(self, target, cookies=""):
        """(status, headers as (lowercase name, value) list, body) of GET target, redirects not followed."""
        connection = http.client.HTTPSConnection("localhost", self.port, context=self.tls, timeout=20)
        try:
            connection.request("GET", target, headers={"cookie": cookies} if cookies else {})
            response = connection.getresponse()
            return response.status, [(k.lower(), v) for k, v in response.getheaders()], response.read()
        finally:
            connection.close()

    def login(self, target="/"):
        """(callback target, state cookie) after the provider's form login started at `target`."""
        status, headers, _ = self.get(target)
        assert status == 302, (status, headers)
        location = header(headers, "location")
        callback = sign_in(location, self.origin + "/callback")
        return callback[len(self.origin):], cookie_pair(header(headers, "set-cookie"))

    def session(self, target="/"):
        """The session Cookie header after a whole login."""
        callback, state_cookie = self.login(target)
        status, headers, body = self.get(callback, state_cookie)
        assert status == 302, (status, body)
        return cookie_pair(header(headers, "set-cookie"))


def header(headers, name):
    return next(value for key, value in headers if key == name)


def cookie_pair(set_cookie):
    return set_cookie.split(";", 1)[0]


@pytest.fixture(scope="module")
def site(request, tmp_path_factory):
    """The sso example with test settings, served over HTTPS with --plugins oidc, and its provider."""
    work = tmp_path_factory.mktemp("sso")
    pki = make_test_pki(work / "pki")
    port = free_port()
    origin = f"https://localhost:{port}"
    provider = Provider(work, [origin + "/callback"], [origin + "/public/"]).start()
    request.addfinalizer(provider.stop)
    source = work / "site"
    shutil.copytree(REPO / "examples" / "sites" / "sso", source)
    config = {"issuer": provider.issuer, "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
              "redirect_uri": origin + "/callback", "cookie_secret": COOKIE_SECRET}
    write_tree(source, {
        ".zeroserve/oidc.json": json.dumps(config),
        ".zeroserve/oidc-down.json": json.dumps({**config, "issuer": f"http://127.0.0.1:{free_port()}"}),
        ".zeroserve/scripts/05-login.c": LOGIN_SCRIPT,
    })
    tar = work / "sso.tar"
    pack.build(source, tar, ScriptCompiler.find(None))
    server = start_server(request, tar, "--plugins", "oidc", "--oidc-allow-insecure-issuer",
                          "--tls-addr", f"127.0.0.1:{port}", "--cert", str(pki.leaf_cert), "--key", str(pki.leaf_key))
    return Site(server, port, provider, pki.ca_cert)


def test_oidc_server_public_pages_need_no_login(site):
    """/public/ is served without a session."""
    status, _, body = site.get("/public/")
    assert status == 200 and b"Public page" in body


def test_oidc_server_protected_page_redirects_to_the_provider(site):
    """A protected page without a session answers 302 to the provider with S256 PKCE and a Secure state cookie."""
    status, headers, _ = site.get("/private/page?x=1")
    assert status == 302
    location = urlsplit(header(headers, "location"))
    assert f"{location.scheme}://{location.netloc}" == site.provider.issuer
    params = parse_qs(location.query)
    assert params["code_challenge_method"] == ["S256"] and params["redirect_uri"] == [site.origin + "/callback"]
    state_cookie = header(headers, "set-cookie")
    assert state_cookie.startswith("__zs_oidc_state=")
    for attribute in ("Path=/", "HttpOnly", "SameSite=Lax", "Max-Age=600", "Secure"):
        assert attribute in state_cookie


def test_oidc_server_login_shows_the_users_email(site):
    """After the provider's login the callback sets the session, clears the state cookie, and the page shows the email."""
    callback, state_cookie = site.login("/?from=test")
    status, headers, _ = site.get(callback, state_cookie)
    assert status == 302 and header(headers, "location") == "/?from=test"
    cookies = [value for name, value in headers if name == "set-cookie"]
    assert len(cookies) == 2, cookies
    session = next(value for value in cookies if value.startswith("__zs_oidc_session="))
    cleared = next(value for value in cookies if value.startswith("__zs_oidc_state="))
    assert cleared.startswith("__zs_oidc_state=;") and "Max-Age=0" in cleared
    for attribute in ("__zs_oidc_session=", "HttpOnly", "SameSite=Lax", "Secure", "Max-Age=3600"):
        assert attribute in session
    status, _, body = site.get("/", cookie_pair(session))
    assert status == 200 and b'<strong id="email">alice@example.test</strong>' in body


def test_oidc_server_state_mismatch_answers_400(site):
    """A callback whose state is not the state cookie's answers 400 state mismatch."""
    callback, _ = site.login()
    _, other_state = site.login()
    status, _, body = site.get(callback, other_state)
    assert (status, body) == (400, b"state mismatch")


def test_oidc_server_missing_state_cookie_answers_400(site):
    """A callback without the state cookie answers 400 missing login state."""
    callback, _ = site.login()
    assert site.get(callback)[::2] == (400, b"missing login state")


def test_oidc_server_replayed_code_answers_502(site):
    """The same callback twice: the provider refuses the used code and the server answers 502."""
    callback, state_cookie = site.login()
    assert site.get(callback, state_cookie)[0] == 302
    assert site.get(callback, state_cookie)[::2] == (502, b"authentication failed")
    site.server.wait_for(r"\[oidc\] authentication failed: token endpoint answered 400")


def test_oidc_server_tampered_or_expired_session_is_no_session(site):
    """A session cookie with a flipped character or a past expiry sends the user to login again."""
    session = site.session()
    name, value = session.split("=", 1)
    tampered = f"{name}={value[:10]}{'A' if value[10] != 'A' else 'B'}{value[11:]}"
    expired = Sealer(COOKIE_SECRET).seal(SESSION_AAD, {"claims": {"sub": "alice", "email": "a@b"}}, 60,
                                         now=time.time() - 3600)
    assert site.get("/", session)[0] == 200
    assert site.get("/", tampered)[0] == 302
    assert site.get("/", f"__zs_oidc_session={expired}")[0] == 302


def test_oidc_server_refuses_an_open_redirect(site):
    """A return_to that leaves the site answers 400 and logs why; a path is accepted."""
    status, _, body = site.get("/login?return_to=https%3A%2F%2Fevil.example%2F")
    assert (status, body) == (400, b"invalid return_to")
    site.server.wait_for(r"\[oidc\] return_to 'https://evil.example/' refused")
    assert site.get("/login?return_to=%2Fpublic%2F")[0] == 302


def test_oidc_server_logout_goes_to_the_provider(site):
    """/logout clears the session cookie and redirects to the provider's end_session_endpoint with id_token_hint."""
    status, headers, _ = site.get("/logout", site.session())
    assert status == 302
    location = urlsplit(header(headers, "location"))
    assert location.path == "/session/end" and "id_token_hint" in parse_qs(location.query)
    cleared = header(headers, "set-cookie")
    assert cleared.startswith("__zs_oidc_session=;") and "Max-Age=0" in cleared


def test_oidc_server_provider_down_answers_502_and_keeps_serving(site):
    """A login at a provider that is not running answers 502; other requests are still served."""
    assert site.get("/down")[::2] == (502, b"authentication failed")
    assert site.get("/public/")[0] == 200


def test_oidc_server_follows_a_key_rotation(site):
    """After the provider rotates its signing key, a new login still verifies (the JWKS is fetched again)."""
    assert site.get("/", site.session())[0] == 200
    site.provider.restart("rotated-key")
    time.sleep(MIN_REFRESH_SECONDS)  # the server refetches a JWKS at most this often
    status, _, body = site.get("/", site.session())
    assert status == 200 and b"alice@example.test" in body


def test_oidc_server_browser_signs_in_and_out(site, tmp_path):
    """Headless Chromium trusting the test CA: protected page → provider form → back showing the email → logout."""
    home = tmp_path / "home"
    (home / ".pki" / "nssdb").mkdir(parents=True)
    nssdb = f"sql:{home / '.pki' / 'nssdb'}"
    subprocess.run(["certutil", "-d", nssdb, "-N", "--empty-password"], check=True, capture_output=True)
    subprocess.run(["certutil", "-d", nssdb, "-A", "-t", "C,,", "-n", "zs-test-ca", "-i", str(site.ca_file)],
                   check=True, capture_output=True)
    modules = node_modules()
    run = subprocess.run(["node", str(modules / "browser_login.mjs"), site.origin + "/", "carol"], cwd=modules,
                         env={**os.environ, "HOME": str(home)}, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    outcome = json.loads(run.stdout.strip().splitlines()[-1])
    assert outcome["loginPage"].startswith(site.provider.issuer + "/interaction/")
    assert outcome["email"] == "carol@example.test"
    assert outcome["sessionSecure"] and outcome["sessionHttpOnly"] and outcome["sessionSameSite"] == "Lax"
    assert outcome["sessionAfterLogout"] is None
    assert outcome["afterLogoutUrl"].startswith(site.provider.issuer + "/")
