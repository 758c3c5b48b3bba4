"""HTTP/2 (h2c prior knowledge) end to end: curl, h2load, flow control, stream cap, flood protection."""

import socket
import subprocess
import time

import h2.config
import h2.connection
import h2.events
import h2.settings
import pytest
from h2.errors import ErrorCodes

from harness import connect, curl_status, start_server
from zeroserve.core import http2
from zeroserve.core.config import Limits

BIG = bytes(range(251)) * 1000  # 251000 bytes: several windows and frames
FILES = {"index.html": "<h1>home</h1>", "a.txt": "alpha", "big.bin": BIG}


@pytest.fixture(scope="module")
def server(request, make_site):
    return start_server(request, make_site(FILES), "--h2-max-streams", "10")


class H2Client:
    """A real h2 client state machine over a blocking socket."""

    def __init__(self, port, settings=None):
        self.sock = connect(port)
        config = h2.config.H2Configuration(client_side=True, header_encoding=None)
        self.conn = h2.connection.H2Connection(config)
        if settings:
            self.conn.local_settings = h2.settings.Settings(client=True, initial_values=settings)
        self.conn.initiate_connection()
        self.flush()
        self.bodies = {}
        self.ended = set()
        self.responses = {}
        self.terminated = None
        self.remote_settings_seen = False

    def flush(self):
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def request(self, path, end_stream=True, extra=()):
        stream_id = self.conn.get_next_available_stream_id()
        headers = [(b":method", b"GET"), (b":path", path.encode()), (b":scheme", b"http"),
                   (b":authority", b"test"), *extra]
        self.conn.send_headers(stream_id, headers, end_stream=end_stream)
        self.flush()
        return stream_id

    def pump(self, timeout=0.5):
        """Read what arrives within `timeout`; False when nothing did or the socket closed."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(1 << 20)
        except socket.timeout:
            return False
        except ConnectionResetError:
            data = b""
        if not data:
            self.terminated = self.terminated or "closed"
            return False
        for event in self.conn.receive_data(data):
            if isinstance(event, h2.events.ResponseReceived):
                self.responses[event.stream_id] = dict(event.headers)
            elif isinstance(event, h2.events.DataReceived):
                self.bodies[event.stream_id] = self.bodies.get(event.stream_id, b"") + event.data
            elif isinstance(event, h2.events.StreamEnded):
                self.ended.add(event.stream_id)
            elif isinstance(event, h2.events.RemoteSettingsChanged):
                self.remote_settings_seen = True
            elif isinstance(event, h2.events.ConnectionTerminated):
                self.terminated = event.error_code
        self.flush()
        return True

    def drain(self, timeout=0.5):
        while self.pump(timeout):
            pass

    def close(self):
        self.sock.close()


def test_http2_curl_prior_knowledge_gets_file(server):
    """curl --http2-prior-knowledge gets the file over HTTP/2."""
    assert curl_status(server.url("/a.txt"), "--http2-prior-knowledge") == ("2", 200, b"alpha")


def test_http2_curl_gets_404_and_index(server):
    """Over HTTP/2 the root serves the index and a missing path gets 404."""
    assert curl_status(server.url("/"), "--http2-prior-knowledge") == ("2", 200, b"<h1>home</h1>")
    assert curl_status(server.url("/nope"), "--http2-prior-knowledge")[1] == 404


def test_http2_h2load_multiplexed_load_succeeds(server):
    """h2load with 4 connections x 10 streams completes every request over h2c."""
    result = subprocess.run(["h2load", "-n", "2000", "-c", "4", "-m", "10", server.url("/a.txt")],
                            capture_output=True, text=True, timeout=60)
    assert "Application protocol: h2c" in result.stdout
    assert "2000 succeeded, 0 failed, 0 errored, 0 timeout" in result.stdout


def test_http2_large_body_arrives_intact(server):
    """A body larger than the default window arrives whole (windows reopened by the client)."""
    version, status, body = curl_status(server.url("/big.bin"), "--http2-prior-knowledge")
    assert (version, status) == ("2", 200) and body == BIG


def test_http2_server_sends_only_within_stream_window(server):
    """With a 1000-byte stream window the server stops at 1000 bytes and resumes on WINDOW_UPDATE."""
    client = H2Client(server.port, {h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1000})
    stream = client.request("/big.bin")
    client.drain()
    assert len(client.bodies[stream]) == 1000 and stream not in client.ended
    client.conn.increment_flow_control_window(5000, stream_id=stream)
    client.flush()
    client.drain()
    assert len(client.bodies[stream]) == 6000 and stream not in client.ended
    client.conn.increment_flow_control_window(len(BIG), stream_id=stream)
    client.conn.increment_flow_control_window(len(BIG))
    client.flush()
    client.drain()
    assert client.bodies[stream] == BIG and stream in client.ended
    client.close()


def test_http2_settings_change_reopens_window(server):
    """Raising SETTINGS_INITIAL_WINDOW_SIZE lets a stalled stream send the difference."""
    client = H2Client(server.port, {h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1000})
    stream = client.request("/big.bin")
    client.drain()
    assert len(client.bodies[stream]) == 1000
    client.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 3000})
    client.flush()
    client.drain()
    assert len(client.bodies[stream]) == 3000
    client.close()


def test_http2_advertises_and_enforces_stream_cap(server):
    """The server advertises --h2-max-streams and sends GOAWAY to a client that opens more."""
    client = H2Client(server.port)
    # Eleven open streams before the server's SETTINGS could have been applied by the client.
    for _ in range(11):
        client.request("/a.txt", end_stream=False)
    client.drain()
    assert client.conn.remote_settings.max_concurrent_streams == 10
    assert client.terminated == ErrorCodes.PROTOCOL_ERROR
    client.close()


def test_http2_streams_under_cap_are_all_served(server):
    """Ten concurrent streams (the cap) are all answered."""
    client = H2Client(server.port)
    streams = [client.request("/a.txt") for _ in range(10)]
    client.drain()
    assert all(client.bodies.get(s) == b"alpha" for s in streams)
    assert client.terminated is None
    client.close()


@pytest.mark.parametrize("flood", ["rapid-reset", "ping", "settings"])
def test_http2_flood_gets_goaway_enhance_your_calm(server, flood):
    """Rapid reset, PING and SETTINGS floods end with GOAWAY(ENHANCE_YOUR_CALM)."""
    client = H2Client(server.port)
    for number in range(300):
        if flood == "rapid-reset":
            stream = client.conn.get_next_available_stream_id()
            client.conn.send_headers(stream, [(b":method", b"GET"), (b":path", b"/a.txt"),
                                              (b":scheme", b"http"), (b":authority", b"test")])
            client.conn.reset_stream(stream, ErrorCodes.CANCEL)
        elif flood == "ping":
            client.conn.ping(number.to_bytes(8, "big"))
        else:
            client.conn.update_settings({h2.settings.SettingCodes.MAX_FRAME_SIZE: 16384 + number})
    try:
        client.flush()
    except (BrokenPipeError, ConnectionResetError):
        pass
    client.drain()
    assert client.terminated == ErrorCodes.ENHANCE_YOUR_CALM
    client.close()
    kind = {"rapid-reset": "reset", "ping": "ping", "settings": "settings"}[flood]
    server.wait_for(rf"\[http2\] 127\.0\.0\.1:\d+: closing: {kind} flood")


def test_http2_too_many_headers_gets_431_and_connection_lives(server):
    """A request with more header fields than allowed gets 431; the connection serves the next one."""
    client = H2Client(server.port)
    many = [(f"x-h{n}".encode(), b"v") for n in range(150)]
    refused = client.request("/a.txt", extra=many)
    client.drain()
    assert client.responses[refused][b":status"] == b"431"
    ok = client.request("/a.txt")
    client.drain()
    assert client.bodies[ok] == b"alpha"
    client.close()


def test_http2_request_body_is_read_and_answered(server):
    """A POST with a body over HTTP/2 gets its answer (405 for a static file)."""
    result = subprocess.run(["curl", "-sS", "--http2-prior-knowledge", "-o", "/dev/null", "-w",
                             "%{http_version} %{response_code}", "--data-binary", "x" * 50000,
                             server.url("/a.txt")], capture_output=True, text=True, timeout=20)
    assert result.stdout == "2 405"


# -- the sans-IO layer on its own ------------------------------------------------------

def _client_bytes():
    """A client's preface, SETTINGS and one POST with a two-frame body, as bytes on the wire."""
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
    client.initiate_connection()
    client.send_headers(1, [(b":method", b"POST"), (b":path", b"/x?y=1"), (b":scheme", b"http"),
                            (b":authority", b"h"), (b"x-a", b"1")])
    client.send_data(1, b"ab")
    client.send_data(1, b"cd", end_stream=True)
    return client.data_to_send()


