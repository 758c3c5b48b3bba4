"""HTTP/2 over libnghttp2 beyond the basics: RFC 8441 WebSockets, C answers matching Python's, the sans-IO limits."""

import hashlib
import json
import os
import re
import signal
import socket
import struct
import subprocess
import threading
import time

import h2.config
import h2.connection
import h2.events
import h2.settings
import pytest
from h2.errors import ErrorCodes

from harness import connect, curl, start_server, write_tree
from proxy_backends import proxy_site
from test_fastpath import _REQUEST_ID, CHAIN_FILES
from tls_pki import make_test_pki
from zeroserve.core import http2, pack
from zeroserve.core.compile import ScriptCompiler
from zeroserve.core.config import Limits
from zeroserve.core.request import Response

@pytest.fixture(scope="module")
def server(request, tmp_path_factory):
    return start_server(request, proxy_site(tmp_path_factory.mktemp("h2-ws-site")), "--tls-addr", "off")


def ws_frame(opcode, payload):
    """A masked client WebSocket frame."""
    mask = os.urandom(4)
    size = len(payload)
    if size < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | size)
    elif size < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, size)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, size)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def ws_unframe(data):
    """(opcode, payload) of every whole unmasked server frame in `data`."""
    frames = []
    while len(data) >= 2:
        length, offset = data[1] & 0x7F, 2
        if length == 126:
            length, offset = struct.unpack("!H", data[2:4])[0], 4
        elif length == 127:
            length, offset = struct.unpack("!Q", data[2:10])[0], 10
        if len(data) < offset + length:
            break
        frames.append((data[0] & 0x0F, data[offset:offset + length]))
        data = data[offset + length:]
    return frames


class Client:
    """An h2 client doing RFC 8441 extended CONNECT over a blocking socket."""

    def __init__(self, port, settings=None):
        self.sock = connect(port)
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
        if settings:
            self.conn.local_settings = h2.settings.Settings(client=True, initial_values=settings)
        self.conn.initiate_connection()
        self.flush()
        self.heads = {}
        self.data = {}
        self.ended = set()
        self.reset = {}
        self.terminated = None
        while not self.conn.remote_settings.enable_connect_protocol and self.pump():
            pass

    def flush(self):
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def open(self, path, upstream, extra=()):
        stream_id = self.conn.get_next_available_stream_id()
        self.conn.send_headers(stream_id, [
            (b":method", b"CONNECT"), (b":protocol", b"websocket"), (b":scheme", b"http"), (b":path", path),
            (b":authority", b"test"), (b"sec-websocket-version", b"13"), (b"x-upstream", upstream.encode()),
            *extra])
        self.flush()
        return stream_id

    def pump(self, timeout=2.0):
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(1 << 20)
        except socket.timeout:
            return False
        if not data:
            self.terminated = self.terminated or "closed"
            return False
        for event in self.conn.receive_data(data):
            if isinstance(event, h2.events.ResponseReceived):
                self.heads[event.stream_id] = dict(event.headers)
            elif isinstance(event, h2.events.DataReceived):
                self.data[event.stream_id] = self.data.get(event.stream_id, b"") + event.data
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                self.ended.add(event.stream_id)
            elif isinstance(event, h2.events.StreamReset):
                self.reset[event.stream_id] = event.error_code
            elif isinstance(event, h2.events.ConnectionTerminated):
                self.terminated = event.error_code
        self.flush()
        return True

    def until(self, predicate, timeout=10):
        deadline = time.monotonic() + timeout
        while not predicate() and time.monotonic() < deadline:
            self.pump(0.2)
        return predicate()


def test_http2_websocket_settings_advertise_extended_connect(server):
    """The server's SETTINGS carry SETTINGS_ENABLE_CONNECT_PROTOCOL = 1 (RFC 8441 §3)."""
    client = Client(server.port)
    assert client.conn.remote_settings.enable_connect_protocol == 1
    client.sock.close()


