"""The reverse-proxy action: send a request to the upstream a script named, and hand back its streaming response.

`forward` builds the upstream request from the client's (hop-by-hop headers
removed, X-Forwarded-* added), sends it over a pooled connection from
`upstream.Upstreams`, streams a request body with back-pressure, and returns
an `Exchange` once the response head is in: status and headers ready for the
client (hop-by-hop removed, the scripts' `zs.response.header.*` applied), the
body read chunk by chunk with `Exchange.read`. A request that met a reused
connection the upstream had closed is sent once more when it had no body.
"""

import asyncio
from functools import lru_cache

from zeroserve.core.accesslog import log_error
from zeroserve.core.request import Response

from zeroserve.core.errors import ZeroserveError
from zeroserve.core.upstream import CHUNKED, FIXED, NO_BODY, UpstreamError, UpstreamOptions, Upstreams, parse_target

__all__ = ["HOP_BY_HOP", "Exchange", "forward", "respond", "upstream_request_head", "client_headers", "UpstreamError"]

_SERVER_HEADER = ("server", "zeroserve")
_upstreams = None  # this worker's Upstreams: pools outlive reloads, so they belong to the process, not the World

# Headers that describe one connection, not the message: never forwarded in either direction.
HOP_BY_HOP = frozenset((
    "alt-svc", "connection", "proxy-connection", "proxy-authenticate", "proxy-authorization", "keep-alive", "te",
    "trailer", "transfer-encoding", "upgrade",
))
# Also dropped from the request: the proxy frames the body itself and answers Expect: 100-continue itself.
_REQUEST_DROPPED = HOP_BY_HOP | {"content-length", "expect"}
# Also dropped from the response: the client's protocol layer writes its own Date.
_RESPONSE_DROPPED = HOP_BY_HOP | {"date"}


def _connection_listed(headers):
    """Lowercase names listed in Connection headers (they are hop-by-hop too)."""
    listed = frozenset()
    for name, value in headers:
        if name == "connection":
            listed = listed | _connection_tokens(value)
    return listed


@lru_cache(maxsize=256)
def _connection_tokens(value):
    """The lowercase names one Connection value lists (values repeat: "keep-alive", "close", "upgrade")."""
    return frozenset(token.strip().lower() for token in value.split(","))


def upstream_request_head(method, target, headers, *, authority, peer_ip, scheme, body_length, websocket=False):
    """The HTTP/1.1 request head for the upstream, as bytes.

    `headers` are the client's [(lowercase name, value)] as scripts left them; `body_length` is the request
    body's length, None when it is sent chunked. Host is the client's (or :authority for HTTP/2) unless a
    script set one; X-Forwarded-For gets a line with the peer; X-Forwarded-Proto and -Host are set when absent.
    """
    listed = _connection_listed(headers)
    lines = [f"{method} {target} HTTP/1.1"]
    cookies = []
    has_host = has_proto = has_forwarded_host = False
    host = authority
    for name, value in headers:
        if name in _REQUEST_DROPPED or name in listed or name[:1] == ":":
            continue
        if name == "cookie":
            cookies.append(value)
            continue
        if name == "host":
            has_host = True
            host = value
        elif name == "x-forwarded-proto":
            has_proto = True
        elif name == "x-forwarded-host":
            has_forwarded_host = True
        lines.append(f"{name}: {value}")
    if not has_host and host:
        lines.append(f"host: {host}")
    if cookies:
        lines.append(f"cookie: {'; '.join(cookies)}")
    lines.append(f"x-forwarded-for: {peer_ip}")
    if not has_proto:
        lines.append(f"x-forwarded-proto: {scheme}")
    if not has_forwarded_host and host:
        lines.append(f"x-forwarded-host: {host}")
    if websocket:
        lines.append("connection: upgrade")
        lines.append("upgrade: websocket")
    if body_length is None:
        lines.append("transfer-encoding: chunked")
    elif body_length or method not in ("GET", "HEAD"):
        lines.append(f"content-length: {body_length}")
    lines.append("\r\n")
    return "\r\n".join(lines).encode("latin-1")


def client_headers(upstream_headers, overrides=(), keep_upgrade=False):
    """The upstream's response headers for the client: hop-by-hop removed, then `overrides` replacing same names.

    `overrides` are (lowercase name, value) pairs from the scripts' zs.response.header.* metadata.
    """
    listed = _connection_listed(upstream_headers)
    dropped = _RESPONSE_DROPPED if listed <= _RESPONSE_DROPPED else _RESPONSE_DROPPED | listed
    if keep_upgrade:  # a 101 keeps the two headers that say what the connection became
        dropped = dropped - {"upgrade", "connection"}
    if overrides:
        dropped = dropped | {name for name, _ in overrides}
    headers = [header for header in upstream_headers if header[0] not in dropped]
    headers.extend(overrides)
    return headers