def _h2server():
    ids = iter(range(1000))
    return http2.H2Connection(Limits(), "http", ("127.0.0.1", 1), lambda: str(next(ids)), time.monotonic)


def _body(request):
    """The request's whole body, whether it came with the head or streamed in afterwards."""
    return request.body_stream.take_buffered() if request.body_stream is not None else request.body


def _summary(events):
    return [(e.method, e.target, e.headers, _body(e), e.stream_id, e.authority) for e in events]


EXPECTED = [("POST", "/x?y=1", [("x-a", "1")], b"abcd", 1, "h")]


def test_h2connection_parses_whole_input():
    """A whole client conversation fed at once gives one complete Request."""
    assert _summary(_h2server().receive(_client_bytes())) == EXPECTED


def test_h2connection_parses_byte_at_a_time():
    """The same conversation fed one byte at a time gives the same Request."""
    server = _h2server()
    events = []
    for byte in _client_bytes():
        events += server.receive(bytes([byte]))
    assert _summary(events) == EXPECTED


def test_h2connection_streams_unfinished_body():
    """A request is handed over with its head; its body streams in and ends with the last DATA frame."""
    data = _client_bytes()
    server = _h2server()
    cut = len(data) - 11  # the last DATA frame: 9-byte header + b"cd"
    (request,) = server.receive(data[:cut])
    assert server.active and request.body_stream.received == 2 and not request.body_stream.ended
    assert server.receive(data[cut:]) == []
    assert request.body_stream.ended and _summary([request]) == EXPECTED