def test_http2_websocket_echo_through_upstream(server, backend):
    """The upstream's 101 (its Sec-WebSocket-Accept matching the key we made) becomes 200; frames flow both ways."""
    client = Client(server.port)
    stream = client.open(b"/ws", backend.url)
    assert client.until(lambda: stream in client.heads)
    head = client.heads[stream]
    assert head[b":status"] == b"200" and b"sec-websocket-accept" not in head and b"upgrade" not in head
    client.conn.send_data(stream, ws_frame(1, b"hello") + ws_frame(2, b"\x00\x01binary"))
    client.flush()
    assert client.until(lambda: len(ws_unframe(client.data.get(stream, b""))) == 2)
    assert ws_unframe(client.data[stream]) == [(1, b"hello"), (2, b"\x00\x01binary")]
    client.conn.send_data(stream, ws_frame(8, b"\x03\xe8"))  # close: the upstream echoes it and hangs up
    client.flush()
    assert client.until(lambda: stream in client.ended)
    assert ws_unframe(client.data[stream])[-1] == (8, b"\x03\xe8")
    client.sock.close()


def test_http2_websocket_client_data_beyond_window_flows(server, backend):
    """A client sends far more than one stream window; the window reopens as the upstream takes the bytes."""
    client = Client(server.port)
    stream = client.open(b"/ws", backend.url)
    assert client.until(lambda: stream in client.heads)
    payload = bytes(range(256)) * 1024  # 256 KiB: four default stream windows
    frame = ws_frame(2, payload)
    sent = 0
    deadline = time.monotonic() + 20
    while sent < len(frame) and time.monotonic() < deadline:
        window = min(client.conn.local_flow_control_window(stream), client.conn.max_outbound_frame_size)
        if window > 0:
            client.conn.send_data(stream, frame[sent:sent + window])
            sent += window
            client.flush()
        else:
            client.pump(0.2)
    assert sent >= len(frame)
    assert client.until(lambda: ws_unframe(client.data.get(stream, b"")) == [(2, payload)], timeout=20)
    client.sock.close()


def test_http2_websocket_respects_client_window(server, backend):
    """With a 1000-byte stream window the tunnel stops at 1000 bytes and resumes on WINDOW_UPDATE."""
    client = Client(server.port, {h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1000})
    stream = client.open(b"/ws", backend.url)
    assert client.until(lambda: stream in client.heads)
    payload = b"x" * 5000
    client.conn.send_data(stream, ws_frame(2, payload))
    client.flush()
    # Read without reopening the window: the client's DataReceived handler acknowledges, so read raw here.
    client.sock.settimeout(1.0)
    received = b""
    try:
        while True:
            data = client.sock.recv(1 << 16)
            if not data:
                break
            for event in client.conn.receive_data(data):
                if isinstance(event, h2.events.DataReceived):
                    received += event.data
    except socket.timeout:
        pass
    assert len(received) == 1000
    client.conn.increment_flow_control_window(10000, stream_id=stream)
    client.flush()
    client.data[stream] = received
    assert client.until(lambda: ws_unframe(client.data.get(stream, b"")) == [(2, payload)])
    client.sock.close()


def test_http2_websocket_wrong_accept_gets_502(server):
    """An upstream 101 whose Sec-WebSocket-Accept does not match the key we sent is answered 502, not spliced."""
    listener = socket.create_server(("127.0.0.1", 0))
    seen = []

    def answer():
        upstream, _ = listener.accept()
        with upstream:
            head = b""
            while b"\r\n\r\n" not in head:
                head += upstream.recv(65536)
            seen.append(head)
            upstream.sendall(b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n"
                             b"sec-websocket-accept: d3Jvbmc=\r\n\r\n")
            upstream.recv(1)  # held open until the server drops it

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    client = Client(server.port)
    stream = client.open(b"/ws", f"http://127.0.0.1:{listener.getsockname()[1]}")
    assert client.until(lambda: stream in client.heads)
    assert client.heads[stream][b":status"] == b"502"
    thread.join(timeout=10)
    assert not thread.is_alive() and b"sec-websocket-key: " in seen[0].lower()
    listener.close()
    client.sock.close()
    server.wait_for(r"\[proxy\] \S+: the upstream's 101 has a wrong Sec-WebSocket-Accept")


def test_http2_websocket_reset_leaves_connection_serving(server, backend):
    """A client resetting its tunnel stream ends that tunnel only; the connection serves the next request."""
    client = Client(server.port)
    stream = client.open(b"/ws", backend.url)
    assert client.until(lambda: stream in client.heads)
    client.conn.reset_stream(stream, ErrorCodes.CANCEL)
    client.flush()
    second = client.conn.get_next_available_stream_id()
    client.conn.send_headers(second, [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/echo/after"),
                                      (b":authority", b"test"), (b"x-upstream", backend.url.encode())],
                             end_stream=True)
    client.flush()
    assert client.until(lambda: second in client.ended)
    assert json.loads(client.data[second])["target"] == "/echo/after"
    assert client.terminated is None
    client.sock.close()


