"""The tls_ech plugin in a real `zeroserve run`: --cert-dir and --ech-key on the HTTPS listener, reload by SIGHUP."""

import base64
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

from harness import ServerProcess, build_site, write_tree
from test_tls_ech import PKI, bssl_client, keygen, served_subject
from test_tls_ech_scripts import REPORT_SCRIPT
from zeroserve.core import pack
from zeroserve.core.compile import ScriptCompiler

TIMEOUT = 20


@pytest.fixture(scope="module")
def material(tmp_path_factory):
    """A site, a CA with certificates for site-a.test and *.wild.test in a --cert-dir, and one ECH key."""
    base = tmp_path_factory.mktemp("material")
    pki = PKI(base)
    pki.write_pair(base / "certs", "10-site-a", "site-a", ["site-a.test", "secret.example"])
    pki.write_pair(base / "certs", "20-wild", "wild", ["*.wild.test"])
    (base / "keys").mkdir()
    first_list, _ = keygen(base / "keys" / "1-first.pem")
    tar = build_site(base / "src", {"index.html": "hidden site\n"}, base / "site.tar")
    return base, pki, tar, first_list


@pytest.fixture(scope="module")
def server(material):
    base, _, tar, _ = material
    process = ServerProcess(tar, "--tls-addr", "127.0.0.1:0", "--plugins", "tls_ech",
                            "--cert-dir", str(base / "certs"), "--ech-key", str(base / "keys")).start()
    yield process
    process.stop()


JA4 = r"t[0-9sd]{2}[di][0-9]{4}[A-Za-z0-9]{2}_[0-9a-f]{12}_[0-9a-f]{12}"


@pytest.fixture(scope="module")
def script_server(material):
    """A server whose script reports zs_tls_ja4 and zs_connection_info; the plugin enabled by its flags alone."""
    base, _, _, _ = material
    write_tree(base / "script-src", {"index.html": "unused\n", ".zeroserve/scripts/report.c": REPORT_SCRIPT})
    tar = base / "script-site.tar"
    pack.build(base / "script-src", tar, compiler=ScriptCompiler.find(None))
    process = ServerProcess(tar, "--tls-addr", "127.0.0.1:0", "--cert-dir", str(base / "certs"),
                            "--ech-key", str(base / "keys" / "1-first.pem")).start()
    yield process
    process.stop()


def test_tls_ech_server_script_reads_ja4_and_connection_info(script_server, material):
    """Over ECH a script reads the JA4 from zs_tls_ja4 and zs_connection_info, both names and ECH accepted."""
    _, pki, _, first_list = material
    _, out = bssl_client(script_server.tls_port, "secret.example", first_list, pki.ca_path)
    assert "Encrypted ClientHello: yes" in out
    match = re.search(rf"^({JA4})\|({JA4})\|secret\.example\|public\.example\|y", out, re.MULTILINE)
    assert match is not None, out
    assert match.group(1) == match.group(2)


def test_tls_ech_server_access_log_shows_ja4(script_server, material):
    """The access line of a TLS request ends with the connection's JA4; no self-signed certificate is announced."""
    _, pki, _, _ = material
    start = len(script_server.lines)
    _, out = bssl_client(script_server.tls_port, "site-a.test", ca=pki.ca_path)
    ja4 = re.search(rf"^({JA4})\|", out, re.MULTILINE).group(1)
    script_server.wait_for(rf"^\[request\] .* GET / 200 .* HTTP/1\.1 ja4={ja4}$", start=start)
    assert not any("self-signed" in line for line in script_server.lines)


def curl_https(server, pki, host):
    return subprocess.run(["curl", "-sS", "--cacert", str(pki.ca_path), *server.resolve_args(host),
                           server.https_url("/", host)], capture_output=True, timeout=TIMEOUT)


