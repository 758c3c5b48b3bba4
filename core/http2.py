"""Sans-IO HTTP/2 for the server side over `h2`: bytes in → Request events, Response → frames.

It adds to h2 what a server exposed to the Internet needs: response bodies sent
only within the peer's flow-control windows (resuming when WINDOW_UPDATE or
SETTINGS open them), a cap on concurrent streams, the request limits mapped to
per-stream 4xx answers, and GOAWAY(ENHANCE_YOUR_CALM) for rapid-reset, SETTINGS
and PING floods. Like `http1.py` it never touches a socket.
"""

import os
from collections import deque
from http import HTTPStatus

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from h2.errors import ErrorCodes
from hyperframe.frame import GoAwayFrame

from zeroserve.core import httpdate
from zeroserve.core.request import Request

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

_STATUS = {s.value: str(s.value).encode("ascii") for s in HTTPStatus}
# More body bytes than this per `data_to_send` call would only sit in the
# transport's buffer; the connection calls again when the buffer drains.
_SEND_BUDGET = 256 * 1024
# Flood limits, per connection and per second: far above what a browser or
# h2load does, far below what it takes to keep a worker busy for nothing.
_FLOOD_WINDOW = 1.0
_MAX_PINGS = 50
_MAX_SETTINGS = 50


class Failure:
    """A stream-level refusal: answer `status` on `stream_id`, then reset the stream."""

    __slots__ = ("stream_id", "status", "reason")

    def __init__(self, stream_id, status, reason):
        self.stream_id = stream_id
        self.status = status
        self.reason = reason


class _Incoming:
    """A request whose head has arrived and whose body is still coming."""

    __slots__ = ("request", "parts", "size")

    def __init__(self, request):
        self.request = request
        self.parts = []
        self.size = 0


class _Outgoing:
    """A response whose body is still being sent, as flow control allows."""

    __slots__ = ("request", "response", "part", "offset", "sent")

    def __init__(self, request, response):
        self.request = request
        self.response = response
        self.part = 0  # index into response.body
        self.offset = 0  # bytes of that part already sent
        self.sent = 0

    def read(self, limit):
        """Up to `limit` bytes of the body from where sending stopped."""
        response = self.response
        part = response.body[self.part]
        if isinstance(part, bytes):
            chunk = part[self.offset:self.offset + limit]
            size = len(part)
        else:
            start, size = part
            chunk = os.pread(response.fd, min(limit, size - self.offset), start + self.offset)
            if not chunk:
                raise OSError(f"site file ended early at offset {start + self.offset}")
        self.offset += len(chunk)
        if self.offset >= size:
            self.part += 1
            self.offset = 0
        self.sent += len(chunk)
        return chunk

    @property
    def done(self):
        return self.part >= len(self.response.body)

    ready = True  # every byte is at hand: only flow control holds it back


class _Streamed:
    """A response whose body comes from a stream (proxy): the connection queues chunks as they arrive."""

    __slots__ = ("request", "response", "chunks", "buffered", "ended", "sent")

    def __init__(self, request, response):
        self.request = request
        self.response = response
        self.chunks = deque()
        self.buffered = 0  # bytes queued, not yet framed
        self.ended = False  # the last chunk is queued
        self.sent = 0

    def read(self, limit):
        chunks = self.chunks
        if not chunks:
            return b""
        chunk = chunks[0]
        if len(chunk) <= limit:
            chunks.popleft()
        else:
            chunks[0] = chunk[limit:]
            chunk = chunk[:limit]
        self.buffered -= len(chunk)
        self.sent += len(chunk)
        return chunk

    @property
    def done(self):
        return self.ended and not self.chunks

    @property
    def ready(self):
        return bool(self.chunks) or self.ended


