"""HTTPS end to end: the real `zeroserve run` with its TLS listener against curl, bssl-tool, Python's ssl,
openssl s_client, h2load and headless Chromium, plus broken handshakes, certificate errors, reload and the
zero-config self-signed certificate."""

import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys

import pytest

from harness import EXAMPLE_SITE, ServerProcess, connect, curl, curl_status, read_until_closed, start_server
from tls_pki import make_test_pki

TIMEOUT = 30
INDEX = (EXAMPLE_SITE / "index.html").read_bytes()



@pytest.fixture(scope="module")
def https(request, example_tar, pki):
    """One server with two workers: plaintext and HTTPS on free ports, the test PKI's leaf."""
    return start_server(request, example_tar, "--tls-addr", "127.0.0.1:0", "--cert", str(pki.leaf_cert),
                        "--key", str(pki.leaf_key), "--header-timeout", "2", workers=2)


def client_context(pki, alpn=("h2", "http/1.1")):
    context = ssl.create_default_context(cafile=str(pki.ca_cert))
    if alpn:
        context.set_alpn_protocols(list(alpn))
    return context


def tls_connect(server, context, host="localhost", session=None):
    sock = connect(server.tls_port)
    return context.wrap_socket(sock, server_hostname=host, session=session)


def http1_get(tls, path="/", host="localhost", close=True):
    """One HTTP/1.1 GET on an open TLS socket; (status, body) read by Content-Length."""
    head = f"GET {path} HTTP/1.1\r\n" + (f"host: {host}\r\n" if host else "") + \
        ("connection: close\r\n" if close else "") + "\r\n"
    tls.sendall(head.encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = tls.recv(65536)
        assert chunk, f"connection closed before a response head: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"content-length: (\d+)", head, re.I).group(1))
    while len(body) < length:
        body += tls.recv(65536)
    return int(head.split()[1]), body


def client_hello_bytes():
    """A real TLS 1.3 ClientHello from Python's ssl, as it would go on the wire."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ssl.create_default_context().wrap_bio(incoming, outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def bssl_client(port, *args):
    result = subprocess.run(["bssl-tool", "client", "-connect", f"127.0.0.1:{port}", *args],
                            stdin=subprocess.DEVNULL, capture_output=True, timeout=TIMEOUT)
    return result.stdout.decode("latin-1") + result.stderr.decode("latin-1")


def zeroserve_run(*args, env=None):
    return subprocess.run([sys.executable, "-m", "zeroserve.core.cli", "run", "--addr", "127.0.0.1:0",
                           "--threads", "1", *args], capture_output=True, text=True, timeout=TIMEOUT, env=env)


# -- protocol versions and ALPN ----------------------------------------------------------------------------


def test_tls_server_curl_tls13_gets_example_site_over_h2(https, pki):
    """curl --tlsv1.3 verifies the chain, negotiates h2 and gets the example site's index."""
    version, status, body = curl_status(https.https_url(), "--tlsv1.3", "--cacert", str(pki.ca_cert),
                                        *https.resolve_args())
    assert (version, status, body) == ("2", 200, INDEX)


def test_tls_server_refuses_tls12_client(https, pki):
    """A client limited to TLS 1.2 is refused with a protocol_version alert."""
    result = curl("--tls-max", "1.2", "--cacert", str(pki.ca_cert), *https.resolve_args(), https.https_url())
    assert result.returncode == 35
    assert b"alert protocol version" in result.stderr


def test_tls_server_bssl_tool_reports_tls13_h2(https, pki):
    """bssl-tool (BoringSSL's own client) sees TLS 1.3, ALPN h2 and the test CA as issuer."""
    output = bssl_client(https.tls_port, "-server-name", "localhost", "-min-version", "tls1.3",
                         "-alpn-protos", "h2", "-root-certs", str(pki.ca_cert))
    assert "Version: TLSv1.3" in output
    assert "ALPN protocol: h2" in output
    assert "Cert issuer: CN = zeroserve test CA" in output


def test_tls_server_bssl_tool_tls12_only_is_refused(https, pki):
    """bssl-tool with -max-version tls1.2 cannot connect: the listener speaks TLS 1.3 only."""
    output = bssl_client(https.tls_port, "-server-name", "localhost", "-max-version", "tls1.2",
                         "-root-certs", str(pki.ca_cert))
    assert "Version: TLSv1.2" not in output
    assert "PROTOCOL_VERSION" in output.upper()


@pytest.mark.parametrize("offered, chosen", [
    (("h2", "http/1.1"), "h2"),
    (("http/1.1", "h2"), "h2"),
    (("http/1.1",), "http/1.1"),
    ((), None),
], ids=["h2-first", "h2-second", "http1-only", "no-alpn"])
def test_tls_server_alpn_prefers_h2_then_http1(https, pki, offered, chosen):
    """The server picks h2 when offered, else http/1.1; without ALPN the connection speaks HTTP/1.1."""
    with tls_connect(https, client_context(pki, offered)) as tls:
        assert tls.version() == "TLSv1.3"
        assert tls.selected_alpn_protocol() == chosen
        if chosen != "h2":
            assert http1_get(tls) == (200, INDEX)


def test_tls_server_answers_close_notify_and_closes(https, pki):
    """A client's close_notify after a keep-alive request gets the server's close_notify, then EOF."""
    with tls_connect(https, client_context(pki, ("http/1.1",))) as tls:
        assert http1_get(tls, close=False) == (200, INDEX)
        raw = tls.unwrap()  # sends close_notify and reads the server's
        assert raw.recv(100) == b""
        raw.close()


def test_tls_server_curl_http1_over_tls(https, pki):
    """curl --http1.1 over TLS gets HTTP/1.1 responses (ALPN http/1.1)."""
    version, status, body = curl_status(https.https_url(), "--http1.1", "--cacert", str(pki.ca_cert),
                                        *https.resolve_args())
    assert (version, status, body) == ("1.1", 200, INDEX)


def test_tls_server_with_cert_does_not_load_cryptography(https):
    """Given --cert and --key, no process maps the `cryptography` package: only the zero-config certificate needs it."""
    for pid in (https.proc.pid, *https.worker_pids()):
        with open(f"/proc/{pid}/maps") as maps:
            assert "/cryptography/" not in maps.read(), f"process {pid} loaded cryptography"


@pytest.mark.parametrize("flags, protocol", [((), "h2"), (("--h1",), "http/1.1")], ids=["h2", "h1"])
def test_tls_server_h2load_over_tls_all_succeed(https, flags, protocol):
    """h2load over TLS (h2, and HTTP/1.1 with --h1) completes every request with a 2xx."""
    result = subprocess.run(["h2load", "-n", "400", "-c", "4", "-m", "4", *flags,
                             f"https://127.0.0.1:{https.tls_port}/"], capture_output=True, text=True,
                            timeout=TIMEOUT)
    assert f"Application protocol: {protocol}" in result.stdout
    assert "requests: 400 total, 400 started, 400 done, 400 succeeded, 0 failed, 0 errored, 0 timeout" \
        in result.stdout
    assert "status codes: 400 2xx" in result.stdout


# -- SNI and Host ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("http", ["--http2", "--http1.1"])
def test_tls_server_host_other_than_sni_gets_421(https, pki, http):
    """A request whose Host names another host than the SNI gets 421, on HTTP/1.1 and HTTP/2."""
    _, status, _ = curl_status(https.https_url(host="site-a.test"), http, "--cacert", str(pki.ca_cert),
                               *https.resolve_args("site-a.test"), "-H", "Host: localhost")
    assert status == 421


def test_tls_server_host_equal_to_sni_with_port_and_case_is_served(https, pki):
    """Host is compared to the SNI without its port and case-insensitively."""
    _, status, body = curl_status(https.https_url(host="site-a.test"), "--http1.1", "--cacert", str(pki.ca_cert),
                                  *https.resolve_args("site-a.test"), "-H", f"Host: SITE-A.test:{https.tls_port}")
    assert (status, body) == (200, INDEX)


def test_tls_server_sni_without_host_gets_421(https, pki):
    """A request with no Host on a connection that sent an SNI gets 421."""
    with tls_connect(https, client_context(pki, ("http/1.1",))) as tls:
        tls.sendall(b"GET / HTTP/1.0\r\n\r\n")
        assert read_until_closed(tls).split(b"\r\n")[0] == b"HTTP/1.1 421 Misdirected Request"


def test_tls_server_no_sni_serves_any_host(https, pki):
    """Without an SNI (a client connecting by IP address) any Host is served."""
    with tls_connect(https, client_context(pki, ("http/1.1",)), host="127.0.0.1") as tls:
        assert http1_get(tls, host="example.org") == (200, INDEX)


# -- resumption --------------------------------------------------------------------------------------------


def test_tls_server_resumes_sessions_on_every_worker(https, pki):
    """A session ticket resumes on later connections, whichever of the two workers accepts them."""
    context = client_context(pki, ("http/1.1",))
    with tls_connect(https, context) as tls:
        assert http1_get(tls, close=False)[0] == 200  # the ticket arrives after the handshake
        session = tls.session
    assert session is not None and session.has_ticket
    resumed = []
    for _ in range(8):
        with tls_connect(https, context, session=session) as tls:
            assert http1_get(tls, close=False)[0] == 200
            resumed.append(tls.session_reused)
    assert resumed == [True] * 8


def test_tls_server_openssl_s_client_sees_reuse(https, pki, tmp_path):
    """openssl s_client saves the session and reports it `Reused` on the next connection."""
    session_file = tmp_path / "session.pem"
    base = ["openssl", "s_client", "-connect", f"127.0.0.1:{https.tls_port}", "-servername", "localhost",
            "-CAfile", str(pki.ca_cert), "-tls1_3", "-ign_eof"]
    request = b"GET / HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n"
    first = subprocess.run([*base, "-sess_out", str(session_file)], input=request, capture_output=True,
                           timeout=TIMEOUT)
    assert b"New, TLSv1.3" in first.stdout and b"It works." in first.stdout
    second = subprocess.run([*base, "-sess_in", str(session_file)], input=request, capture_output=True,
                            timeout=TIMEOUT)
    assert b"Reused, TLSv1.3" in second.stdout and b"It works." in second.stdout


# -- broken and stalled handshakes -------------------------------------------------------------------------


def test_tls_server_stalled_handshake_times_out(https, pki):
    """A connection that never finishes its handshake is closed after the header timeout (2 s here)."""
    with connect(https.tls_port, timeout=15) as stalled:
        stalled.sendall(client_hello_bytes()[:20])
        assert http1_get_curl_ok(https, pki)  # others are served meanwhile
        assert read_until_closed(stalled) == b""  # closed without an answer


def http1_get_curl_ok(server, pki):
    return curl_status(server.https_url(), "--cacert", str(pki.ca_cert), *server.resolve_args())[1] == 200


@pytest.mark.parametrize("payload", [
    b"GET / HTTP/1.1\r\nhost: localhost\r\n\r\n",
    b"\x16\x03\x01\x00\x10" + bytes(16),
    b"\x16\x03\x01\xff\xff" + os.urandom(300),
], ids=["plaintext-http", "zeroed-hello", "random-hello"])
def test_tls_server_garbage_client_hello_is_closed(https, pki, payload):
    """Bytes that are no ClientHello end that connection (at most an alert) while others are served."""
    with connect(https.tls_port, timeout=15) as sock:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        answer = read_until_closed(sock)
    assert answer == b"" or answer[0] == 0x15  # nothing, or a TLS alert record
    assert http1_get_curl_ok(https, pki)
    assert https.count("Traceback") == 0


def test_tls_server_truncated_client_hello_is_closed(https, pki):
    """Half a real ClientHello followed by EOF is closed without an answer; the server keeps serving."""
    hello = client_hello_bytes()
    with connect(https.tls_port, timeout=15) as sock:
        sock.sendall(hello[: len(hello) // 2])
        sock.shutdown(socket.SHUT_WR)
        assert read_until_closed(sock) == b""
    assert http1_get_curl_ok(https, pki)
    assert https.count("Traceback") == 0


# -- certificate errors at start ---------------------------------------------------------------------------


def test_tls_server_mismatched_key_is_one_line_error(example_tar, pki):
    """A key that does not belong to the certificate stops the start with an error naming both files."""
    result = zeroserve_run("--tls-addr", "127.0.0.1:0", "--cert", str(pki.leaf_cert), "--key", str(pki.ca_key),
                           str(example_tar))
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("zeroserve: error: certificate ") and "do not match" in last
    assert str(pki.leaf_cert) in last and str(pki.ca_key) in last
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("which", ["cert", "key"])
def test_tls_server_missing_file_is_one_line_error(example_tar, pki, tmp_path, which):
    """A --cert or --key file that does not exist stops the start with an error naming it."""
    missing = tmp_path / "nothing.pem"
    cert, key = (missing, pki.leaf_key) if which == "cert" else (pki.leaf_cert, missing)
    result = zeroserve_run("--tls-addr", "127.0.0.1:0", "--cert", str(cert), "--key", str(key), str(example_tar))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"zeroserve: error: {'certificate' if which == 'cert' else 'key'} file {missing} does not exist: "
        "give the path of a PEM file")


def test_tls_server_cert_without_key_is_an_error(example_tar, pki):
    """--cert without --key is refused with a message saying they go together."""
    result = zeroserve_run("--tls-addr", "127.0.0.1:0", "--cert", str(pki.leaf_cert), str(example_tar))
    assert result.returncode == 1
    assert "--cert and --key go together" in result.stderr


# -- reload ------------------------------------------------------------------------------------------------


def test_tls_server_reload_swaps_certificate_and_keeps_old_on_error(request, example_tar, pki, tmp_path):
    """SIGHUP loads a new certificate for new connections; a bad one logs `TLS reload failed` and the
    old certificate keeps serving; a connection made before a reload keeps working."""
    second = make_test_pki(tmp_path / "second")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    shutil.copy(pki.leaf_cert, cert)
    shutil.copy(pki.leaf_key, key)
    server = start_server(request, example_tar, "--tls-addr", "127.0.0.1:0", "--cert", str(cert),
                          "--key", str(key))

    def status_with(ca):
        return curl_status(server.https_url(), "--cacert", str(ca), *server.resolve_args())[1]

    assert status_with(pki.ca_cert) == 200
    cert.write_text("not a certificate\n")
    mark = len(server.lines)
    server.signal(signal.SIGHUP)
    server.wait_for(r"TLS reload failed \(keeping previous TLS\): certificate file .* holds no PEM", start=mark)
    server.wait_for(r"loaded \d+ entries", start=mark)
    assert status_with(pki.ca_cert) == 200

    before = tls_connect(server, client_context(pki, ("http/1.1",)))
    request.addfinalizer(before.close)
    assert http1_get(before, close=False)[0] == 200
    shutil.copy(second.leaf_cert, cert)
    shutil.copy(second.leaf_key, key)
    mark = len(server.lines)
    server.signal(signal.SIGHUP)
    server.wait_for(r"loaded \d+ entries", start=mark)
    # The worker swaps its world after the parent; poll until new handshakes show the new certificate.
    for _ in range(100):
        if curl("--cacert", str(second.ca_cert), *server.resolve_args(), "-o", "/dev/null",
                server.https_url()).returncode == 0:
            break
    assert status_with(second.ca_cert) == 200
    assert curl("--cacert", str(pki.ca_cert), *server.resolve_args(), server.https_url()).returncode == 60
    assert http1_get(before) == (200, INDEX)  # the old connection kept its old context


# -- zero configuration ------------------------------------------------------------------------------------


def test_tls_server_zero_config_self_signed_certificate_is_made_once(example_tar, tmp_path):
    """Without --cert/--key the server makes a self-signed certificate for localhost in the state
    directory, prints where and its SHA-256 fingerprint, serves HTTPS with it, and reuses it next time."""
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state")}
    state = tmp_path / "state" / "zeroserve"
    prints = []
    for expected in ("created", "kept"):
        server = ServerProcess(example_tar, "--tls-addr", "127.0.0.1:0", env=env)
        try:
            server.start()
            line = server.wait_for(r"HTTPS certificate: self-signed for localhost and 127\.0\.0\.1, (\w+) in "
                                   r"(\S+) \(SHA-256 ([0-9A-F:]+)\)")
            assert line.group(1) == expected and line.group(2) == str(state)
            prints.append(line.group(3))
            cert = state / "localhost-cert.pem"
            openssl = subprocess.run(["openssl", "x509", "-in", str(cert), "-noout", "-fingerprint", "-sha256"],
                                     capture_output=True, text=True, check=True)
            assert openssl.stdout.strip().endswith("=" + line.group(3))
            _, status, body = curl_status(server.https_url(), "--cacert", str(cert), *server.resolve_args())
            assert (status, body) == (200, INDEX)
            _, status, _ = curl_status(f"https://127.0.0.1:{server.tls_port}/", "--cacert", str(cert))
            assert status == 200
        finally:
            server.stop()
    assert prints[0] == prints[1]


def test_tls_server_https_is_on_by_default(example_tar):
    """`zeroserve run --help` shows HTTPS on 0.0.0.0:8443 by default and `off` to disable it."""
    result = subprocess.run([sys.executable, "-m", "zeroserve.core.cli", "run", "--help"], capture_output=True,
                            text=True, timeout=TIMEOUT)
    assert "default 0.0.0.0:8443" in result.stdout and "'off'" in result.stdout


# -- a browser ---------------------------------------------------------------------------------------------


def test_tls_server_chromium_loads_example_site_over_h2(https, pki, tmp_path):
    """Headless Chromium trusting the test CA loads the example site over HTTP/2 with TLS 1.3."""
    home = tmp_path / "home"
    nssdb = home / ".pki" / "nssdb"
    nssdb.mkdir(parents=True)
    env = {**os.environ, "HOME": str(home)}
    subprocess.run(["certutil", "-d", f"sql:{nssdb}", "-N", "--empty-password"], env=env, check=True,
                   capture_output=True)
    subprocess.run(["certutil", "-d", f"sql:{nssdb}", "-A", "-t", "C,,", "-n", "zs-test-ca", "-i",
                    str(pki.ca_cert)], env=env, check=True, capture_output=True)
    mark = len(https.lines)
    result = subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / 'profile'}",
         "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--dump-dom", https.https_url()],
        env=env, capture_output=True, text=True, timeout=60)
    assert "<h1>It works.</h1>" in result.stdout
    https.wait_for(r"GET / 200 \d+ \S+ HTTP/2$", start=mark)
    https.wait_for(r"GET /css/style\.css 200 \d+ \S+ HTTP/2$", start=mark)
