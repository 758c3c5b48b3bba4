"""zs_reverse_proxy end to end: a real server whose script proxies to real upstreams, with curl, h2 and websockets."""

import json
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from harness import curl, free_port, start_server
from proxy_backends import PythonBackend, proxy_site

# Proxies to the URL in the X-Upstream header (test-only), sets a response header, and on /echo/sethost
# replaces the Host the upstream sees.
PROXY_SCRIPT = """#include "zeroserve.h"
ZS_ENTRY zs_u64 entry(void)
{
    char url[256];
    char path[64];
    zs_s64 length = zs_req_header(ZS_STR("x-upstream"), url, sizeof url);
    if (length <= 0)
        return 0;
    zs_req_path(path, sizeof path);
    if (zs_strcmp(path, "/echo/sethost") == 0)
        zs_req_set_header(ZS_STR("host"), ZS_STR("set.by.script"));
    zs_meta_set(ZS_STR("zs.response.header.x-backend"), ZS_STR("script"));
    zs_reverse_proxy(url, (zs_u64)zs_strlen(url));
    return 0;
}
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    return proxy_site(tmp_path_factory.mktemp("proxy-site"), PROXY_SCRIPT)


@pytest.fixture(scope="module")
def server(request, site):
    return start_server(request, site, "--tls-addr", "off")



@pytest.fixture(scope="module")
def tls_server(request, site, pki):
    """The same site over HTTPS as well (C encrypts and sends proxied bodies on that path)."""
    return start_server(request, site, "--tls-addr", "127.0.0.1:0", "--cert", str(pki.leaf_cert),
                        "--key", str(pki.leaf_key))


def get(server, path, upstream, *args):
    """curl through the server: (status, {lowercase header: [values]}, body)."""
    result = curl("-sS", "-D", "-", "-H", f"x-upstream: {upstream}", *args, f"http://127.0.0.1:{server.port}{path}")
    head, _, body = result.stdout.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.setdefault(name.strip().lower(), []).append(value.strip())
    return int(lines[0].split()[1]), headers, body


def test_proxy_http_forwards_request_and_response(server, backend):
    """The upstream sees the client's Host, path and X-Forwarded-*; the client sees the upstream's answer."""
    status, headers, body = get(server, "/echo/a?x=1", backend.url, "-H", "x-forwarded-proto: https")
    echoed = json.loads(body)
    seen = {}
    for name, value in echoed["headers"]:
        seen.setdefault(name.lower(), []).append(value)
    assert status == 200
    assert echoed["target"] == "/echo/a?x=1"
    assert seen["host"] == [f"127.0.0.1:{server.port}"]
    assert seen["x-forwarded-for"] == ["127.0.0.1"]
    assert seen["x-forwarded-proto"] == ["https"]
    assert seen["x-forwarded-host"] == [f"127.0.0.1:{server.port}"]
    assert headers["x-backend"] == ["script"]
    assert "keep-alive" not in headers and "x-drop-me" not in headers


def test_proxy_http_script_sets_host(server, backend):
    """A Host set by the script replaces the client's."""
    _, _, body = get(server, "/echo/sethost", backend.url)
    hosts = [value for name, value in json.loads(body)["headers"] if name.lower() == "host"]
    assert hosts == ["set.by.script"]


def test_proxy_http_upstream_down_is_502(server):
    """An upstream nobody listens on gives an empty 502 and a log line naming it."""
    url = f"http://127.0.0.1:{free_port()}"
    status, headers, body = get(server, "/x", url)
    assert status == 502 and body == b""
    server.wait_for(rf"\[proxy\].*{url}")


def test_proxy_http_bad_target_is_502(server):
    """A target that is not http://, https:// or unix/ gives 502 and a log line naming it."""
    status, _, _ = get(server, "/x", "gopher://old")
    assert status == 502
    server.wait_for(r"\[proxy\].*gopher://old")


def test_proxy_http_chunked_response(server, backend):
    """A chunked upstream response reaches an HTTP/1.1 client chunked and complete."""
    status, headers, body = get(server, "/chunked?n=30", backend.url)
    assert status == 200
    assert headers["transfer-encoding"] == ["chunked"]
    assert body == b"".join(bytes([97 + i % 26]) * 1000 for i in range(30))


