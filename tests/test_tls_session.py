"""Sans-IO tests of core/tls.py: our server session against our client session and Python's ssl, in memory."""
import ssl

import pytest

from tls_pki import make_test_pki
from zeroserve.core.errors import ConfigError, TLSError
from zeroserve.core.tls import ClientContext, Identity, ServerContext, TicketKeys, TLSConfigBuilder
from zeroserve.native.boringssl import lib



@pytest.fixture(scope="module")
def ticket_keys():
    return TicketKeys()


@pytest.fixture(scope="module")
def server_context(pki, ticket_keys):
    return ServerContext.load(pki.leaf_cert, pki.leaf_key, ticket_keys)


@pytest.fixture(scope="module")
def client_context(pki):
    return ClientContext(ca_file=pki.ca_cert)


def handshake(client, server):
    """Run our client session against a server session until both finish; return the server's last output."""
    _, to_server = client.receive(b"")
    to_client = b""
    for _ in range(4):
        _, to_client = server.receive(to_server)
        _, to_server = client.receive(to_client)
        if client.handshake_complete and server.handshake_complete and not to_server:
            return to_client
    raise AssertionError("handshake did not finish in four flights")


def exchange(client, server, request=b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n", response=b"HTTP/1.1 204 \r\n\r\n"):
    """Send a request and a response through the pair; return (plaintext the server got, the client got)."""
    got_request, to_client = server.receive(client.send(request))
    assert to_client == b""
    got_response, to_server = client.receive(server.send(response))
    assert to_server == b""
    return got_request, got_response


class PythonClient:
    """Python's ssl (OpenSSL) as an independent client, driven through memory BIOs."""

    def __init__(self, pki, *, alpn=("h2", "http/1.1"), max_version=None, server_hostname="localhost"):
        context = ssl.create_default_context(cafile=str(pki.ca_cert))
        if alpn:
            context.set_alpn_protocols(list(alpn))
        if max_version is not None:
            context.maximum_version = max_version
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.ssl = context.wrap_bio(self.incoming, self.outgoing, server_hostname=server_hostname)

    def step(self, data=b""):
        """Feed bytes from the server, advance the handshake, return bytes for the server."""
        self.incoming.write(data)
        try:
            self.ssl.do_handshake()
        except ssl.SSLWantReadError:
            pass
        return self.outgoing.read()

    def handshake_with(self, server):
        to_server = self.step()
        while not (server.handshake_complete and self.ssl.version()):
            _, to_client = server.receive(to_server)
            to_server = self.step(to_client)
        server.receive(to_server)


def test_tls_session_handshake_with_own_client_carries_data_both_ways(server_context, client_context):
    """Our client and server complete a TLS 1.3 handshake and carry a request and a response."""
    client, server = client_context.new_session("localhost"), server_context.new_session()
    handshake(client, server)
    assert server.is_tls and server.handshake_complete and client.handshake_complete
    assert server.version == "TLSv1.3" and client.version == "TLSv1.3"
    assert server.cipher.startswith("TLS_")
    assert exchange(client, server) == (b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n", b"HTTP/1.1 204 \r\n\r\n")


def test_tls_session_python_ssl_client_gets_h2_when_it_offers_h2(server_context, pki):
    """Python's ssl client offering h2 and http/1.1 gets h2, and both sides see TLS 1.3."""
    client, server = PythonClient(pki), server_context.new_session()
    client.handshake_with(server)
    assert server.alpn == "h2" and client.ssl.selected_alpn_protocol() == "h2"
    assert client.ssl.version() == "TLSv1.3"
    client.ssl.write(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
    plaintext, _ = server.receive(client.outgoing.read())
    assert plaintext == b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
    client.incoming.write(server.send(b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"))
    assert client.ssl.read(100) == b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


@pytest.mark.parametrize(
    ("offered", "chosen"),
    [
        (("http/1.1",), "http/1.1"),
        (("http/1.1", "h2"), "h2"),
        (("spdy/3", "h2c"), None),
        ((), None),
    ],
    ids=["http1-only", "server-preference", "no-overlap", "no-alpn"],
)
def test_tls_session_alpn_prefers_h2_then_http1(server_context, pki, offered, chosen):
    """ALPN picks h2 over http/1.1 whatever the client's order, and no protocol when none is shared."""
    client, server = PythonClient(pki, alpn=offered), server_context.new_session()
    client.handshake_with(server)
    assert server.alpn == chosen
    assert client.ssl.selected_alpn_protocol() == chosen


def test_tls_session_tls12_client_refused_with_protocol_version_alert(server_context, pki):
    """A TLS 1.2-only client makes the server raise UNSUPPORTED_PROTOCOL and gets a protocol_version alert."""
    client, server = PythonClient(pki, max_version=ssl.TLSVersion.TLSv1_2), server_context.new_session()
    with pytest.raises(TLSError, match="UNSUPPORTED_PROTOCOL"):
        server.receive(client.step())
    alert = server.close()
    assert alert[:1] == b"\x15" and alert[-2:] == b"\x02\x46"  # fatal protocol_version (70)
    with pytest.raises(ssl.SSLError, match="PROTOCOL_VERSION"):
        client.step(alert)


def test_tls_session_garbage_client_hello_fails_alone(server_context, client_context):
    """Garbage instead of a ClientHello raises TLSError with a reason; a handshake in progress is unaffected."""
    client, server = client_context.new_session("localhost"), server_context.new_session()
    _, hello = client.receive(b"")
    _, flight = server.receive(hello)

    victim = server_context.new_session()
    with pytest.raises(TLSError, match="SSL routines: WRONG_VERSION_NUMBER"):
        victim.receive(b"\x16\x09\x09\x00\x05hello")
    assert lib.ERR_get_error() == 0  # the error queue was drained, nothing leaks into the next call
    http_on_tls_port = server_context.new_session()
    with pytest.raises(TLSError, match="HTTP_REQUEST"):
        http_on_tls_port.receive(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")

    _, finished = client.receive(flight)
    server.receive(finished)
    assert server.handshake_complete
    assert exchange(client, server)[1] == b"HTTP/1.1 204 \r\n\r\n"


def test_tls_session_truncated_client_hello_waits_then_fails_when_malformed(server_context, client_context):
    """Half a ClientHello record waits for more; a ClientHello cut short inside a whole record is a decode error."""
    _, hello = client_context.new_session("localhost").receive(b"")
    half = server_context.new_session()
    assert half.receive(hello[: len(hello) // 2]) == (b"", b"")
    assert not half.handshake_complete

    # Keep the first 60 body bytes (inside the random/session id) and make the lengths agree with that.
    body = hello[9 : 9 + 60]
    message = b"\x01" + len(body).to_bytes(3, "big") + body
    record = hello[:3] + len(message).to_bytes(2, "big") + message
    with pytest.raises(TLSError, match="DECODE_ERROR|CLIENTHELLO_PARSE_FAILED"):
        server_context.new_session().receive(record)


def test_tls_session_sni_is_exposed_lowercased(server_context, client_context):
    """The server session exposes the client's SNI in lower case, and None when the client connects by IP."""
    client, server = client_context.new_session("Site-A.test"), server_context.new_session()
    handshake(client, server)
    assert server.sni == "site-a.test"
    client, server = client_context.new_session("127.0.0.1"), server_context.new_session()
    handshake(client, server)
    assert server.sni is None and client.handshake_complete


def test_tls_session_client_rejects_wrong_hostname(server_context, client_context):
    """A client checking a name the certificate does not cover fails with the verifier's reason."""
    client, server = client_context.new_session("other.example"), server_context.new_session()
    _, hello = client.receive(b"")
    _, flight = server.receive(hello)
    with pytest.raises(TLSError, match="CERTIFICATE_VERIFY_FAILED; certificate: Hostname mismatch"):
        client.receive(flight)


def test_tls_session_client_rejects_unknown_ca(server_context):
    """A client trusting only the system bundle rejects the test CA's certificate."""
    client, server = ClientContext().new_session("localhost"), server_context.new_session()
    _, hello = client.receive(b"")
    _, flight = server.receive(hello)
    with pytest.raises(TLSError, match="unable to get local issuer certificate"):
        client.receive(flight)


def resume(client_context, server_context, ticket):
    client, server = client_context.new_session("localhost", resume=ticket), server_context.new_session()
    handshake(client, server)
    return client, server


def ticket_from(client_context, server_context):
    """A ticket from a fresh connection (the server sends it with its first record)."""
    client, server = client_context.new_session("localhost"), server_context.new_session()
    handshake(client, server)
    exchange(client, server)
    ticket = client.resumption_ticket()
    assert ticket is not None
    return ticket


def test_tls_session_resumes_with_ticket_across_connections_and_reloads(
    pki, server_context, client_context, ticket_keys
):
    """A ticket resumes on a new connection, and on a reloaded context sharing the worker's ticket keys."""
    ticket = ticket_from(client_context, server_context)
    client, server = resume(client_context, server_context, ticket)
    assert client.resumed and server.resumed
    assert exchange(client, server)[1] == b"HTTP/1.1 204 \r\n\r\n"

    reloaded = ServerContext.load(pki.leaf_cert, pki.leaf_key, ticket_keys)
    client, server = resume(client_context, reloaded, ticket)
    assert server.resumed


def test_tls_session_ticket_from_other_keys_falls_back_to_full_handshake(pki, server_context, client_context):
    """A ticket under unknown keys (another worker without a shared seed) gives a full handshake, not an error."""
    ticket = ticket_from(client_context, server_context)
    other_worker = ServerContext.load(pki.leaf_cert, pki.leaf_key, TicketKeys())
    client, server = resume(client_context, other_worker, ticket)
    assert server.handshake_complete and not server.resumed


def test_tls_session_ticket_keys_shared_seed_resume_across_workers(pki, client_context):
    """Two workers whose TicketKeys share a seed (made before fork) resume each other's tickets."""
    seed = b"s" * 32
    worker_a = ServerContext.load(pki.leaf_cert, pki.leaf_key, TicketKeys(seed=seed))
    worker_b = ServerContext.load(pki.leaf_cert, pki.leaf_key, TicketKeys(seed=seed))
    client, server = resume(client_context, worker_b, ticket_from(client_context, worker_a))
    assert server.resumed


def test_tls_session_ticket_keys_rotate_and_expire(pki, client_context):
    """A ticket resumes in the next key period (renewed) but not two periods later."""
    now = [1_000_000.0]
    keys = TicketKeys(period=3600, clock=lambda: now[0])
    context = ServerContext.load(pki.leaf_cert, pki.leaf_key, keys)
    ticket = ticket_from(client_context, context)
    first_key = keys.current.name

    now[0] += 3600
    client, server = resume(client_context, context, ticket)
    assert server.resumed and keys.current.name != first_key and keys.previous.name == first_key

    now[0] += 3600
    client, server = resume(client_context, context, ticket)
    assert not server.resumed and server.handshake_complete


def test_tls_session_close_notify_is_seen_by_peer(server_context, client_context):
    """close() emits a close_notify; the peer's receive() returns no plaintext and sets closed."""
    client, server = client_context.new_session("localhost"), server_context.new_session()
    handshake(client, server)
    exchange(client, server)
    assert not server.closed
    plaintext, _ = server.receive(client.close())
    assert plaintext == b"" and server.closed
    plaintext, _ = client.receive(server.close())  # our own close_notify back
    assert plaintext == b"" and client.closed


def test_tls_session_send_takes_any_buffer_and_large_bodies(server_context, client_context):
    """send() accepts bytes, bytearray and memoryview; 100 KB bodies arrive whole both ways, and small ones after."""
    client, server = client_context.new_session("localhost"), server_context.new_session()
    handshake(client, server)
    body = bytes(range(256)) * 400
    records = server.send(bytearray(b"head:")) + server.send(memoryview(body))
    plaintext, _ = client.receive(records)
    assert plaintext == b"head:" + body
    plaintext, _ = server.receive(client.send(body))
    assert plaintext == body
    assert exchange(client, server) == (b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n", b"HTTP/1.1 204 \r\n\r\n")


def test_tls_session_corrupted_record_raises(server_context, client_context):
    """A record whose ciphertext was altered raises TLSError with BoringSSL's MAC failure reason."""
    client, server = client_context.new_session("localhost"), server_context.new_session()
    handshake(client, server)
    record = bytearray(client.send(b"GET / HTTP/1.1\r\n\r\n"))
    record[-1] ^= 1
    with pytest.raises(TLSError, match="DECRYPTION_FAILED_OR_BAD_RECORD_MAC"):
        server.receive(bytes(record))
    with pytest.raises(TLSError, match="BAD_RECORD_MAC"):
        client.receive(server.close())  # the alert the server queued


def test_tls_session_client_hello_hook_sees_raw_hello_and_can_refuse(pki, ticket_keys, client_context):
    """The on_client_hello hook gets the raw ClientHello and SNI; its exception comes out of receive()."""
    seen = []

    class Refused(Exception):
        pass

    def hook(session, hello):
        seen.append((hello.servername, hello.raw, hello.extension(0x0010)))
        if hello.servername == "refuse.example":
            raise Refused(hello.servername)

    context = ServerContext.load(pki.leaf_cert, pki.leaf_key, ticket_keys, on_client_hello=hook)
    client, server = client_context.new_session("localhost"), context.new_session()
    handshake(client, server)
    servername, raw, alpn_extension = seen[0]
    assert servername == "localhost" and raw == server.client_hello
    assert raw[:2] == b"\x03\x03"  # the ClientHello body starts with legacy_version
    assert alpn_extension == b"\x00\x09\x08http/1.1"

    client, server = client_context.new_session("refuse.example"), context.new_session()
    _, hello = client.receive(b"")
    with pytest.raises(Refused):
        server.receive(hello)
    assert lib.ERR_get_error() == 0


def test_tls_session_client_hello_hook_selects_certificate(tmp_path, pki, ticket_keys):
    """A hook that switches to another context's identity makes the handshake present that certificate."""
    other = make_test_pki(tmp_path / "other")
    other_context = ServerContext.load(other.leaf_cert, other.leaf_key, ticket_keys)

    def hook(session, hello):
        if hello.servername == "site-a.test":
            session.use_identity_of(other_context)

    context = ServerContext.load(pki.leaf_cert, pki.leaf_key, ticket_keys, on_client_hello=hook)
    trusts_other_only = ClientContext(ca_file=other.ca_cert)
    client, server = trusts_other_only.new_session("site-a.test"), context.new_session()
    handshake(client, server)
    assert client.handshake_complete

    client, server = trusts_other_only.new_session("localhost"), context.new_session()
    _, hello = client.receive(b"")
    _, flight = server.receive(hello)
    with pytest.raises(TLSError, match="CERTIFICATE_VERIFY_FAILED"):
        client.receive(flight)


def test_tls_context_missing_files_give_clear_errors(tmp_path, pki, ticket_keys):
    """A missing certificate or key file is a ConfigError naming the file."""
    missing = tmp_path / "missing.pem"
    with pytest.raises(ConfigError, match=f"certificate file {missing} does not exist"):
        ServerContext.load(missing, pki.leaf_key, ticket_keys)
    with pytest.raises(ConfigError, match=f"key file {missing} does not exist"):
        ServerContext.load(pki.leaf_cert, missing, ticket_keys)
    with pytest.raises(ConfigError, match="is a directory"):
        ServerContext.load(tmp_path, pki.leaf_key, ticket_keys)


def test_tls_context_mismatched_or_unparsable_files_give_clear_errors(tmp_path, pki, ticket_keys):
    """A key that does not belong to the certificate, or a file that is not PEM, is a ConfigError with the reason."""
    with pytest.raises(ConfigError, match="do not match .*KEY_VALUES_MISMATCH"):
        ServerContext.load(pki.leaf_cert, pki.ca_key, ticket_keys)
    not_pem = tmp_path / "notpem.txt"
    not_pem.write_text("hello\n")
    with pytest.raises(ConfigError, match=f"certificate file {not_pem} holds no PEM certificate .*NO_START_LINE"):
        ServerContext.load(not_pem, pki.leaf_key, ticket_keys)
    with pytest.raises(ConfigError, match=f"key file {not_pem} holds no usable PEM private key"):
        ServerContext.load(pki.leaf_cert, not_pem, ticket_keys)
    damaged_chain = tmp_path / "damaged.pem"
    ca_pem = pki.ca_cert.read_text()
    damaged_chain.write_text(pki.leaf_cert.read_text() + ca_pem[:80] + "!!!" + ca_pem[80:])
    with pytest.raises(ConfigError, match=f"certificate file {damaged_chain}: certificate 2 is damaged"):
        ServerContext.load(damaged_chain, pki.leaf_key, ticket_keys)
    assert lib.ERR_get_error() == 0


def test_tls_context_serves_chain_after_leaf(tmp_path, pki, ticket_keys):
    """A certificate file holding leaf then CA serves both, and the client still verifies against the CA."""
    bundle = tmp_path / "fullchain.pem"
    bundle.write_bytes(pki.leaf_cert.read_bytes() + pki.ca_cert.read_bytes())
    context = ServerContext.load(bundle, pki.leaf_key, ticket_keys)
    assert len(context.identity.chain) == 1
    client, server = ClientContext(ca_file=pki.ca_cert).new_session("localhost"), context.new_session()
    handshake(client, server)
    assert client.handshake_complete


def test_tls_client_context_missing_ca_file_is_config_error(tmp_path):
    """A CA file that does not exist is a ConfigError naming it."""
    with pytest.raises(ConfigError, match="CA file .*missing.pem does not exist"):
        ClientContext(ca_file=tmp_path / "missing.pem")


@pytest.mark.parametrize(
    ("max_version", "expected"),
    [(ssl.TLSVersion.TLSv1_2, "TLSv1.2"), (ssl.TLSVersion.TLSv1_3, "TLSv1.3")],
    ids=["tls12", "tls13"],
)
def test_tls_client_session_accepts_tls12_and_tls13_servers(pki, client_context, max_version, expected):
    """Our client completes handshakes with a TLS 1.2-only and a TLS 1.3 server (Python's ssl), offering http/1.1."""
    server_ssl = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ssl.load_cert_chain(pki.leaf_cert, pki.leaf_key)
    server_ssl.maximum_version = max_version
    server_ssl.set_alpn_protocols(["h2", "http/1.1"])
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    server = server_ssl.wrap_bio(incoming, outgoing, server_side=True)
    client = client_context.new_session("localhost")
    _, to_server = client.receive(b"")
    while not client.handshake_complete:
        incoming.write(to_server)
        try:
            server.do_handshake()
        except ssl.SSLWantReadError:
            pass
        _, to_server = client.receive(outgoing.read())
    incoming.write(to_server)
    server.do_handshake()
    assert client.version == server.version() == expected
    assert client.alpn == "http/1.1" == server.selected_alpn_protocol()


def test_tls_config_builder_runs_inspectors_in_order(pki, ticket_keys, client_context):
    """A built configuration runs every inspector on each ClientHello, in the order they were added."""
    calls = []
    builder = TLSConfigBuilder(Identity.load(pki.leaf_cert, pki.leaf_key), ticket_keys)
    builder.add_inspector(lambda session, hello: calls.append(("first", hello.servername, hello.alpn_offered)))
    builder.add_inspector(lambda session, hello: calls.append(("second", session.client_hello == hello.raw)))
    context = builder.build()
    client, server = client_context.new_session("site-a.test"), context.new_session()
    handshake(client, server)
    assert calls == [("first", "site-a.test", ["http/1.1"]), ("second", True)]
    assert context.identity is builder.identity and context.ticket_keys is ticket_keys
