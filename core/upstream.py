"""The proxy's upstream side: target URLs, HTTP/1.1 client connections over asyncio, their pool, and DNS.

One `Upstreams` per worker owns the pool and the DNS cache. `Upstreams.connect`
hands out an `UpstreamConnection` for a `Target` (a pooled idle one when a live
one exists, else a new socket, TLS-wrapped with BoringSSL for https://).
A connection carries one exchange at a time: `send`/`drain` for the request,
`read_head` for the response head (1xx interim responses skipped), `read_body`
for body chunks, then `release` puts it back in the pool when the response
allows reuse. Every wait is bounded by a timeout from `UpstreamOptions`.

Back-pressure: the socket is not read while more than _READ_HIGH body bytes
wait for the caller, and `drain` waits while the socket's write buffer is full.
"""

import asyncio
import ipaddress
import select
import socket
import time
from collections import deque
from dataclasses import dataclass
from functools import lru_cache

import httptools

from zeroserve.core.errors import ZeroserveError
from zeroserve.core.session import PlainSession

_READ_HIGH = 256 * 1024  # body bytes buffered for the caller before the socket stops being read
_WRITE_HIGH = 256 * 1024
_WRITE_LOW = 64 * 1024
_DNS_CACHE_SIZE = 128
_DNS_TTL = 60.0
_NO_BODY_STATUSES = frozenset((204, 304))
_RECHECK_AFTER = 1.0  # seconds idle after which a pooled connection's socket is polled before reuse

# Response framing, decided when the head is complete.
NO_BODY = 0
FIXED = 1  # Content-Length
CHUNKED = 2
UNTIL_CLOSE = 3  # neither: the body ends when the upstream closes


class UpstreamError(ZeroserveError):
    """Talking to an upstream failed. `status` is the client's answer if nothing was sent yet (502 or 504).

    `retryable` is true when the upstream closed a reused connection before sending anything: the
    request may not have reached the application and can be sent again if it had no body.
    """

    def __init__(self, message, status=502, retryable=False):
        super().__init__(message)
        self.status = status
        self.retryable = retryable


@dataclass(frozen=True, slots=True)
class UpstreamOptions:
    """The upstream flags: timeouts in seconds, the pool size, and the CA bundle for https:// upstreams."""

    connect_timeout: float = 5.0
    response_timeout: float = 60.0
    body_timeout: float = 60.0
    idle_timeout: float = 60.0
    max_idle: int = 128
    ca_file: str | None = None  # None: the system CAs


@dataclass(frozen=True, slots=True)
class Target:
    """A parsed `zs_reverse_proxy` URL."""

    url: str  # as the script gave it, for log lines
    key: tuple  # the pool key: (host, port, tls) or ("unix", path)
    host: str  # DNS name or IP literal (no brackets); "" for a socket path
    port: int
    tls: bool
    socket_path: str  # "" unless unix/PATH
    base_path: str  # without its trailing "/"
    base_query: str  # without "?"

    def request_target(self, path, query):
        """The upstream request-target: base path joined with `path`, base query and `query` joined with '&'."""
        joined = self.base_path + "/" + path.lstrip("/")
        if self.base_query and query:
            return f"{joined}?{self.base_query}&{query}"
        if self.base_query or query:
            return f"{joined}?{self.base_query or query}"
        return joined


_DEFAULT_PORTS = {"http": 80, "https": 443}


@lru_cache(maxsize=1024)
def parse_target(url):
    """The Target of a proxy URL: http://host[:port][/base][?q], https://..., or unix/PATH."""
    if url.startswith("unix/"):
        path = url[5:]
        if not path:
            raise UpstreamError(f"proxy target {url!r} names no socket path: write unix//path/to.sock")
        return Target(url, ("unix", path), "", 0, False, path, "", "")
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in _DEFAULT_PORTS:
        raise UpstreamError(f"proxy target {url!r} is not http://, https:// or unix/PATH")
    authority_end = len(rest)
    for mark in "/?":
        position = rest.find(mark)
        if position != -1:
            authority_end = min(authority_end, position)
    authority, tail = rest[:authority_end], rest[authority_end:]
    path, _, query = tail.partition("?")
    host, port = _split_authority(url, authority, _DEFAULT_PORTS[scheme])
    tls = scheme == "https"
    return Target(url, (host, port, tls), host, port, tls, "", path.rstrip("/"), query)


