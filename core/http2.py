"""Sans-IO HTTP/2 for the server side over libnghttp2: bytes in → Request events, Response → frames.

The protocol itself (HPACK, stream states, flow control, frame checks) is
nghttp2's, reached through the C glue in `native/h2` (`zsh2.h`), which also
holds what a server exposed to the Internet needs: the request limits mapped
to per-stream 4xx answers, GOAWAY(ENHANCE_YOUR_CALM) for rapid-reset, SETTINGS
and PING floods, and response bodies (bytes and file ranges) sent only within
the peer's windows, resuming when WINDOW_UPDATE or SETTINGS open them. Each
`receive` and `data_to_send` is one call into C whose events are read in one
go. A request is handed over with its head; its body streams in as a
`RequestBody` whose stream window reopens only as the consumer takes bytes.
RFC 8441 extended CONNECT for WebSockets becomes the Request an HTTP/1.1
upgrade would have been. Like `http1.py` it never touches a socket.
"""

import base64
import functools
import hashlib
import os
from http import HTTPStatus

from zeroserve.core import httpdate
from zeroserve.core.errors import ZeroserveError
from zeroserve.core.request import Request, RequestBody
from zeroserve.native._zsvm import ffi, lib

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

_STATUS = {s.value: str(s.value) for s in HTTPStatus}
# More body bytes than this per `data_to_send` call would only sit in the
# transport's buffer; the connection calls again when the buffer drains.
_SEND_BUDGET = 256 * 1024
# Flood limits, per connection and per second: far above what a browser or
# h2load does, far below what it takes to keep a worker busy for nothing.
_FLOOD_WINDOW = 1.0
_MAX_PINGS = 50
_MAX_SETTINGS = 50
_FIELDS = lib.ZS_H2_EV_FIELDS
_HEAD, _DATA, _END, _CLOSED, _FAST = lib.ZS_H2_HEAD, lib.ZS_H2_DATA, lib.ZS_H2_END, lib.ZS_H2_CLOSED, lib.ZS_H2_FAST
_HEAD_ENDED, _HEAD_ADOPT = lib.ZS_H2_HEAD_ENDED, lib.ZS_H2_HEAD_ADOPT
_REASONS = {431: "too many header fields", 414: "request target too long"}
_CLOSE_REASONS = {lib.ZS_H2_CLOSED_PING: "ping flood", lib.ZS_H2_CLOSED_SETTINGS: "settings flood",
                  lib.ZS_H2_CLOSED_RESET: "reset flood"}
_INTERNAL_ERROR = 2
_INVALID_ARGUMENT = -501  # NGHTTP2_ERR_INVALID_ARGUMENT
_WEBSOCKET_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
# A 101 from the upstream becomes the extended CONNECT's 200 without these (RFC 8441 §5).
_UPGRADE_ONLY = frozenset(("upgrade", "connection", "sec-websocket-accept", "content-length"))


class Failure:
    """A stream-level refusal: answer `status` on `stream_id`, then reset the stream."""

    __slots__ = ("stream_id", "status", "reason")

    def __init__(self, stream_id, status, reason):
        self.stream_id = stream_id
        self.status = status
        self.reason = reason


class TunnelData:
    """Bytes the client sent into an extended CONNECT tunnel (b"": it ended its side; None: the stream is gone)."""

    __slots__ = ("stream_id", "data")

    def __init__(self, stream_id, data):
        self.stream_id = stream_id
        self.data = data


def websocket_accept(key):
    """The Sec-WebSocket-Accept value an upstream must answer to Sec-WebSocket-Key `key` (RFC 6455 §4.2.2)."""
    return base64.b64encode(hashlib.sha1(key.encode("ascii") + _WEBSOCKET_GUID).digest()).decode("ascii")