def eventually(check, timeout=10):
    """Poll `check` until it returns a true value (a reload finishes in the worker at its own pace)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


def test_tls_ech_server_logs_ech_config_list_at_start(server, material):
    """At start the server logs the ECHConfigList for the DNS record and the public names."""
    _, _, _, first_list = material
    match = server.wait_for(r'ECH keys loaded: 1 .*public names public\.example; DNS HTTPS record: ech="([^"]+)"')
    assert base64.b64decode(match.group(1)) == first_list.read_bytes()


def test_tls_ech_server_cert_dir_serves_each_name(server, material):
    """curl gets the page for site-a.test and a wildcard name, each with its own certificate verified."""
    _, pki, _, _ = material
    for host in ("site-a.test", "x.wild.test"):
        result = curl_https(server, pki, host)
        assert result.returncode == 0, result.stderr
        assert result.stdout == b"hidden site\n"
    _, out = bssl_client(server.tls_port, "x.wild.test", ca=pki.ca_path)
    assert served_subject(out) == "wild"


def test_tls_ech_server_refuses_uncovered_name(server, material):
    """A name no --cert-dir certificate covers fails the handshake (curl exit 35)."""
    _, pki, _, _ = material
    assert curl_https(server, pki, "nobody.test").returncode == 35


def test_tls_ech_server_bssl_tool_ech_accepted(server, material):
    """bssl-tool with the ech-keygen list gets ECH accepted and the inner name's certificate and page."""
    _, pki, _, first_list = material
    result, out = bssl_client(server.tls_port, "secret.example", first_list, pki.ca_path)
    assert "Encrypted ClientHello: yes" in out
    assert served_subject(out) == "site-a"
    assert "hidden site" in out


def test_tls_ech_server_sighup_rotates_keys_and_certificates(server, material):
    """After a key and a certificate are added and SIGHUP sent, both ECH configs work and the new name is served."""
    base, pki, _, first_list = material
    second_list, _ = keygen(base / "keys" / "2-second.pem")
    pki.write_pair(base / "certs", "30-new", "new", ["new.test"])
    start = len(server.lines)
    server.signal(signal.SIGHUP)
    server.wait_for(r"ECH keys loaded: 2 ", start=start)

    def second_accepted():
        return "Encrypted ClientHello: yes" in bssl_client(server.tls_port, "secret.example", second_list,
                                                           pki.ca_path)[1]

    assert eventually(second_accepted)
    assert "Encrypted ClientHello: yes" in bssl_client(server.tls_port, "secret.example", first_list, pki.ca_path)[1]
    result = curl_https(server, pki, "new.test")
    assert result.returncode == 0, result.stderr


def test_tls_ech_server_bad_cert_dir_stops_startup(material, tmp_path):
    """An empty --cert-dir stops `zeroserve run` with one error line naming the directory."""
    _, _, tar, _ = material
    (tmp_path / "empty").mkdir()
    result = subprocess.run([sys.executable, "-m", "zeroserve.core.cli", "run", "--addr", "127.0.0.1:0",
                             "--tls-addr", "127.0.0.1:0", "--plugins", "tls_ech", "--cert-dir",
                             str(tmp_path / "empty"), str(tar)], capture_output=True, timeout=TIMEOUT)
    assert result.returncode == 1
    assert re.search(rb"zeroserve: error: --cert-dir \S*empty holds no PEM certificate", result.stderr)


@pytest.fixture(scope="module")
def relay_servers(material):
    """A cover zeroserve for public.example, and a hidden origin (secret.example + ECH) relaying to it."""
    base, pki, tar, first_list = material
    cover_cert, cover_key = pki.write_pair(base / "cover", "cover", "cover", ["public.example"])
    cover_tar = build_site(base / "cover-src", {"index.html": "cover site\n"}, base / "cover.tar")
    cover = ServerProcess(cover_tar, "--tls-addr", "127.0.0.1:0", "--cert", str(cover_cert),
                          "--key", str(cover_key)).start()
    hidden_cert, hidden_key = pki.write_pair(base / "hidden", "hidden", "hidden", ["secret.example"])
    hidden = ServerProcess(tar, "--tls-addr", "127.0.0.1:0", "--cert", str(hidden_cert), "--key", str(hidden_key),
                           "--plugins", "tls_ech", "--ech-key", str(base / "keys" / "1-first.pem"),
                           "--ech-relay-target", f"public.example=127.0.0.1:{cover.tls_port}").start()
    yield cover, hidden, pki, first_list
    hidden.stop()
    cover.stop()


