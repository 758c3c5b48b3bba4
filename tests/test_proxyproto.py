"""PROXY protocol v1 and v2 (--enable-proxy-protocol): the parser, and the server using its source address."""

import ipaddress
import socket
import ssl
import struct
import time

import json

import pytest

from harness import (connect, curl_status, exchange, parse_responses, read_until_closed, start_server,
                     write_tree)
from zeroserve.core import proxyproto
from proxy_backends import PythonBackend
from zeroserve.core.errors import ProtocolError

LINE = b"PROXY TCP4 203.0.113.7 127.0.0.1 51234 80\r\n"
REQUEST = b"GET /a.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
# A script answering /peer with what zs_req_peer gives it, and proxying to the URL in X-Upstream (test-only).
PEER_SCRIPT = """#include "zeroserve.h"
ZS_ENTRY zs_u64 entry(void)
{
    char path[8];
    char peer[64];
    char url[128];
    zs_s64 url_len = zs_req_header(ZS_STR("x-upstream"), url, sizeof url);
    if (url_len > 0 && url_len < (zs_s64)sizeof url) {
        zs_reverse_proxy(url, (zs_u64)url_len);
        return 0;
    }
    if (zs_req_path(path, sizeof path) != 5 || zs_strncmp(path, "/peer", 5) != 0)
        return 0;
    zs_s64 len = zs_req_peer(peer, sizeof peer);
    if (len > 0 && len < (zs_s64)sizeof peer)
        zs_respond(200, peer, (zs_u64)len);
    return 0;
}
"""


def v2_header(source, source_port, command=0x21, family=None, tlvs=b""):
    """A PROXY v2 header (PROXY command, STREAM) from `source`:`source_port` to a fixed destination, then `tlvs`."""
    address = ipaddress.ip_address(source)
    destination = ipaddress.ip_address("127.0.0.1" if address.version == 4 else "::1")
    if family is None:
        family = 0x11 if address.version == 4 else 0x21
    payload = address.packed + destination.packed + struct.pack("!HH", source_port, 443) + tlvs
    return V2_SIGNATURE + struct.pack("!BBH", command, family, len(payload)) + payload


V2 = v2_header("198.51.100.9", 40000)


def test_proxyproto_parses_whole_line_and_leaves_the_rest():
    """A complete line gives the source address and its length; following bytes are not consumed."""
    assert proxyproto.parse(LINE + REQUEST) == (("203.0.113.7", 51234), len(LINE))


def test_proxyproto_waits_for_the_line_byte_at_a_time():
    """Every proper prefix of the line is incomplete (None); the whole line parses."""
    for end in range(len(LINE)):
        assert proxyproto.parse(LINE[:end]) is None
    assert proxyproto.parse(LINE) == (("203.0.113.7", 51234), len(LINE))


