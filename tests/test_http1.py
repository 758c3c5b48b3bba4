"""HTTP/1.1 end to end: keep-alive, pipelining, chunked bodies, 100-continue, framing, access log."""

import hashlib
import re
import subprocess
import time
from email.utils import parsedate_to_datetime

import pytest

from harness import connect, curl, curl_status, exchange, parse_responses, read_until_closed, start_server
from zeroserve.core import http1
from zeroserve.core.config import Limits
from zeroserve.core.request import Request

BIG = bytes(range(256)) * 8192  # 2 MiB, several pread chunks
FILES = {
    "index.html": "<h1>home</h1>",
    "a.txt": "alpha",
    "b.txt": "bravo!",
    "big.bin": BIG,
}


@pytest.fixture(scope="module")
def server(request, make_site):
    return start_server(request, make_site(FILES))


def get(path, extra=""):
    return f"GET {path} HTTP/1.1\r\nHost: test\r\n{extra}\r\n".encode()


def test_http1_get_serves_file_with_framing_headers(server):
    """A GET gets the file with Content-Length, Date and Server headers."""
    data = exchange(server.port, get("/a.txt", "Connection: close\r\n"))
    (response,) = parse_responses(data)
    assert response.status == 200
    assert response.body == b"alpha"
    assert response.headers["content-length"] == "5"
    assert response.headers["server"] == "zeroserve"
    assert response.headers["connection"] == "close"


def test_http1_date_header_is_current_imf_fixdate(server):
    """The Date header is an IMF-fixdate within a second or two of now."""
    (response,) = parse_responses(exchange(server.port, get("/a.txt", "Connection: close\r\n")))
    date = response.headers["date"]
    assert re.fullmatch(r"[A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d GMT", date)
    assert abs(parsedate_to_datetime(date).timestamp() - time.time()) < 3


def test_http1_keep_alive_serves_requests_on_one_connection(server):
    """Several requests sent one after another on one connection are all answered."""
    with connect(server.port) as sock:
        for path, body in (("/a.txt", b"alpha"), ("/b.txt", b"bravo!"), ("/a.txt", b"alpha")):
            sock.sendall(get(path))
            data = b""
            while not data.endswith(body):
                chunk = sock.recv(65536)
                assert chunk, "connection closed during keep-alive"
                data += chunk
            (response,) = parse_responses(data)
            assert response.status == 200 and response.body == body
            assert "connection" not in response.headers


def test_http1_pipelined_requests_are_answered_in_order(server):
    """Pipelined requests in one write get their responses in request order."""
    burst = get("/a.txt") + get("/b.txt") + get("/missing") + get("/a.txt", "Connection: close\r\n")
    responses = parse_responses(exchange(server.port, burst))
    assert [(r.status, r.body) for r in responses] == [
        (200, b"alpha"), (200, b"bravo!"), (404, b"Not Found"), (200, b"alpha")]
    assert responses[-1].headers["connection"] == "close"


def test_http1_pipelined_big_file_keeps_order(server):
    """A big body streamed with back-pressure is followed, in order, by the next pipelined response."""
    burst = get("/big.bin") + get("/a.txt", "Connection: close\r\n")
    responses = parse_responses(exchange(server.port, burst))
    assert [r.status for r in responses] == [200, 200]
    assert responses[0].body == BIG
    assert responses[1].body == b"alpha"


def test_http1_byte_at_a_time_request_is_served(server):
    """A request sent one byte per write is parsed and answered."""
    with connect(server.port) as sock:
        for byte in get("/b.txt", "Connection: close\r\n"):
            sock.sendall(bytes([byte]))
        (response,) = parse_responses(read_until_closed(sock))
    assert response.status == 200 and response.body == b"bravo!"


def test_http1_chunked_request_body_is_read_and_connection_reused(server):
    """A chunked request body is consumed, so the next request on the connection is answered."""
    post = (b"POST /a.txt HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
    responses = parse_responses(exchange(server.port, post + get("/a.txt", "Connection: close\r\n")))
    assert [r.status for r in responses] == [405, 200]
    assert responses[0].headers["allow"] == "GET, HEAD"
    assert responses[1].body == b"alpha"


def test_http1_expect_100_continue_gets_interim_response_before_body(server):
    """A request with Expect: 100-continue gets 100 Continue, then its final response."""
    with connect(server.port) as sock:
        sock.sendall(b"PUT /a.txt HTTP/1.1\r\nHost: test\r\nContent-Length: 5\r\n"
                     b"Expect: 100-continue\r\nConnection: close\r\n\r\n")
        interim = sock.recv(65536)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"hello")
        (response,) = parse_responses(read_until_closed(sock))
    assert response.status == 405


def test_http1_unknown_expectation_gets_417(server):
    """An Expect value other than 100-continue gets 417."""
    raw = b"GET /a.txt HTTP/1.1\r\nHost: test\r\nExpect: teapot\r\n\r\n"
    assert [r.status for r in parse_responses(exchange(server.port, raw))] == [417]


def test_http1_connection_close_from_client_closes_after_response(server):
    """Connection: close from the client ends the connection after one response."""
    with connect(server.port) as sock:
        sock.sendall(get("/a.txt", "Connection: close\r\n") + get("/b.txt"))
        responses = parse_responses(read_until_closed(sock))
    assert [r.body for r in responses] == [b"alpha"]


def test_http1_http10_request_closes_unless_keep_alive(server):
    """An HTTP/1.0 request closes the connection; with keep-alive it stays open."""
    closed = parse_responses(exchange(server.port, b"GET /a.txt HTTP/1.0\r\n\r\n"))
    assert [r.body for r in closed] == [b"alpha"]
    both = parse_responses(exchange(
        server.port,
        b"GET /a.txt HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /b.txt HTTP/1.0\r\n\r\n"))
    assert [r.body for r in both] == [b"alpha", b"bravo!"]
    assert both[0].headers["connection"] == "keep-alive"


