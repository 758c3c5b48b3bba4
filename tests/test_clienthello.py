"""The sans-IO ClientHello parser of the tls_ech plugin, on ClientHellos built byte by byte and on real clients' bytes."""

import socket
import subprocess
import threading

import pytest
from hypothesis import given, settings, strategies as st

from zeroserve.plugins.tls_ech.clienthello import (
    ClientHelloReader,
    MalformedClientHello,
    is_grease,
    parse_client_hello,
)


def u8(value):
    return value.to_bytes(1, "big")


def u16(value):
    return value.to_bytes(2, "big")


def vec8(data):
    return u8(len(data)) + data


def vec16(data):
    return u16(len(data)) + data


def extension(kind, body):
    return u16(kind) + vec16(body)


def sni_extension(name):
    return extension(0x0000, vec16(b"\x00" + vec16(name.encode())))


def alpn_extension(*protocols):
    return extension(0x0010, vec16(b"".join(vec8(p) for p in protocols)))


def versions_extension(*versions):
    return extension(0x002B, vec8(b"".join(u16(v) for v in versions)))


def sigalgs_extension(*schemes):
    return extension(0x000D, vec16(b"".join(u16(s) for s in schemes)))


def client_hello_body(ciphers, extensions, legacy_version=0x0303, session_id=b"\x11" * 32):
    """A ClientHello message body: version, random, session id, ciphers, null compression, extensions."""
    body = u16(legacy_version) + bytes(range(32)) + vec8(session_id)
    body += vec16(b"".join(u16(c) for c in ciphers)) + vec8(b"\x00")
    if extensions is not None:
        body += vec16(b"".join(extensions))
    return body


def client_hello_records(body, record_size=16384):
    """The body as a handshake message (type 1) cut into TLS handshake records of at most record_size bytes."""
    message = b"\x01" + len(body).to_bytes(3, "big") + body
    records = b""
    for start in range(0, len(message), record_size):
        chunk = message[start:start + record_size]
        records += b"\x16\x03\x01" + vec16(chunk)
    return records


SAMPLE_BODY = client_hello_body(
    [0x1A1A, 0x1301, 0x1302],
    [sni_extension("Site-A.test"), alpn_extension(b"h2", b"http/1.1"), versions_extension(0x2A2A, 0x0304),
     sigalgs_extension(0x0403, 0x0804)],
)


def test_clienthello_parses_fields_of_a_built_hello():
    """A ClientHello built byte by byte parses into its ciphers, extensions, SNI, ALPN, versions and schemes."""
    hello = parse_client_hello(SAMPLE_BODY)
    assert hello.legacy_version == 0x0303
    assert hello.random == bytes(range(32))
    assert hello.session_id == b"\x11" * 32
    assert hello.cipher_suites == (0x1A1A, 0x1301, 0x1302)
    assert [kind for kind, _ in hello.extensions] == [0x0000, 0x0010, 0x002B, 0x000D]
    assert hello.server_name == "site-a.test"
    assert hello.alpn_protocols == (b"h2", b"http/1.1")
    assert hello.supported_versions == (0x2A2A, 0x0304)
    assert hello.signature_algorithms == (0x0403, 0x0804)


def test_clienthello_without_extensions_parses():
    """A hello that ends after the compression methods (legal before TLS 1.3) has no extensions and no SNI."""
    hello = parse_client_hello(client_hello_body([0x002F], None, legacy_version=0x0301, session_id=b""))
    assert hello.extensions == ()
    assert hello.server_name is None
    assert hello.alpn_protocols == ()


@pytest.mark.parametrize("cut", [0, 1, 2, 34, 35, 40, 70, 80, len(SAMPLE_BODY) - 1])
def test_clienthello_truncated_body_is_malformed(cut):
    """Every truncation of a ClientHello body raises MalformedClientHello, never IndexError."""
    with pytest.raises(MalformedClientHello):
        parse_client_hello(SAMPLE_BODY[:cut])


def test_clienthello_overlong_vector_length_is_malformed():
    """A cipher list whose length points past the end of the message is refused with a message naming it."""
    body = bytearray(SAMPLE_BODY)
    body[67:69] = b"\xff\xff"  # cipher_suites length, after version (2), random (32), session id (33)
    with pytest.raises(MalformedClientHello, match="cipher_suites"):
        parse_client_hello(bytes(body))