def test_tls_ech_server_relay_probe_gets_cover_site(relay_servers):
    """curl without ECH asking the hidden origin for the public name gets the cover's certificate and page."""
    cover, hidden, pki, _ = relay_servers
    result = curl_https(hidden, pki, "public.example")
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"cover site\n"
    _, out = bssl_client(hidden.tls_port, "public.example", ca=pki.ca_path)
    assert served_subject(out) == "cover"
    assert "cover site" in out


def test_tls_ech_server_relay_ech_client_gets_hidden_site(relay_servers):
    """bssl-tool with the ECH config reaches the hidden site, not the cover."""
    _, hidden, pki, first_list = relay_servers
    _, out = bssl_client(hidden.tls_port, "secret.example", first_list, pki.ca_path)
    assert "Encrypted ClientHello: yes" in out
    assert served_subject(out) == "hidden"
    assert "hidden site" in out


def test_tls_ech_server_relay_to_dead_target_fails_cleanly(material):
    """With the cover site down, the probe's connection closes and the failure is logged."""
    base, pki, tar, _ = material
    hidden_cert, hidden_key = pki.write_pair(base / "hidden2", "hidden", "hidden", ["secret.example"])
    with socket.socket() as dead:
        dead.bind(("127.0.0.1", 0))  # bound, never listening: connecting is refused
        hidden = ServerProcess(tar, "--tls-addr", "127.0.0.1:0", "--cert", str(hidden_cert), "--key",
                               str(hidden_key), "--plugins", "tls_ech", "--ech-key", str(base / "keys" / "1-first.pem"),
                               "--ech-relay-target", f"public.example=127.0.0.1:{dead.getsockname()[1]}").start()
        try:
            result = curl_https(hidden, pki, "public.example")
            assert result.returncode == 35
            hidden.wait_for(r'ECH relay of 127\.0\.0\.1:\d+ to "public\.example" .* failed: .*refused')
            assert curl_https(hidden, pki, "secret.example").stdout == b"hidden site\n"
        finally:
            hidden.stop()


def test_tls_ech_server_chromium_gets_cert_dir_page(server, tmp_path):
    """Headless Chromium (no ECH) reaches site-a.test through --cert-dir selection and renders the page."""
    result = subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path}",
         "--ignore-certificate-errors", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync",
         f"--host-resolver-rules=MAP site-a.test 127.0.0.1:{server.tls_port}", "--dump-dom",
         "https://site-a.test/"], capture_output=True, timeout=60)
    assert b"hidden site" in result.stdout, result.stderr[-500:]


def test_tls_ech_server_cli_keygen_key_is_accepted(material, tmp_path):
    """`zeroserve ech-keygen -o FILE` makes a key the server loads; its printed ech= list gets ECH accepted."""
    base, pki, tar, _ = material
    made = subprocess.run([sys.executable, "-m", "zeroserve.core.cli", "ech-keygen", "--public-name",
                           "cover.example", "-o", str(tmp_path / "cli.pem")], capture_output=True, timeout=TIMEOUT)
    assert made.returncode == 0, made.stderr
    text = made.stderr.decode()
    assert text.startswith("Generated ECH key for public name cover.example\n")
    assert re.search(r"^config_id: 0x[0-9a-f]{2}$", text, re.MULTILINE)
    (tmp_path / "list.bin").write_bytes(base64.b64decode(re.search(r'ech="([^"]+)"', text).group(1)))
    server = ServerProcess(tar, "--tls-addr", "127.0.0.1:0", "--plugins", "tls_ech", "--cert-dir",
                           str(base / "certs"), "--ech-key", str(tmp_path / "cli.pem")).start()
    try:
        _, out = bssl_client(server.tls_port, "secret.example", tmp_path / "list.bin", pki.ca_path)
    finally:
        server.stop()
    assert "Encrypted ClientHello: yes" in out
    assert "hidden site" in out


def test_tls_ech_server_cli_keygen_refuses_ip_public_name():
    """ech-keygen with an IP address as public name exits 1 with one error line."""
    made = subprocess.run([sys.executable, "-m", "zeroserve.core.cli", "ech-keygen", "--public-name", "10.0.0.1"],
                          capture_output=True, timeout=TIMEOUT)
    assert made.returncode == 1
    assert made.stderr.startswith(b"zeroserve: error: ECH public name '10.0.0.1' is not a DNS host name")
    assert made.stdout == b""
