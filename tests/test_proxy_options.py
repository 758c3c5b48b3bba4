"""The `run` flags of the proxy's upstream side (--upstream-*), end to end through a real server and real upstreams."""

import subprocess
import sys

import pytest

from harness import start_server, write_tree
from proxy_backends import Nginx
from test_proxy_http import PROXY_SCRIPT, get
from zeroserve.core import pack
from zeroserve.core.compile import ScriptCompiler


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    directory = tmp_path_factory.mktemp("proxy-options-site")
    write_tree(directory / "src", {"index.html": "<p>static</p>", ".zeroserve/scripts/10-proxy.c": PROXY_SCRIPT})
    pack.build(directory / "src", directory / "site.tar", compiler=ScriptCompiler.find("clang"))
    return directory / "site.tar"



@pytest.fixture(scope="module")
def tls_origin(tmp_path_factory, pki):
    directory = tmp_path_factory.mktemp("proxy-options-origin")
    root = directory / "root"
    root.mkdir()
    (root / "page.txt").write_text("over tls\n")
    server = Nginx(directory / "run", root, cert=pki.leaf_cert, key=pki.leaf_key)
    yield server
    server.stop()


def run_refused(site, *flags):
    """`zeroserve run` with `flags`, expected to exit before serving: the CompletedProcess."""
    return subprocess.run([sys.executable, "-m", "zeroserve.core.cli", "run", "--addr", "127.0.0.1:0",
                           "--tls-addr", "off", *flags, str(site)], capture_output=True, timeout=20)


def test_proxy_options_response_timeout_answers_504(request, site, backend):
    """With --upstream-response-timeout 1, an upstream that takes 30 s to answer gets the client a 504 instead."""
    server = start_server(request, site, "--tls-addr", "off", "--upstream-response-timeout", "1")
    # curl gives up after 10 s: a 504 inside that bound comes from the 1 s flag, not the 60 s default.
    status, _, body = get(server, "/slow?s=30", backend.url, "--max-time", "10")
    assert (status, body) == (504, b"")


def test_proxy_options_upstream_ca_admits_https_upstream(request, site, pki, tls_origin):
    """--upstream-ca with the test CA lets a request through to an https upstream whose certificate it signed."""
    server = start_server(request, site, "--tls-addr", "off", "--upstream-ca", str(pki.ca_cert))
    status, _, body = get(server, "/page.txt", tls_origin.url("https", "localhost"))
    assert (status, body) == (200, b"over tls\n")


def test_proxy_options_without_upstream_ca_https_upstream_is_502(request, site, tls_origin):
    """Without --upstream-ca, the system CAs do not know the test CA, so the same upstream gets a 502."""
    server = start_server(request, site, "--tls-addr", "off")
    status, _, body = get(server, "/page.txt", tls_origin.url("https", "localhost"))
    assert (status, body) == (502, b"")


def test_proxy_options_missing_upstream_ca_is_config_error(site, tmp_path):
    """--upstream-ca naming a file that does not exist stops `run` with one line naming the flag."""
    result = run_refused(site, "--upstream-ca", str(tmp_path / "absent.pem"))
    assert result.returncode == 1
    assert result.stderr.decode().startswith("zeroserve: error: --upstream-ca ")
    assert "absent.pem" in result.stderr.decode()


def test_proxy_options_bad_timeout_is_usage_error(site):
    """A non-positive --upstream-connect-timeout is refused at parse time with exit status 2."""
    result = run_refused(site, "--upstream-connect-timeout", "0")
    assert result.returncode == 2
    assert "--upstream-connect-timeout" in result.stderr.decode()