def test_clienthello_trailing_bytes_after_extensions_are_malformed():
    """Bytes after the extension block of a body are refused."""
    with pytest.raises(MalformedClientHello, match="after the extensions"):
        parse_client_hello(SAMPLE_BODY + b"\x00")


def test_clienthello_grease_values_are_recognised():
    """The sixteen GREASE values are GREASE; neighbouring values are not."""
    grease = [0x0A0A + 0x1010 * i for i in range(16)]
    assert all(is_grease(value) for value in grease)
    assert not any(is_grease(value) for value in (0x0A0B, 0x1A0A, 0x0000, 0x1301, 0xFAFB))


def test_clienthello_reader_parses_whole_records():
    """The reader returns the hello from one feed of its records and keeps the bytes it was given."""
    wire = client_hello_records(SAMPLE_BODY)
    reader = ClientHelloReader()
    hello = reader.feed(wire)
    assert hello == parse_client_hello(SAMPLE_BODY)
    assert bytes(reader.received) == wire


def test_clienthello_reader_parses_byte_at_a_time_across_records():
    """Fed one byte at a time, from records of 50 bytes, the reader returns the hello exactly at its last byte."""
    wire = client_hello_records(SAMPLE_BODY, record_size=50)
    reader = ClientHelloReader()
    results = [reader.feed(wire[i:i + 1]) for i in range(len(wire))]
    assert results[:-1] == [None] * (len(wire) - 1)
    assert results[-1] == parse_client_hello(SAMPLE_BODY)


def test_clienthello_reader_keeps_trailing_data():
    """Bytes after the ClientHello's record are kept for replay and not parsed."""
    wire = client_hello_records(SAMPLE_BODY)
    reader = ClientHelloReader()
    assert reader.feed(wire + b"\x14\x03\x03\x00\x01\x01garbage") is not None
    assert bytes(reader.received) == wire + b"\x14\x03\x03\x00\x01\x01garbage"
    assert reader.feed(b"more") is None
    assert reader.received.endswith(b"garbagemore")


@pytest.mark.parametrize("wire, reason", [
    (b"GET / HTTP/1.1\r\n", "not a handshake"),
    (b"\x16\x02\x01\x00\x05", "major byte"),
    (b"\x16\x03\x01\x00\x00", "outside"),
    (b"\x16\x03\x01\x00\x04\x02\x00\x00\x00", "not ClientHello"),
])
def test_clienthello_reader_refuses_non_tls(wire, reason):
    """Plain HTTP, a wrong record version, an empty record or another handshake message are refused."""
    with pytest.raises(MalformedClientHello, match=reason):
        ClientHelloReader().feed(wire)


def capture_client_hello(command_for_port):
    """Run a real client against a socket that records what it sends and then closes; return the bytes."""
    listener = socket.create_server(("127.0.0.1", 0))
    received = bytearray()

    def accept():
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(5)
            reader = ClientHelloReader()
            while reader.client_hello is None and (data := conn.recv(4096)):
                reader.feed(data)
            received.extend(reader.received)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    port = listener.getsockname()[1]
    subprocess.run(command_for_port(port), capture_output=True, timeout=20, stdin=subprocess.DEVNULL)
    thread.join(10)
    listener.close()
    return bytes(received)


def test_clienthello_reader_parses_curl_hello():
    """curl's real ClientHello parses, with the SNI and ALPN curl was told to send."""
    wire = capture_client_hello(lambda port: [
        "curl", "-sS", "--max-time", "3", "--http2", "--resolve", f"site-a.test:{port}:127.0.0.1",
        f"https://site-a.test:{port}/"])
    hello = ClientHelloReader().feed(wire)
    assert hello.server_name == "site-a.test"
    assert hello.alpn_protocols[0] == b"h2"
    assert 0x0304 in hello.supported_versions


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.integers(min_value=0, max_value=len(SAMPLE_BODY)))
def test_clienthello_random_damage_raises_only_malformed(junk, position):
    """Random bytes spliced into a hello either parse or raise MalformedClientHello, never another error."""
    damaged = SAMPLE_BODY[:position] + junk + SAMPLE_BODY[position + len(junk):]
    try:
        hello = parse_client_hello(damaged)
        hello.server_name, hello.alpn_protocols, hello.supported_versions, hello.signature_algorithms
    except MalformedClientHello:
        pass
    reader = ClientHelloReader()
    try:
        reader.feed(client_hello_records(damaged)[:5] + junk)
    except MalformedClientHello:
        pass