class H2Connection:
    """One HTTP/2 connection: nghttp2's state machine, our limits, and the requests and responses on it."""

    def __init__(self, limits, scheme, peer, next_request_id, clock):
        self._limits = limits
        self._scheme = scheme
        self._peer = peer
        self._next_request_id = next_request_id
        self._clock = clock
        settings = ffi.new("struct zs_h2_limits *", {
            "max_concurrent_streams": limits.h2_max_concurrent_streams,
            "max_header_count": limits.max_header_count,
            "max_uri_bytes": limits.max_uri_bytes,
            "max_head_bytes": limits.max_head_bytes,
            "max_pings": _MAX_PINGS,
            "max_settings": _MAX_SETTINGS,
            "max_resets": max(100, 2 * limits.h2_max_concurrent_streams),
            "flood_window": _FLOOD_WINDOW,
        })
        out = ffi.new("struct zs_h2 **")
        err = ffi.new("char[]", 160)
        if lib.zs_h2_new(out, settings, err, len(err)) != 0:
            raise ZeroserveError(f"HTTP/2 session could not be created: {ffi.string(err).decode()}")
        self._h = ffi.gc(out[0], lib.zs_h2_free)
        self._incoming = {}  # stream id → RequestBody of a request whose body is still coming
        self._outgoing = {}  # stream id → (request, response) whose response is queued in C
        self._websockets = {}  # stream id → the Sec-WebSocket-Key made up for its extended CONNECT
        self.finished = []  # (request, response, body bytes sent) for the access log
        self.fast_served = []  # (request id, method, target, status, body bytes) answered in C, for the access log
        self._server = None  # set by serve_fast: its current World's fast table answers streams in C
        self._fast = None  # the fastpath.FastConnection C answers with
        self._log_fast = 0
        self.adopted = None  # the Request whose scripts ran in C, until `take_adopted`
        self.closed = False  # no more frames will be read: error, flood or GOAWAY received
        self.close_reason = None  # why we closed, for the error log
        self.draining = False  # our GOAWAY is out: streams already open finish, no new ones

    def serve_fast(self, server, fast, log):
        """Let C answer GET/HEAD streams (zs_fast_answer) from `server.world.fast_table`, the World current at
        each read, as `fast` (a fastpath.FastConnection) describes the connection.

        `log`: report those answers in `fast_served` for the access log. A stream whose scripts C ran but
        could not finish comes out as `adopted`: answer it with `take_adopted()` before the next `receive`.
        """
        self._server = server
        self._fast = fast
        self._log_fast = int(log)

    def take_adopted(self):
        """handler.handle's stand-in for the `adopted` request: goes on from its scripts' result in C."""
        self.adopted = None
        return self._fast.respond_adopted

    # -- input -------------------------------------------------------------

    def receive(self, data):
        """Feed bytes from the peer; return Requests (at their head), stream Failures and TunnelData."""
        if self.closed:
            return []
        h = self._h
        fast = self._fast
        if fast is None or self._server.world.fast_table is None:
            count = lib.zs_h2_receive(h, data, len(data), self._clock(), ffi.NULL, ffi.NULL, ffi.NULL, 0)
        else:
            count = lib.zs_h2_receive(h, data, len(data), self._clock(), self._server.world.fast_table.table,
                                      fast.worker, fast.conn, self._log_fast)
        out = []
        if count:
            self._take_events(count, out)
        if h.closed:
            if self.adopted is not None:  # never answered: its run goes back to C's pools
                self.adopted = None
                lib.zs_fast_answer_done(fast.worker)
            self._on_closed()
            return []
        return out

    def _take_events(self, count, out):
        h = self._h
        events = ffi.unpack(h.events, count * _FIELDS)
        arena = ffi.buffer(h.arena, h.arena_len)[:] if h.arena_len else b""
        incoming = self._incoming
        fresh = {}  # stream id → Request handed over in this batch, whose body may end in it too
        for i in range(0, count * _FIELDS, _FIELDS):
            kind = events[i]
            stream_id = events[i + 1]
            if kind == _DATA:
                offset = events[i + 2]
                self._on_data(stream_id, arena[offset:offset + events[i + 3]], out)
            elif kind == _END:
                body = incoming.pop(stream_id, None)
                if body is not None:
                    body.end()
                    request = fresh.get(stream_id)
                    if request is not None and body.received <= self._limits.max_body_bytes:
                        # The whole body came with the head: no streaming needed.
                        request.body = body.take_buffered()
                        request.body_stream = None
                elif stream_id in self._websockets:
                    out.append(TunnelData(stream_id, b""))
            elif kind == _FAST:
                offset = events[i + 2]
                method, _, target = arena[offset:offset + events[i + 3]].decode("latin-1").partition("\0")
                aux = events[i + 4]
                self.fast_served.append((self._next_request_id(), method, target, aux & 0xFFFF, aux >> 16))
            elif kind == _CLOSED:
                body = incoming.pop(stream_id, None)
                if body is not None:  # reset before its END_STREAM
                    body.fail(ConnectionResetError(f"HTTP/2 stream {stream_id} was reset before its body ended"))
                if self._websockets.pop(stream_id, None) is not None:
                    out.append(TunnelData(stream_id, None))
                done = self._outgoing.pop(stream_id, None)
                if done is not None:
                    self.finished.append((done[0], done[1], events[i + 4]))
            else:
                status = events[i + 4]
                if status:
                    out.append(Failure(stream_id, status, _REASONS[status]))
                else:
                    offset = events[i + 2]
                    request = self._on_head(stream_id, arena[offset:offset + events[i + 3]], kind & _HEAD_ENDED)
                    if request is None:
                        out.append(Failure(stream_id, 400, "unsupported extended CONNECT protocol"))
                    else:
                        out.append(request)
                        if kind & _HEAD_ADOPT:
                            self.adopted = request
                        if request.body_stream is not None:
                            fresh[stream_id] = request

    def _on_head(self, stream_id, blob, ended):
        """The Request of a head (its body, if any, streams in as `body_stream`); None for an unknown :protocol."""
        fields = blob.decode("latin-1").split("\0")
        method, target, authority, protocol = fields[-4:]
        del fields[-4:]
        headers = list(zip(fields[0::2], fields[1::2]))
        if not target.isascii():
            target = target.encode("latin-1").decode("utf-8", "surrogateescape")
        if not authority:
            authority = None
            for name, value in headers:
                if name == "host":
                    authority = value
        if protocol:
            if method != "CONNECT" or protocol != "websocket":
                return None
            # RFC 8441 §5: the scripts and the proxy see what an HTTP/1.1 client would have sent.
            key = base64.b64encode(os.urandom(16)).decode("ascii")
            self._websockets[stream_id] = key
            method = "GET"
            headers += [("upgrade", "websocket"), ("connection", "upgrade"), ("sec-websocket-key", key)]
        request = Request(
            method=method,
            target=target,
            headers=headers,
            http_version="2",
            scheme=self._scheme,
            peer=self._peer,
            request_id=self._next_request_id(),
            started=self._clock(),
            authority=authority,
            stream_id=stream_id,
        )
        if not ended and not protocol:
            body = RequestBody(_declared_length(headers), functools.partial(lib.zs_h2_consume, self._h, stream_id))
            request.body_stream = self._incoming[stream_id] = body
        return request

    def _on_data(self, stream_id, data, out):
        if stream_id in self._websockets:
            out.append(TunnelData(stream_id, data))
            return
        body = self._incoming.get(stream_id)
        if body is not None:  # the connection applies the body limit where a body is read whole
            body.feed(data)

    def _on_closed(self):
        h = self._h
        kind = h.closed
        if kind == lib.ZS_H2_CLOSED_PEER:
            reason = None  # the peer's own decision: nothing to report
        elif kind == lib.ZS_H2_CLOSED_PROTOCOL:
            reason = f"protocol error: {ffi.string(h.errmsg).decode('utf-8', 'replace')}"
        else:
            reason = _CLOSE_REASONS[kind]
        self._close(reason)

    def abandon(self, reason):
        """The socket is gone: every stream ends where it is."""
        self._close(reason)

    def _close(self, reason):
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        h = self._h
        for stream_id, (request, response) in self._outgoing.items():
            self.finished.append((request, response, lib.zs_h2_sent(h, stream_id)))
        self._outgoing.clear()
        for body in self._incoming.values():
            body.fail(ConnectionResetError(f"HTTP/2 connection closed: {reason or 'by the peer'}"))
        self._incoming.clear()

    # -- output --------------------------------------------------------------

    def send_response(self, stream_id, request, response):
        """Queue `response` on `stream_id`: headers now, body as windows allow.

        A 101 on an extended CONNECT stream (the upstream accepted the WebSocket) is answered 200 and the
        stream becomes a tunnel fed with `stream_data`; False when that 101 is not a valid WebSocket answer
        (the stream then gets a 502 and the caller drops the upstream).
        """
        if self.closed:
            self.finished.append((request, response, 0))
            return True
        key = self._websockets.get(stream_id)
        if key is not None and response.status == 101:
            if _header(response.headers, "sec-websocket-accept") != websocket_accept(key):
                self._submit(stream_id, 502, [("content-length", "0")], (), None,
                             lib.ZS_H2_NO_BODY | lib.ZS_H2_RESET_AFTER)
                self.finished.append((request, response, 0))
                return False
            headers = [(name, value) for name, value in response.headers if name.lower() not in _UPGRADE_ONLY]
            result = self._submit(stream_id, 200, headers, (), None, lib.ZS_H2_STREAMED)
        else:
            streamed = response.stream is not None and response.length != 0
            if streamed:
                flags = lib.ZS_H2_STREAMED
            elif response.body:
                flags = 0
            else:
                flags = lib.ZS_H2_NO_BODY
            result = self._submit(stream_id, response.status, response.headers, response.body, response.fd, flags)
        if result:
            self.finished.append((request, response, 0))  # the peer reset the stream meanwhile
        else:
            self._outgoing[stream_id] = (request, response)
        return True

    def _submit(self, stream_id, status, headers, body, fd, flags):
        """Hand a response to C; 0 when queued, 1 when the stream is gone."""
        fields = [_STATUS.get(status) or str(status)]
        for name, value in headers:
            fields.append(name.lower())
            fields.append(value)
        fields.append("date")
        blob = ":status\0" + "\0".join(fields) + "\0" + httpdate.current().decode("ascii")
        count = len(fields) // 2 + 1
        if len(body) == 1 and type(body[0]) is bytes:
            data = body[0]
            segments = (-1, len(data))
        else:
            data = b"".join(part for part in body if type(part) is bytes)
            segments = []
            for part in body:
                if type(part) is bytes:
                    segments += (-1, len(part))
                else:
                    segments += part
        result = lib.zs_h2_respond(self._h, stream_id, blob.encode("latin-1"), len(blob), count, data, len(data),
                                   segments, len(segments) // 2, -1 if fd is None else fd, flags)
        if result == _INVALID_ARGUMENT and any("\0" in name + value for name, value in headers):
            # A NUL inside a header (from a script or an upstream) cannot be sent: drop that header.
            return self._submit(stream_id, status, [(n, v) for n, v in headers if "\0" not in n + v], body, fd,
                                flags)
        if result < 0:
            raise ZeroserveError(f"HTTP/2 response on stream {stream_id} failed: "
                                 f"{ffi.string(lib.nghttp2_strerror(result)).decode()}")
        return result

    def stream_data(self, stream_id, data):
        """Queue body bytes of a streamed response or tunnel (dropped if the stream is gone)."""
        if stream_id in self._outgoing:
            lib.zs_h2_stream_data(self._h, stream_id, data if type(data) is bytes else ffi.from_buffer(data),
                                  len(data))

    def stream_buffered(self, stream_id):
        """Bytes of a streamed response not yet framed, or -1 if the stream is gone (reset, connection closed)."""
        if stream_id not in self._outgoing:
            return -1
        return lib.zs_h2_stream_buffered(self._h, stream_id)

    def end_stream(self, stream_id):
        """A streamed response's body is complete: END_STREAM goes with its last bytes."""
        if stream_id in self._outgoing:
            lib.zs_h2_stream_end(self._h, stream_id)

    def consume(self, stream_id, size):
        """The tunnel's upstream took `size` bytes of the stream's DATA: reopen that much of its window."""
        lib.zs_h2_consume(self._h, stream_id, size)

    def reset_stream(self, stream_id):
        """A streamed response failed after its head: reset the stream (the client sees it cut short)."""
        done = self._outgoing.pop(stream_id, None)
        if done is None:
            return
        sent = lib.zs_h2_sent(self._h, stream_id)
        lib.zs_h2_reset(self._h, stream_id, _INTERNAL_ERROR)
        self.finished.append((done[0], done[1], sent))

    def refuse(self, failure, response):
        """Answer a stream Failure with a small in-memory `response`, then reset the stream if still open."""
        stream_id = failure.stream_id
        self._incoming.pop(stream_id, None)
        body = b"".join(response.body)
        headers = response.headers
        flags = lib.ZS_H2_RESET_AFTER
        if not body or lib.zs_h2_window(self._h, stream_id) < len(body):
            # No window for even a few bytes: the status alone says it.
            headers = [(name, value) for name, value in headers if name.lower() != "content-length"]
            body = b""
            flags |= lib.ZS_H2_NO_BODY
        self._submit(stream_id, response.status, headers, (body,) if body else (), None, flags)
        self.finished.append((None, response, len(body)))

    def data_to_send(self):
        """Frames ready for the socket, body DATA included as far as windows allow."""
        h = self._h
        size = lib.zs_h2_send(h, _SEND_BUDGET)
        if h.io_errno:
            raise OSError(h.io_errno, ffi.string(h.errmsg).decode())
        if size < 0:
            self._on_closed()
            return b""
        data = ffi.buffer(h.out, size)[:] if size else b""
        if h.nevents:
            self._take_events(h.nevents, [])
        if h.closed and not self.closed:
            self._on_closed()
        return data

    @property
    def blocked(self):
        """True when bodies wait for the peer's window (a write timeout applies)."""
        return bool(self._outgoing) and bool(lib.zs_h2_blocked(self._h))

    @property
    def active(self):
        """True while any request is being received or any response sent."""
        return not self.closed and bool(self._incoming or self._h.sources)

    def close_gracefully(self):
        """Send GOAWAY(NO_ERROR): streams already open finish, new ones are refused."""
        if self.closed or self.draining:
            return
        self.draining = True
        lib.zs_h2_goaway(self._h)


def _declared_length(headers):
    for name, value in headers:
        if name == "content-length":
            return int(value)  # nghttp2 has checked it is a number
    return None


def _header(headers, name):
    for key, value in headers:
        if key.lower() == name:
            return value
    return None
