"""The proxy's upstream client, driven from Python against real upstreams: nginx and a Python backend process."""

import asyncio
import hashlib
import json
import resource
import struct
import urllib.request

import pytest
import uvloop

from harness import free_port
from proxy_backends import PATTERN, Nginx, PythonBackend
from tls_pki import make_test_pki
from zeroserve.core.proxy import forward, upstream_request_head
from zeroserve.core.upstream import Resolver, UpstreamError, UpstreamOptions, Upstreams, parse_target


@pytest.fixture(scope="module")
def nginx(tmp_path_factory):
    directory = tmp_path_factory.mktemp("nginx")
    root = directory / "root"
    root.mkdir()
    (root / "small.txt").write_bytes(b"s" * 174)
    (root / "big.bin").write_bytes(PATTERN * (100 * 1024 // 16))
    server = Nginx(directory / "run", root)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def tls_nginx(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tls-nginx")
    pki = make_test_pki(directory)
    root = directory / "root"
    root.mkdir()
    (root / "small.txt").write_bytes(b"s" * 174)
    server = Nginx(directory / "run", root, cert=pki.leaf_cert, key=pki.leaf_key)
    server.ca = str(pki.ca_cert)
    yield server
    server.stop()


def run(coroutine_function, options=UpstreamOptions()):
    """Run coroutine_function(upstreams) on a fresh uvloop with a fresh pool; return its result."""
    async def main():
        upstreams = Upstreams(asyncio.get_running_loop(), options)
        try:
            return await coroutine_function(upstreams)
        finally:
            upstreams.close()
    return uvloop.run(main())  # the workers' loop


async def fetch(upstreams, url, path="/", query="", method="GET", headers=(), body=b"", overrides=(),
                peer_ip="192.0.2.7", scheme="https", authority="site.example"):
    """Forward one request and read its whole body: (exchange, body bytes)."""
    exchange = await forward(upstreams, url, method, path, query, list(headers), authority=authority,
                             peer_ip=peer_ip, scheme=scheme, body=body, overrides=overrides)
    parts = []
    while True:
        data = await exchange.read()
        if not data:
            break
        parts.append(data)
    exchange.finish()
    return exchange, b"".join(parts)


def values(headers, name):
    return [value for key, value in headers if key.lower() == name]


def test_proxy_request_headers_follow_forwarding_rules(backend):
    """Hop-by-hop and Connection-listed headers are dropped, Host is kept, X-Forwarded-* are added once."""
    client = [("host", "site.example"), ("connection", "keep-alive, x-secret"), ("x-secret", "1"),
              ("keep-alive", "300"), ("te", "trailers"), ("upgrade", "h2c"), ("proxy-authorization", "x"),
              ("x-forwarded-for", "10.0.0.1"), ("x-forwarded-proto", "http"), ("cookie", "a=1"),
              ("cookie", "b=2"), ("expect", "100-continue"), ("user-agent", "t")]
    _, body = run(lambda u: fetch(u, backend.url, "/echo", headers=client))
    seen = json.loads(body)["headers"]
    names = [name.lower() for name, _ in seen]
    for dropped in ("connection", "x-secret", "keep-alive", "te", "upgrade", "proxy-authorization", "expect"):
        assert dropped not in names
    assert values(seen, "host") == ["site.example"]
    assert values(seen, "x-forwarded-for") == ["10.0.0.1", "192.0.2.7"]
    assert values(seen, "x-forwarded-proto") == ["http"]
    assert values(seen, "x-forwarded-host") == ["site.example"]
    assert values(seen, "cookie") == ["a=1; b=2"]
    assert values(seen, "user-agent") == ["t"]
    assert "accept-encoding" not in names


def test_proxy_request_without_host_uses_authority(backend):
    """An HTTP/2 request (no Host header, pseudo-headers present) gets Host and X-Forwarded-Proto from the client."""
    client = [(":authority", "h2.example"), (":path", "/echo"), ("accept", "*/*")]
    _, body = run(lambda u: fetch(u, backend.url, "/echo", headers=client, authority="h2.example"))
    seen = json.loads(body)["headers"]
    assert values(seen, "host") == ["h2.example"]
    assert values(seen, "x-forwarded-host") == ["h2.example"]
    assert values(seen, "x-forwarded-proto") == ["https"]
    assert not [name for name, _ in seen if name.startswith(":")]


def test_proxy_target_joins_base_path_and_query(backend):
    """The base path and the request path are joined with one '/', and both queries with '&'."""
    exchange, body = run(lambda u: fetch(u, backend.url + "/echo/base/?k=1", "/x/y", "q=2"))
    assert json.loads(body)["target"] == "/echo/base/x/y?k=1&q=2"
    _, body = run(lambda u: fetch(u, backend.url + "/echo", "/", "only=req"))
    assert json.loads(body)["target"] == "/echo/?only=req"


def test_proxy_target_forms_parse():
    """http, https and unix/ targets parse with default ports; other forms are refused with a 502."""
    assert parse_target("http://Example.COM/api").key == ("example.com", 80, False)
    assert parse_target("https://[::1]:8443/").key == ("::1", 8443, True)
    assert parse_target("unix//run/app.sock").socket_path == "/run/app.sock"
    for bad in ("ftp://x", "example.com", "http://:80", "http://host:99999", "unix/"):
        with pytest.raises(UpstreamError) as error:
            parse_target(bad)
        assert error.value.status == 502
        assert repr(bad) in str(error.value)


def test_proxy_response_headers_drop_hop_by_hop_and_apply_overrides(backend):
    """Response hop-by-hop headers (and Connection-listed ones) are removed; script headers replace same names."""
    exchange, _ = run(lambda u: fetch(u, backend.url, "/echo", overrides=[("x-backend", "script"), ("x-new", "1")]))
    names = [name for name, _ in exchange.headers]
    assert exchange.status == 200
    assert "connection" not in names and "keep-alive" not in names and "x-drop-me" not in names
    assert values(exchange.headers, "x-backend") == ["script"]
    assert values(exchange.headers, "x-new") == ["1"]
    assert values(exchange.headers, "content-type") == ["application/json"]


class _Stream:
    """A request body arriving in pieces, of known or unknown length."""

    def __init__(self, pieces, length):
        self.pieces = list(pieces)
        self.length = length

    async def read(self):
        return self.pieces.pop(0) if self.pieces else b""


@pytest.mark.parametrize("known_length", [True, False])
def test_proxy_streams_request_body(backend, known_length):
    """A streamed request body arrives whole, with Content-Length when known and chunked otherwise."""
    pieces = [bytes([i]) * 70000 for i in range(20)]
    data = b"".join(pieces)
    stream = _Stream(pieces, len(data) if known_length else None)
    _, body = run(lambda u: fetch(u, backend.url, "/echo", method="POST", body=stream))
    echoed = json.loads(body)
    assert echoed["body_length"] == len(data)
    assert echoed["body_sha256"] == hashlib.sha256(data).hexdigest()
    framing = "content-length" if known_length else "transfer-encoding"
    assert framing in [name.lower() for name, _ in echoed["headers"]]


def test_proxy_buffered_request_body_and_empty_post(backend):
    """A bytes body goes with its Content-Length; an empty POST says Content-Length: 0."""
    _, body = run(lambda u: fetch(u, backend.url, "/echo", method="PUT", body=b"hello"))
    assert json.loads(body)["body_length"] == 5
    _, body = run(lambda u: fetch(u, backend.url, "/echo", method="POST"))
    assert values(json.loads(body)["headers"], "content-length") == ["0"]


def test_proxy_chunked_response_streams(backend):
    """A chunked response is handed over with unknown length and arrives complete."""
    exchange, body = run(lambda u: fetch(u, backend.url, "/chunked", "n=50"))
    assert exchange.length is None
    assert "transfer-encoding" not in [name for name, _ in exchange.headers]
    assert body == b"".join(bytes([97 + i % 26]) * 1000 for i in range(50))


def test_proxy_sse_arrives_incrementally(backend):
    """The first server-sent event is readable before the upstream has sent the second."""
    async def scenario(upstreams):
        exchange = await forward(upstreams, backend.url, "GET", "/sse", "", [], authority="a", peer_ip="::1",
                                 scheme="http")
        first = await exchange.read()
        # Only now does the backend get permission to send event two.
        await asyncio.to_thread(urllib.request.urlopen, backend.url + "/sse-release")
        rest = b""
        while data := await exchange.read():
            rest += data
        exchange.finish()
        return first, rest
    first, rest = run(scenario)
    assert first == b"data: one\n\n"
    assert rest == b"data: two\n\n"


def test_proxy_head_and_bodiless_statuses_have_no_body(backend):
    """HEAD, 204 and 304 responses have no body, and the connection stays usable for the next request."""
    async def scenario(upstreams):
        head, head_body = await fetch(upstreams, backend.url, "/anything", method="HEAD")
        results = [(head.status, head.length, head_body, values(head.headers, "content-length"))]
        for status in (204, 304):
            exchange, body = await fetch(upstreams, backend.url, "/nobody", f"s={status}")
            results.append((exchange.status, exchange.length, body, []))
        _, stats = await fetch(upstreams, backend.url, "/stats")
        return results, upstreams.pool.opened
    results, opened = run(scenario)
    assert results[0] == (200, 0, b"", ["100"])
    assert results[1][:3] == (204, 0, b"")
    assert results[2][:3] == (304, 0, b"")
    assert opened == 1


def test_proxy_pool_reuses_one_connection(nginx):
    """Sequential requests to nginx reuse one pooled connection (nginx reports the same connection number)."""
    async def scenario(upstreams):
        seen = []
        for _ in range(5):
            exchange, body = await fetch(upstreams, nginx.url(), "/small.txt")
            assert body == b"s" * 174
            seen.append(values(exchange.headers, "x-connection")[0])
        return seen, upstreams.pool.opened
    seen, opened = run(scenario)
    assert len(set(seen)) == 1
    assert opened == 1


def test_proxy_pool_idle_connections_expire(backend):
    """An idle pooled connection is closed after the idle timeout and the next request opens a new one."""
    async def scenario(upstreams):
        await fetch(upstreams, backend.url, "/echo")
        kept = upstreams.pool.idle_count(parse_target(backend.url).key)
        await asyncio.sleep(0.6)
        left = upstreams.pool.idle_count(parse_target(backend.url).key)
        await fetch(upstreams, backend.url, "/echo")
        return kept, left, upstreams.pool.opened
    assert run(scenario, UpstreamOptions(idle_timeout=0.3)) == (1, 0, 2)


def test_proxy_pool_skips_connection_closed_by_upstream(backend):
    """A pooled connection the upstream has closed is noticed before reuse and replaced."""
    async def scenario(upstreams):
        await fetch(upstreams, backend.url, "/close")
        await fetch(upstreams, backend.url, "/echo")
        await fetch(upstreams, backend.url, "/echo")
        return upstreams.pool.opened
    assert run(scenario) == 2


def test_proxy_pool_keeps_at_most_max_idle(backend):
    """No more than max_idle connections stay idle per upstream."""
    async def scenario(upstreams):
        exchanges = [await forward(upstreams, backend.url, "GET", "/echo", "", [], authority="a", peer_ip="::1",
                                   scheme="http") for _ in range(4)]
        for exchange in exchanges:
            while await exchange.read():
                pass
            exchange.finish()
        return upstreams.pool.idle_count(parse_target(backend.url).key)
    assert run(scenario, UpstreamOptions(max_idle=2)) == 2


def test_proxy_retries_bodiless_request_once_on_dropped_reused_connection(backend):
    """A body-less request on a reused connection the upstream drops unanswered is sent again on a new one."""
    async def scenario(upstreams):
        await fetch(upstreams, backend.url, "/drop-next")
        exchange, body = await fetch(upstreams, backend.url, "/echo")
        return exchange.status, upstreams.pool.opened
    assert run(scenario) == (200, 2)


def test_proxy_request_with_body_is_not_retried(backend):
    """A request with a body that meets a dropped reused connection fails with 502 instead of being resent."""
    async def scenario(upstreams):
        await fetch(upstreams, backend.url, "/drop-next")
        await fetch(upstreams, backend.url, "/echo", method="POST", body=b"once")
    with pytest.raises(UpstreamError) as error:
        run(scenario)
    assert error.value.status == 502


def test_proxy_upstream_down_is_502():
    """Connecting to a port nobody listens on fails with 502 and a message naming the upstream."""
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(UpstreamError) as error:
        run(lambda u: fetch(u, url))
    assert error.value.status == 502
    assert url in str(error.value)


def test_proxy_slow_upstream_is_504(backend):
    """An upstream that sends no head within the response timeout gives 504."""
    with pytest.raises(UpstreamError) as error:
        run(lambda u: fetch(u, backend.url, "/slow", "s=3"), UpstreamOptions(response_timeout=0.3))
    assert error.value.status == 504
    assert backend.url in str(error.value)


def test_proxy_upstream_dying_mid_body_raises(backend):
    """An upstream closing before its announced length is a failure while reading the body."""
    async def scenario(upstreams):
        exchange = await forward(upstreams, backend.url, "GET", "/die", "", [], authority="a", peer_ip="::1",
                                 scheme="http")
        received = 0
        try:
            while data := await exchange.read():
                received += len(data)
        except UpstreamError as error:
            exchange.abort()
            return exchange.status, received, str(error)
        return exchange.status, received, None
    status, received, error = run(scenario)
    assert status == 200 and received == 1000
    assert error is not None and "middle of the body" in error


def test_proxy_body_idle_timeout(backend):
    """A body that stalls longer than the body timeout fails."""
    async def scenario(upstreams):
        exchange = await forward(upstreams, backend.url, "GET", "/sse", "", [], authority="a", peer_ip="::1",
                                 scheme="http")
        await exchange.read()
        try:
            await exchange.read()
        except UpstreamError as error:
            exchange.abort()
            return str(error)
    message = run(scenario, UpstreamOptions(body_timeout=0.3))
    assert "no body bytes" in message
    urllib.request.urlopen(backend.url + "/sse-release").read()


def test_proxy_https_upstream_verified_with_ca(tls_nginx):
    """An https:// upstream whose certificate chains to --upstream-ca and names the host is used."""
    options = UpstreamOptions(ca_file=tls_nginx.ca)
    exchange, body = run(lambda u: fetch(u, tls_nginx.url("https", "localhost"), "/small.txt"), options)
    assert exchange.status == 200 and body == b"s" * 174


def test_proxy_https_upstream_wrong_name_is_502(tls_nginx):
    """An https:// upstream whose certificate does not name the target host fails with 502."""
    options = UpstreamOptions(ca_file=tls_nginx.ca)
    with pytest.raises(UpstreamError) as error:
        run(lambda u: fetch(u, f"https://127.0.0.2:{tls_nginx.port}", "/small.txt"), options)
    assert error.value.status == 502
    assert "127.0.0.2" in str(error.value)


def test_proxy_https_upstream_unknown_ca_is_502(tls_nginx):
    """An https:// upstream with a certificate the system CAs do not trust fails with 502."""
    with pytest.raises(UpstreamError) as error:
        run(lambda u: fetch(u, tls_nginx.url("https", "localhost"), "/small.txt"))
    assert error.value.status == 502


def test_proxy_unix_socket_upstream(tmp_path):
    """A unix/PATH target reaches an HTTP/1.1 server on that socket."""
    server = PythonBackend(tmp_path / "app.sock")
    try:
        exchange, body = run(lambda u: fetch(u, server.url, "/echo/x"))
    finally:
        server.stop()
    assert exchange.status == 200
    assert json.loads(body)["target"] == "/echo/x"


def test_proxy_tries_every_resolved_address(nginx):
    """'localhost' resolves to ::1 and 127.0.0.1; nginx listens only on the latter, which is tried next."""
    exchange, body = run(lambda u: fetch(u, f"http://localhost:{nginx.port}", "/hello"))
    assert body == b"hello from nginx\n"


def test_proxy_dns_answers_are_cached():
    """A resolved name is answered from the cache until its TTL passes."""
    now = [0.0]

    async def scenario():
        resolver = Resolver(asyncio.get_running_loop(), ttl=10, clock=lambda: now[0])
        first = await resolver.resolve("localhost", 80)
        cached = resolver._cache[("localhost", 80)]
        now[0] = 5
        again = await resolver.resolve("localhost", 80)
        same_entry = resolver._cache[("localhost", 80)] is cached
        now[0] = 20
        await resolver.resolve("localhost", 80)
        refreshed = resolver._cache[("localhost", 80)] is not cached
        return first == again, same_entry, refreshed
    assert uvloop.run(scenario()) == (True, True, True)


def test_proxy_unresolvable_host_is_502():
    """A host name that does not resolve gives 502 naming the host."""
    with pytest.raises(UpstreamError) as error:
        run(lambda u: fetch(u, "http://no-such-host.invalid/"))
    assert error.value.status == 502 and "no-such-host.invalid" in str(error.value)


def test_proxy_large_response_keeps_memory_flat(backend):
    """Reading a 512 MiB response chunk by chunk never holds more than a few hundred KiB of it."""
    total = 512 * 1024 * 1024

    async def scenario(upstreams):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        exchange = await forward(upstreams, backend.url, "GET", "/bytes", f"n={total}", [], authority="a",
                                 peer_ip="::1", scheme="http")
        received = 0
        while data := await exchange.read():
            received += len(data)
            await asyncio.sleep(0)  # a consumer slower than the socket
        exchange.finish()
        grown_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
        return exchange.length, received, grown_kb
    length, received, grown_kb = run(scenario)
    assert length == received == total
    assert grown_kb < 64 * 1024


def test_proxy_websocket_upgrade_tunnels_frames(backend):
    """After the upstream's 101 the exchange carries raw WebSocket frames both ways."""
    async def scenario(upstreams):
        headers = [("host", "a"), ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="), ("sec-websocket-version", "13"),
                   ("connection", "Upgrade"), ("upgrade", "websocket")]
        exchange = await forward(upstreams, backend.url, "GET", "/ws", "", headers, authority="a", peer_ip="::1",
                                 scheme="http", websocket=True)
        mask = b"\x01\x02\x03\x04"
        payload = b"hello ws"
        exchange.write(struct.pack("!BB", 0x81, 0x80 | len(payload)) + mask +
                       bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
        echoed = b""
        while len(echoed) < 2 + len(payload):
            echoed += await exchange.read()
        exchange.abort()
        return exchange.status, exchange.upgraded, values(exchange.headers, "sec-websocket-accept"), echoed
    status, upgraded, accept, echoed = run(scenario)
    assert (status, upgraded) == (101, True)
    assert accept == ["s3pPLMBiTxaQ9kYGzzhZRbK+xOo="]
    assert echoed == b"\x81\x08hello ws"


def test_proxy_request_head_bytes():
    """The request head is one HTTP/1.1 head: request line, headers, framing, blank line."""
    head = upstream_request_head("POST", "/u", [("host", "h")], authority="h", peer_ip="1.2.3.4", scheme="http",
                                 body_length=None)
    assert head == (b"POST /u HTTP/1.1\r\nhost: h\r\nx-forwarded-for: 1.2.3.4\r\nx-forwarded-proto: http\r\n"
                    b"x-forwarded-host: h\r\ntransfer-encoding: chunked\r\n\r\n")


def test_proxy_response_headers_leave_date_to_the_server(nginx):
    """The upstream's Date is not passed on: the client gets the one Date the server's protocol layer writes."""
    async def scenario(upstreams):
        exchange, body = await fetch(upstreams, nginx.url(), "/small.txt")
        return body, values(exchange.headers, "date"), values(exchange.headers, "content-length")
    body, dates, lengths = run(scenario)
    assert body == b"s" * 174
    assert dates == [] and lengths == ["174"]  # other end-to-end headers still pass