class H2Connection:
    """One HTTP/2 connection: h2's state machine plus our limits and send scheduling."""

    def __init__(self, limits, scheme, peer, next_request_id, clock):
        self._limits = limits
        self._scheme = scheme
        self._peer = peer
        self._next_request_id = next_request_id
        self._clock = clock
        # Inbound headers are validated; outbound ones are ours (lowercase names, no
        # connection-specific fields), and checking them again costs a third of a response.
        config = h2.config.H2Configuration(client_side=False, header_encoding=None,
                                           validate_outbound_headers=False,
                                           normalize_outbound_headers=False)
        self._conn = conn = h2.connection.H2Connection(config)
        conn.local_settings = h2.settings.Settings(client=False, initial_values={
            h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: limits.h2_max_concurrent_streams,
            h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: limits.max_head_bytes,
        })
        conn.decoder.max_header_list_size = limits.max_head_bytes
        conn.initiate_connection()
        self._incoming = {}  # stream id → _Incoming
        self._outgoing = {}  # stream id → _Outgoing, in the order responses were queued
        self.finished = []  # (request, response, body bytes sent) for the access log
        self.closed = False  # no more frames will be read: error, flood or GOAWAY received
        self.close_reason = None  # why we closed, for the error log
        self.draining = False  # our GOAWAY is out: streams up to _last_stream finish, no new ones
        self._last_stream = 0
        self._goaway = b""
        self._flood_start = 0.0
        self._flood_counts = {"ping": 0, "settings": 0, "reset": 0}
        self._max_resets = max(100, 2 * limits.h2_max_concurrent_streams)

    # -- input -------------------------------------------------------------

    def receive(self, data):
        """Feed bytes from the peer; return completed Requests and stream Failures."""
        if self.closed:
            return []
        try:
            events = self._conn.receive_data(data)
        except h2.exceptions.ProtocolError as exc:  # h2 has queued the GOAWAY
            self._close(f"protocol error: {exc}")
            return []
        out = []
        for event in events:
            kind = type(event)
            if kind is h2.events.RequestReceived:
                if self.draining and event.stream_id > self._last_stream:
                    self._conn.reset_stream(event.stream_id, ErrorCodes.REFUSED_STREAM)
                else:
                    self._on_headers(event, out)
            elif kind is h2.events.DataReceived:
                self._on_data(event, out)
            elif kind is h2.events.StreamEnded:
                incoming = self._incoming.pop(event.stream_id, None)
                if incoming is not None:
                    if incoming.parts:
                        incoming.request.body = b"".join(incoming.parts)
                    out.append(incoming.request)
            elif kind is h2.events.StreamReset:
                self._incoming.pop(event.stream_id, None)
                self._drop_outgoing(event.stream_id)
                self._count("reset", self._max_resets)
            elif kind is h2.events.PingReceived:
                self._count("ping", _MAX_PINGS)
            elif kind is h2.events.RemoteSettingsChanged:
                self._count("settings", _MAX_SETTINGS)
            elif kind is h2.events.ConnectionTerminated:
                self._close(None)  # the peer's own decision: nothing to report
            if self.closed:
                return []
        return out

    def _on_headers(self, event, out):
        stream_id = event.stream_id
        method = target = authority = None
        headers = []
        for name, value in event.headers:
            if name[0] == 58:  # b":"
                if name == b":method":
                    method = value.decode("ascii")
                elif name == b":path":
                    target = value.decode("utf-8", "surrogateescape")
                elif name == b":authority":
                    authority = value.decode("latin-1")
            else:
                headers.append((name.decode("latin-1"), value.decode("latin-1")))
        if authority is None:
            for name, value in headers:
                if name == "host":
                    authority = value
        request = Request(
            method=method,
            target=target or "",
            headers=headers,
            http_version="2",
            scheme=self._scheme,
            peer=self._peer,
            request_id=self._next_request_id(),
            started=self._clock(),
            authority=authority,
            stream_id=stream_id,
        )
        if len(headers) > self._limits.max_header_count:
            out.append(Failure(stream_id, 431, "too many header fields"))
        elif len(request.target) > self._limits.max_uri_bytes:
            out.append(Failure(stream_id, 414, "request target too long"))
        elif _declared_length(headers) > self._limits.max_body_bytes:
            out.append(Failure(stream_id, 413, "request body too large"))
        elif event.stream_ended is not None:
            out.append(request)
        else:
            self._incoming[stream_id] = _Incoming(request)

    def _on_data(self, event, out):
        stream_id = event.stream_id
        # Reopen the windows at once: the body limit, not the window, bounds
        # what we buffer.
        self._conn.acknowledge_received_data(event.flow_controlled_length, stream_id)
        incoming = self._incoming.get(stream_id)
        if incoming is None:
            return
        incoming.size += len(event.data)
        if incoming.size > self._limits.max_body_bytes:
            del self._incoming[stream_id]
            out.append(Failure(stream_id, 413, "request body too large"))
        else:
            incoming.parts.append(event.data)

    def _count(self, kind, limit):
        now = self._clock()
        if now - self._flood_start > _FLOOD_WINDOW:
            self._flood_start = now
            for key in self._flood_counts:
                self._flood_counts[key] = 0
        self._flood_counts[kind] += 1
        if self._flood_counts[kind] > limit:
            self._conn.close_connection(ErrorCodes.ENHANCE_YOUR_CALM)
            self._close(f"{kind} flood")

    def abandon(self, reason):
        """The socket is gone: every stream ends where it is."""
        self._close(reason)

    def _close(self, reason):
        self.closed = True
        self.close_reason = reason
        for stream_id in list(self._outgoing):
            self._drop_outgoing(stream_id)
        self._incoming.clear()

    def _drop_outgoing(self, stream_id):
        outgoing = self._outgoing.pop(stream_id, None)
        if outgoing is not None:
            self.finished.append((outgoing.request, outgoing.response, outgoing.sent))

    # -- output --------------------------------------------------------------

    def send_response(self, stream_id, request, response):
        """Queue `response` on `stream_id`: headers now, body as windows allow."""
        if self.closed:
            return
        streamed = response.stream is not None and response.length != 0
        try:
            self._conn.send_headers(stream_id, _response_headers(response),
                                    end_stream=not response.body and not streamed)
        except h2.exceptions.StreamClosedError:  # the peer reset it meanwhile
            self.finished.append((request, response, 0))
            return
        if streamed:
            self._outgoing[stream_id] = _Streamed(request, response)
        elif response.body:
            self._outgoing[stream_id] = _Outgoing(request, response)
        else:
            self.finished.append((request, response, 0))

    def stream_data(self, stream_id, data):
        """Queue body bytes of a streamed response (dropped if the stream is gone)."""
        outgoing = self._outgoing.get(stream_id)
        if type(outgoing) is _Streamed:
            outgoing.chunks.append(data)
            outgoing.buffered += len(data)

    def stream_buffered(self, stream_id):
        """Bytes of a streamed response not yet framed, or -1 if the stream is gone (reset, connection closed)."""
        outgoing = self._outgoing.get(stream_id)
        return outgoing.buffered if type(outgoing) is _Streamed else -1

    def end_stream(self, stream_id):
        """A streamed response's body is complete: END_STREAM goes with its last bytes."""
        outgoing = self._outgoing.get(stream_id)
        if type(outgoing) is _Streamed:
            outgoing.ended = True

    def reset_stream(self, stream_id):
        """A streamed response failed after its head: reset the stream (the client sees it cut short)."""
        outgoing = self._outgoing.pop(stream_id, None)
        if outgoing is None:
            return
        try:
            self._conn.reset_stream(stream_id, ErrorCodes.INTERNAL_ERROR)
        except h2.exceptions.StreamClosedError:
            pass
        self.finished.append((outgoing.request, outgoing.response, outgoing.sent))

    def refuse(self, failure, response):
        """Answer a stream Failure with a small in-memory `response`, then reset the stream if still open."""
        conn = self._conn
        stream_id = failure.stream_id
        body = b"".join(response.body)
        headers = _response_headers(response)
        sent = 0
        try:
            if body and conn.local_flow_control_window(stream_id) >= len(body):
                conn.send_headers(stream_id, headers)
                conn.send_data(stream_id, body, end_stream=True)
                sent = len(body)
            else:  # no window for even a few bytes: the status alone says it
                headers = [(name, value) for name, value in headers if name != b"content-length"]
                conn.send_headers(stream_id, headers, end_stream=True)
            stream = conn.streams.get(stream_id)
            if stream is not None and not stream.closed:
                conn.reset_stream(stream_id, ErrorCodes.NO_ERROR)  # RFC 9113 §8.1: body not needed
        except h2.exceptions.StreamClosedError:
            pass
        self.finished.append((None, response, sent))

    def data_to_send(self):
        """Frames ready for the socket, body DATA included as far as windows allow."""
        conn = self._conn
        budget = _SEND_BUDGET
        for stream_id in list(self._outgoing):
            outgoing = self._outgoing[stream_id]
            while budget > 0 and outgoing.ready:
                window = min(conn.local_flow_control_window(stream_id), conn.max_outbound_frame_size,
                             budget)
                if window <= 0:
                    break
                chunk = outgoing.read(window)
                budget -= len(chunk)
                conn.send_data(stream_id, chunk, end_stream=outgoing.done)
                if outgoing.done:
                    del self._outgoing[stream_id]
                    self.finished.append((outgoing.request, outgoing.response, outgoing.sent))
                    break
            if budget <= 0:
                break
        if self._goaway:
            goaway, self._goaway = self._goaway, b""
            return conn.data_to_send() + goaway
        return conn.data_to_send()

    @property
    def blocked(self):
        """True when bodies wait for the peer's window (a write timeout applies)."""
        for outgoing in self._outgoing.values():
            if outgoing.ready:
                return True
        return False

    @property
    def active(self):
        """True while any request is being received or any response sent."""
        return bool(self._incoming or self._outgoing)

    def close_gracefully(self):
        """Send GOAWAY(NO_ERROR): streams already open finish, new ones are refused.

        The frame is built here rather than with h2's close_connection, which
        would also forbid sending the responses of the streams still open.
        """
        if self.closed or self.draining:
            return
        self.draining = True
        self._last_stream = self._conn.highest_inbound_stream_id
        frame = GoAwayFrame(0)
        frame.last_stream_id = self._last_stream
        frame.error_code = ErrorCodes.NO_ERROR
        self._goaway = frame.serialize()


def _response_headers(response):
    headers = [(b":status", _STATUS.get(response.status) or str(response.status).encode("ascii"))]
    for name, value in response.headers:
        headers.append((name.lower().encode("latin-1"), value.encode("latin-1")))
    headers.append((b"date", httpdate.current()))
    return headers


def _declared_length(headers):
    for name, value in headers:
        if name == "content-length":
            return int(value) if value.isdigit() else 0
    return 0