@pytest.mark.parametrize("raw", [
    b"GARBAGE\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: test\r\nBad Header Name: x\r\n\r\n",
    b"GET / HTTP/9.9\r\nHost: test\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: test\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
    b"GET / HTTP/1.1\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: t\r\nX-Nul: a\x00b\r\n\r\n",
], ids=["garbage", "space-in-name", "bad-version", "two-lengths", "no-host", "two-hosts",
        "length-and-chunked", "nul-in-value"])
def test_http1_malformed_request_gets_400_and_close(server, raw):
    """A malformed request gets one 400 and the connection is closed."""
    responses = parse_responses(exchange(server.port, raw))
    assert [r.status for r in responses] == [400]


def test_http1_path_above_root_gets_400_and_keeps_connection(server):
    """A path escaping the root gets 400; the connection still serves the next request."""
    burst = get("/../etc/passwd") + get("/%2e%2e/a.txt") + get("/a.txt", "Connection: close\r\n")
    responses = parse_responses(exchange(server.port, burst))
    assert [r.status for r in responses] == [400, 400, 200]


def test_http1_curl_keeps_connection_alive(server):
    """curl --http1.1 fetches two URLs over one connection."""
    result = curl("--http1.1", "-v", "-o", "/dev/null", "-o", "/dev/null",
                  server.url("/a.txt"), server.url("/b.txt"))
    assert result.returncode == 0
    assert b"Re-using existing connection" in result.stderr


def test_http1_large_file_arrives_intact(server):
    """A 2 MiB file streamed in chunks arrives byte for byte."""
    version, status, body = curl_status(server.url("/big.bin"), "--http1.1")
    assert (version, status) == ("1.1", 200)
    assert hashlib.sha256(body).digest() == hashlib.sha256(BIG).digest()


def test_http1_h2load_pipelined_load_succeeds(server):
    """h2load over HTTP/1.1 with pipelining completes every request."""
    result = subprocess.run(["h2load", "--h1", "-n", "2000", "-c", "8", "-m", "8", server.url("/a.txt")],
                            capture_output=True, text=True, timeout=60)
    assert "2000 succeeded, 0 failed, 0 errored, 0 timeout" in result.stdout
    assert "status codes: 2000 2xx" in result.stdout


def test_http1_access_log_has_one_line_per_request(server):
    """Each request gets one access-log line with id, client, method, path, status, bytes, time, protocol."""
    start = len(server.lines)
    exchange(server.port, get("/b.txt?q=1", "Connection: close\r\n"))
    match = server.wait_for(
        r"^\[request\] \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ (\S+) 127\.0\.0\.1:\d+ GET /b\.txt\?q=1 200 6 "
        r"[\d.]+ms HTTP/1\.1$", start=start)
    assert server.count(re.escape(match.group(1))) == 1


# -- the sans-IO layer on its own ------------------------------------------------------

def _h1():
    ids = iter(range(1000))
    return http1.H1Connection(Limits(), "http", ("127.0.0.1", 1), lambda: str(next(ids)), time.monotonic)


PIPELINE = (b"POST /x?y=1 HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nX-A: 2\r\nContent-Length: 3\r\n\r\nabc"
            b"GET /z HTTP/1.1\r\nHost: h\r\n\r\n")


def _summary(events):
    """(method, target, headers, body) per Request; the body is what its body_stream has been fed."""
    return [(e.method, e.target, e.headers, e.body_stream.take_buffered() if e.body_stream else b"")
            for e in events]


EXPECTED = [
    ("POST", "/x?y=1", [("host", "h"), ("x-a", "1"), ("x-a", "2"), ("content-length", "3")], b"abc"),
    ("GET", "/z", [("host", "h")], b""),
]


def test_h1connection_parses_whole_input():
    """Two pipelined requests fed at once come out as two Requests in order."""
    assert _summary(_h1().receive(PIPELINE)) == EXPECTED


def test_h1connection_parses_byte_at_a_time():
    """The same requests fed one byte at a time give the same Requests."""
    conn = _h1()
    events = []
    for byte in PIPELINE:
        events += conn.receive(bytes([byte]))
    assert _summary(events) == EXPECTED


def test_h1connection_leaves_trailing_partial_request_unparsed():
    """Bytes of an unfinished next request produce no event and leave the parser in HEAD."""
    conn = _h1()
    events = conn.receive(PIPELINE + b"GET /next HTTP/1.1\r\nHo")
    assert _summary(events) == EXPECTED
    assert conn.state == http1.HEAD
    (last,) = conn.receive(b"st: h\r\n\r\n")
    assert isinstance(last, Request) and last.target == "/next"


def test_h1connection_hands_request_over_at_head_and_streams_body():
    """A Request with a body comes out when its head is complete; its body_stream gets the bytes as they arrive."""
    conn = _h1()
    (request,) = conn.receive(b"POST /u HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
    body = request.body_stream
    assert (body.length, body.take_buffered(), body.ended) == (None, b"abc", False)
    assert conn.state == http1.BODY
    assert conn.receive(b"2\r\nde\r\n0\r\n\r\n") == []
    assert (body.take_buffered(), body.ended, conn.state) == (b"de", True, http1.IDLE)


def test_h1connection_content_length_with_spaces_frames_body():
    """A Content-Length with spaces around its digits frames the body like the bare number does."""
    conn = _h1()
    (request,) = conn.receive(b"POST /u HTTP/1.1\r\nHost: h\r\nContent-Length: 5 \r\n\r\nhello")
    assert (request.body_stream.length, request.body_stream.take_buffered()) == (5, b"hello")
