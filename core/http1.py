"""Sans-IO HTTP/1.1 for the server side: bytes in → Request events, Response → head bytes.

httptools (llhttp) does the parsing; this module adds what it does not: the
head limits (431, 414), `Expect: 100-continue`, a mandatory Host on 1.1,
and the response framing. A Request is handed over as soon as its head is
complete; its body (Content-Length or chunked) then flows into the Request's
`body_stream` as it is parsed, and the connection decides how much of it to
take (the body limit applies where a body is read whole). It never touches a socket: `connection.py` feeds it
and writes what it returns, so the same code serves plaintext and TLS.
"""

from http import HTTPStatus

import httptools

from zeroserve.core import httpdate
from zeroserve.core.errors import ProtocolError
from zeroserve.core.request import Request, RequestBody

STATUS_LINES = {s.value: f"HTTP/1.1 {s.value} {s.phrase}\r\n".encode("ascii") for s in HTTPStatus}
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"

# Parser states, as the connection needs them to pick a timeout.
IDLE = 0  # between requests: no byte of the next one yet
HEAD = 1  # request line / headers in progress
BODY = 2  # head complete, body in progress
DONE = 3  # the connection will take no more requests


class Failure:
    """The peer broke the protocol or a limit: answer `status` and close."""

    __slots__ = ("status", "reason")

    def __init__(self, status, reason):
        self.status = status
        self.reason = reason

    def __repr__(self):
        return f"Failure({self.status}, {self.reason!r})"


