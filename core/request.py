"""The protocol-neutral Request (with the RequestBody its body streams through) and Response above HTTP.

HTTP/1.1 and HTTP/2 both produce a `Request` and both write a `Response`, so the
handler (and the script chain that will sit in it) never knows the protocol.
A Request is mutable on purpose: scripts will rewrite its method, target and
headers before the action runs.
"""

import asyncio
from collections import deque
from dataclasses import dataclass

from zeroserve.core.errors import ProtocolError

# A request body queued beyond this many bytes, not yet read by its action, stops the HTTP layer taking more.
BODY_HIGH_WATER = 256 * 1024


class RequestBody:
    """A request body on its way in: the HTTP layer feeds it, the action reads it, the backlog stays bounded.

    Producer (HTTP/1 parser, HTTP/2 stream): `feed(data)` per chunk, then `end()`, or `fail(error)` when the
    body broke off (the client went away, bad framing). `feed` returns False once more than
    BODY_HIGH_WATER bytes wait: the layer then stops taking input (HTTP/1 pauses the socket, HTTP/2 withholds
    WINDOW_UPDATE) until `on_consumed(nbytes)`, which it sets, reports that the action took bytes; `queued`
    says how many still wait. `on_wanted()`, when the layer sets it, is called once when a reader first
    waits before any byte has arrived (HTTP/1 then sends the 100 Continue the client expects).

    Consumer (the action): `await read()` for the next bytes (b"" at the end), `await read_all(limit)` for
    the whole body, `take_buffered()` for what is there without waiting, or `discard()` when it does not
    want it (what was and will be fed is dropped, and reported consumed so input flows on).
    """

    __slots__ = ("length", "received", "queued", "ended", "discarded", "on_consumed", "on_wanted", "_chunks",
                 "_error", "_waiter")

    def __init__(self, length=None, on_consumed=None):
        self.length = length  # the declared length (Content-Length), None when unknown (chunked)
        self.received = 0  # bytes fed so far
        self.queued = 0  # bytes fed and not yet read
        self.ended = False  # every byte has been fed (end() was called)
        self.discarded = False
        self.on_consumed = on_consumed  # the producer's flow control: called with each count of bytes taken
        self.on_wanted = None  # the producer's: called once when a reader waits before any byte came
        self._chunks = deque()
        self._error = None
        self._waiter = None

    # -- producer ---------------------------------------------------------------

    def feed(self, data):
        """Queue body bytes; False when the backlog is above the high-water mark (stop taking input)."""
        size = len(data)
        self.received += size
        if self.discarded:
            if self.on_consumed is not None:
                self.on_consumed(size)
            return True
        self._chunks.append(data)
        self.queued += size
        self._wake()
        return self.queued <= BODY_HIGH_WATER

    def end(self):
        """Every byte has been fed."""
        self.ended = True
        self._wake()

    def fail(self, error):
        """The body broke off: a reader gets `error` instead of bytes.

        A ProtocolError's status_hint answers the request while that is still possible; a ConnectionError
        says the peer (or its stream) is gone.
        """
        if not self.ended:
            self._error = error
            self._wake()

    @property
    def finished(self):
        """True when nothing more will be fed: ended or failed."""
        return self.ended or self._error is not None

    def _wake(self):
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    # -- consumer ---------------------------------------------------------------

    async def read(self):
        """The bytes queued so far (waiting for some), b"" after the last; raises what `fail` was given."""
        while not self._chunks:
            if self._error is not None:
                raise self._error
            if self.ended or self.discarded:
                return b""
            wanted = self.on_wanted
            if wanted is not None:
                self.on_wanted = None
                if not self.received:
                    wanted()
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
        return self.take_buffered()

    async def read_all(self, limit):
        """The whole body as bytes; raises ProtocolError (413) as soon as it is known to exceed `limit`."""
        parts = []
        while True:
            if self.received > limit or (self.length or 0) > limit:
                raise ProtocolError(f"request body over {limit} bytes", 413)
            data = await self.read()
            if not data:
                return b"".join(parts)
            parts.append(data)

    def discard(self):
        """Drop the body: what is queued and whatever arrives later."""
        self.discarded = True
        dropped = self.queued
        self._chunks.clear()
        self.queued = 0
        if dropped and self.on_consumed is not None:
            self.on_consumed(dropped)
        self._wake()

    def take_buffered(self):
        """The bytes queued so far (b"" if none), without waiting: all of the body once it has `ended`."""
        chunks = self._chunks
        if not chunks:
            return b""
        data = chunks.popleft() if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        size = len(data)
        self.queued -= size
        if self.on_consumed is not None:
            self.on_consumed(size)
        return data


