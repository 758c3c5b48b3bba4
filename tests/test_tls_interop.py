"""core/tls.py on real sockets against independent TLS stacks: curl, bssl-tool, openssl s_client, h2load.

The server here is a small blocking loop that puts a TLSSession between a socket and a fixed HTTP/1.1
answer (which reports what the session negotiated), so these tests check the TLS layer alone.
"""
import socket
import subprocess
import threading

import pytest

from zeroserve.core.errors import TLSError
from zeroserve.core.tls import Identity, ServerContext, TicketKeys, TLSConfigBuilder
from zeroserve.native.boringssl import check, check_ptr, ffi, lib

CLIENT_TIMEOUT = 20


class TLSLoopServer:
    """A thread per connection: recv into the session, answer each request head, send what the session returns."""

    def __init__(self, context):
        self.context = context
        self.errors = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock):
        session = self.context.new_session()
        pending = b""
        with sock:
            sock.settimeout(10)
            try:
                closing = False
                while not closing and (data := sock.recv(65536)):
                    plaintext, to_send = session.receive(data)
                    pending += plaintext
                    while b"\r\n\r\n" in pending:
                        head, _, pending = pending.partition(b"\r\n\r\n")
                        body = (
                            f"alpn={session.alpn} sni={session.sni} resumed={session.resumed} "
                            f"ech={session.ech_accepted}\n"
                        ).encode()
                        close = b"connection: close" in head.lower()
                        to_send += session.send(
                            b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: %d\r\n%s\r\n%s"
                            % (len(body), b"connection: close\r\n" if close else b"", body)
                        )
                        closing = closing or close
                    if closing or session.closed:
                        to_send += session.close()
                        closing = True
                    if to_send:
                        sock.sendall(to_send)
            except TLSError as exc:
                self.errors.append(str(exc))
                sock.sendall(session.close())
            except OSError:
                pass

    def stop(self):
        self.listener.close()



@pytest.fixture(scope="module")
def server(pki):
    server = TLSLoopServer(ServerContext.load(pki.leaf_cert, pki.leaf_key, TicketKeys()))
    yield server
    server.stop()


def run(*args, stdin=b""):
    return subprocess.run(args, input=stdin, capture_output=True, timeout=CLIENT_TIMEOUT)


