"""Runs the load generator (wrk for HTTP/1.1, h2load for HTTP/2) pinned to the client core against one server.

It also holds many idle keep-alive connections open, for reading what each one costs a server in memory.
"""

from __future__ import annotations

import os
import re
import socket
import ssl
import subprocess
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from measure import ClientResult, MeasureError, parse_h2load, parse_wrk
from process import die_with_parent
from workloads import Transport, Workload

# How long past its duration a client may take to finish before it is killed: h2load waits for every
# stream in flight, so a server that stops answering would otherwise hang the benchmark.
CLIENT_GRACE_S = 20.0


@dataclass(frozen=True)
class LoadSettings:
    """How hard the client pushes: the same for every server and round."""

    cpus: tuple[int, ...]  # the client's cores
    connections: int
    streams: int  # concurrent HTTP/2 streams per connection (h2load -m)


@dataclass(frozen=True)
class LoadRun:
    """One client run: what it measured and how busy its own core was (1.0 = saturated)."""

    result: ClientResult
    client_cpu: float


def url(transport: Transport, port: int, path: str) -> str:
    """Returns the URL the client (and the pre-run check) requests."""
    return f"{'https' if transport.tls else 'http'}://127.0.0.1:{port}{path}"


# h2load's duration mode (-D) can hang over TLS: at the end of the run it stops only the clients whose
# handshake is complete, so one still connecting never finishes. Over TLS it runs in count mode instead
# (-n), sized from a short calibration run so that it lasts about as long as asked.
_CALIBRATION_REQUESTS_PER_STREAM = 20


def command(
    workload: Workload, transport: Transport, port: int, seconds: int, settings: LoadSettings, log_file: Path,
    requests: int | None = None,
) -> list[str]:
    """Returns the client's argv, pinned to the client core, with one client thread.

    `requests` switches h2load to count mode (-n) instead of a duration."""
    headers = [arg for header in workload.request_headers for arg in ("-H", header)]
    target = url(transport, port, workload.path)
    pin = ["taskset", "-c", ",".join(map(str, settings.cpus))]
    if transport.h2:
        # h2load speaks h2 through ALPN over TLS and h2c prior knowledge over plaintext.
        return [*pin, "h2load", "-t1", f"-c{settings.connections}", f"-m{settings.streams}",
                f"-n{requests}" if requests else f"-D{seconds}", f"--log-file={log_file}", *headers,
                target]  # fmt: skip
    return [*pin, "wrk", "-t1", f"-c{settings.connections}", f"-d{seconds}s", "--latency", *headers, target]


def run(
    workload: Workload, transport: Transport, port: int, seconds: int, settings: LoadSettings, scratch: Path
) -> LoadRun:
    """Loads 127.0.0.1:port for `seconds` and returns the parsed result; the client's files go into scratch."""
    requests = None
    if transport.h2 and transport.tls:
        calibration = settings.connections * settings.streams * _CALIBRATION_REQUESTS_PER_STREAM
        rate = _run_client(workload, transport, port, seconds, settings, scratch, calibration).result.requests_per_s
        requests = max(calibration, int(rate * seconds))
    return _run_client(workload, transport, port, seconds, settings, scratch, requests)


def _run_client(workload, transport, port, seconds, settings, scratch, requests):
    log_file = scratch / "h2load.log"
    output_file = scratch / "client.out"
    argv = command(workload, transport, port, seconds, settings, log_file, requests)
    started = time.monotonic()
    with open(output_file, "wb") as output:
        child = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT, preexec_fn=die_with_parent
        )
    deadline = threading.Timer(seconds + CLIENT_GRACE_S, child.kill)
    deadline.start()
    # wait4 rather than Popen.wait: it also returns the CPU time the client used.
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - started
    deadline.cancel()
    text = output_file.read_text(errors="replace")
    if wall >= seconds + CLIENT_GRACE_S:
        raise MeasureError(
            f"`{' '.join(argv)}` was still running {CLIENT_GRACE_S:.0f} s after its {seconds} s run and was killed: "
            f"the server left requests unanswered. Its last output:\n{text[-2000:]}"
        )
    if child.returncode != 0:
        raise MeasureError(f"`{' '.join(argv)}` exited with code {child.returncode}:\n{text}")
    result = parse_h2load(text, log_file) if transport.h2 else parse_wrk(text)
    return LoadRun(result=result, client_cpu=(usage.ru_utime + usage.ru_stime) / wall)


@contextmanager
def idle_connections(transport: Transport, port: int, path: str, count: int):
    """Opens `count` HTTP/1.1 keep-alive connections, each of which makes one request, and holds them while inside.

    Each connection is complete (TCP, TLS handshake when the transport has TLS, one response read) and then
    idle, as a browser's would be between page loads.
    """
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the harness's self-signed certificate
    request = f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode()
    opened: list[socket.socket] = []
    try:
        for _ in range(count):
            connection = socket.create_connection(("127.0.0.1", port), timeout=10)
            opened.append(connection)
            if transport.tls:
                connection = opened[-1] = context.wrap_socket(connection, server_hostname="localhost")
            connection.sendall(request)
            _read_response(connection)
        yield opened
    finally:
        for connection in opened:
            connection.close()


def _read_response(connection: socket.socket) -> None:
    """Reads one HTTP/1.1 200 response whose body has a Content-Length or is chunked, or raises MeasureError."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += _receive(connection, data)
    head, _, body = data.partition(b"\r\n\r\n")
    length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    chunked = re.search(rb"(?im)^transfer-encoding:\s*chunked", head)
    if not head.startswith(b"HTTP/1.1 200") or not (length or chunked):
        raise MeasureError(f"expected a 200 response with a Content-Length or chunked body, got {head[:300]!r}")
    if chunked:
        # The responses read here have bodies of one or a few chunks; the last chunk ends the body.
        while not body.endswith(b"0\r\n\r\n"):
            body += _receive(connection, body)
        return
    received = len(body)
    while received < int(length[1]):
        received += len(_receive(connection, body))


def _receive(connection: socket.socket, so_far: bytes) -> bytes:
    chunk = connection.recv(65536)
    if not chunk:
        raise MeasureError(f"the server closed a keep-alive connection in the middle of a response: {so_far[:200]!r}")
    return chunk