class Exchange:
    """An upstream response on its way to the client: head ready, body read with `read()`.

    `length` is the body length the client is told (None: unknown, stream it chunked or until close);
    `upgraded` is true after a 101, when `read`/`write` carry the raw tunnel. Call `finish()` after the
    last byte (the connection goes back to the pool when it can) or `abort()` on any failure.
    """

    __slots__ = ("status", "headers", "length", "upgraded", "_connection", "_upstreams", "_upload", "_timeout")

    def __init__(self, connection, upstreams, headers, length, upload):
        self.status = connection.status
        self.headers = headers
        self.length = length
        self.upgraded = connection.upgraded
        self._connection = connection
        self._upstreams = upstreams
        self._upload = upload  # the task still sending the request body, or None
        self._timeout = upstreams.options.body_timeout

    async def read(self):
        """The next body chunk, bytes-like (b"" at the end).

        Raises UpstreamError on a failure or after the body timeout.
        """
        return await self._connection.read_body(self._timeout)

    def take_buffered(self):
        """The body bytes already here (b"" if none), without waiting: lets a small body leave with the head."""
        return self._connection.take_buffered()

    @property
    def complete(self):
        """True when every body byte has been taken (the response can be finished without reading)."""
        return self._connection.drained

    def write(self, data):
        """Tunnel bytes from the client to the upstream (after a 101); False when the upstream's buffer is full."""
        return self._connection.send(data)

    async def drain(self):
        """Wait while the upstream is not reading tunnel bytes."""
        await self._connection.drain(self._timeout)

    def write_eof(self):
        """The client finished sending into the tunnel."""
        self._connection.write_eof()

    def finish(self):
        """The whole body has been read: keep the connection for reuse when the response allows it."""
        upload = self._upload
        if upload is not None and not upload.done():
            upload.cancel()
            self._connection.close()
            return
        self._connection.release(self._upstreams.pool)

    def abort(self):
        """Stop: the client went away or the body failed; the connection is closed."""
        if self._upload is not None and not self._upload.done():
            self._upload.cancel()
        self._connection.abort()


async def forward(upstreams, url, method, path, query, headers, *, authority, peer_ip, scheme, body=b"",
                  overrides=(), websocket=False):
    """Send a request to the upstream `url` and return the Exchange of its response head.

    `path` and `query` are the client's original request-target parts (or the scripts' rewrite); `body` is
    bytes, or a stream with `length` (int, or None when unknown) and `async read()` returning b"" at the end.
    Raises UpstreamError (status 502 or 504) when no response head arrives.
    """
    target = parse_target(url)
    request_target = target.request_target(path, query)
    bodiless = method == "GET" or method == "HEAD"
    if bodiless:
        body = b""
    buffered = type(body) is bytes
    length = len(body) if buffered else body.length
    if buffered and not body and not bodiless and any(name == "content-length" for name, _ in headers):
        length = 0
    head = upstream_request_head(method, request_target, headers, authority=authority, peer_ip=peer_ip,
                                 scheme=scheme, body_length=length, websocket=websocket)
    options = upstreams.options
    retry = buffered and not body
    while True:
        connection = await upstreams.connect(target)
        connection.begin(method == "HEAD")
        upload = None
        try:
            if buffered:
                connection.send(head + body if body else head)
            else:
                connection.send(head)
                upload = upstreams.loop.create_task(_upload(connection, body, length is None, options.body_timeout))
            await connection.read_head(options.response_timeout)
        except UpstreamError as error:
            if upload is not None:
                upload.cancel()
            connection.abort()
            if error.retryable and retry:
                retry = False
                continue
            raise
        break
    upgraded = connection.upgraded
    framing = connection.framing
    if framing == FIXED:
        length = connection.content_length
    elif framing == NO_BODY:
        length = 0
    else:
        length = None
    out_headers = client_headers(connection.headers, overrides, keep_upgrade=upgraded)
    if framing == CHUNKED or upgraded:
        out_headers = [(name, value) for name, value in out_headers if name != "content-length"]
    return Exchange(connection, upstreams, out_headers, length, upload)


def worker_upstreams(options=None):
    """This worker's Upstreams (pool and DNS cache), created on first use on the running loop."""
    global _upstreams
    if _upstreams is None:
        _upstreams = Upstreams(asyncio.get_running_loop(), options or UpstreamOptions())
    return _upstreams


def is_websocket(request):
    """True for an HTTP/1.1 request to upgrade to a WebSocket."""
    upgrade = request.header("upgrade")
    return upgrade is not None and upgrade.lower() == "websocket"


async def respond(request, url, overrides=(), options=None):
    """The Response of proxying `request` to `url`: its body streams from the upstream (`Response.stream`).

    A failure before the response head (bad target, connect, TLS, timeout) is logged with the upstream and
    answered with an empty 502 or 504.
    """
    upstreams = worker_upstreams(options)
    try:
        exchange = await forward(upstreams, url, request.method, request.path, request.query, request.headers,
                                 authority=request.authority, peer_ip=request.peer[0], scheme=request.scheme,
                                 body=request.body if request.body_stream is None else request.body_stream,
                                 overrides=overrides, websocket=is_websocket(request))
    except UpstreamError as error:
        log_error(f"[proxy] {request.request_id}: {error}")
        return Response(error.status, [("content-length", "0"), _SERVER_HEADER])
    return Response(exchange.status, exchange.headers, (), exchange.length, stream=exchange)


async def _upload(connection, body, chunked, timeout):
    """Stream a request body to the upstream, chunk by chunk, waiting while its socket is full."""
    try:
        while True:
            data = await body.read()
            if not data:
                break
            connection.send(b"%x\r\n%b\r\n" % (len(data), data) if chunked else data)
            await connection.drain(timeout)
        if chunked:
            connection.send(b"0\r\n\r\n")
    except UpstreamError:
        # The upstream stopped taking the body; its response (if any) tells the client what happened.
        pass
    except (ZeroserveError, ConnectionError):
        # The client's body broke off: the upstream must not take what it got for the whole body.
        connection.abort()