def _split_authority(url, authority, default_port):
    if "@" in authority:
        raise UpstreamError(f"proxy target {url!r} has user info, which is not supported")
    if authority.startswith("["):
        end = authority.find("]")
        host, port_text = authority[1:end], authority[end + 1:]
        if end == -1 or (port_text and not port_text.startswith(":")):
            raise UpstreamError(f"proxy target {url!r} has a malformed IPv6 address")
        port_text = port_text[1:]
    else:
        host, _, port_text = authority.partition(":")
    if not host:
        raise UpstreamError(f"proxy target {url!r} names no host")
    if not port_text:
        return host.lower(), default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise UpstreamError(f"proxy target {url!r} has an invalid port {port_text!r}")
    return host.lower(), int(port_text)


class Resolver:
    """getaddrinfo on the loop's thread pool, with a small cache of answers kept for a fixed TTL."""

    def __init__(self, loop, ttl=_DNS_TTL, size=_DNS_CACHE_SIZE, clock=time.monotonic):
        self._loop = loop
        self._ttl = ttl
        self._size = size
        self._clock = clock
        self._cache = {}  # (host, port) → (expiry, [(family, sockaddr)]), oldest first

    async def resolve(self, host, port):
        """[(family, sockaddr)] in the resolver's order; raises UpstreamError when the name does not resolve."""
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            pass
        else:
            family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
            return [(family, (host, port))]
        key = (host, port)
        now = self._clock()
        entry = self._cache.get(key)
        if entry is not None and entry[0] > now:
            return entry[1]
        try:
            infos = await self._loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as error:
            raise UpstreamError(f"cannot resolve {host}: {error}") from None
        addresses = [(family, sockaddr) for family, _, _, _, sockaddr in infos]
        if not addresses:
            raise UpstreamError(f"cannot resolve {host}: no addresses")
        cache = self._cache
        cache.pop(key, None)
        if len(cache) >= self._size:
            del cache[next(iter(cache))]
        cache[key] = (now + self._ttl, addresses)
        return addresses


