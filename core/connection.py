"""The only asyncio.Protocol: moves bytes between a socket, its session (plain or TLS) and HTTP.

One instance per accepted socket. Bytes read go through the session (identity
for plaintext, decryption for TLS) to the sans-IO HTTP object, whose Requests
go to `handler.handle` with the World current at that moment; responses go
back through HTTP and the session to the socket. This module owns what needs
a clock or a socket: timeouts, back-pressure (no reading while the peer does
not read our output) and file bodies read with `os.pread` as the socket drains.

Over TLS it also holds what HTTP must not know: the bytes of an unfinished
handshake (for a plugin's relay, which takes the socket over when a ClientHello
inspector raises a TLSError with a `take_over(transport, received, peer)`
method) and the SNI every request's Host must match (421 otherwise).
"""

import asyncio
import functools
import logging
import os
import time
import traceback
from collections import deque

from zeroserve.core import http1, http2, proxyproto
from zeroserve.core.accesslog import log_error
from zeroserve.core.errors import ProtocolError, ZeroserveError
from zeroserve.core.handler import ABORTED, error_response, handle
from zeroserve.core.request import BODY_HIGH_WATER, Request, Response

_CHUNK = 256 * 1024  # pread size for file bodies
_INLINE = 64 * 1024  # a file body up to this size leaves in the same write as its head
_WRITE_HIGH = 512 * 1024  # transport buffer sizes between which we stop and resume producing
_WRITE_LOW = 64 * 1024
_H2_STREAM_HIGH = 256 * 1024  # a streamed HTTP/2 body queued beyond this waits for the client to take some
_SENDFILE_MAX = 1024 * 1024  # most bytes one sendfile(2) call is asked for
# With sendfile, a full socket is waited for by queueing this much in the transport,
# above its high-water mark: it pauses us and resumes us once the buffer is empty.
_SENDFILE_WAIT = 16 * 1024

# What the connection is waiting for, which decides the timeout that applies.
_NOTHING = 0  # we are producing output as fast as the socket takes it
_START = 1  # TLS handshake or first bytes: header timeout
_IDLE = 2  # keep-alive, no request in progress: idle timeout
_HEAD = 3  # request head in progress: header timeout (not reset by trickling bytes)
_BODY = 4  # request body in progress: body timeout, reset by each read
_WRITE = 5  # the peer is not reading our output: write timeout
_LINGER = 6  # our side is shut: reading and discarding until the peer closes

# After our last byte, input is read and dropped for up to this long before the
# socket closes: closing with unread input sends a RST, which can destroy a 413
# or 431 the peer has not read yet while it is still sending.
_LINGER_SECONDS = 2.0

log = logging.getLogger(__name__)


class _Pending:
    """An HTTP/1 response in the output queue, written in request order."""

    __slots__ = ("data", "request", "response", "world", "keep_open", "part", "offset", "sent", "waiting",
                 "streamed")

    def __init__(self, data, request, response, world, keep_open):
        self.data = data  # head bytes not yet written (or an interim response)
        self.request = request
        self.response = response  # None for an interim response (100 Continue)
        self.world = world
        self.keep_open = keep_open
        self.part = 0
        self.offset = 0
        self.sent = 0  # body bytes written
        self.waiting = False  # the request's scripts are still running; data and response come later
        self.streamed = False  # a streamed body (proxy) has been written to its end