@pytest.mark.parametrize("line, expected", [
    (b"PROXY TCP6 2001:db8::1 ::1 443 8443\r\n", ("2001:db8::1", 443)),
    (b"PROXY UNKNOWN\r\n", None),
    (b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n", None),
], ids=["tcp6", "unknown", "unknown-with-addresses"])
def test_proxyproto_parses_other_forms(line, expected):
    """TCP6 gives its source; UNKNOWN keeps the socket's address."""
    assert proxyproto.parse(line) == (expected, len(line))


@pytest.mark.parametrize("data", [
    b"GET / HTTP/1.1\r\n",
    b"PROXY TCP4 203.0.113.7 127.0.0.1 51234\r\n",
    b"PROXY TCP4 2001:db8::1 127.0.0.1 1 2\r\n",
    b"PROXY TCP4 203.0.113.7 127.0.0.1 99999 80\r\n",
    b"PROXY TCP5 1.2.3.4 1.2.3.4 1 2\r\n",
    b"PROXY TCP4 " + b"1" * 120,
], ids=["not-proxy", "missing-port", "family-mismatch", "port-range", "bad-family", "too-long"])
def test_proxyproto_rejects_malformed_lines(data):
    """Anything that cannot be a PROXY v1 line raises ProtocolError."""
    with pytest.raises(ProtocolError):
        proxyproto.parse(data)


@pytest.mark.parametrize("header, expected", [
    (V2, ("198.51.100.9", 40000)),
    (v2_header("2001:db8::7", 8443), ("2001:db8::7", 8443)),
    (v2_header("198.51.100.9", 1, tlvs=b"\x04\x00\x03abc\x01\x00\x02h2"), ("198.51.100.9", 1)),
    (V2_SIGNATURE + b"\x20\x00\x00\x00", None),
    (v2_header("198.51.100.9", 1, command=0x20), None),
    (V2_SIGNATURE + b"\x21\x00\x00\x03xyz", None),
    (V2_SIGNATURE + b"\x21\x31\x00\xd8" + bytes(216), None),
], ids=["tcp4", "tcp6", "tlvs-skipped", "local", "local-with-addresses", "unspec", "unix"])
def test_proxyproto_v2_parses_header_and_leaves_the_rest(header, expected):
    """A v2 header gives its source (None for LOCAL, UNSPEC, UNIX) and its whole length, TLVs included."""
    assert proxyproto.parse(header + REQUEST) == (expected, len(header))


def test_proxyproto_v2_waits_for_the_header_byte_at_a_time():
    """Every proper prefix of a v2 header is incomplete (None); the whole header parses."""
    header = v2_header("2001:db8::7", 8443, tlvs=b"\x04\x00\x01z")
    for end in range(len(header)):
        assert proxyproto.parse(header[:end]) is None
    assert proxyproto.parse(header) == (("2001:db8::7", 8443), len(header))


@pytest.mark.parametrize("data", [
    V2_SIGNATURE[:5] + b"X",
    V2_SIGNATURE + b"\x11\x11\x00\x0c" + bytes(12),
    V2_SIGNATURE + b"\x22\x11\x00\x0c" + bytes(12),
    V2_SIGNATURE + b"\x21\x41\x00\x0c" + bytes(12),
    V2_SIGNATURE + b"\x21\x12\x00\x0c" + bytes(12),
    V2_SIGNATURE + b"\x21\x11\x00\x08" + bytes(8),
    V2_SIGNATURE + b"\x21\x21\x00\x0c" + bytes(12),
    V2_SIGNATURE + b"\x21\x11\xff\xff",
], ids=["bad-signature", "version-1", "bad-command", "bad-family", "datagram", "short-inet", "short-inet6",
        "too-long"])
def test_proxyproto_v2_rejects_malformed_headers(data):
    """Anything that cannot be a v2 header raises ProtocolError, an oversized length before its bytes arrive."""
    with pytest.raises(ProtocolError):
        proxyproto.parse(data)



@pytest.fixture(scope="module")
def server(request, make_site, pki, tmp_path_factory):
    source = tmp_path_factory.mktemp("peer-site")
    write_tree(source, {"a.txt": "alpha", ".zeroserve/scripts/10-peer.c": PEER_SCRIPT})
    site = make_site(source)
    return start_server(request, site, "--enable-proxy-protocol", "--tls-addr", "127.0.0.1:0",
                        "--cert", str(pki.leaf_cert), "--key", str(pki.leaf_key))


def test_proxyproto_server_logs_source_address_as_client(server):
    """A request behind a PROXY line is served and logged with the line's source address."""
    start = len(server.lines)
    (response,) = parse_responses(exchange(server.port, LINE + REQUEST))
    assert (response.status, response.body) == (200, b"alpha")
    server.wait_for(r"\[request\] \S+ \S+ 203\.0\.113\.7:51234 GET /a\.txt 200", start=start)


def test_proxyproto_server_accepts_line_split_over_writes(server):
    """A PROXY line and request arriving a few bytes at a time are served."""
    with connect(server.port) as sock:
        data = LINE + REQUEST
        for offset in range(0, len(data), 7):
            sock.sendall(data[offset:offset + 7])
            time.sleep(0.001)
        (response,) = parse_responses(read_until_closed(sock))
    assert response.body == b"alpha"


def test_proxyproto_server_uses_v2_source_in_log_and_scripts(server):
    """A request behind a v2 header is logged with its source, and zs_req_peer gives that source to scripts."""
    start = len(server.lines)
    (response,) = parse_responses(exchange(server.port, V2 + REQUEST))
    assert (response.status, response.body) == (200, b"alpha")
    server.wait_for(r"\[request\] \S+ \S+ 198\.51\.100\.9:40000 GET /a\.txt 200", start=start)
    peer_request = REQUEST.replace(b"/a.txt", b"/peer")
    (response,) = parse_responses(exchange(server.port, v2_header("2001:db8::7", 8443) + peer_request))
    assert (response.status, response.body) == (200, b"[2001:db8::7]:8443")


def test_proxyproto_server_forwards_v2_source_as_x_forwarded_for(server):
    """A request proxied by a script reaches the upstream with the v2 header's source in X-Forwarded-For."""
    backend = PythonBackend()
    try:
        request = (f"GET /echo HTTP/1.1\r\nHost: t\r\nx-upstream: {backend.url}\r\n"
                   "Connection: close\r\n\r\n").encode()
        (response,) = parse_responses(exchange(server.port, V2 + request))
    finally:
        backend.stop()
    assert response.status == 200
    forwarded = [value for name, value in json.loads(response.body)["headers"] if name.lower() == "x-forwarded-for"]
    assert forwarded == ["198.51.100.9"]


def test_proxyproto_server_accepts_v2_before_tls_client_hello(server, pki):
    """Over HTTPS the v2 header comes before the ClientHello; the request is served with the header's source."""
    start = len(server.lines)
    context = ssl.create_default_context(cafile=str(pki.ca_cert))
    with socket.create_connection(("127.0.0.1", server.tls_port), timeout=10) as raw:
        raw.sendall(V2)
        with context.wrap_socket(raw, server_hostname="localhost") as sock:
            sock.sendall(REQUEST.replace(b"Host: t", b"Host: localhost"))
            (response,) = parse_responses(read_until_closed(sock))
    assert (response.status, response.body) == (200, b"alpha")
    server.wait_for(r"\[request\] \S+ \S+ 198\.51\.100\.9:40000 GET /a\.txt 200", start=start)


def test_proxyproto_server_drops_connection_with_invalid_v2_header(server):
    """A v2 header with an unknown command drops the connection without a response, with a log line."""
    start = len(server.lines)
    assert exchange(server.port, v2_header("198.51.100.9", 1, command=0x2F) + REQUEST) == b""
    server.wait_for(r"dropping 127\.0\.0\.1:\d+: PROXY v2 header with unknown version/command", start=start)


def test_proxyproto_server_drops_connection_without_line(server):
    """A connection that does not start with a PROXY line is dropped without a response."""
    start = len(server.lines)
    assert exchange(server.port, REQUEST) == b""
    server.wait_for(r"dropping 127\.0\.0\.1:\d+: the connection does not start with a PROXY", start=start)


def test_proxyproto_server_without_flag_treats_line_as_bad_request(request, make_site):
    """Without --enable-proxy-protocol a PROXY line is just a malformed request (400)."""
    plain = start_server(request, make_site({"a.txt": "alpha"}))
    assert [r.status for r in parse_responses(exchange(plain.port, LINE + REQUEST))] == [400]
    assert curl_status(plain.url("/a.txt"), "--http1.1")[1] == 200