class UpstreamConnection(asyncio.Protocol):
    """One HTTP/1.1 client connection to an upstream; one exchange at a time."""

    def __init__(self, loop, target, session):
        self._loop = loop
        self.target = target
        self._session = session
        self._transport = None
        self._parser = httptools.HttpResponseParser(self)
        self._waiter = None  # the future a reader awaits (handshake, head, body)
        self._write_waiter = None  # the future `drain` awaits: a body upload runs beside the reader
        self._write_paused = False
        self._read_paused = False
        self.closed = False  # the upstream closed, or we did
        self._error = None  # an UpstreamError for the next wait
        self.reused = False  # taken from the pool for this exchange
        self.idle_since = 0.0  # loop time when the pool took it back
        # The current exchange.
        self._head_only = False  # HEAD request: the response has no body whatever it announces
        self.status = 0
        self.headers = []  # [(lowercase name, value)] as str
        self.keep_alive = False
        self.framing = NO_BODY
        self.content_length = None  # the response's Content-Length when framing is FIXED
        self._remaining = -1  # bytes of a Content-Length body still to come, counted without the parser; -1: none
        self.head_done = False
        self.body_done = False
        self.upgraded = False  # after a 101: body chunks are the raw tunnel bytes
        self._exchange_open = False
        self._chunks = deque()
        self._buffered = 0

    # -- asyncio callbacks ----------------------------------------------------

    def connection_made(self, transport):
        self._transport = transport
        transport.set_write_buffer_limits(_WRITE_HIGH, _WRITE_LOW)
        if self._session.is_tls:
            _, hello = self._session.receive(b"")
            transport.write(hello)

    def data_received(self, data):
        session = self._session
        try:
            plaintext, to_send = session.receive(data)
        except ZeroserveError as error:  # TLS handshake or record failure
            self._fail(UpstreamError(f"TLS with {self.target.url} failed: {error}"))
            return
        if to_send:
            self._transport.write(to_send)
        if not session.handshake_complete:
            return
        if plaintext:
            if self.upgraded:
                self._chunks.append(plaintext)
                self._buffered += len(plaintext)
                self._wake()
                self._pause_if_full()
            elif self.body_done or not self._exchange_open:
                # Bytes while idle, or after a complete response: the connection cannot be reused.
                self.keep_alive = False
            else:
                self._feed(plaintext)
        elif session.handshake_complete:
            self._wake()  # the handshake finished

    def _feed(self, data):
        if self._remaining >= 0:
            self._take_body(data)
            return
        # httptools parses heads (and chunked bodies); a head found whole in `data` is fed alone so that a
        # Content-Length body after it can be taken as it is, without the parser copying it into new objects.
        start = 0  # where the bytes not yet parsed begin
        try:
            while not self.head_done:
                end = data.find(b"\r\n\r\n", start)
                if end < 0:
                    break
                self._parser.feed_data(data[start:end + 4])
                start = end + 4
            if self.head_done and self.framing == FIXED and not self.body_done and start:
                self._remaining = self.content_length
                self._parser = httptools.HttpResponseParser(self)  # the next exchange's: this one is mid-body
                if start < len(data):
                    self._take_body(memoryview(data)[start:])
                return
            if start < len(data):
                self._parser.feed_data(data[start:] if start else data)
        except httptools.HttpParserUpgrade as upgrade:  # its offset counts from the start of the bytes fed
            rest = data[start + upgrade.args[0]:]
            if rest:
                self._chunks.append(rest)
                self._buffered += len(rest)
            self._wake()
        except httptools.HttpParserError as error:
            self._fail(UpstreamError(f"{self.target.url} sent a malformed response: {error}"))
            return
        self._pause_if_full()

    def _take_body(self, data):
        """Queue bytes of a Content-Length body for the caller; the body ends after `content_length` of them."""
        size = len(data)
        remaining = self._remaining
        if size >= remaining:
            if size > remaining:  # bytes after the body: the connection cannot carry another exchange
                data = data[:remaining]
                size = remaining
                self.keep_alive = False
            self._remaining = -1
            self.body_done = True
        else:
            self._remaining = remaining - size
        if size:
            self._chunks.append(data)
            self._buffered += size
        self._wake()
        self._pause_if_full()

    def _pause_if_full(self):
        if self._buffered > _READ_HIGH and not self._read_paused and not self.closed:
            self._read_paused = True
            self._transport.pause_reading()

    def eof_received(self):
        self._closed_by_upstream()
        return False

    def connection_lost(self, exc):
        self._closed_by_upstream()

    def pause_writing(self):
        self._write_paused = True

    def resume_writing(self):
        self._write_paused = False
        self._wake_writer()

    # -- httptools callbacks ----------------------------------------------------

    def on_header(self, name, value):
        self.headers.append((name.decode("latin-1").lower(), value.decode("latin-1")))

    def on_headers_complete(self):
        parser = self._parser
        status = parser.get_status_code()
        if 100 <= status < 200 and status != 101:  # interim (100 Continue, 103 Early Hints): skipped
            self.headers = []
            return
        self.status = status
        self.keep_alive = parser.should_keep_alive()
        self.head_done = True
        if status == 101:
            self.upgraded = True
            self.keep_alive = False
            self.framing = NO_BODY
        elif self._head_only or status in _NO_BODY_STATUSES:
            self.framing = NO_BODY
            self.body_done = True
            if self._head_only:
                # The parser would wait for the body a HEAD response announces; the next exchange gets a new one.
                self._parser = httptools.HttpResponseParser(self)
        else:
            self.framing, self.content_length = _framing(self.headers)
            if self.framing == UNTIL_CLOSE:
                self.keep_alive = False
        self._wake()

    def on_body(self, body):
        self._chunks.append(body)
        self._buffered += len(body)
        self._wake()

    def on_message_complete(self):
        if not self.head_done:  # the end of an interim response
            return
        if self.upgraded:
            return
        self.body_done = True
        self._wake()

    # -- the exchange -----------------------------------------------------------

    def begin(self, head_only):
        """Start an exchange: clear the last response's state."""
        self._head_only = head_only
        self._exchange_open = True
        self.status = 0
        self.headers = []
        self.keep_alive = False
        self.framing = NO_BODY
        self.content_length = None
        self._remaining = -1
        self.head_done = False
        self.body_done = False
        self._chunks.clear()
        self._buffered = 0

    def send(self, data):
        """Write request bytes; False when the socket's buffer is full (await `drain` before sending more)."""
        if self.closed:
            raise self._error or UpstreamError(f"{self.target.url} closed the connection")
        self._transport.write(self._session.send(data))
        return not self._write_paused

    async def drain(self, timeout):
        """Wait until the socket takes more; raises UpstreamError when the upstream stops reading for `timeout`."""
        while self._write_paused:
            await self._wait(timeout, f"{self.target.url} did not read the request body for {timeout:g} s", 502,
                             writing=True)

    async def handshake(self, timeout):
        """Complete the TLS handshake (no-op for plaintext)."""
        while not self._session.handshake_complete:
            await self._wait(timeout, f"TLS handshake with {self.target.url} took more than {timeout:g} s", 502)

    async def read_head(self, timeout):
        """Wait for the response head (status, headers, framing); 1xx interim responses are skipped."""
        while not self.head_done:
            await self._wait(timeout, f"{self.target.url} sent no response head within {timeout:g} s", 504)

    async def read_body(self, timeout):
        """The next body chunk (bytes-like), or b"" at the end of the body.

        Raises UpstreamError on a failure or idle timeout.
        """
        chunks = self._chunks
        while not chunks:
            if self.body_done:
                return b""
            await self._wait(timeout, f"{self.target.url} sent no body bytes for {timeout:g} s", 504)
        return self.take_buffered()

    @property
    def drained(self):
        """True when the whole body has arrived and been taken."""
        return self.body_done and not self.upgraded and not self._chunks

    def take_buffered(self):
        """The body bytes already received (b"" if none), without waiting: bytes, or a memoryview of a read."""
        chunks = self._chunks
        if not chunks:
            return b""
        if len(chunks) == 1:
            data = chunks.popleft()  # a memoryview when it is the body after a head that came in the same read
        else:
            data = b"".join(chunks)
            chunks.clear()
        self._buffered -= len(data)
        if self._read_paused and not self.closed:
            self._read_paused = False
            self._transport.resume_reading()
        return data

    def release(self, pool):
        """The exchange is over: back to `pool` when the response allows reuse, else closed."""
        self._exchange_open = False
        if (self.keep_alive and self.body_done and not self.closed and not self.upgraded and not self._chunks
                and not self._write_paused):
            pool.put(self)
        else:
            self.close()

    def close(self):
        """Close the socket now (after a close_notify for TLS)."""
        self._exchange_open = False
        if not self.closed:
            self.closed = True
            transport = self._transport
            if transport is not None:
                try:
                    transport.write(self._session.close())
                except ZeroserveError:
                    pass
                transport.close()

    def abort(self):
        """Drop the socket without sending anything more."""
        self.closed = True
        self._exchange_open = False
        if self._transport is not None:
            self._transport.abort()

    def write_eof(self):
        """Half-close our side (a tunnel whose client finished sending)."""
        if not self.closed and self._transport.can_write_eof() and not self._session.is_tls:
            self._transport.write_eof()

    def is_alive(self, check_socket):
        """True when the idle connection can be reused; with `check_socket`, also no data or hang-up is waiting.

        The loop has delivered any close it saw already; asking the socket only matters after a long idle,
        when the upstream's close may have raced with this request.
        """
        if self.closed or not self.keep_alive:
            return False
        if not check_socket:
            return True
        sock = self._transport.get_extra_info("socket")
        if sock is None:
            return False
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLIN | select.POLLRDHUP)
        return not poller.poll(0)

    # -- waiting ---------------------------------------------------------------

    async def _wait(self, timeout, message, status, writing=False):
        if self._error is not None:
            raise self._error
        if self.closed:
            raise UpstreamError(f"{self.target.url} closed the connection", retryable=self.reused and not self.head_done)
        loop = self._loop
        waiter = loop.create_future()
        if writing:
            self._write_waiter = waiter
        else:
            self._waiter = waiter
        timer = loop.call_later(timeout, _expire, waiter)
        try:
            expired = await waiter
        finally:
            timer.cancel()
            if writing:
                self._write_waiter = None
            else:
                self._waiter = None
        if expired:
            raise UpstreamError(message, status)
        if self._error is not None:
            raise self._error

    def _wake(self):
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(False)

    def _wake_writer(self):
        waiter = self._write_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(False)

    def _fail(self, error):
        if self._error is None:
            self._error = error
        self.abort()
        self._wake()
        self._wake_writer()

    def _closed_by_upstream(self):
        was_closed = self.closed
        self.closed = True
        if self.upgraded:
            self.body_done = True
        elif self.head_done and not self.body_done:
            if self.framing == UNTIL_CLOSE:
                self.body_done = True
            elif self._error is None:
                self._error = UpstreamError(f"{self.target.url} closed the connection in the middle of the body")
        elif not self.head_done and self._exchange_open and self._error is None and not was_closed:
            if not self._session.handshake_complete:
                self._error = UpstreamError(f"{self.target.url} closed the connection during the TLS handshake")
            else:
                self._error = UpstreamError(f"{self.target.url} closed the connection without a response",
                                            retryable=self.reused)
        self._wake()
        self._wake_writer()