def test_http2_request_body_streams_to_upstream(server, backend, tmp_path):
    """A 3 MiB HTTP/2 upload (beyond --max-body-bytes and many windows) streams whole to the upstream."""
    body = os.urandom(3 * 1024 * 1024)
    upload = tmp_path / "upload.bin"
    upload.write_bytes(body)
    result = curl("-sS", "--http2-prior-knowledge", "--data-binary", f"@{upload}", "-H",
                  f"x-upstream: {backend.url}", f"http://127.0.0.1:{server.port}/echo/upload")
    echoed = json.loads(result.stdout)
    assert echoed["method"] == "POST" and echoed["body_length"] == len(body)
    assert echoed["body_sha256"] == hashlib.sha256(body).hexdigest()


def test_http2_request_body_over_limit_for_static_gets_413(server, tmp_path):
    """A body over --max-body-bytes sent to a non-proxied answer is refused with 413 over HTTP/2."""
    upload = tmp_path / "big.bin"
    upload.write_bytes(b"x" * (2 * 1024 * 1024))
    result = curl("-sS", "--http2-prior-knowledge", "-o", "/dev/null", "-w", "%{http_version} %{response_code}",
                  "--data-binary", f"@{upload}", f"http://127.0.0.1:{server.port}/index.html")
    assert result.stdout == b"2 413"


STATIC_FILES = {"index.html": "<h1>home</h1>", "a.txt": "alpha", "docs/index.html": "<p>docs</p>",
                "big.bin": bytes(range(256)) * 800, "style.css": "body{}" * 50, "style.css.gz": b"\x1f\x8bgz"}
# GET/HEAD requests the C table answers, and ones it must leave to Python; both kinds must match --no-fast-path.
STATIC_REQUESTS = [
    ("GET", "/a.txt", ()), ("HEAD", "/a.txt", ()), ("GET", "/", ()), ("GET", "/docs/", ()), ("GET", "/nope", ()),
    ("GET", "/a.txt?x=1", ()), ("GET", "/big.bin", ()), ("GET", "/style.css", ()),
    ("GET", "/style.css", ((b"accept-encoding", b"gzip"),)), ("GET", "/a.txt", ((b"range", b"bytes=1-2"),)),
    ("GET", "/a.txt", ((b"if-none-match", b'"nope"'),)), ("GET", "/x/../a.txt", ()), ("GET", "/%61.txt", ()),
    ("POST", "/a.txt", ()),
]


@pytest.fixture(scope="module")
def static_servers(request, make_site):
    site = make_site(STATIC_FILES)
    return start_server(request, site, "--tls-addr", "off"), start_server(request, site, "--tls-addr", "off",
                                                                         "--no-fast-path")


def _static_answers(port, requests=STATIC_REQUESTS):
    """(headers without date, body) of each (method, path, extra headers) request, on one HTTP/2 connection."""
    client = Client.__new__(Client)
    client.sock = connect(port)
    client.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
    client.conn.initiate_connection()
    client.heads, client.data, client.ended, client.reset, client.terminated = {}, {}, set(), {}, None
    streams = []
    for method, path, extra in requests:
        stream_id = client.conn.get_next_available_stream_id()
        client.conn.send_headers(stream_id, [(b":method", method.encode()), (b":scheme", b"http"),
                                             (b":path", path.encode()), (b":authority", b"test"), *extra],
                                 end_stream=True)
        streams.append(stream_id)
    client.flush()
    assert client.until(lambda: all(s in client.ended for s in streams))
    client.sock.close()
    return [(sorted((k, v) for k, v in client.heads[s].items() if k != b"date"), client.data.get(s, b""))
            for s in streams]


def test_http2_static_answers_from_c_match_python_path(static_servers):
    """Every static answer over HTTP/2 is identical with and without the C fast path (Date aside)."""
    fast, python = static_servers
    answers = _static_answers(fast.port)
    assert answers == _static_answers(python.port)
    assert [dict(head)[b":status"] for head, _ in answers][:5] == [b"200", b"200", b"200", b"200", b"404"]
    assert answers[6][1] == STATIC_FILES["big.bin"]


