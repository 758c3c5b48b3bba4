"""The protocol-neutral Request and Response every layer above HTTP works with.

HTTP/1.1 and HTTP/2 both produce a `Request` and both write a `Response`, so the
handler (and the script chain that will sit in it) never knows the protocol.
A Request is mutable on purpose: scripts will rewrite its method, target and
headers before the action runs.
"""

from dataclasses import dataclass


@dataclass(slots=True, eq=False)
class Request:
    """One complete request as the peer sent it (body fully read, within the limit)."""

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
