"""Request bodies through the proxy: streamed with back-pressure (never buffered whole), and read whole only where needed."""

import hashlib
import json
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from harness import connect, parse_responses, read_until_closed, start_server
from proxy_backends import PATTERN, proxy_site

# Reads the body as JSON: its world has every body read whole (within --max-body-bytes) before it runs.
JSON_SCRIPT = """#include "zeroserve.h"
ZS_ENTRY zs_u64 entry(void)
{
    if (zs_req_body_json() < 0)
        zs_respond(400, ZS_STR("not json"));
    else
        zs_respond(200, ZS_STR("json"));
    return 0;
}
"""

MIB = 1024 * 1024
BLOCK = PATTERN * (MIB // len(PATTERN))


@pytest.fixture(scope="module")
def server(request, tmp_path_factory):
    tar = proxy_site(tmp_path_factory.mktemp("proxy-body"))
    return start_server(request, tar, "--tls-addr", "off", "--max-body-bytes", "65536")


@pytest.fixture(scope="module")
def json_server(request, tmp_path_factory):
    tar = proxy_site(tmp_path_factory.mktemp("json-body"), JSON_SCRIPT)
    return start_server(request, tar, "--tls-addr", "off", "--max-body-bytes", "65536")


def _memory(pid):
    """(VmRSS, VmHWM) of a process, in bytes."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) * 1024
    return fields["VmRSS"], fields["VmHWM"]


def _head(path, upstream, total, chunked, extra=""):
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {total}"
    return (f"POST {path} HTTP/1.1\r\nHost: t\r\nX-Upstream: {upstream}\r\n{framing}\r\n{extra}"
            "Connection: close\r\n\r\n").encode()


def _send_body(sock, total, chunked):
    """Send `total` pattern bytes (chunked or plain); their SHA-256 hex digest."""
    digest = hashlib.sha256()
    sent = 0
    while sent < total:
        block = BLOCK[:total - sent]
        digest.update(block)
        sock.sendall(b"%x\r\n%b\r\n" % (len(block), block) if chunked else block)
        sent += len(block)
    if chunked:
        sock.sendall(b"0\r\n\r\n")
    return digest.hexdigest()


def _post(port, upstream, total, chunked, path="/echo"):
    """POST `total` bytes through the proxy to the echo backend: (status, echo JSON, sent SHA-256)."""
    with connect(port, timeout=120) as sock:
        sock.sendall(_head(path, upstream, total, chunked))
        sent_digest = _send_body(sock, total, chunked)
        (response,) = parse_responses(read_until_closed(sock))
    return response.status, json.loads(response.body), sent_digest


@pytest.mark.parametrize("total", [0, 1024, 10 * MIB])
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_proxy_body_reaches_upstream_intact(server, backend, total, chunked):
    """A request body (0 B, 1 KiB, 10 MiB; fixed length or chunked) reaches the upstream byte for byte."""
    status, echo, digest = _post(server.port, backend.url, total, chunked)
    assert status == 200
    assert (echo["body_length"], echo["body_sha256"]) == (total, digest)
    framing = {name.lower(): value for name, value in echo["headers"]}
    if chunked and total > MIB:  # a small body may come whole with the head and go upstream with a length
        assert framing.get("transfer-encoding") == "chunked" and "content-length" not in framing
    elif not chunked:
        assert framing.get("content-length") == str(total)


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_proxy_body_1gb_streams_with_flat_memory(server, backend, chunked):
    """A 1 GB request body streams through the proxy while the worker's peak RSS grows by less than 64 MiB."""
    (worker,) = server.worker_pids()
    _, peak_before = _memory(worker)
    status, echo, digest = _post(server.port, backend.url, 1024 * MIB, chunked)
    _, peak_after = _memory(worker)
    print(f"worker peak RSS while uploading 1 GiB ({'chunked' if chunked else 'content-length'}): "
          f"{peak_before / MIB:.1f} -> {peak_after / MIB:.1f} MiB")
    assert status == 200
    assert (echo["body_length"], echo["body_sha256"]) == (1024 * MIB, digest)
    assert peak_after - peak_before < 64 * MIB


class _StalledUpstream:
    """An upstream that reads a request head, then reads no body bytes until `release` is set."""

    def __init__(self):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.release = threading.Event()
        self.received = 0
        self.closed_early = threading.Event()  # the connection ended before the whole body came
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        conn, _ = self.listener.accept()
        with conn:
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            head, _, rest = data.partition(b"\r\n\r\n")
            length = int([line.split(b":")[1] for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:")][0])
            self.received = len(rest)
            self.release.wait(60)
            while self.received < length:
                try:
                    chunk = conn.recv(MIB)
                except ConnectionResetError:
                    chunk = b""
                if not chunk:
                    self.closed_early.set()
                    return
                self.received += len(chunk)
            conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")

    def stop(self):
        self.release.set()
        self.listener.close()
        self.thread.join(10)


def test_proxy_body_slow_upstream_blocks_client_send(server):
    """An upstream that does not read the body stops the server reading the client: the client's send blocks."""
    upstream = _StalledUpstream()
    total = 256 * MIB
    try:
        (worker,) = server.worker_pids()
        rss_before, _ = _memory(worker)
        with connect(server.port, timeout=60) as sock:
            sock.sendall(_head("/slow-body", f"http://127.0.0.1:{upstream.port}", total, False))
            sock.setblocking(False)
            sent = 0
            stalls = 0
            while stalls < 20 and sent < total:  # 1 s without progress: the send is blocked
                try:
                    sent += sock.send(BLOCK[:total - sent])
                    stalls = 0
                except BlockingIOError:
                    stalls += 1
                    time.sleep(0.05)
            assert sent < 64 * MIB  # kernel buffers on the way, not the whole body
            rss_blocked, _ = _memory(worker)
            assert rss_blocked - rss_before < 32 * MIB
            upstream.release.set()
            sock.setblocking(True)
            while sent < total:
                sent += sock.send(BLOCK[:total - sent])
            (response,) = parse_responses(read_until_closed(sock))
        assert response.status == 200 and response.body == b"ok"
        assert upstream.received == total
    finally:
        upstream.stop()


def test_proxy_body_client_death_closes_upstream(server):
    """A client that dies in the middle of its body makes the server close the upstream connection."""
    upstream = _StalledUpstream()
    upstream.release.set()
    try:
        with connect(server.port) as sock:
            sock.sendall(_head("/dies", f"http://127.0.0.1:{upstream.port}", 100 * MIB, False))
            sock.sendall(BLOCK)
            time.sleep(0.2)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")  # close with a RST
        assert upstream.closed_early.wait(10)
        assert upstream.received < 100 * MIB
    finally:
        upstream.stop()


def test_proxy_body_expect_continue_streams(server, backend):
    """Expect: 100-continue is answered by the server once the proxy wants the body, then the body streams."""
    total = 2 * MIB
    with connect(server.port, timeout=30) as sock:
        sock.sendall(_head("/echo", backend.url, total, False, "Expect: 100-continue\r\n"))
        interim = b""
        while b"\r\n\r\n" not in interim:
            interim += sock.recv(1024)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        digest = _send_body(sock, total, False)
        (response,) = parse_responses(read_until_closed(sock))
    echo = json.loads(response.body)
    assert (response.status, echo["body_length"], echo["body_sha256"]) == (200, total, digest)


def test_proxy_body_static_answer_reads_body_within_limit(server):
    """A static answer to a request with a body not yet read waits for it, then keeps the connection."""
    body = b"x" * (32 * 1024)
    with connect(server.port) as sock:
        sock.sendall(b"POST /index.html HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(body))
        time.sleep(0.1)  # the head is answered alone, before the body arrives
        sock.sendall(body)
        sock.sendall(b"GET /index.html HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        responses = parse_responses(read_until_closed(sock))
    assert [r.status for r in responses] == [405, 200]


def test_proxy_body_static_answer_over_limit_gets_413(server):
    """A static answer to a request whose body outgrows --max-body-bytes becomes a 413 and the connection closes."""
    with connect(server.port) as sock:
        sock.sendall(b"POST /index.html HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
        time.sleep(0.1)
        sock.sendall(b"%x\r\n%b\r\n" % (MIB, BLOCK))
        responses = parse_responses(read_until_closed(sock))
    assert [r.status for r in responses] == [413]


def test_proxy_body_script_reading_body_gets_it_whole(json_server):
    """A script calling zs_req_body_json sees the whole body, even one sent after the head."""
    body = json.dumps({"k": "v" * 1000}).encode()
    with connect(json_server.port) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body))
        time.sleep(0.1)
        sock.sendall(body)
        (response,) = parse_responses(read_until_closed(sock))
    assert (response.status, response.body) == (200, b"json")


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_proxy_body_script_reading_body_over_limit_gets_413(json_server, chunked):
    """A body over --max-body-bytes for a script that reads it is refused with 413 (declared or chunked)."""
    total = MIB
    with connect(json_server.port) as sock:
        framing = b"Transfer-Encoding: chunked" if chunked else b"Content-Length: %d" % total
        sock.sendall(b"POST / HTTP/1.1\r\nHost: t\r\n%b\r\n\r\n" % framing)
        try:
            _send_body(sock, total, chunked)
        except OSError:  # the server may close while the rest is still on its way
            pass
        responses = parse_responses(read_until_closed(sock))
    assert [r.status for r in responses] == [413]


@pytest.mark.parametrize("known_length", [True, False], ids=["content-length", "unknown-length"])
def test_proxy_body_http2_client_streams_to_upstream(server, backend, tmp_path, known_length):
    """An HTTP/2 client's 64 MiB body reaches the HTTP/1.1 upstream intact (chunked when its length is unknown)."""
    total = 64 * MIB
    path = tmp_path / "body"
    digest = hashlib.sha256()
    with path.open("wb") as file:
        for _ in range(total // MIB):
            file.write(BLOCK)
            digest.update(BLOCK)
    (worker,) = server.worker_pids()
    _, peak_before = _memory(worker)
    upload = ["--data-binary", f"@{path}"] if known_length else ["-X", "POST", "-T", "-"]
    with path.open("rb") as stdin:
        result = subprocess.run(["curl", "-sS", "--http2-prior-knowledge", "-H", f"x-upstream: {backend.url}",
                                 *upload, f"http://127.0.0.1:{server.port}/echo"],
                                stdin=stdin, capture_output=True, timeout=120)
    _, peak_after = _memory(worker)
    echo = json.loads(result.stdout)
    assert (echo["body_length"], echo["body_sha256"]) == (total, digest.hexdigest())
    framing = {name.lower(): value for name, value in echo["headers"]}
    if known_length:
        assert framing.get("content-length") == str(total)
    else:
        assert framing.get("transfer-encoding") == "chunked"
    assert peak_after - peak_before < 32 * MIB