class H1Connection:
    """One HTTP/1.1 connection's parser state and framing rules."""

    def __init__(self, limits, scheme, peer, next_request_id, clock):
        self._limits = limits
        self._scheme = scheme
        self._peer = peer
        self._next_request_id = next_request_id
        self._clock = clock
        self._parser = httptools.HttpRequestParser(self)
        self.state = IDLE
        self._events = []
        self._failure = None
        self._pending_head = 0  # bytes of a head not yet complete, for the 431 check
        self._begun_in_feed = False
        self._keep_alive = True  # the current request's: the state to take once its body is complete
        self._last = False  # the connection is shutting down: no keep-alive after this
        self.tunnel_input = b""  # bytes after a WebSocket upgrade request, for the tunnel
        self.messages = 0  # requests begun so far; tells one head's timer from the next
        self._reset_message()

    def _reset_message(self):
        self._url = b""
        self._headers = []
        self._head_bytes = 0
        self._host = None
        self._body = None  # the RequestBody being parsed
        self._websocket = False  # the request asks for a WebSocket upgrade

    # -- input -------------------------------------------------------------

    def receive(self, data):
        """Feed bytes from the peer; return the events they complete, in order.

        Events are `Request` (head complete; a body goes on arriving in its
        `body_stream`), `bytes` (an interim response such as 100 Continue, to be
        written in order) and `Failure` (after which nothing more is parsed).
        """
        if self.state == DONE:
            return []
        head_open_before = self.state == HEAD
        self._begun_in_feed = False
        while True:
            try:
                self._parser.feed_data(data)
            except httptools.HttpParserUpgrade as upgrade:
                data = data[upgrade.args[0]:]
                if self._websocket:
                    # A WebSocket upgrade is the connection's last HTTP request: what follows belongs to
                    # the tunnel if the answer is a 101 (and is dropped otherwise).
                    self.state = DONE
                    self.tunnel_input = data
                    break
                # Other upgrades (h2c arrives by prior knowledge) are served as plain
                # requests and parsing goes on with a fresh parser.
                self._parser = httptools.HttpRequestParser(self)
                if data and self.state != DONE:
                    continue
            except httptools.HttpParserCallbackError:
                if self._failure is None:  # not one of our limits: a bug, let it show
                    raise
                self._fail(self._failure)
            except httptools.HttpParserError as exc:
                if self.state != DONE:  # bytes after a final request are ignored
                    self._fail(Failure(400, f"malformed request: {exc}"))
            break
        if self.state == HEAD:
            self._check_partial_head(data, head_open_before)
        events, self._events = self._events, []
        return events

    def _check_partial_head(self, data, head_open_before):
        # httptools buffers an unfinished header line internally, so a peer
        # could grow it without bound; bound it by the bytes seen since the
        # head began (overestimated when the head began inside this chunk).
        if head_open_before and not self._begun_in_feed:
            self._pending_head += len(data)
        else:
            end = data.rfind(b"\r\n\r\n")
            self._pending_head = len(data) - (end + 4 if end >= 0 else 0)
        if self._pending_head > self._limits.max_head_bytes:
            self._fail(Failure(431, "request head too large"))

    def _fail(self, failure):
        self.state = DONE
        self._events.append(failure)
        self._break_body(failure.reason, 400)

    def _break_body(self, reason, status):
        body = self._body
        if body is not None:
            self._body = None
            body.fail(ProtocolError(f"request body incomplete: {reason}", status))

    def _stop(self, status, reason):
        self._failure = Failure(status, reason)
        raise ValueError(reason)  # httptools wraps it in HttpParserCallbackError

    # -- httptools callbacks ------------------------------------------------

    def on_message_begin(self):
        self.state = HEAD
        self.messages += 1
        self._begun_in_feed = True
        self._reset_message()

    def on_url(self, url):
        self._url += url
        if len(self._url) > self._limits.max_uri_bytes:
            self._stop(414, "request target too long")

    def on_header(self, name, value):
        self._head_bytes += len(name) + len(value) + 4
        name = name.decode("latin-1").lower()
        value = value.decode("latin-1")
        self._headers.append((name, value))
        if name == "host":
            if self._host is not None:
                self._stop(400, "more than one Host header")
            self._host = value
        if len(self._headers) > self._limits.max_header_count:
            self._stop(431, "too many header fields")
        if self._head_bytes + len(self._url) > self._limits.max_head_bytes:
            self._stop(431, "request head too large")

    def on_headers_complete(self):
        parser = self._parser
        version = parser.get_http_version()
        if version == "1.1" and self._host is None:
            self._stop(400, "HTTP/1.1 request without a Host header")
        self.state = BODY
        self._pending_head = 0
        if parser.should_upgrade():
            upgrade = self._header_value("upgrade")
            self._websocket = upgrade is not None and upgrade.lower() == "websocket"
        declared = self._header_value("content-length")  # llhttp has validated it (and ignores spaces around)
        declared = declared.strip(" \t") if declared else ""
        length = int(declared) if declared.isdigit() else 0
        chunked = self._header_value("transfer-encoding") is not None
        if length or chunked:
            self._body = RequestBody(None if chunked else length)
        request = Request(
            method=parser.get_method().decode("ascii"),
            target=self._url.decode("utf-8", "surrogateescape"),
            headers=self._headers,
            http_version=version,
            scheme=self._scheme,
            peer=self._peer,
            request_id=self._next_request_id(),
            started=self._clock(),
            keep_alive=parser.should_keep_alive(),
            authority=self._host,
            body_stream=self._body,
        )
        expect = self._header_value("expect")
        if expect is not None and version == "1.1":
            if expect.lower() != "100-continue":
                self._body = None
                self._stop(417, "unsupported Expect value")
            if self._body is not None:
                self._events.append(CONTINUE)
        self._keep_alive = request.keep_alive
        self._events.append(request)

    def on_body(self, body):
        if self._body is None:  # llhttp framed a body our reading of the head did not expect
            self._stop(400, "request body framing not understood")
        self._body.feed(body)

    def on_message_complete(self):
        body = self._body
        if body is not None:
            self._body = None
            body.end()
        self.state = IDLE if self._keep_alive else DONE

    def _header_value(self, name):
        for key, value in self._headers:
            if key == name:
                return value
        return None

    def stop(self, reason="the client stopped sending", status=400):
        """Parse nothing more (timeout or end of input); what was parsed is still answered, a body cut short fails.

        A body's reader gets a ProtocolError with `reason` and `status` (the answer, if one can still be sent).
        """
        self.state = DONE
        self._break_body(reason, status)

    @property
    def body_backlog(self):
        """Bytes of the body being parsed that its reader has not taken yet (0 without one)."""
        body = self._body
        return body.queued if body is not None else 0

    def finish_current(self):
        """Shutting down: serve what has begun, then close (no keep-alive after it)."""
        self._last = True

    @property
    def exhausted(self):
        """True when no request is in progress and none will be taken."""
        return self.state == DONE or (self._last and self.state == IDLE)

    # -- output --------------------------------------------------------------

    def response_head(self, request, response):
        """Serialise the status line and headers; return (bytes, keep the connection open).

        `request` is None when answering a Failure; the connection then closes.
        """
        keep_open = request is not None and request.keep_alive and not response.close and not self._last
        status = response.status
        parts = [STATUS_LINES.get(status) or f"HTTP/1.1 {status} Unknown\r\n".encode("ascii")]
        for name, value in response.headers:
            parts.append(f"{name}: {value}\r\n".encode("latin-1"))
        parts.append(b"date: " + httpdate.current() + b"\r\n")
        if status == 101:  # the connection becomes the tunnel the response's headers describe
            self.state = DONE
            parts.append(b"\r\n")
            return b"".join(parts), False
        if response.stream is not None and response.length is None and status >= 200:
            # A streamed body of unknown length: chunked on 1.1; on 1.0 its end is the connection's.
            if request.http_version == "1.1":
                response.chunked = True
                parts.append(b"transfer-encoding: chunked\r\n")
            else:
                keep_open = False
        if not keep_open:
            parts.append(b"connection: close\r\n\r\n")
            self.state = DONE
        elif request.http_version == "1.0":
            parts.append(b"connection: keep-alive\r\n\r\n")
        else:
            parts.append(b"\r\n")
        return b"".join(parts), keep_open