def test_tls_interop_curl_tls13_gets_answer(server, pki):
    """curl --tlsv1.3 verifies the test certificate and gets the answer over HTTP/1.1 with SNI."""
    result = run(
        "curl", "-sS", "--tlsv1.3", "--http1.1", "--cacert", str(pki.ca_cert),
        "--resolve", f"site-a.test:{server.port}:127.0.0.1", f"https://site-a.test:{server.port}/",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"alpn=http/1.1 sni=site-a.test resumed=False ech=False\n"


def test_tls_interop_curl_tls12_only_is_refused(server, pki):
    """curl --tls-max 1.2 fails the handshake (exit 35) with a protocol-version alert."""
    result = run(
        "curl", "-sS", "--tls-max", "1.2", "--cacert", str(pki.ca_cert), f"https://localhost:{server.port}/",
    )
    assert result.returncode == 35
    assert b"protocol version" in result.stderr
    assert any("UNSUPPORTED_PROTOCOL" in error for error in server.errors)


def test_tls_interop_bssl_tool_negotiates_tls13_and_h2(server, pki):
    """bssl-tool (BoringSSL's own client) reports TLS 1.3, ALPN h2 and our test CA as issuer."""
    result = run(
        "bssl-tool", "client", "-connect", f"127.0.0.1:{server.port}", "-server-name", "localhost",
        "-min-version", "tls1.3", "-alpn-protos", "h2", "-root-certs", str(pki.ca_cert),
    )
    out = result.stdout + result.stderr
    assert b"Version: TLSv1.3" in out
    assert b"ALPN protocol: h2" in out
    assert b"Cert issuer: CN = zeroserve test CA" in out


def test_tls_interop_bssl_tool_tls12_is_refused(server, pki):
    """bssl-tool limited to TLS 1.2 cannot connect."""
    result = run(
        "bssl-tool", "client", "-connect", f"127.0.0.1:{server.port}", "-max-version", "tls1.2",
        "-root-certs", str(pki.ca_cert),
    )
    assert result.returncode != 0
    assert b"PROTOCOL_VERSION" in result.stdout + result.stderr
    assert b"Version: TLSv1.2" not in result.stdout


def test_tls_interop_openssl_client_resumes_session(server, pki, tmp_path):
    """openssl s_client saves the ticket from one connection and resumes with it on the next."""
    session_file = tmp_path / "session.pem"
    request = b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    base = ["openssl", "s_client", "-connect", f"127.0.0.1:{server.port}", "-servername", "localhost",
            "-CAfile", str(pki.ca_cert), "-tls1_3", "-ign_eof"]
    first = run(*base, "-sess_out", str(session_file), stdin=request)
    assert b"New, TLSv1.3" in first.stdout and b"resumed=False" in first.stdout
    second = run(*base, "-sess_in", str(session_file), stdin=request)
    assert b"Reused, TLSv1.3" in second.stdout and b"resumed=True" in second.stdout


def test_tls_interop_h2load_http1_keepalive_requests_all_succeed(server):
    """h2load over TLS (HTTP/1.1 by ALPN) completes every keep-alive request."""
    result = run("h2load", "-n", "400", "-c", "4", "--h1", f"https://127.0.0.1:{server.port}/")
    out = result.stdout.decode()
    assert "Application protocol: http/1.1" in out
    assert "requests: 400 total, 400 started, 400 done, 400 succeeded, 0 failed, 0 errored, 0 timeout" in out, out
    assert "status codes: 400 2xx" in out


def test_tls_interop_garbage_connection_does_not_disturb_others(server, pki):
    """A connection that sends garbage is closed with a TLS error while curl is still served."""
    with socket.create_connection(("127.0.0.1", server.port)) as raw:
        raw.sendall(b"\x16\x03\x01\x00\x05\x01\x00\x00\xff\xff" + b"\x00" * 64)
        raw.settimeout(5)
        while raw.recv(4096):
            pass
    result = run("curl", "-sS", "--http1.1", "--cacert", str(pki.ca_cert), f"https://localhost:{server.port}/")
    assert result.returncode == 0 and result.stdout.startswith(b"alpn=http/1.1 sni=localhost")


def test_tls_interop_ech_keys_hook_accepts_bssl_tool_ech_client(pki, tmp_path):
    """ECH keys built with the binding and set on the TLS configuration decrypt bssl-tool's encrypted ClientHello."""
    run(
        "bssl-tool", "generate-ech", "-out-ech-config-list", str(tmp_path / "list.bin"),
        "-out-ech-config", str(tmp_path / "config.bin"), "-out-private-key", str(tmp_path / "ech.key"),
        "-public-name", "public.example", "-config-id", "7",
    ).check_returncode()
    raw_key, config = (tmp_path / "ech.key").read_bytes(), (tmp_path / "config.bin").read_bytes()
    hpke_key = ffi.gc(check_ptr(lib.EVP_HPKE_KEY_new(), "EVP_HPKE_KEY_new"), lib.EVP_HPKE_KEY_free)
    check(lib.EVP_HPKE_KEY_init(hpke_key, lib.EVP_hpke_x25519_hkdf_sha256(), raw_key, len(raw_key)), "HPKE key")
    ech_keys = ffi.gc(check_ptr(lib.SSL_ECH_KEYS_new(), "SSL_ECH_KEYS_new"), lib.SSL_ECH_KEYS_free)
    check(lib.SSL_ECH_KEYS_add(ech_keys, 1, config, len(config), hpke_key), "SSL_ECH_KEYS_add")
    hellos = []
    builder = TLSConfigBuilder(Identity.load(pki.leaf_cert, pki.leaf_key), TicketKeys())
    builder.ech_keys = ech_keys
    builder.add_inspector(lambda session, hello: hellos.append(hello.servername))
    ech_server = TLSLoopServer(builder.build())
    try:
        result = run(
            "bssl-tool", "client", "-connect", f"127.0.0.1:{ech_server.port}", "-server-name", "secret.example",
            "-ech-config-list", str(tmp_path / "list.bin"), "-root-certs", str(pki.ca_cert),
            stdin=b"GET / HTTP/1.1\r\nHost: secret.example\r\nConnection: close\r\n\r\n",
        )
    finally:
        ech_server.stop()
    assert b"Encrypted ClientHello: yes" in result.stderr
    assert b"sni=secret.example resumed=False ech=True" in result.stdout
    assert hellos == ["secret.example"]  # the hook sees the decrypted inner ClientHello
