"""Limits and timeouts: 431, 414, 413, 408 (slowloris, slow body), idle close, write timeout, 503."""

import socket
import time

import pytest

from harness import connect, exchange, parse_responses, read_until_closed, start_server

BIG = b"z" * (16 * 1024 * 1024)
FILES = {"a.txt": "alpha", "big.bin": BIG}
LIMIT_FLAGS = ("--max-head-bytes", "2048", "--max-headers", "20", "--max-uri-bytes", "256",
               "--max-body-bytes", "1000", "--header-timeout", "1", "--idle-timeout", "1",
               "--body-timeout", "1", "--write-timeout", "1")


@pytest.fixture(scope="module")
def tar(make_site):
    return make_site(FILES)


@pytest.fixture(scope="module")
def server(request, tar):
    return start_server(request, tar, *LIMIT_FLAGS)


def statuses(port, raw):
    return [r.status for r in parse_responses(exchange(port, raw))]


def test_limits_head_too_large_gets_431(server):
    """A request head over --max-head-bytes gets 431."""
    raw = b"GET /a.txt HTTP/1.1\r\nHost: t\r\nX-Big: " + b"b" * 3000 + b"\r\n\r\n"
    assert statuses(server.port, raw) == [431]


def test_limits_unterminated_header_line_gets_431(server):
    """A header line that never ends is cut off at the head limit with 431, not buffered forever."""
    with connect(server.port) as sock:
        sock.sendall(b"GET /a.txt HTTP/1.1\r\nHost: t\r\nX-Endless: ")
        for _ in range(10):
            sock.sendall(b"e" * 512)  # the server keeps reading past its answer, so no EPIPE
        assert [r.status for r in parse_responses(read_until_closed(sock))] == [431]


def test_limits_too_many_headers_gets_431(server):
    """More header fields than --max-headers gets 431."""
    headers = b"".join(b"X-%d: v\r\n" % n for n in range(25))
    assert statuses(server.port, b"GET /a.txt HTTP/1.1\r\nHost: t\r\n" + headers + b"\r\n") == [431]


def test_limits_headers_at_limit_are_served(server):
    """A request exactly at the header-count limit is served."""
    headers = b"".join(b"X-%d: v\r\n" % n for n in range(18))
    raw = b"GET /a.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\n" + headers + b"\r\n"
    assert statuses(server.port, raw) == [200]


def test_limits_long_uri_gets_414(server):
    """A request target over --max-uri-bytes gets 414."""
    assert statuses(server.port, b"GET /" + b"u" * 400 + b" HTTP/1.1\r\nHost: t\r\n\r\n") == [414]


def test_limits_declared_body_too_large_gets_413_without_continue(server):
    """A Content-Length over --max-body-bytes gets 413 at once, even with Expect: 100-continue."""
    raw = b"POST /a.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\nExpect: 100-continue\r\n\r\n"
    assert statuses(server.port, raw) == [413]


def test_limits_413_reaches_client_still_sending_body(server):
    """A client still sending an oversized body reads the 413: input is drained before the close."""
    with connect(server.port) as sock:
        sock.sendall(b"POST /a.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 300000\r\n\r\n")
        for _ in range(30):
            sock.sendall(b"x" * 10000)
        assert [r.status for r in parse_responses(read_until_closed(sock))] == [413]


def test_limits_chunked_body_too_large_gets_413(server):
    """A chunked body growing past --max-body-bytes gets 413."""
    chunk = b"400\r\n" + b"c" * 1024 + b"\r\n"
    raw = b"POST /a.txt HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk * 2 + b"0\r\n\r\n"
    assert statuses(server.port, raw) == [413]


def test_limits_slowloris_head_gets_408(server):
    """A head trickling in a byte at a time past --header-timeout gets 408 and the connection closes."""
    with connect(server.port) as sock:
        started = time.monotonic()
        sent = b""
        try:
            for byte in b"GET /a.txt HTTP/1.1\r\nHost: t\r\nX-Slow: " + b"s" * 100:
                sock.sendall(bytes([byte]))
                sent += bytes([byte])
                time.sleep(0.1)
        except (BrokenPipeError, ConnectionResetError):
            pass
        responses = parse_responses(read_until_closed(sock))
    assert [r.status for r in responses] == [408]
    assert time.monotonic() - started < 5


def test_limits_slow_body_gets_408(server):
    """A body that stops arriving for longer than --body-timeout gets 408."""
    with connect(server.port) as sock:
        sock.sendall(b"POST /a.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n" + b"x" * 10)
        assert [r.status for r in parse_responses(read_until_closed(sock))] == [408]


def test_limits_idle_keep_alive_connection_is_closed(server):
    """A keep-alive connection idle past --idle-timeout is closed without a response."""
    with connect(server.port) as sock:
        sock.sendall(b"GET /a.txt HTTP/1.1\r\nHost: t\r\n\r\n")
        data = read_until_closed(sock)
    assert [r.status for r in parse_responses(data)] == [200]


def test_limits_silent_connection_is_closed(server):
    """A connection that never sends a byte is closed after the header timeout."""
    with connect(server.port) as sock:
        assert read_until_closed(sock) == b""


def test_limits_unread_output_hits_write_timeout(server):
    """A client that stops reading a big body is dropped after --write-timeout."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", server.port))
    sock.sendall(b"GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n")
    time.sleep(3)  # write timeout 1 s, checked every 0.25 s
    sock.settimeout(10)
    received = read_until_closed(sock)
    sock.close()
    assert 0 < len(received) < len(BIG)


def test_limits_max_connections_pauses_accept(request, tar):
    """Beyond --max-connections a new connection waits in the listen queue until an earlier one closes."""
    server = start_server(request, tar, "--max-connections", "2")
    first, second = connect(server.port), connect(server.port)
    third = None
    try:
        for sock in (first, second):
            sock.sendall(b"GET /a.txt HTTP/1.1\r\nHost: t\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        third = connect(server.port)  # the kernel completes the handshake; the worker does not accept it
        third.sendall(b"GET /a.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        third.settimeout(0.5)
        with pytest.raises(TimeoutError):
            third.recv(65536)
        first.close()
        third.settimeout(10)
        assert [r.body for r in parse_responses(read_until_closed(third))] == [b"alpha"]
        second.sendall(b"GET /a.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        assert [r.body for r in parse_responses(read_until_closed(second))] == [b"alpha"]
    finally:
        for sock in (first, second, third):
            if sock is not None:
                sock.close()