def test_proxy_http_request_body_reaches_upstream(server, backend):
    """A POST body (fixed length and chunked) reaches the upstream intact; Expect: 100-continue is answered here."""
    data = bytes(range(256)) * 4096
    result = subprocess.run(["curl", "-sS", "-H", f"x-upstream: {backend.url}", "-H", "expect: 100-continue",
                             "--data-binary", "@-", f"http://127.0.0.1:{server.port}/echo"], input=data,
                            capture_output=True, timeout=20)
    echoed = json.loads(result.stdout)
    assert echoed["body_length"] == len(data)
    assert "expect" not in [name.lower() for name, _ in echoed["headers"]]
    result = subprocess.run(["curl", "-sS", "-H", f"x-upstream: {backend.url}", "-H", "transfer-encoding: chunked",
                             "--data-binary", "@-", f"http://127.0.0.1:{server.port}/echo"], input=data,
                            capture_output=True, timeout=20)
    assert json.loads(result.stdout)["body_length"] == len(data)


def test_proxy_http_head_and_204(server, backend):
    """HEAD and 204 answers carry no body."""
    result = curl("-sS", "-I", "-H", f"x-upstream: {backend.url}", f"http://127.0.0.1:{server.port}/x")
    assert b"x-head: yes" in result.stdout and result.stdout.endswith(b"\r\n\r\n")
    status, headers, body = get(server, "/nobody?s=204", backend.url)
    assert status == 204 and body == b""


def test_proxy_http_sse_arrives_incrementally(server, backend):
    """The first server-sent event reaches the client before the upstream sends the second."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.sendall(f"GET /sse HTTP/1.1\r\nhost: t\r\nx-upstream: {backend.url}\r\n\r\n".encode())
    received = b""
    while b"data: one" not in received:
        received += sock.recv(65536)
    assert b"data: two" not in received
    curl("-sS", backend.url + "/sse-release")
    while b"data: two" not in received:
        received += sock.recv(65536)
    sock.close()


def test_proxy_http_upstream_dying_mid_body_closes_client(server, backend):
    """When the upstream dies after the response started, the client connection is closed short."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.sendall(f"GET /die HTTP/1.1\r\nhost: t\r\nx-upstream: {backend.url}\r\n\r\n".encode())
    received = b""
    while data := sock.recv(65536):
        received += data
    head, _, body = received.partition(b"\r\n\r\n")
    assert b"content-length: 100000" in head
    assert len(body) == 1000
    server.wait_for(r"\[proxy\].*middle of the body")


def test_proxy_http_pool_reuses_upstream_connection(server):
    """Several proxied requests use one upstream connection (the backend counts its accepts)."""
    fresh = PythonBackend()
    try:
        for _ in range(5):
            assert get(server, "/echo", fresh.url)[0] == 200
        _, _, body = get(server, "/stats", fresh.url)
        assert json.loads(body)["connections"] == 1
    finally:
        fresh.stop()


def test_proxy_http_unix_socket_upstream(server):
    """A unix/PATH target is reached through the server."""
    # The workers run as nobody: the socket must be where, and as, that user can connect.
    directory = Path(tempfile.mkdtemp(prefix="zs-unix-upstream-", dir="/tmp"))
    directory.chmod(0o755)
    unix_backend = PythonBackend(directory / "b.sock")
    (directory / "b.sock").chmod(0o666)
    try:
        status, _, body = get(server, "/echo/u", unix_backend.url)
    finally:
        unix_backend.stop()
        shutil.rmtree(directory)
    assert status == 200 and json.loads(body)["target"] == "/echo/u"


def _rss_kb(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_proxy_http_1gb_response_keeps_memory_flat(request, scheme, backend, pki):
    """A 1 GiB response streams through the server while its memory stays within a few MiB of idle."""
    total = 1 << 30
    if scheme == "https":
        server = request.getfixturevalue("tls_server")
        target = ("--cacert", str(pki.ca_cert), *server.resolve_args(), server.https_url(f"/bytes?n={total}"))
    else:
        server = request.getfixturevalue("server")
        target = (f"http://127.0.0.1:{server.port}/bytes?n={total}",)
    pids = server.worker_pids()
    before = sum(_rss_kb(pid) for pid in pids)
    peak = [before]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], sum(_rss_kb(pid) for pid in pids))
            time.sleep(0.05)
    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        result = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code} %{size_download}",
                                 "-H", f"x-upstream: {backend.url}", "--limit-rate", "400M", *target],
                                capture_output=True, text=True, timeout=120)
    finally:
        done.set()
        sampler.join()
    assert result.stdout == f"200 {total}"
    print(f"peak RSS growth while streaming 1 GiB over {scheme}: {(peak[0] - before) / 1024:.1f} MiB")
    assert peak[0] - before < 32 * 1024