def test_http2_static_answers_from_c_are_logged(static_servers):
    """Streams answered in C get access-log lines with their status and body bytes, like the Python path's."""
    fast, python = static_servers
    _static_answers(fast.port)
    _static_answers(python.port)
    # C answers are complete when the stream's request is decoded: their duration is zero.
    fast.wait_for(r"\[request\] \S+ \S+ 127\.0\.0\.1:\d+ GET /big\.bin 200 204800 0\.0ms HTTP/2")
    fast.wait_for(r"\[request\] \S+ \S+ 127\.0\.0\.1:\d+ HEAD /a\.txt 200 0 0\.0ms HTTP/2")
    python.wait_for(r"\[request\] \S+ \S+ 127\.0\.0\.1:\d+ GET /big\.bin 200 204800 \S+ms HTTP/2")
    assert python.count(r" 0\.0ms HTTP/2") == 0


# The scripted worlds of test_fastpath: every outcome of a chain C runs alone.
CHAIN_REQUESTS = [
    ("GET", "/style.css", ()),                    # static + a script's header
    ("GET", "/index.html", ()),                   # template pass, page unchanged
    ("HEAD", "/index.html", ()),
    ("GET", "/tagged.html", ()),                  # template pass with <zs-meta>: Python renders it
    ("GET", "/typed/page.txt", ()),               # the script's content-type replaces the file's
    ("GET", "/plain/page.html", ()),              # no metadata
    ("GET", "/nothing", ()),                      # the 404 with the script's header
    ("GET", "/api/item?x=1", ()),                 # JSON from the script
    ("HEAD", "/api/item", ()),
    ("GET", "/teapot", ()),                       # zs_respond with a replaced content-length
    ("GET", "/odd", ()),                          # a status without a reason phrase
    ("GET", "/log", ()),                          # a script log line: adopted
    ("GET", "/rewrite", ()),                      # the request changed: adopted
    ("GET", "/fault", ()),                        # a fault: adopted, 500
]


@pytest.fixture(scope="module")
def chain_tar(tmp_path_factory):
    """The site whose C-only script chain ends every way (test_fastpath's)."""
    directory = tmp_path_factory.mktemp("h2-chain-site")
    write_tree(directory / "src", CHAIN_FILES)
    pack.build(directory / "src", directory / "site.tar", compiler=ScriptCompiler.find("clang"))
    return directory / "site.tar"


@pytest.fixture(scope="module")
def chain_servers(request, chain_tar):
    """(fast path, Python path) plaintext servers of chain_tar."""
    return (start_server(request, chain_tar, "--tls-addr", "off"),
            start_server(request, chain_tar, "--tls-addr", "off", "--no-fast-path"))


def _masked(answers):
    return [(head, _REQUEST_ID.sub(b"(request -)", body)) for head, body in answers]


def test_http2_chain_answers_match_python_path(chain_servers):
    """Over HTTP/2, a C-only chain's every outcome gets the same headers and body with and without the fast path."""
    fast, python = chain_servers
    for _ in range(2):  # the first round fills the chain's pools (a worker's first requests run in Python)
        answers = _masked(_static_answers(fast.port, CHAIN_REQUESTS))
        assert answers == _masked(_static_answers(python.port, CHAIN_REQUESTS))
    statuses = [dict(head)[b":status"] for head, _ in answers]
    assert statuses == [b"200", b"200", b"200", b"200", b"200", b"200", b"404", b"200", b"200", b"418", b"299",
                        b"404", b"200", b"500"]
    assert dict(answers[0][0])[b"x-bench"] == b"script"
    assert answers[7][1] == b'{"path":"/api/item"}'
    assert answers[3][1] == b"<p>from script</p>"
    # Answered in C: logged as soon as decoded (0.0ms). The streams after a handed-over one in the same
    # read go to Python whole (C holds one handed-over run at a time).
    fast.wait_for(r"\[request\] \S+ \S+ 127\.0\.0\.1:\d+ GET /style\.css 200 1000 0\.0ms HTTP/2")
    assert python.count(r" 0\.0ms HTTP/2") == 0


def test_http2_chain_adopted_streams_in_one_read_are_answered(chain_servers):
    """Several handed-over streams in one read (log, rewrite, fault) each get the Python path's answer."""
    requests = [("GET", "/log", ()), ("GET", "/rewrite", ()), ("GET", "/fault", ()), ("GET", "/log", ()),
                ("GET", "/api/a", ())] * 3
    fast, python = chain_servers
    answers = _masked(_static_answers(fast.port, requests))
    assert answers == _masked(_static_answers(python.port, requests))
    assert [dict(head)[b":status"] for head, _ in answers][:5] == [b"404", b"200", b"500", b"404", b"200"]


