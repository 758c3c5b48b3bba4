"""The zs_oidc_* helpers called by the sso example script in the real script chain, against a real oidc-provider.

The chain runs in this process (no HTTP server in between), so these tests
show what the helpers leave for the response: the script's outcome and its
response headers (HelperCall.respond), where Set-Cookie may repeat.
"""

import asyncio
import inspect
import json
import shutil
import types

import pytest

from harness import REPO, write_tree
from oidc_provider import CLIENT_ID, CLIENT_SECRET, Provider, sign_in
from zeroserve.core import pack
from zeroserve.core.chain import NONE, RESPOND, ChainOptions, ScriptChain
from zeroserve.core.compile import ScriptCompiler
from zeroserve.core.plugins import build_helper_table, build_plugin_manager
from zeroserve.core.site import Site

ORIGIN = "https://localhost:4443"


@pytest.fixture(scope="module")
def provider(tmp_path_factory):
    op = Provider(tmp_path_factory.mktemp("op"), [ORIGIN + "/callback"]).start()
    yield op
    op.stop()


def _chain(work, oidc_json):
    source = work / "site"
    shutil.copytree(REPO / "examples" / "sites" / "sso", source)
    write_tree(source, {".zeroserve/oidc.json": oidc_json})
    pack.build(source, work / "sso.tar", ScriptCompiler.find(None))
    site = Site.open(work / "sso.tar")
    config = types.SimpleNamespace(options=types.SimpleNamespace(oidc_allow_insecure_issuer=True, oidc_ca_file=None))
    chain = ScriptChain.load(site, build_helper_table(build_plugin_manager(["oidc"]), config), ChainOptions())
    return types.SimpleNamespace(chain=chain, site=site, plugin_state={})


@pytest.fixture(scope="module")
def world(provider, tmp_path_factory):
    """A world holding the sso example's chain, configured for the provider."""
    return _chain(tmp_path_factory.mktemp("sso"), json.dumps({
        "issuer": provider.issuer, "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
        "redirect_uri": ORIGIN + "/callback", "cookie_secret": "chain-test-cookie-secret-0123456789"}))


async def request(world, path, query="", cookie=""):
    """The ChainResult of one https request through the world's chain."""
    result = world.chain.run(world, "req", "GET", path, path, query, "https", "127.0.0.1:5000", (1, 1), True,
                             [("host", "localhost"), ("cookie", cookie)])
    return await result if inspect.isawaitable(result) else result


def header_of(result, name):
    """The first response header `name` the helpers set."""
    return next(value for key, value in result.response_headers if key == name)


def cookie_of(result):
    return header_of(result, "set-cookie").split(";", 1)[0]


def test_oidc_chain_login_session_and_logout(world, provider):
    """The script sends a visitor to the provider, the callback opens a session, the page gets the email, logout ends it."""
    async def scenario():
        begin = await request(world, "/private")
        assert (begin.kind, begin.status) == (RESPOND, 302)
        location = header_of(begin, "location")
        assert location.startswith(provider.issuer + "/auth?response_type=code&client_id=zeroserve")
        callback = await asyncio.to_thread(sign_in, location, ORIGIN + "/callback")
        done = await request(world, "/callback", callback.split("?", 1)[1], cookie_of(begin))
        assert (done.kind, done.status, header_of(done, "location")) == (RESPOND, 302, "/private")
        session = cookie_of(done)
        page = await request(world, "/", cookie=session)
        assert page.kind == NONE
        assert dict(page.metadata)["user.email"] == "alice@example.test"
        out = await request(world, "/logout", cookie=session)
        assert (out.kind, out.status) == (RESPOND, 302)
        assert header_of(out, "location").startswith(provider.issuer + "/session/end?client_id=zeroserve&id_token_hint=")
        assert header_of(out, "set-cookie").startswith("__zs_oidc_session=;")
    asyncio.run(scenario())


def test_oidc_chain_public_pages_run_no_helper(world):
    """/public/ goes on to static serving without a session and without metadata."""
    result = asyncio.run(request(world, "/public/"))
    assert result.kind == NONE and result.metadata == ()


def test_oidc_chain_configuration_error_returns_minus_one(tmp_path, caplog):
    """A weak cookie_secret makes the helpers return -1 (the script answers its 500) and logs an [oidc] line."""
    world = _chain(tmp_path, json.dumps({"issuer": "https://op.example", "client_id": "c",
                                         "redirect_uri": ORIGIN + "/callback", "cookie_secret": "short"}))
    with caplog.at_level("ERROR", logger="zeroserve.oidc"):
        result = asyncio.run(request(world, "/"))
    assert (result.kind, result.status) == (RESPOND, 500)
    assert b"not configured" in result.body
    assert "[oidc] zs_oidc_session_verify: cookie_secret has 5 bytes; give at least 16" in caplog.text
