"""The clients of the fault scenarios: a well-behaved load (wrk, h2load) to measure, and raw attacking sockets.

The well-behaved client runs pinned to the client core like the benchmark's; the attackers are threads of
the harness, which is pinned to the same core, so an attack never takes the server's core from it.
"""

from __future__ import annotations

import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import h2.config
import h2.connection
from measure import ClientResult, parse_h2load, parse_wrk
from process import die_with_parent
from server_under_test import CLIENT_CPU

ENHANCE_YOUR_CALM = 0xB


def wrk(port: int, seconds: int, connections: int = 16, path: str = "/") -> ClientResult:
    """A keep-alive HTTP/1.1 load of `seconds` on path; its result (failures: non-2xx and socket errors)."""
    argv = ["taskset", "-c", str(CLIENT_CPU), "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency",
            f"http://127.0.0.1:{port}{path}"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30, preexec_fn=die_with_parent)
    return parse_wrk(done.stdout)


def h2load(port: int, seconds: int, connections: int = 4, streams: int = 10) -> ClientResult:
    """An h2c (prior knowledge) load of `seconds` on /; its result (failures: failed, errored, 4xx/5xx)."""
    with tempfile.TemporaryDirectory() as scratch:
        log_file = Path(scratch) / "h2load.log"
        argv = ["taskset", "-c", str(CLIENT_CPU), "h2load", "-t1", f"-c{connections}", f"-m{streams}",
                f"-D{seconds}", f"--log-file={log_file}", f"http://127.0.0.1:{port}/"]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30,
                              preexec_fn=die_with_parent)
        return parse_h2load(done.stdout, log_file)


class Background:
    """Runs `work(stop_event)` in a thread; `stop()` sets the event, joins and returns what work returned."""

    def __init__(self, work):
        self._stop = threading.Event()
        self._result = None
        self._thread = threading.Thread(target=self._run, args=(work,), daemon=True)
        self._thread.start()

    def _run(self, work):
        self._result = work(self._stop)

    def stop(self):
        self._stop.set()
        self._thread.join(60)
        return self._result