def test_http2_chain_proxy_is_handed_over(chain_servers, static_servers):
    """zs_reverse_proxy decided in C over HTTP/2 is carried out by Python: the upstream's answer."""
    upstream = f"http://127.0.0.1:{static_servers[1].port}".encode()
    requests = [("GET", "/proxy/a.txt", ((b"x-upstream", upstream),)), ("GET", "/api/b", ())] * 2
    fast, python = chain_servers
    answers = _static_answers(fast.port, requests)
    assert answers == _static_answers(python.port, requests)
    assert dict(answers[0][0])[b":status"] == b"404"  # the upstream's own 404 for /proxy/a.txt
    assert dict(answers[1][0])[b":status"] == b"200"


def test_http2_chain_abort_ends_the_connection(chain_servers):
    """zs_abort decided in C over HTTP/2 ends the whole connection without an answer, as on the Python path."""
    for server in chain_servers:
        for _ in range(2):
            client = Client(server.port)
            stream_id = client.conn.get_next_available_stream_id()
            client.conn.send_headers(stream_id, [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/abort"),
                                                 (b":authority", b"test")], end_stream=True)
            client.flush()
            assert client.until(lambda: client.terminated is not None)
            assert stream_id not in client.heads
            client.sock.close()


def _curl_h2_answers(server, pki, *args):
    """Every answer curl gets over HTTPS/2 for `args` (URLs on one connection), Date lines dropped."""
    result = curl("--http2", "--cacert", str(pki.ca_cert), "-D", "-", "--resolve",
                  f"localhost:{server.tls_port}:127.0.0.1", *args)
    assert result.returncode == 0, result.stderr
    return re.sub(rb"(?im)^date: [^\r\n]*\r\n", b"", _REQUEST_ID.sub(b"(request -)", result.stdout))


def test_http2_chain_answers_over_tls_match_python_path(request, chain_tar, tmp_path_factory):
    """Over HTTPS/2, chain answers from C (scheme, SNI and Host checks included) equal the Python path's."""
    pki = make_test_pki(tmp_path_factory.mktemp("h2-chain-pki"))
    tar = chain_tar
    flags = ("--tls-addr", "127.0.0.1:0", "--cert", str(pki.leaf_cert), "--key", str(pki.leaf_key))
    fast, python = start_server(request, tar, *flags), start_server(request, tar, *flags, "--no-fast-path")
    paths = ["/style.css", "/api/item?x=1", "/index.html", "/teapot", "/tagged.html", "/nothing"] * 2
    answers = []
    for server in (fast, python):
        urls = [f"https://localhost:{server.tls_port}{path}" for path in paths]
        other_host = ("-H", "host: other.test", f"https://localhost:{server.tls_port}/api/item")
        answers.append((_curl_h2_answers(server, pki, *urls), _curl_h2_answers(server, pki, *other_host)))
    assert answers[0] == answers[1]
    assert answers[0][0].count(b"HTTP/2 200") == 8 and b'{"path":"/api/item"}' in answers[0][0]
    assert answers[0][1].startswith(b"HTTP/2 421")
    fast.wait_for(r"GET /api/item\?x=1 200 20 0\.0ms HTTP/2")  # answered in C


def test_http2_idle_connection_gets_goaway_then_close(request, make_site):
    """An HTTP/2 connection idle past --idle-timeout gets GOAWAY(NO_ERROR) before the server closes it."""
    server = start_server(request, make_site({"a.txt": "alpha"}), "--tls-addr", "off", "--idle-timeout", "1")
    client = Client(server.port)
    stream = client.conn.get_next_available_stream_id()
    client.conn.send_headers(stream, [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/a.txt"),
                                      (b":authority", b"test")], end_stream=True)
    client.flush()
    assert client.until(lambda: stream in client.ended)
    assert client.until(lambda: client.terminated is not None, timeout=5)
    assert client.terminated == ErrorCodes.NO_ERROR
    assert client.conn.state_machine.state.name == "CLOSED"
    client.sock.close()