class Connection(asyncio.Protocol):
    """One client connection of a worker."""

    def __init__(self, server, session):
        self._server = server  # the worker: world, limits, access log, connection set, ids
        self._session = session
        self._limits = server.limits
        self._loop = server.loop
        self._transport = None
        self._peer = ("-", 0)
        self._http = None  # H1Connection or H2Connection once the protocol is known
        self._h2 = False
        self._sniffed = b""
        self._queue = deque()  # HTTP/1 responses not yet fully written
        self._socket_fd = -1  # plaintext HTTP/1: file bodies go out with sendfile(2)
        self._stream_worlds = {}  # HTTP/2 stream id → World of its request
        self._h2_tunnels = {}  # HTTP/2 extended CONNECT stream id → the upstream Exchange it is spliced to
        self._h2_tunnel_early = {}  # stream id → tunnel bytes the client sent before the upstream accepted
        self._h2_unconsumed = {}  # stream id → tunnel bytes written while the upstream was not reading
        self._waiting = set()  # tasks of requests whose scripts had to wait (kept: the loop holds tasks weakly)
        self._proxy_line = b"" if server.config.proxy_protocol else None  # bytes of the PROXY header so far
        self._paused = False
        self._closed = False  # we will write nothing more
        self._lost = False  # the transport is gone
        self._peer_done = False  # the peer has closed its side
        self._timer = _START
        self._since = 0.0
        self._messages = 0  # HTTP/1 heads seen, to restart the header timer per request
        self._tunnel = None  # HTTP/1 after a 101: the upstream end of the spliced connection
        self._fast = None  # fastpath.FastConnection of an HTTP/1.1 connection, unless --no-fast-path
        self._sender = None  # the FastConnection whose C send writes this connection's output, unless --no-fast-path
        self._writable_waiter = None  # a streamed body waits on it while the peer does not read
        self._held = False  # input paused because its consumer (a request body's reader, a tunnel's upstream) lags
        # TLS: every byte of the handshake so far, kept until it completes (a relay replays them).
        self._handshake_bytes = None if session.handshake_complete else bytearray()
        self._sni = None  # TLS: the SNI (lowercase) each request's Host must equal, once the handshake is done
        self._connection_info = None  # TLS: the tls.ConnectionFacts of the finished handshake

    # -- asyncio callbacks ----------------------------------------------------

    def connection_made(self, transport):
        self._transport = transport
        transport.set_write_buffer_limits(_WRITE_HIGH, _WRITE_LOW)
        peer = transport.get_extra_info("peername")
        if peer:
            self._peer = (peer[0], peer[1])
        self._since = self._loop.time()
        self._server.connections.add(self)

    def data_received(self, data):
        if self._closed:
            return
        if self._proxy_line is not None:
            data = self._take_proxy_line(data)
            if not data:
                return
        plaintext = None
        if data and self._fast is not None and self._fast_ready():
            plaintext = self._receive_fast(data)  # what C left for HTTP; None when nothing is left to do
            if plaintext is None:
                return
            data = b""
        session = self._session
        handshake_bytes = self._handshake_bytes
        if handshake_bytes is not None:
            handshake_bytes += data
        try:
            if plaintext is None or self._fast.tls_event:  # the TLS session reads the alert C stopped at
                received, to_send = session.receive(data)
                plaintext = received if plaintext is None else plaintext + received
            else:
                to_send = b""
        except ZeroserveError as error:  # a failed TLS handshake or record, or a refusing inspector
            take_over = getattr(error, "take_over", None)
            if take_over is not None and handshake_bytes is not None:
                self._hand_over(take_over, handshake_bytes)
                return
            log.debug("[tls] %s:%s: %s", self._peer[0], self._peer[1], error)
            self._close()  # sends the alert the session has queued
            return
        if handshake_bytes is not None and session.handshake_complete:
            self._handshake_bytes = None
            self._connection_info = session.context.connection_info(session, bytes(handshake_bytes))
        if to_send:
            self._transport.write(to_send)
        if plaintext and self._tunnel is not None:
            if not self._tunnel.write(plaintext):  # the upstream is not reading: neither do we
                self._hold_input()
                self._loop.create_task(self._release_when_tunnel_drains())
            return
        if plaintext:
            if self._http is None:
                plaintext = self._choose_protocol(plaintext)
            if plaintext:
                events = self._http.receive(plaintext)
                if events:
                    self._dispatch(events)
                if not self._h2 and self._http.body_backlog > BODY_HIGH_WATER:  # its reader is slower than the client
                    self._hold_input()
        if self._http is not None:
            self._pump()
        if session.is_tls and session.closed and not self._closed:  # close_notify: the peer sends nothing more
            self.eof_received()
            return
        self._arm()

    def _fast_ready(self):
        """C may answer now: HTTP/1.1 between requests, nothing queued, a World with a fast table."""
        http = self._http
        return (not self._queue and not self._paused and self._tunnel is None and http.state == http1.IDLE
                and not http.exhausted and self._server.world.fast_table is not None)

    def _receive_fast(self, data):
        """Let C answer what it can of `data`; the plaintext it left for HTTP, or None when nothing is left."""
        fast = self._fast
        try:
            plaintext = fast.pump(data, self._server.world.fast_table)
        except ConnectionError:  # the peer went away
            self.abort()
            return None
        except OSError as error:  # the tar became unreadable under us, or TLS failed
            log_error(f"[connection] {self._peer[0]}:{self._peer[1]}: {error}")
            self.abort()
            return None
        if fast.closing:  # the last answer said connection: close
            self._close()
            return None
        head = fast.adopted
        if head is not None:  # its scripts ran in C; the HTTP/1.1 parser makes its Request, the rest is Python's
            fast.adopted = None
            self._dispatch(self._http.receive(head), fast.respond_adopted)
            return plaintext
        if plaintext or fast.tls_event:
            return plaintext
        if not self._paused:
            self._timer, self._since = _IDLE, self._loop.time()
        return None

    def eof_received(self):
        self._peer_done = True
        if self._tunnel is not None and not self._closed:  # the upstream may still answer
            self._tunnel.write_eof()
            return True
        if self._closed:  # lingering: the peer has read everything and closed
            self._transport.close()
        elif self._http is not None and not self._h2 and self._queue:
            self._http.stop()  # answer what was asked, then close
        else:
            self._close()
        return True

    def pause_writing(self):
        self._paused = True
        if self._closed:
            return
        self._transport.pause_reading()  # do not take requests faster than we can answer
        self._timer = _WRITE
        self._since = self._loop.time()

    def resume_writing(self):
        self._paused = False
        self._wake_writer()
        if self._closed:
            return
        if not self._held:
            self._transport.resume_reading()
        self._pump()
        self._arm()

    def connection_lost(self, exc):
        self._closed = True
        self._lost = True
        self._server.connection_closed(self)
        if self._http is not None and not self._h2:
            self._http.stop("the connection was lost")  # a body still arriving fails: its upstream is cut off
        self._wake_writer()  # a streaming task sees the loss and drops its upstream
        for pending in self._queue:
            response = pending.response
            if response is not None and response.stream is not None and pending.data is not None:
                response.stream.abort()  # a proxied response whose turn never came
            if pending.response is not None and pending.data is None:  # partly written
                self._finished(pending.request, pending.response, pending.sent, pending.world)
            elif pending.world is not None:
                pending.world.exit()
        self._queue.clear()
        if self._h2:
            self._http.abandon("connection lost")
            self._drain_h2_finished()
            for tunnel in self._h2_tunnels.values():
                tunnel.abort()
            self._h2_tunnels.clear()

    def _hand_over(self, take_over, received):
        """A ClientHello inspector gave this connection to someone else (a relay): let go of the socket."""
        self._closed = True
        self._lost = True
        self._timer = _NOTHING
        self._handshake_bytes = None
        self._server.connection_closed(self)
        take_over(self._transport, received, self._peer)

    # -- PROXY header and protocol selection --------------------------------------

    def _take_proxy_line(self, data):
        """Consume the PROXY v1 line or v2 header; return the bytes after it (b"" while it is incomplete)."""
        buffer = self._proxy_line + data
        try:
            parsed = proxyproto.parse(buffer)
        except ProtocolError as error:
            log_error(f"[connection] dropping {self._peer[0]}:{self._peer[1]}: {error}")
            self.abort()
            return b""
        if parsed is None:
            self._proxy_line = buffer
            return b""
        peer, consumed = parsed
        if peer is not None:
            self._peer = peer
        self._proxy_line = None
        return buffer[consumed:]

    # -- protocol selection -----------------------------------------------------

    def _choose_protocol(self, plaintext):
        """Create the HTTP object; return the plaintext it should get, or b"" to wait for more."""
        session = self._session
        if session.is_tls:
            h2 = session.alpn == "h2"
            scheme = "https"
            self._sni = session.sni
        else:
            plaintext = self._sniffed + plaintext
            if len(plaintext) < len(http2.PREFACE) and http2.PREFACE.startswith(plaintext):
                self._sniffed = plaintext  # could still be an h2c preface
                return b""
            self._sniffed = b""
            h2 = plaintext.startswith(http2.PREFACE)
            scheme = "http"
        if not h2 and not session.is_tls:
            sock = self._transport.get_extra_info("socket")
            if sock is not None:
                self._socket_fd = sock.fileno()
                # Resume only once the buffer is empty, since sendfile bypasses it.
                self._transport.set_write_buffer_limits(_SENDFILE_WAIT - 1, 0)
        server = self._server
        kind = http2.H2Connection if h2 else http1.H1Connection
        self._http = kind(self._limits, scheme, self._peer, server.next_request_id, time.monotonic)
        if server.config.fast_path:
            fast = server.fast.connection(self._transport, session, self._peer, self._connection_info)
            self._sender = fast
            if h2:
                self._http.serve_fast(server, fast, server.access_log is not None)
            else:
                self._fast = fast
        self._h2 = h2
        return plaintext

    # -- requests ---------------------------------------------------------------

    def _dispatch(self, events, respond=handle):
        http = self._http
        server = self._server
        if self._h2:
            for event in events:
                if type(event) is Request:
                    if event.body_stream is not None:
                        event.body_stream.on_consumed = functools.partial(self._h2_body_consumed, event.stream_id)
                    world = server.world
                    world.enter()
                    self._stream_worlds[event.stream_id] = world
                    # A request whose scripts ran in C goes on from their result instead of running them again.
                    response = self._respond(event, world, http.take_adopted() if event is http.adopted else handle)
                    if type(response) is Response:
                        self._send_h2(event, response)
                    else:
                        self._wait(response, event, event, self._h2_ready)
                elif type(event) is http2.TunnelData:
                    self._h2_tunnel_input(event.stream_id, event.data)
                else:
                    log_error(f"[http2] {self._peer[0]}:{self._peer[1]}: stream {event.stream_id}: "
                              f"{event.reason}")
                    http.refuse(event, error_response(event.status))
            return
        queue = self._queue
        interim = None  # a 100 Continue for the request that follows it
        for event in events:
            kind = type(event)
            if kind is Request:
                body = event.body_stream
                if body is not None:
                    body.on_consumed = self._body_consumed
                    if interim is not None:  # sent when the body is wanted, not for an answer that ignores it
                        body.on_wanted = functools.partial(self._send_interim, event, interim)
                        interim = None
                world = server.world
                world.enter()
                response = self._respond(event, world, respond)
                if type(response) is Response:
                    queue.append(self._h1_pending(event, response, world))
                else:
                    pending = _Pending(None, event, None, world, True)
                    pending.waiting = True
                    queue.append(pending)
                    self._wait(response, event, pending, self._h1_ready)
            elif kind is bytes:
                interim = event
            else:
                log_error(f"[http1] {self._peer[0]}:{self._peer[1]}: {event.reason}")
                response = error_response(event.status, close=True)
                head, _ = http.response_head(None, response)
                queue.append(_Pending(head, None, response, None, False))

    def _send_interim(self, request, data):
        """Queue an interim response (100 Continue) just before `request`'s final one, unless that has begun."""
        if self._closed:
            return
        queue = self._queue
        for index, pending in enumerate(queue):
            if pending.request is request:
                if pending.waiting or pending.data is not None:
                    queue.insert(index, _Pending(data, None, None, None, True))
                    self._pump()
                    self._arm()
                return

    def _h1_pending(self, request, response, world):
        if response is ABORTED:  # zs_abort: no head; the connection ends when its turn comes
            return _Pending(None, request, response, world, False)
        head, keep_open = self._http.response_head(request, response)
        return _Pending(head, request, response, world, keep_open)

    def _send_h2(self, request, response):
        if response is ABORTED:  # zs_abort: the whole connection ends without an answer
            self._stream_worlds.pop(request.stream_id).exit()
            self.abort()
            return
        stream = response.stream
        if not self._http.send_response(request.stream_id, request, response):
            log_error(f"[proxy] {request.request_id}: the upstream's 101 has a wrong Sec-WebSocket-Accept")
            stream.abort()
            return
        if stream is not None and stream.upgraded:
            self._h2_tunnel_open(request.stream_id, stream)
        if stream is not None:
            http = self._http
            data = stream.take_buffered()
            if data:
                http.stream_data(request.stream_id, data)
            if stream.complete:  # HEAD, 204, 304, or a body that came with the head
                http.end_stream(request.stream_id)
                stream.finish()
            else:
                asyncio.ensure_future(self._stream_h2(request, stream))

    def _wait(self, awaitable, request, key, ready):
        """Run a request whose scripts had to wait; ready(key, response) gets its Response when it is done."""
        task = self._loop.create_task(awaitable)  # a coroutine; asyncio.ensure_future would look the loop up
        self._waiting.add(task)
        task.add_done_callback(lambda task: self._finish_waiting(task, request, key, ready))

    def _finish_waiting(self, task, request, key, ready):
        self._waiting.discard(task)
        try:
            response = task.result()
        except Exception:  # a bug: the request gets a 500, the worker lives on
            log_error(f"[handler] {request.request_id}: internal error\n{traceback.format_exc().rstrip()}")
            response = error_response(500)
        ready(key, response)

    def _h1_ready(self, pending, response):
        if self._lost:  # connection_lost already released the request's World
            if response.stream is not None:
                response.stream.abort()
            return
        ready = self._h1_pending(pending.request, response, pending.world)
        pending.data, pending.response, pending.keep_open = ready.data, ready.response, ready.keep_open
        pending.waiting = False
        self._pump()
        self._arm()

    def _h2_ready(self, request, response):
        if self._closed:  # nothing more goes out: just release the request's World
            world = self._stream_worlds.pop(request.stream_id, None)
            if world is not None:
                world.exit()
            return
        self._send_h2(request, response)
        self._pump()
        self._arm()

    def _respond(self, request, world, respond=handle):
        """The Response to `request`, or an awaitable of it; a body is read whole first where the answer needs it.

        A body that came with the head is taken at once. Otherwise, for scripts that read the body and for a
        world without scripts (static), it is read whole (within --max-body-bytes, 413 beyond) before they
        run; else the scripts run at once, a proxied request streams the body upstream, and any other answer
        waits until the body has been read (within the limit).
        """
        body = request.body_stream
        if body is None:
            return self._answer(request, world, respond)
        limit = self._limits.max_body_bytes
        if body.ended and body.received <= limit:
            request.body = body.take_buffered()
            request.body_stream = None  # read whole: it is `body` now
            return self._answer(request, world)
        if world.reads_body or not world.chain:
            if (body.length or 0) > limit:  # refused before the client sends it (no 100 Continue)
                body.discard()
                return error_response(413, close=True)
            return self._answer_after_body(request, world)
        return self._settle_body(request, self._answer(request, world))

    def _answer(self, request, world, respond=handle):
        if self._sni is not None and request.host != self._sni:
            return error_response(421)  # a request for another host than the handshake named
        request.connection_info = self._connection_info
        try:
            return respond(request, world)  # handle, or the fast path's for a request whose scripts ran in C
        except Exception:  # a bug: the request gets a 500, the worker lives on
            log_error(f"[handler] {request.request_id}: internal error\n{traceback.format_exc().rstrip()}")
            return error_response(500)

    async def _answer_after_body(self, request, world):
        body = request.body_stream
        try:
            request.body = await body.read_all(self._limits.max_body_bytes)
        except (ProtocolError, ConnectionError) as error:
            return self._body_failed(body, error)
        request.body_stream = None  # read whole: it is `body` now
        response = self._answer(request, world)
        if type(response) is not Response:
            response = await response
        return response

    async def _settle_body(self, request, response):
        """`response` once the request body is dealt with: streamed upstream by a proxied one, else read first."""
        if type(response) is not Response:
            response = await response
        body = request.body_stream
        if response is ABORTED or response.stream is not None:
            return response
        if body.received > body.queued:  # a proxy sent part of it upstream, then failed: the rest has no reader
            body.discard()
            response.close = True
            return response
        try:
            await body.read_all(self._limits.max_body_bytes)
        except (ProtocolError, ConnectionError) as error:
            return self._body_failed(body, error)
        return response

    @staticmethod
    def _body_failed(body, error):
        """The answer to a request whose body broke off or outgrew the limit; the rest of it is dropped."""
        body.discard()
        return error_response(getattr(error, "status_hint", 400), close=True)

    def _body_consumed(self, nbytes):
        if self._held and self._http.body_backlog <= BODY_HIGH_WATER:
            self._release_input()

    def _hold_input(self):
        """Stop reading the client: what it sends has no taker yet (a slow upstream)."""
        if not self._held:
            self._held = True
            self._transport.pause_reading()
            self._timer = _NOTHING  # the client is not the one late; the upstream's timeouts apply

    def _release_input(self):
        self._held = False
        if not self._closed and not self._paused:
            self._transport.resume_reading()
            self._arm()

    async def _release_when_tunnel_drains(self):
        try:
            await self._tunnel.drain()
        except ZeroserveError as error:  # the upstream took nothing for the body timeout
            log_error(f"[proxy] {self._peer[0]}:{self._peer[1]}: {error}")
            self.abort()
            return
        self._release_input()

    # -- output -----------------------------------------------------------------

    def _write(self, data, body=b""):
        """Send `data`, then `body`: through C (encrypted, send(2), no copies) or the session and the transport."""
        if self._closed:  # the socket may be gone: nothing more goes out
            return
        sender = self._sender
        if sender is not None:
            try:
                sender.send(data, body)
            except ConnectionError:  # the peer went away
                self.abort()
        elif not body:
            self._transport.write(self._session.send(data))
        elif self._session.is_tls:
            self._transport.write(self._session.send(data + body))
        else:
            self._transport.writelines((data, body))

    def _pump(self):
        """Write as much queued output as the socket takes now."""
        if self._closed:
            return
        try:
            if self._h2:
                self._pump_h2()
            else:
                self._pump_h1()
        except ConnectionError:  # the peer went away under sendfile
            self.abort()
        except OSError as error:  # the tar became unreadable under us
            log_error(f"[connection] {self._peer[0]}:{self._peer[1]}: reading the site failed: {error}")
            self.abort()

    def _pump_h1(self):
        queue = self._queue
        while queue and not self._paused:
            pending = queue[0]
            if pending.waiting:
                return  # responses go out in request order; _h1_ready pumps again
            if pending.response is ABORTED:
                queue.popleft()
                pending.world.exit()
                self.abort()
                return
            if not self._write_pending(pending):
                return  # paused in the middle of a body; resume_writing continues
            queue.popleft()
            if pending.response is not None:
                self._finished(pending.request, pending.response, pending.sent, pending.world)
            request = pending.request
            if request is not None and request.body_stream is not None and not request.body_stream.finished:
                request.body_stream.discard()  # answered before its body ended (a proxy's early answer)
                self._close()  # no request can follow a body nobody reads
                return
            if not pending.keep_open:
                self._close()
                return
        if not queue and self._http.exhausted:
            self._close()

    def _write_pending(self, pending):
        """Write one response as far as possible; True when it is complete."""
        response = pending.response
        if response is None:  # interim response
            self._write(pending.data)
            return True
        if response.stream is not None:
            if pending.data is not None:
                return self._start_stream_h1(pending)
            return pending.streamed
        body = response.body
        if pending.data is not None:
            head = pending.data
            pending.data = None
            if len(body) == 1:
                part = body[0]
                if type(part) is bytes:
                    self._write(head, part)
                    pending.sent = len(part)
                    return True
                offset, length = part
                if length <= _INLINE:
                    data = os.pread(response.fd, length, offset)
                    if len(data) != length:
                        raise OSError(f"site file ended early at offset {offset + len(data)}")
                    self._write(head, data)
                    pending.sent = length
                    return True
            self._write(head)
        while pending.part < len(body):
            if self._paused:
                return False
            part = body[pending.part]
            if type(part) is bytes:
                self._write(part)
                pending.sent += len(part)
                pending.part += 1
                continue
            offset, length = part
            position = offset + pending.offset
            size = self._sendfile(response.fd, position, length - pending.offset)
            if not size:  # no sendfile, or the socket is full: through the transport's buffer
                size = min(_CHUNK if self._socket_fd < 0 else _SENDFILE_WAIT, length - pending.offset)
                data = os.pread(response.fd, size, position)
                if len(data) != size:
                    raise OSError(f"site file ended early at offset {position + len(data)}")
                self._write(data)
            pending.sent += size
            pending.offset += size
            if pending.offset == length:
                pending.part += 1
                pending.offset = 0
        return True

    def _start_stream_h1(self, pending):
        """Write the head with the body bytes already here; True when that was the whole body."""
        response = pending.response
        stream = response.stream
        head, pending.data = pending.data, None
        if stream.upgraded:  # the client's next bytes go to the upstream, even before the copying task runs
            self._tunnel = stream
            self._write(head)
            if self._http.tunnel_input:
                stream.write(self._http.tunnel_input)
            self._loop.create_task(self._stream_h1(pending))
            return False
        data = stream.take_buffered()
        pending.sent = len(data)
        complete = stream.complete
        if response.chunked:
            if data:
                data = b"%x\r\n%b\r\n" % (len(data), data)
            if complete:
                data += b"0\r\n\r\n"
        self._write(head, data)
        if complete:
            stream.finish()
            return True
        self._loop.create_task(self._stream_h1(pending))
        return False

    async def _stream_h1(self, pending):
        """Copy a streamed body (or, after a 101, the tunnel) to the client while the client reads."""
        stream = pending.response.stream
        chunked = pending.response.chunked
        try:
            while True:
                data = await stream.read()
                if self._closed:
                    stream.abort()
                    return
                if not data:
                    break
                self._write(b"%x\r\n%b\r\n" % (len(data), data) if chunked else data)
                pending.sent += len(data)
                if self._paused:
                    await self._writable()
                    if self._closed:
                        stream.abort()
                        return
        except ZeroserveError as error:  # the upstream failed after the head went out: the client is cut off
            log_error(f"[proxy] {pending.request.request_id}: {error}")
            stream.abort()
            self.abort()
            return
        if chunked:
            self._write(b"0\r\n\r\n")
        stream.finish()
        pending.streamed = True
        self._pump()
        self._arm()

    async def _stream_h2(self, request, stream):
        """Queue a streamed body on its HTTP/2 stream while the client's window and socket keep up."""
        http = self._http
        stream_id = request.stream_id
        try:
            while True:
                data = await stream.read()
                if self._closed or http.stream_buffered(stream_id) < 0:  # connection or stream gone
                    stream.abort()
                    return
                if not data:
                    break
                http.stream_data(stream_id, data)
                self._pump()
                self._arm()
                queued = http.stream_buffered(stream_id)
                while queued > _H2_STREAM_HIGH:  # the client is slower than the upstream
                    await self._writable()
                    queued = http.stream_buffered(stream_id)
                    if self._closed or queued < 0:
                        stream.abort()
                        return
        except ZeroserveError as error:  # the upstream failed after the head went out: the stream is reset
            log_error(f"[proxy] {request.request_id}: {error}")
            stream.abort()
            http.reset_stream(stream_id)
            self._pump()
            return
        http.end_stream(stream_id)
        stream.finish()
        self._pump()
        self._arm()

    def _h2_body_consumed(self, stream_id, size):
        """A request body's reader took `size` bytes: reopen that much of the stream's window now."""
        if not self._closed:
            self._http.consume(stream_id, size)
            self._pump()

    def _h2_tunnel_open(self, stream_id, tunnel):
        """An extended CONNECT stream was answered 200: splice it to the upstream, early client bytes first."""
        self._h2_tunnels[stream_id] = tunnel
        for data in self._h2_tunnel_early.pop(stream_id, ()):
            self._h2_tunnel_input(stream_id, data)

    def _h2_tunnel_input(self, stream_id, data):
        """Client bytes of a tunnel stream (b"": it ended its side; None: the stream is gone) to the upstream.

        The stream's window reopens only as the upstream takes the bytes, so a client cannot outrun it.
        """
        tunnel = self._h2_tunnels.get(stream_id)
        if tunnel is None:
            if data is not None:  # the upstream has not answered yet
                self._h2_tunnel_early.setdefault(stream_id, []).append(data)
            else:
                self._h2_tunnel_early.pop(stream_id, None)
            return
        if data is None:
            del self._h2_tunnels[stream_id]
            tunnel.abort()
            return
        if not data:
            tunnel.write_eof()
            return
        try:
            writable = tunnel.write(data)
        except ZeroserveError:  # the upstream is gone: the reading side ends the stream
            return
        if writable and stream_id not in self._h2_unconsumed:
            self._http.consume(stream_id, len(data))
            return
        first = stream_id not in self._h2_unconsumed
        self._h2_unconsumed[stream_id] = self._h2_unconsumed.get(stream_id, 0) + len(data)
        if first:
            asyncio.ensure_future(self._h2_tunnel_drain(stream_id, tunnel))

    async def _h2_tunnel_drain(self, stream_id, tunnel):
        """Reopen the stream's window for the bytes held back once the upstream reads again."""
        try:
            await tunnel.drain()
        except ZeroserveError:  # the upstream stopped reading: the reading side ends the stream
            self._h2_unconsumed.pop(stream_id, None)
            return
        size = self._h2_unconsumed.pop(stream_id, 0)
        if size and not self._closed:
            self._http.consume(stream_id, size)
            self._pump()

    async def _writable(self):
        """Wait until the peer reads again (or the connection is gone)."""
        waiter = self._writable_waiter
        if waiter is None:  # one future for every stream waiting on this connection
            waiter = self._writable_waiter = self._loop.create_future()
        await waiter

    def _wake_writer(self):
        waiter = self._writable_waiter
        if waiter is not None:
            self._writable_waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def _sendfile(self, fd, position, remaining):
        """Copy file bytes straight to the socket when nothing is buffered before them; bytes sent."""
        if self._socket_fd < 0 or self._transport.get_write_buffer_size():
            return 0
        try:
            return os.sendfile(self._socket_fd, fd, position, min(remaining, _SENDFILE_MAX))
        except BlockingIOError:
            return 0

    def _pump_h2(self):
        http = self._http
        while not self._paused:
            data = http.data_to_send()
            if not data:
                break
            self._write(data)
            self._since = self._loop.time()  # progress: restarts a stalled-stream write timer
            self._wake_writer()
        self._drain_h2_finished()
        # Draining ends once no stream is received, sent, or waiting for its answer (a World is held).
        if (http.closed or (http.draining and not self._stream_worlds)) and not http.active:
            if http.close_reason is not None:
                log_error(f"[http2] {self._peer[0]}:{self._peer[1]}: closing: {http.close_reason}")
            self._close()

    def _drain_h2_finished(self):
        http = self._http
        if http.fast_served:
            access_log = self._server.access_log
            ja4 = self._connection_info.ja4 if self._connection_info is not None else None
            for request_id, method, target, status, sent in http.fast_served:
                access_log.record(request_id, self._peer, method, target, status, sent, 0.0, "HTTP/2", ja4)
            http.fast_served.clear()
        if not http.finished:
            return
        for request, response, sent in http.finished:
            world = self._stream_worlds.pop(request.stream_id, None) if request is not None else None
            if request is not None and self._h2_tunnels:
                self._h2_tunnels.pop(request.stream_id, None)
            self._finished(request, response, sent, world)
        http.finished.clear()

    def _finished(self, request, response, sent, world):
        if world is not None:
            world.exit()
        access_log = self._server.access_log
        if access_log is None:
            return
        if request is None:
            access_log.record("-", self._peer, "-", "-", response.status, sent, 0.0,
                              "HTTP/2" if self._h2 else "HTTP/1.1")
        else:
            facts = request.connection_info
            access_log.record(request.request_id, request.peer, request.method, request.target,
                              response.status, sent, time.monotonic() - request.started,
                              "HTTP/" + request.http_version, facts.ja4 if facts is not None else None)

    # -- timeouts and closing ---------------------------------------------------

    def _arm(self):
        """Note what the connection waits for now, for `check_timeout`."""
        if self._paused or self._closed:
            return
        http = self._http
        now = self._loop.time()
        if http is None:
            return  # still _START since connection_made
        if self._h2:
            if http.blocked:
                if self._timer != _WRITE:
                    self._timer, self._since = _WRITE, now
            elif http.active:
                self._timer, self._since = _BODY, now
            else:
                if self._timer != _IDLE:
                    self._timer, self._since = _IDLE, now
            return
        state = http.state
        if state == http1.BODY and not self._held:  # a body arriving, maybe while its request is answered
            self._timer, self._since = _BODY, now
            return
        if self._queue:
            self._timer = _NOTHING
            return
        if state == http1.IDLE:
            if self._timer != _IDLE:
                self._timer, self._since = _IDLE, now
        elif state == http1.HEAD:
            if self._timer != _HEAD or http.messages != self._messages:
                self._timer, self._since = _HEAD, now
                self._messages = http.messages
        elif state == http1.BODY:
            self._timer, self._since = _BODY, now
        else:
            self._timer = _NOTHING

    def check_timeout(self, now):
        """Called by the worker's ticker: act on a timeout that has run out."""
        timer = self._timer
        if timer == _LINGER:
            if now - self._since > _LINGER_SECONDS:
                self._transport.close()
            return
        if timer == _NOTHING or self._closed:
            return
        limits = self._limits
        if timer == _START or timer == _HEAD:
            limit = limits.header_timeout
        elif timer == _IDLE:
            limit = limits.idle_timeout
        elif timer == _BODY:
            limit = limits.body_timeout
        else:
            limit = limits.write_timeout
        if now - self._since <= limit:
            return
        if timer == _WRITE:
            self.abort()
        elif self._h2:
            self._http.close_gracefully()
            self._pump()
            self._close()
        elif timer == _BODY and self._queue:  # the body's reader answers, with a 408 while it still can
            self._http.stop("no body bytes within the body timeout", 408)
            self._timer = _NOTHING
        elif timer in (_HEAD, _BODY) and not self._queue:
            self._http.stop()
            response = error_response(408, close=True)
            head, _ = self._http.response_head(None, response)
            self._queue.append(_Pending(head, None, response, None, False))
            self._pump()
        else:
            self._close()

    def shutdown(self):
        """The worker is stopping: finish what has begun, take no new requests, then close."""
        http = self._http
        if self._closed:
            return
        if http is None:
            self._close()
        elif self._h2:
            http.close_gracefully()
            self._pump()
        else:
            http.finish_current()
            if not self._queue and http.exhausted:
                self._close()

    def _close(self):
        """Send what is queued and shut our side; linger until the peer closes (or a short while)."""
        if not self._closed:
            self._closed = True
            transport = self._transport
            transport.write(self._session.close())
            if self._paused or self._peer_done:  # nothing to wait for
                transport.close()
                return
            transport.resume_reading()
            transport.write_eof()
            self._timer = _LINGER
            self._since = self._loop.time()

    def abort(self):
        """Drop the connection now, unsent output included."""
        self._closed = True
        if not self._lost:
            self._transport.abort()
