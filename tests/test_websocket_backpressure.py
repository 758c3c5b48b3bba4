"""The HTTP/1.1 WebSocket tunnel after a 101 stops reading the side whose peer does not read, in both directions."""

import socket
import threading
import time
from pathlib import Path

import pytest

from harness import connect, start_server
from proxy_backends import proxy_site

MIB = 1024 * 1024
BLOCK = b"w" * (256 * 1024)
# Bytes that may sit in kernel socket buffers and the server's own bounded buffers along the way.
IN_FLIGHT_BOUND = 48 * MIB


@pytest.fixture(scope="module")
def server(request, tmp_path_factory):
    return start_server(request, proxy_site(tmp_path_factory.mktemp("ws-site")), "--tls-addr", "off")


def _rss(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def _send_until_blocked(sock, limit=512 * MIB):
    """Send blocks without blocking until the peer has taken nothing for 1 s (or `limit`); bytes sent."""
    sock.setblocking(False)
    sent = stalls = 0
    while stalls < 20 and sent < limit:
        try:
            sent += sock.send(BLOCK)
            stalls = 0
        except BlockingIOError:
            stalls += 1
            time.sleep(0.05)
    sock.setblocking(True)
    return sent


def _read_exactly(sock, size):
    received = 0
    while received < size:
        data = sock.recv(min(MIB, size - received))
        assert data, "the tunnel closed early"
        received += len(data)


def _flows(sender, receiver, size=64 * MIB):
    """True when `size` bytes sent on one side all arrive on the other (the tunnel moves again)."""
    reader = threading.Thread(target=_read_exactly, args=(receiver, size), daemon=True)
    reader.start()
    for _ in range(size // len(BLOCK)):
        sender.sendall(BLOCK)
    reader.join(30)
    return not reader.is_alive()


class _Upstream:
    """A WebSocket upstream on a raw socket: answers the upgrade with a 101, then does what the test says."""

    def __init__(self):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.accepted = threading.Event()
        self.conn = None

    def start(self):
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        conn, _ = self.listener.accept()
        head = b""
        while b"\r\n\r\n" not in head:
            head += conn.recv(4096)
        conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n"
                     b"sec-websocket-accept: x\r\n\r\n")
        self.conn = conn
        self.accepted.set()

    def close(self):
        if self.conn is not None:
            self.conn.close()
        self.listener.close()


def _open_tunnel(server, upstream):
    """A client socket whose upgrade request has been answered with the upstream's 101."""
    sock = connect(server.port, timeout=30)
    sock.sendall(b"GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                 b"X-Upstream: " + upstream.url.encode() + b"\r\n\r\n")
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101 ")
    assert upstream.accepted.wait(10)
    return sock


def test_websocket_backpressure_client_not_reading_stops_upstream(server):
    """An upstream flooding a client that does not read is itself stopped; the server's memory stays bounded."""
    (worker,) = server.worker_pids()
    upstream = _Upstream()
    upstream.start()
    try:
        with _open_tunnel(server, upstream) as client:
            client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
            rss_before = _rss(worker)
            flooded = _send_until_blocked(upstream.conn)
            assert flooded < IN_FLIGHT_BOUND
            assert _rss(worker) - rss_before < 32 * MIB
            _read_exactly(client, flooded)  # everything held back arrives once the client reads
            assert _flows(upstream.conn, client)
    finally:
        upstream.close()


def test_websocket_backpressure_upstream_not_reading_stops_client(server):
    """A client flooding an upstream that does not read is itself stopped; the server's memory stays bounded."""
    (worker,) = server.worker_pids()
    upstream = _Upstream()
    upstream.start()
    try:
        with _open_tunnel(server, upstream) as client:
            upstream.conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
            rss_before = _rss(worker)
            flooded = _send_until_blocked(client)
            assert flooded < IN_FLIGHT_BOUND
            assert _rss(worker) - rss_before < 32 * MIB
            _read_exactly(upstream.conn, flooded)
            assert _flows(client, upstream.conn)
    finally:
        upstream.close()