def test_http2_shutdown_lets_open_stream_finish(request, tmp_path, backend):
    """On SIGTERM an HTTP/2 stream still waiting for its answer gets it before the server exits."""
    server = start_server(request, proxy_site(tmp_path), "--tls-addr", "off")
    fetch = subprocess.Popen(["curl", "-sS", "--http2-prior-knowledge", "-w", " %{http_version} %{response_code}",
                              "-H", f"x-upstream: {backend.url}", server.url("/slow?s=1")],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    server.wait_for(r"listening")
    time.sleep(0.5)  # the request is waiting on the upstream
    server.signal(signal.SIGTERM)
    stdout, stderr = fetch.communicate(timeout=15)
    assert stdout == b"slow 2 200", stderr
    assert server.proc.wait(timeout=15) == 0


# -- the sans-IO layer on its own ------------------------------------------------------

def _server_conn(limits=Limits()):
    ids = iter(range(1000))
    return http2.H2Connection(limits, "http", ("127.0.0.1", 1), lambda: str(next(ids)), time.monotonic)


def _client_wire(*requests):
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
    client.initiate_connection()
    for headers, body in requests:
        stream_id = client.get_next_available_stream_id()
        client.send_headers(stream_id, headers, end_stream=not body)
        if body:
            client.send_data(stream_id, body, end_stream=True)
    return client.data_to_send()


def _get(path, *extra):
    return [(b":method", b"GET"), (b":path", path), (b":scheme", b"http"), (b":authority", b"h"), *extra]


def test_h2connection_refuses_long_target_and_streams_large_body():
    """A target over --max-uri-bytes is refused 414; a body over --max-body-bytes is still handed over, as a stream."""
    conn = _server_conn(Limits(max_uri_bytes=100, max_body_bytes=10))
    post = [(b":method", b"POST"), (b":path", b"/p"), (b":scheme", b"http"), (b":authority", b"h"),
            (b"content-length", b"11")]
    events = conn.receive(_client_wire((_get(b"/" + b"a" * 200), b""), (post, b"x" * 11), (_get(b"/ok"), b"")))
    assert [(e.stream_id, e.status) for e in events if isinstance(e, http2.Failure)] == [(1, 414)]
    post_request, get_request = [e for e in events if not isinstance(e, http2.Failure)]
    assert post_request.body == b"" and post_request.body_stream.length == 11
    assert post_request.body_stream.ended and post_request.body_stream.take_buffered() == b"x" * 11
    assert get_request.target == "/ok" and get_request.body_stream is None


def test_h2connection_extended_connect_becomes_upgrade_request():
    """An extended CONNECT for websocket is handed over at once as a GET carrying the HTTP/1.1 upgrade headers."""
    conn = _server_conn()
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
    client.initiate_connection()
    conn.receive(client.data_to_send())
    client.receive_data(conn.data_to_send())  # the server's SETTINGS allow :protocol
    client.send_headers(1, [(b":method", b"CONNECT"), (b":protocol", b"websocket"), (b":scheme", b"http"),
                            (b":path", b"/chat"), (b":authority", b"h"), (b"sec-websocket-version", b"13")])
    (request,) = conn.receive(client.data_to_send())
    names = dict(request.headers)
    assert (request.method, request.target, request.authority) == ("GET", "/chat", "h")
    assert names["upgrade"] == "websocket" and names["connection"] == "upgrade"
    assert http2.websocket_accept(names["sec-websocket-key"])


def test_h2connection_non_ascii_path_decodes_as_utf8():
    """A request target with UTF-8 bytes is decoded as UTF-8 (surrogateescape), as on HTTP/1.1."""
    conn = _server_conn()
    (request,) = conn.receive(_client_wire((_get("/é".encode()), b"")))
    assert request.target == "/é"


def test_h2connection_drops_header_with_nul_and_sends_the_rest():
    """A response header holding a NUL cannot be encoded; it is dropped and the response goes out without it."""
    conn = _server_conn()
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
    client.initiate_connection()
    client.send_headers(1, _get(b"/x"), end_stream=True)
    (request,) = conn.receive(client.data_to_send())
    conn.send_response(1, request, Response(200, [("x-good", "1"), ("x-bad", "a\0b")], (b"hi",), 2))
    events = client.receive_data(conn.data_to_send())
    heads = [dict(e.headers) for e in events if isinstance(e, h2.events.ResponseReceived)]
    body = b"".join(e.data for e in events if isinstance(e, h2.events.DataReceived))
    assert heads[0][b"x-good"] == b"1" and b"x-bad" not in heads[0] and body == b"hi"
    assert conn.finished == [(request, conn.finished[0][1], 2)]