def _expire(waiter):
    if not waiter.done():
        waiter.set_result(True)


def _framing(headers):
    """(framing, Content-Length or None) of a response with a body; llhttp has checked the length's digits."""
    length = None
    for name, value in headers:
        if name == "transfer-encoding" and "chunked" in value.lower():
            return CHUNKED, None
        if name == "content-length":
            length = int(value)
    return (UNTIL_CLOSE, None) if length is None else (FIXED, length)


class Pool:
    """Idle upstream connections of one worker, per target key, newest reused first, expiring after an idle timeout.

    One timer sweeps out expired connections while any is idle, so taking and giving back cost no timer.
    """

    def __init__(self, loop, options):
        self._loop = loop
        self._options = options
        self._idle = {}  # key → deque of UpstreamConnection, oldest first
        self._sweeper = None  # the timer of the next expiry sweep, while connections are idle
        self.opened = 0  # connections created, for tests and stats

    def take(self, key):
        """A live idle connection for `key`, or None."""
        stack = self._idle.get(key)
        if not stack:
            return None
        now = self._loop.time()
        while stack:
            connection = stack.pop()
            if connection.is_alive(now - connection.idle_since > _RECHECK_AFTER):
                connection.reused = True
                return connection
            connection.close()
        return None

    def put(self, connection):
        """Keep an idle connection (the oldest is closed beyond max_idle); it closes after the idle timeout."""
        stack = self._idle.get(connection.target.key)
        if stack is None:
            stack = self._idle[connection.target.key] = deque()
        if len(stack) >= self._options.max_idle:
            stack.popleft().close()
        connection.idle_since = self._loop.time()
        stack.append(connection)
        if self._sweeper is None:
            self._sweeper = self._loop.call_later(self._options.idle_timeout, self._sweep)

    def idle_count(self, key):
        """How many idle connections are kept for `key`."""
        return len(self._idle.get(key, ()))

    def _sweep(self):
        self._sweeper = None
        timeout = self._options.idle_timeout
        now = self._loop.time()
        oldest = None
        for key, stack in list(self._idle.items()):
            while stack and (stack[0].idle_since + timeout <= now or stack[0].closed):
                stack.popleft().close()
            if stack:
                oldest = stack[0].idle_since if oldest is None else min(oldest, stack[0].idle_since)
            else:
                del self._idle[key]
        if oldest is not None:
            self._sweeper = self._loop.call_later(oldest + timeout - now, self._sweep)

    def close(self):
        """Close every idle connection (the worker is stopping)."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for stack in self._idle.values():
            for connection in stack:
                connection.close()
        self._idle.clear()


class Upstreams:
    """A worker's way to upstreams: the pool, the DNS cache and the TLS client context."""

    def __init__(self, loop, options=UpstreamOptions()):
        self.loop = loop
        self.options = options
        self.pool = Pool(loop, options)
        self.resolver = Resolver(loop)
        self._tls_context = None  # built on the first https:// target

    async def connect(self, target):
        """An UpstreamConnection to `target`: a pooled one if a live one is idle, else a new one."""
        connection = self.pool.take(target.key)
        if connection is not None:
            return connection
        return await self.open(target)

    async def open(self, target):
        """A new connection to `target`; raises UpstreamError (502) when no address accepts it in time."""
        options = self.options
        loop = self.loop
        session = self._tls_session(target) if target.tls else PlainSession()
        factory = lambda: UpstreamConnection(loop, target, session)  # noqa: E731
        try:
            if target.socket_path:
                _, connection = await asyncio.wait_for(
                    loop.create_unix_connection(factory, target.socket_path), options.connect_timeout)
            else:
                connection = await asyncio.wait_for(self._connect_tcp(target, factory), options.connect_timeout)
        except asyncio.TimeoutError:
            raise UpstreamError(f"connecting to {target.url} took more than {options.connect_timeout:g} s") from None
        except OSError as error:
            raise UpstreamError(f"cannot connect to {target.url}: {error.strerror or error}") from None
        self.pool.opened += 1
        if target.tls:
            try:
                await connection.handshake(options.connect_timeout)
            except UpstreamError:
                connection.abort()
                raise
        return connection

    async def _connect_tcp(self, target, factory):
        addresses = await self.resolver.resolve(target.host, target.port)
        last_error = None
        for family, sockaddr in addresses:
            try:
                _, connection = await self.loop.create_connection(factory, sockaddr[0], sockaddr[1], family=family)
                return connection
            except OSError as error:
                last_error = error
        raise last_error

    def _tls_session(self, target):
        # tls imports BoringSSL; a server that never proxies to https:// never needs it.
        from zeroserve.core.tls import client_context
        if self._tls_context is None:
            try:
                self._tls_context = client_context(self.options.ca_file)
            except ZeroserveError as error:
                raise UpstreamError(f"cannot verify {target.url}: {error}") from None
        try:
            return self._tls_context.new_session(target.host)
        except ZeroserveError as error:
            raise UpstreamError(f"cannot start TLS with {target.url}: {error}") from None

    def close(self):
        self.pool.close()