@dataclass(slots=True, eq=False)
class Request:
    """One request as the peer sent it, handed over once its head is complete.

    `body_stream` is the body as it arrives (a RequestBody), None when the request has none. `body` holds
    the whole body once the connection has read it for an action that needs it whole (scripts reading it,
    static and script answers); a proxied request streams `body_stream` instead and leaves `body` empty.
    """

    method: str  # as sent, e.g. "GET"
    target: str  # raw request-target, still percent-encoded ("/a%20b?x=1")
    headers: list  # [(lowercase name, value)] in wire order; scripts mutate this list
    http_version: str  # "1.0", "1.1" or "2"
    scheme: str  # "http" or "https"
    peer: tuple  # (ip, port) of the client
    request_id: str
    started: float  # loop time when the head was complete, for the access log
    body: bytes = b""
    keep_alive: bool = True  # HTTP/1 only: the peer allows another request on this connection
    authority: str | None = None  # Host header, or :authority on HTTP/2
    stream_id: int = 0  # HTTP/2 stream; 0 on HTTP/1
    connection_info: object = None  # the connection's tls.ConnectionFacts; None on plaintext
    body_stream: RequestBody | None = None  # the body as it arrives; None without one, or once read into `body`

    @property
    def host(self):
        """The host of Host / :authority, lowercase, without port (IPv6 keeps its brackets); None without one."""
        authority = self.authority
        if not authority:
            return None
        host = authority.lower()
        if host.startswith("["):
            return host[:host.find("]") + 1]
        return host.rpartition(":")[0] if ":" in host else host

    @property
    def path(self):
        """The target up to '?', still encoded."""
        return self.target.partition("?")[0]

    @property
    def query(self):
        """The raw query after '?', without it; empty when there is none."""
        return self.target.partition("?")[2]

    def header(self, name):
        """The last value of header `name` (lowercase), or None."""
        for key, value in reversed(self.headers):
            if key == name:
                return value
        return None

    def header_dict(self):
        """{lowercase name: value}, repeated headers joined with ', ' (cookies with '; ')."""
        merged = {}
        for key, value in self.headers:
            if key in merged:
                merged[key] = merged[key] + ("; " if key == "cookie" else ", ") + value
            else:
                merged[key] = value
        return merged


@dataclass(slots=True, eq=False)
class Response:
    """What to send back: status, headers, and a body made of parts.

    `headers` holds everything but Date and Connection, which the protocol layer
    writes; Content-Length is the action's to set (for HEAD it announces the GET's
    length while no body is sent). Each body part is either bytes or an
    (offset, length) range of `fd`, read with `os.pread` while writing, so big
    files are never in memory. `length` is the total size of the body parts.

    A proxied response has no parts but a `stream` (proxy.Exchange): `await stream.read()` gives body
    chunks until b"", then `stream.finish()` (or `stream.abort()` on failure); `length` is then the body's
    size or None when unknown (HTTP/1.1 sends it chunked). After a 101 (or an HTTP/2 200 to an extended
    CONNECT) with `stream.upgraded`, the stream is a tunnel: `stream.write(bytes)` sends to the upstream.
    """

    status: int
    headers: list  # [(name, value)] as str
    body: tuple = ()
    length: int = 0
    fd: int = -1
    close: bool = False  # close the connection once this response is written
    stream: object = None  # a streamed body (proxy), instead of `body`
    chunked: bool = False  # set by http1: the streamed body goes out in chunked encoding
