"""PROXY protocol v1 (--enable-proxy-protocol): the parser, and the server using its source address."""

import time

import pytest

from harness import connect, curl_status, exchange, parse_responses, read_until_closed, start_server
from zeroserve.core import proxyproto
from zeroserve.core.errors import ProtocolError

LINE = b"PROXY TCP4 203.0.113.7 127.0.0.1 51234 80\r\n"
REQUEST = b"GET /a.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"


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


@pytest.fixture(scope="module")
def server(request, make_site):
    return start_server(request, make_site({"a.txt": "alpha"}), "--enable-proxy-protocol")


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