def connect(port: int, timeout: float = 10.0, receive_buffer: int | None = None) -> socket.socket:
    """A TCP connection to the server, TCP_NODELAY, optionally with a small receive buffer (set before connect)."""
    sock = socket.socket()
    if receive_buffer:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.settimeout(timeout)
    sock.connect(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def get(port: int, path: str = "/", timeout: float = 10.0) -> int:
    """The status of one GET on a new connection (0 when the connection fails)."""
    try:
        with connect(port, timeout) as sock:
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n".encode())
            head = sock.recv(65536)
            return int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/1.1 ") else 0
    except OSError:
        return 0


def read_response_head(sock: socket.socket) -> bytes:
    """Reads until the end of a response head (or EOF); the bytes read."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def established(port: int) -> int:
    """How many TCP connections to 127.0.0.1:port are established, from the kernel's table (`ss`)."""
    table = subprocess.run(["ss", "-Htn", "state", "established", f"sport = :{port}"], capture_output=True,
                           text=True, check=True).stdout
    return len(table.splitlines())


def closed_by_peer(sock: socket.socket, wait: float) -> bool:
    """True when the server closed (or reset) the connection within `wait` seconds, reading and dropping input."""
    deadline = time.monotonic() + wait
    while True:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            if not sock.recv(1 << 20):
                return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except (socket.timeout, BlockingIOError):
            return False
        if time.monotonic() >= deadline:
            return False


def send_until_answered(sock: socket.socket, first: bytes, filler: bytes, limit: int) -> tuple[int, bytes]:
    """Sends `first`, then `filler` over and over until the server answers or closes, or `limit` bytes went.

    Returns (bytes sent, what the server sent back: b"" when it closed without a word)."""
    sent, answer, end = _flood(sock, first, filler, limit, stop_at_answer=True)
    if end in ("answered", "closed"):
        return sent, answer
    sock.settimeout(5)
    try:
        return sent, sock.recv(65536)
    except OSError:
        return sent, b""


def send_until_closed(sock: socket.socket, first: bytes, filler: bytes, limit: int) -> tuple[int, bytes, bool]:
    """Sends `first`, then `filler` over and over, keeping what comes back, until the server closes or `limit`.

    Returns (bytes sent, bytes received, whether the server closed the connection)."""
    sent, received, end = _flood(sock, first, filler, limit, stop_at_answer=False)
    return sent, received, end != "limit"


def _flood(sock: socket.socket, first: bytes, filler: bytes, limit: int,
           stop_at_answer: bool) -> tuple[int, bytes, str]:
    """Sends `first`, then `filler` over and over on a non-blocking socket, keeping what comes back.

    Returns (bytes sent, bytes received, how it ended: "answered" (the first bytes came back, with
    stop_at_answer), "closed" (the server closed or reset), "send failed" or "limit")."""
    sock.settimeout(0.0)
    sent, received, pending = 0, bytearray(), first
    while sent < limit:
        try:
            data = sock.recv(65536)
            if not data:
                return sent, bytes(received), "closed"
            received += data
            if stop_at_answer:
                return sent, bytes(received), "answered"
        except BlockingIOError:
            pass
        except ConnectionResetError:
            return sent, bytes(received), "closed"
        try:
            written = sock.send(pending)
        except BlockingIOError:
            time.sleep(0.001)
            continue
        except (BrokenPipeError, ConnectionResetError):
            return sent, bytes(received), "send failed"
        sent += written
        pending = pending[written:] or filler
    return sent, bytes(received), "limit"


# ---------------------------------------------------------------- HTTP/2 attackers


def h2_client(port: int) -> tuple[socket.socket, h2.connection.H2Connection]:
    """An h2c prior-knowledge connection whose preface and SETTINGS are sent."""
    sock = connect(port)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    return sock, conn


def h2_flood(port: int, frames, batch: int, limit: int, seconds: float = 10.0) -> dict:
    """Sends the raw frames `frames(i)` for i = 0, 1, ... in batches until the server ends the connection or `limit`.

    Returns {"frames": sent, "goaway": first GOAWAY error code or None, "seconds": time to the end,
    "closed": whether the server closed the connection}."""
    sock, _ = h2_client(port)
    sock.settimeout(0.0)
    started = time.monotonic()
    sent, closed, received = 0, False, bytearray()
    with sock:
        while sent < limit and not closed and time.monotonic() - started < seconds:
            buffer = b"".join(frames(sent + i) for i in range(batch))
            sent += batch
            while buffer and not closed:
                try:
                    buffer = buffer[sock.send(buffer):]
                except BlockingIOError:
                    closed = _read_into(sock, received)  # let the server's answers through
                    time.sleep(0.001)
                except (BrokenPipeError, ConnectionResetError):
                    closed = True
            if not closed:
                closed = _read_into(sock, received)
            if goaway_code(received) is not None:
                break
        sock.settimeout(2)
        while not closed and time.monotonic() - started < seconds + 2:
            try:
                closed = _read_into(sock, received)
            except socket.timeout:
                break
    return {"frames": sent, "goaway": goaway_code(received), "seconds": time.monotonic() - started,
            "closed": closed}


def _read_into(sock, received: bytearray) -> bool:
    """Appends what is there (waits for it on a blocking socket); True once the server closed."""
    try:
        data = sock.recv(1 << 20)
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True
    received += data
    return not data


def goaway_code(data: bytes) -> int | None:
    """The error code of the first GOAWAY frame among the complete HTTP/2 frames in data, or None."""
    position = 0
    while position + 9 <= len(data):
        length = int.from_bytes(data[position:position + 3], "big")
        if data[position + 3] == 0x7 and position + 9 + 8 <= len(data):
            return int.from_bytes(data[position + 13:position + 17], "big")
        position += 9 + length
    return None