def test_proxy_http_websocket_echo(server, backend):
    """A WebSocket client talks to the upstream's echo through the server (HTTP/1.1 upgrade)."""
    from websockets.sync.client import connect

    with connect(f"ws://127.0.0.1:{server.port}/ws", additional_headers={"x-upstream": backend.url},
                 open_timeout=10) as ws:
        ws.send("hello")
        assert ws.recv(timeout=10) == "hello"
        ws.send(b"\x00\x01binary")
        assert ws.recv(timeout=10) == b"\x00\x01binary"


def test_proxy_http2_streams_response(server, backend):
    """An HTTP/2 client gets chunked and large upstream bodies complete, as DATA frames."""
    base = f"http://127.0.0.1:{server.port}"
    result = curl("-sS", "--http2-prior-knowledge", "-H", f"x-upstream: {backend.url}", f"{base}/chunked?n=30")
    assert result.stdout == b"".join(bytes([97 + i % 26]) * 1000 for i in range(30))
    size = 5 * 1024 * 1024 + 3
    result = curl("-sS", "--http2-prior-knowledge", "-o", "/dev/null", "-w", "%{http_version} %{size_download}",
                  "-H", f"x-upstream: {backend.url}", f"{base}/bytes?n={size}")
    assert result.stdout.decode() == f"2 {size}"


def _h2_client(port, path, upstream):
    """An h2c connection with one GET sent: (socket, h2 connection, stream id)."""
    import h2.config
    import h2.connection

    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    stream_id = conn.get_next_available_stream_id()
    conn.send_headers(stream_id, [(":method", "GET"), (":path", path), (":scheme", "http"),
                                  (":authority", "t"), ("x-upstream", upstream)], end_stream=True)
    sock.sendall(conn.data_to_send())
    return sock, conn, stream_id


def _h2_events(sock, conn):
    import h2.events

    events = conn.receive_data(sock.recv(65536))
    for event in events:
        if isinstance(event, h2.events.DataReceived):
            conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
    sock.sendall(conn.data_to_send())
    return events


def test_proxy_http2_sse_arrives_incrementally(server, backend):
    """Over HTTP/2 too, the first server-sent event arrives before the upstream sends the second."""
    import h2.events

    sock, conn, _ = _h2_client(server.port, "/sse", backend.url)
    received = b""
    while b"data: one" not in received:
        received += b"".join(e.data for e in _h2_events(sock, conn) if isinstance(e, h2.events.DataReceived))
    assert b"data: two" not in received
    curl("-sS", backend.url + "/sse-release")
    ended = False
    while not ended:
        events = _h2_events(sock, conn)
        received += b"".join(e.data for e in events if isinstance(e, h2.events.DataReceived))
        ended = any(isinstance(e, h2.events.StreamEnded) for e in events)
    assert received == b"data: one\n\ndata: two\n\n"
    sock.close()


def test_proxy_http2_upstream_dying_resets_stream(server, backend):
    """When the upstream dies mid-body, the HTTP/2 stream is reset and the connection stays usable."""
    import h2.events

    sock, conn, stream_id = _h2_client(server.port, "/die", backend.url)
    reset = None
    while reset is None:
        reset = next((e for e in _h2_events(sock, conn) if isinstance(e, h2.events.StreamReset)), None)
    assert reset.stream_id == stream_id
    second = conn.get_next_available_stream_id()
    conn.send_headers(second, [(":method", "GET"), (":path", "/echo"), (":scheme", "http"), (":authority", "t"),
                               ("x-upstream", backend.url)], end_stream=True)
    sock.sendall(conn.data_to_send())
    ended = False
    while not ended:
        ended = any(isinstance(e, h2.events.StreamEnded) and e.stream_id == second for e in _h2_events(sock, conn))
    sock.close()
