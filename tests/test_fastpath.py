"""The C fast path for HTTP/1.1 (core/fastpath.py, native/fast) answers byte for byte as the Python path does.

Each exchange goes to two servers started on the same tar: one with the fast path and
one with `--no-fast-path` (the reference); the bytes they send back must be equal once
the Date values are masked. Plaintext and TLS alike.
"""

import asyncio
import os
import re
import shutil
import signal
import socket
import ssl
import time

import pytest

from harness import connect, parse_responses, read_until_closed, start_server, wait_until, write_tree
from zeroserve.core.config import ServerConfig
from zeroserve.core.fastpath import FastTable, FastWorker
from zeroserve.core.handler import handle
from zeroserve.core.request import Request
from zeroserve.core.session import PlainSession
from zeroserve.core.site import Site
from zeroserve.core.static import StaticOptions
from zeroserve.core.world import World
from zeroserve.native._zsvm import ffi, lib

CSS = "body { color: #123456; }\n" * 40
FILES = {
    "index.html": "<h1>home</h1>",
    "about/index.html": "<h1>about</h1>",
    "404.html": "<h1>lost</h1>",
    "style.css": CSS,
    "style.css.gz": "not really gzip, but a sibling all the same",
    "docs/page.html": "<p>page</p>",
    "empty.txt": "",
    "data.json": '{"a": 1}',
    "inline.bin": bytes(range(256)) * 256,  # 64 KiB: held in memory
    "pread.bin": bytes(range(255)) * 257 + b"x",  # 64 KiB + 1: read from the tar per request
    "mid.bin": os.urandom(200 * 1024),
    "big.bin": os.urandom(1024 * 1024),  # above the fast path's body bound: Python sends it
    "caf\u00e9.txt": "accent",
    ".zeroserve/private.json": '{"secret": true}',
}
HOST = "Host: localhost\r\n"
CLOSE = b"GET /empty.txt HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
# Requests the fast path answers, and requests it leaves to Python; every one must get the same bytes.
REQUESTS = {
    "root": "GET / HTTP/1.1\r\n" + HOST,
    "index": "GET /index.html HTTP/1.1\r\n" + HOST,
    "dir": "GET /about HTTP/1.1\r\n" + HOST,
    "dir_slash": "GET /about/ HTTP/1.1\r\n" + HOST,
    "try_html": "GET /docs/page HTTP/1.1\r\n" + HOST,
    "try_html_slash": "GET /docs/page/ HTTP/1.1\r\n" + HOST,
    "css": "GET /style.css HTTP/1.1\r\n" + HOST,
    "json_query": "GET /data.json?x=1&y=%20z HTTP/1.1\r\n" + HOST,
    "empty": "GET /empty.txt HTTP/1.1\r\n" + HOST,
    "inline_64k": "GET /inline.bin HTTP/1.1\r\n" + HOST,
    "pread_64k_plus_1": "GET /pread.bin HTTP/1.1\r\n" + HOST,
    "mid_200k": "GET /mid.bin HTTP/1.1\r\n" + HOST,
    "big_1m": "GET /big.bin HTTP/1.1\r\n" + HOST,
    "missing": "GET /no/such/file HTTP/1.1\r\n" + HOST,
    "private": "GET /.zeroserve/private.json HTTP/1.1\r\n" + HOST,
    "head": "HEAD /style.css HTTP/1.1\r\n" + HOST,
    "head_missing": "HEAD /nope HTTP/1.1\r\n" + HOST,
    "head_big": "HEAD /big.bin HTTP/1.1\r\n" + HOST,
    "host_port_case": "GET /index.html HTTP/1.1\r\nHost: LocalHost:8443\r\n",
    "many_headers": "GET / HTTP/1.1\r\n" + HOST + "".join(f"X-H{i}: v{i}\r\n" for i in range(30)),
    "http10_keep_alive": "GET /index.html HTTP/1.0\r\nHost: localhost\r\nConnection: keep-alive\r\n",
    "gzip_client": "GET /style.css HTTP/1.1\r\n" + HOST + "Accept-Encoding: gzip\r\n",
    "gzip_client_other_file": "GET /index.html HTTP/1.1\r\n" + HOST + "Accept-Encoding: gzip\r\n",
    "if_none_match": 'GET /index.html HTTP/1.1\r\n' + HOST + 'If-None-Match: "x", *\r\n',
    "if_modified_since": "GET /index.html HTTP/1.1\r\n" + HOST + "If-Modified-Since: Sun, 06 Nov 2044 08:49:37 GMT\r\n",
    "range": "GET /mid.bin HTTP/1.1\r\n" + HOST + "Range: bytes=10-99\r\n",
    "percent": "GET /caf%C3%A9.txt HTTP/1.1\r\n" + HOST,
    "dot_segments": "GET /about/../index.html HTTP/1.1\r\n" + HOST,
    "double_slash": "GET //index.html HTTP/1.1\r\n" + HOST,
    "escape_root": "GET /../index.html HTTP/1.1\r\n" + HOST,
    "post": "POST /index.html HTTP/1.1\r\n" + HOST + "Content-Length: 3\r\n\r\nabc",
    "options": "OPTIONS * HTTP/1.1\r\n" + HOST,
    "absolute_form": "GET http://localhost/index.html HTTP/1.1\r\n" + HOST,
    "connection_upgrade_list": "GET / HTTP/1.1\r\n" + HOST + "Connection: keep-alive, TE\r\n",
}
# Requests after which the server closes: sent alone.
LAST_REQUESTS = {
    "http10": "GET /index.html HTTP/1.0\r\nHost: localhost\r\n",
    "connection_close": "GET /style.css HTTP/1.1\r\n" + HOST + "Connection: close\r\n",
    "no_host": "GET /index.html HTTP/1.1\r\n",
    "two_hosts": "GET / HTTP/1.1\r\n" + HOST + HOST,
    "bad_header": "GET / HTTP/1.1\r\n" + HOST + "Bad Header: x\r\n",
}
_DATE = re.compile(rb"\r\ndate: [^\r]*\r\n")


def _wire(text):
    return text.encode("latin-1") + (b"" if text.endswith("abc") else b"\r\n")



@pytest.fixture(scope="module")
def site(make_site):
    return make_site(FILES)


def _start(request, tar, pki, *flags):
    return start_server(request, tar, "--try-html", "--tls-addr", "127.0.0.1:0", "--cert", str(pki.leaf_cert),
                        "--key", str(pki.leaf_key), *flags)


@pytest.fixture(scope="module")
def servers(request, site, pki):
    """(fast path, Python path) servers of the same site."""
    return _start(request, site, pki), _start(request, site, pki, "--no-fast-path")


def _client_context(pki):
    context = ssl.create_default_context(cafile=str(pki.ca_cert))
    context.set_alpn_protocols(["http/1.1"])
    return context


def _open(server, tls, pki, sni="localhost"):
    sock = connect(server.tls_port if tls else server.port)
    if tls:
        sock = _client_context(pki).wrap_socket(sock, server_hostname=sni)
    return sock


# The first request of a connection: it goes to the Python path (which picks the protocol), so the
# payload after it meets the fast path.
WARM_UP = b"GET /warm-up HTTP/1.1\r\nHost: localhost\r\n\r\n"


def _converse(server, payload, tls, pki, sni="localhost"):
    """Everything the server sends for `payload` (after a warm-up request) until it closes, Date values masked."""
    with _open(server, tls, pki, sni) as sock:
        sock.settimeout(10)
        reader = _Reader(sock)
        sock.sendall(WARM_UP)
        assert reader.response().startswith(b"HTTP/1.1 ")
        sock.sendall(payload)
        data = reader.take() + read_until_closed(sock)
    return _DATE.sub(b"\r\ndate: -\r\n", data)


def _same(servers, payload, tls, pki, sni="localhost"):
    fast, python = servers
    got = _converse(fast, payload, tls, pki, sni)
    expected = _converse(python, payload, tls, pki, sni)
    assert got == expected
    return got


TRANSPORTS = pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])


@TRANSPORTS
@pytest.mark.parametrize("name", sorted(REQUESTS))
def test_fastpath_request_gets_python_path_bytes(servers, pki, tls, name):
    """A request (fast or not) followed by a closing one gets the bytes the Python path sends."""
    data = _same(servers, _wire(REQUESTS[name]) + CLOSE, tls, pki)
    assert data.startswith(b"HTTP/1.1 ")


@TRANSPORTS
@pytest.mark.parametrize("name", sorted(LAST_REQUESTS))
def test_fastpath_closing_request_gets_python_path_bytes(servers, pki, tls, name):
    """A request the connection ends after gets the bytes the Python path sends, then the close."""
    data = _same(servers, _wire(LAST_REQUESTS[name]), tls, pki)
    assert data.startswith(b"HTTP/1.")


@TRANSPORTS
def test_fastpath_pipelined_mix_keeps_order(servers, pki, tls):
    """Fast and slow requests pipelined in one write are answered in order, as the Python path does."""
    names = ["root", "range", "css", "gzip_client", "mid_200k", "big_1m", "missing", "if_none_match", "head",
             "percent", "inline_64k", "post", "dir", "pread_64k_plus_1"]
    payload = b"".join(_wire(REQUESTS[name]) for name in names) + CLOSE
    data = _same(servers, payload, tls, pki)
    statuses = [response.status for response in parse_responses(data, head_only=(names.index("head"),))]
    assert statuses == [200, 206, 200, 200, 200, 200, 404, 304, 200, 200, 200, 405, 200, 200, 200]


@TRANSPORTS
def test_fastpath_keep_alive_sequence_matches(servers, pki, tls):
    """One request per write on one keep-alive connection: every answer is the Python path's."""
    names = ["root", "css", "missing", "mid_200k", "gzip_client", "dir_slash", "inline_64k", "range", "empty",
             "head_big", "big_1m", "json_query"]
    answers = []
    for server in servers:
        with _open(server, tls, pki) as sock:
            sock.settimeout(10)
            reader = _Reader(sock)
            got = []
            for name in names:
                sock.sendall(_wire(REQUESTS[name]))
                got.append(reader.response(head_only=name.startswith("head")))
            answers.append(got)
    assert answers[0] == answers[1]
    assert [a.split(b" ", 2)[1] for a in answers[0]] == [b"200", b"200", b"404", b"200", b"200", b"200", b"200",
                                                          b"206", b"200", b"200", b"200", b"200"]


class _Reader:
    """Content-Length framed responses read one by one from a keep-alive socket, Date masked."""

    def __init__(self, sock):
        self._sock = sock
        self._data = b""

    def _more(self, what):
        chunk = self._sock.recv(65536)
        assert chunk, f"closed {what}"
        self._data += chunk

    def response(self, head_only=False):
        while b"\r\n\r\n" not in self._data:
            self._more("before a response head")
        head, _, rest = self._data.partition(b"\r\n\r\n")
        length = 0 if head_only else int(re.search(rb"\r\ncontent-length: (\d+)", head).group(1))
        while len(rest) < length:
            self._more("inside a body")
            head, _, rest = self._data.partition(b"\r\n\r\n")
        self._data = rest[length:]
        return _DATE.sub(b"\r\ndate: -\r\n", head + b"\r\n\r\n" + rest[:length])

    def take(self):
        """The bytes read past the last response."""
        data, self._data = self._data, b""
        return data


@pytest.fixture(scope="module")
def host_servers(request, site, pki):
    """(fast, Python) servers that answer only Host localhost or site-a.test."""
    flags = ("--validate-hostnames", "localhost,site-a.test")
    return _start(request, site, pki, *flags), _start(request, site, pki, "--no-fast-path", *flags)


@TRANSPORTS
@pytest.mark.parametrize("host", ["localhost", "SITE-A.test:99", "other.test", "site-a.test.evil"])
def test_fastpath_validate_hostnames_matches(host_servers, pki, tls, host):
    """--validate-hostnames: listed hosts get the file, others the 421, exactly as on the Python path."""
    payload = f"GET /index.html HTTP/1.1\r\nHost: {host}\r\n\r\n".encode() + CLOSE
    data = _same(host_servers, payload, tls, pki)
    # Over TLS the Host must also be the SNI (localhost).
    listed = host.split(":")[0].lower() in (("localhost",) if tls else ("localhost", "site-a.test"))
    assert data.startswith(b"HTTP/1.1 200 OK" if listed else b"HTTP/1.1 421 ")


@pytest.mark.parametrize("host", ["localhost", "site-a.test"])
def test_fastpath_sni_mismatch_gets_421(servers, pki, host):
    """Over TLS with SNI localhost, a Host naming another server gets 421 from both paths."""
    payload = f"GET /index.html HTTP/1.1\r\nHost: {host}\r\n\r\n".encode() + CLOSE
    data = _same(servers, payload, True, pki, sni="localhost")
    assert data.startswith(b"HTTP/1.1 200 OK" if host == "localhost" else b"HTTP/1.1 421 ")


@pytest.fixture(scope="module")
def logging_servers(request, site, pki):
    """Fast and Python servers with text and JSON access logs."""
    return {(fmt, fast): _start(request, site, pki, "--log-format", fmt, *(() if fast else ("--no-fast-path",)))
            for fmt in ("text", "json") for fast in (True, False)}


_LOG_VARIES = re.compile(r'(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ|[0-9a-f]{8}-[0-9a-f]+|127\.0\.0\.1:\d+|\d+(\.\d+)?ms'
                         r'|"duration_ms":[0-9.e-]+)')


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_fastpath_access_log_lines_match(logging_servers, pki, fmt):
    """The fast path's access-log lines have the Python path's fields and format, in request order."""
    payload = b"".join(_wire(REQUESTS[name]) for name in ("root", "head", "missing", "json_query", "percent")) + CLOSE
    lines = {}
    for fast in (True, False):
        server = logging_servers[fmt, fast]
        start = len(server.lines)
        _converse(server, payload, False, pki)
        wait_until(lambda: len(_request_lines(server, start)) >= 7)
        lines[fast] = [_LOG_VARIES.sub("*", line) for line in _request_lines(server, start)]
    assert lines[True] == lines[False]
    assert len(lines[True]) == 7  # the warm-up request's line too


@TRANSPORTS
def test_fastpath_request_ids_count_on_across_paths(logging_servers, pki, tls):
    """Requests served in C and in Python on one connection get consecutive ids from one counter."""
    server = logging_servers["text", True]
    start = len(server.lines)
    payload = b"".join(_wire(REQUESTS[name]) for name in ("root", "percent", "css", "range")) + CLOSE
    _converse(server, payload, tls, pki)
    wait_until(lambda: len(_request_lines(server, start)) >= 6)
    ids = [int(re.search(r" [0-9a-f]{8}-([0-9a-f]+) ", line).group(1), 16) for line in _request_lines(server, start)]
    assert len(ids) == 6  # the warm-up request's too
    assert ids == list(range(ids[0], ids[0] + 6))


def _request_lines(server, start):
    return [line for line in server.lines[start:] if line.startswith(("[request]", "{"))]


def _worker_rss_kib(server):
    (pid,) = server.worker_pids()
    status = open(f"/proc/{pid}/status").read()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1))


@TRANSPORTS
def test_fastpath_unread_answers_keep_memory_bounded(request, site, pki, tls):
    """A client that pipelines 300 requests of a 200 KiB file and reads nothing does not grow the worker by 60 MB."""
    server = _start(request, site, pki)
    before = _worker_rss_kib(server)
    count = 300
    with _open(server, tls, pki) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        sock.sendall(_wire(REQUESTS["mid_200k"]) * count)
        time.sleep(1.5)  # the server answers until the socket and its buffers are full
        grown = _worker_rss_kib(server) - before
        received = 0
        sock.settimeout(10)
        while received < count * 200 * 1024:
            chunk = sock.recv(1 << 20)
            assert chunk
            received += len(chunk)
    assert grown < 20 * 1024, f"the worker grew by {grown} KiB"


def test_fastpath_reload_with_open_keep_alive_connection(request, make_site, pki, tmp_path):
    """After a reload, a keep-alive connection answered in C gets the new site's bytes, not the old tar's."""
    old = make_site({"v.txt": "old site", "big.bin": b"o" * 100_000})
    new = make_site({"v.txt": "new site!", "big.bin": b"n" * 100_000})
    live = tmp_path / "live.tar"
    shutil.copyfile(old, live)
    server = _start(request, live, pki)
    with _open(server, False, pki) as sock:
        sock.settimeout(10)
        reader = _Reader(sock)
        sock.sendall(b"GET /v.txt HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert reader.response().endswith(b"\r\n\r\nold site")
        staging = tmp_path / "live.new"
        shutil.copyfile(new, staging)
        os.replace(staging, live)
        start = len(server.lines)
        server.signal(signal.SIGHUP)
        server.wait_for(r"loaded \d+ entries", start=start)
        deadline = time.monotonic() + 10
        while True:
            sock.sendall(b"GET /v.txt HTTP/1.1\r\nHost: localhost\r\n\r\n"
                         b"GET /big.bin HTTP/1.1\r\nHost: localhost\r\n\r\n")
            small, big = reader.response(), reader.response()
            if small.endswith(b"new site!") or time.monotonic() > deadline:
                break
            time.sleep(0.05)
    assert small.endswith(b"\r\n\r\nnew site!")
    assert big.endswith(b"\r\n\r\n" + b"n" * 100_000)


def test_fastpath_pump_answers_every_pipelined_head_in_one_call(site):
    """In process: one pump call on a real socket answers three pipelined GETs in C and returns the slow rest."""
    config = ServerConfig(site_path=str(site), try_html=True, request_logging=False)
    fast = _wire(REQUESTS["root"]) + _wire(REQUESTS["css"]) + _wire(REQUESTS["missing"])
    slow = _wire(REQUESTS["range"]) + _wire(REQUESTS["root"])

    async def exchange(opened, left, right):
        transport, _ = await asyncio.get_running_loop().connect_accepted_socket(asyncio.Protocol, left)
        worker = FastWorker(config)
        connection = worker.connection(transport, PlainSession(), ("127.0.0.1", 1), None)
        rest = connection.pump(fast + slow, FastTable(opened, StaticOptions(try_html=True), frozenset(), None))
        transport.close()
        return rest, worker.next_request_id()

    with Site.open(site) as opened:
        left, right = socket.socketpair()
        with right:
            rest, next_id = asyncio.run(exchange(opened, left, right))
            right.settimeout(5)
            data = b""
            while not data.endswith(FILES["404.html"].encode()):
                data += right.recv(65536)
    assert rest == slow
    assert [r.status for r in parse_responses(data)] == [200, 200, 404]
    assert next_id.endswith("-4")  # the three C answers took ids 1 to 3


@pytest.mark.parametrize("head, expected", [
    (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", 27),
    (b"GET / HTTP/1.1\r\nHost: a\r\n", 0),
    (b"GE", 0),
    (b"GET /a%41 HTTP/1.1\r\nHost: a\r\n\r\n", -1),
    (b"GET /a/./b HTTP/1.1\r\nHost: a\r\n\r\n", -1),
    (b"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", -1),
    (b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n", -1),
    (b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n", -1),
    (b"GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n", -1),
    (b"GET / HTTP/1.1\nHost: a\n\n", -1),
    (b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", -1),
    (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: a\r\n\r\n", -1),
    (b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 101 + b"Host: a\r\n\r\n", -1),
])
def test_fastpath_parser_takes_only_what_it_is_sure_of(head, expected):
    """The C head parser accepts the plain GET, waits for a partial one and hands everything else to Python."""
    limits = ffi.new("struct zs_fast_limits *", (65536, 100, 8192))
    parsed = ffi.new("struct zs_fast_head *")
    assert lib.zs_fast_parse_head(head, len(head), limits, parsed) == expected


# -- a site with a script chain C runs (only C helpers) ------------------------------------------------------

_CHAIN_SCRIPT = r"""#include "zeroserve.h"

static int starts(const char *path, zs_s64 len, const char *prefix)
{
    zs_u64 n = zs_strlen(prefix);
    return len >= (zs_s64)n && zs_strncmp(path, prefix, n) == 0;
}

ZS_ENTRY zs_u64 entry(void)
{
    char path[128];
    zs_s64 len = zs_req_path(path, sizeof path);
    if (len < 0 || len >= (zs_s64)sizeof path)
        return 0;
    if (starts(path, len, "/plain"))
        return 0;
    zs_meta_set(ZS_STR("zs.response.header.x-bench"), ZS_STR("script"));
    if (starts(path, len, "/typed"))
        zs_meta_set(ZS_STR("zs.response.header.content-type"), ZS_STR("text/x-test"));
    if (starts(path, len, "/api/")) {
        zs_s64 reply = zs_json_new_object();
        zs_s64 value = zs_json_new_object();
        zs_json_set_string(value, path, len);
        zs_json_set(reply, ZS_STR("path"), value);
        zs_json_respond(200, reply);
    } else if (starts(path, len, "/teapot")) {
        zs_meta_set(ZS_STR("zs.response.header.content-length"), ZS_STR("5"));
        zs_respond(418, "short", 5);
    } else if (starts(path, len, "/odd")) {
        zs_respond(299, "odd", 3);
    } else if (starts(path, len, "/log")) {
        zs_log(ZS_STR("a line from the script\n"));
    } else if (starts(path, len, "/rewrite")) {
        zs_req_set_uri(ZS_STR("/index.html"));
    } else if (starts(path, len, "/proxy")) {
        char upstream[64];
        zs_s64 n = zs_req_header(ZS_STR("x-upstream"), upstream, sizeof upstream);
        if (n > 0 && n < (zs_s64)sizeof upstream)
            zs_reverse_proxy(upstream, n);
    } else if (starts(path, len, "/abort")) {
        zs_abort();
    } else if (starts(path, len, "/fault")) {
        volatile char *nowhere = (volatile char *)0;
        return *nowhere;
    }
    return 0;
}
"""
CHAIN_FILES = {
    "index.html": "<h1>home</h1>",
    "tagged.html": "<p>from <zs-meta>zs.response.header.x-bench</zs-meta></p>",
    "typed/page.txt": "text",
    "plain/page.html": "<p>no metadata</p>",
    "style.css": CSS,
    ".zeroserve/scripts/10-chain.c": _CHAIN_SCRIPT,
}
CHAIN_REQUESTS = {
    "static_with_header": "GET /style.css HTTP/1.1\r\n" + HOST,
    "html_template_unchanged": "GET /index.html HTTP/1.1\r\n" + HOST,
    "html_template_head": "HEAD /index.html HTTP/1.1\r\n" + HOST,
    "html_template_tags": "GET /tagged.html HTTP/1.1\r\n" + HOST,
    "header_replaces_content_type": "GET /typed/page.txt HTTP/1.1\r\n" + HOST,
    "no_metadata": "GET /plain/page.html HTTP/1.1\r\n" + HOST,
    "not_found_with_header": "GET /nothing HTTP/1.1\r\n" + HOST,
    "json": "GET /api/item?x=1 HTTP/1.1\r\n" + HOST,
    "json_head": "HEAD /api/item HTTP/1.1\r\n" + HOST,
    "respond_replaced_length": "GET /teapot HTTP/1.1\r\n" + HOST,
    "respond_unknown_status": "GET /odd HTTP/1.1\r\n" + HOST,
    "script_log": "GET /log HTTP/1.1\r\n" + HOST,
    "rewrite": "GET /rewrite HTTP/1.1\r\n" + HOST,
    "fault": "GET /fault HTTP/1.1\r\n" + HOST,
    "json_http10": "GET /api/x HTTP/1.0\r\nHost: localhost\r\nConnection: keep-alive\r\n",
}


@pytest.fixture(scope="module")
def chain_tar(make_site, tmp_path_factory):
    source = tmp_path_factory.mktemp("chain-site")
    write_tree(source, CHAIN_FILES)
    return make_site(source)  # a directory: packed with the script compiler


@pytest.fixture(scope="module")
def chain_servers(request, chain_tar, pki):
    """(fast path, Python path) servers of a site whose script C runs on every request."""
    return _start(request, chain_tar, pki), _start(request, chain_tar, pki, "--no-fast-path")


def test_fastpath_pump_runs_the_chain_in_c(chain_tar):
    """In process: once the Python path has filled the chain's pools, C runs the scripts and answers itself."""
    config = ServerConfig(site_path=str(chain_tar), request_logging=False)
    world = World.build(config)
    try:
        warm_up = Request("GET", "/api/first", [("host", "localhost")], "1.1", "http", ("127.0.0.1", 1), "w-1", 0.0,
                          authority="localhost")
        assert handle(warm_up, world).status == 200  # a connection's first request: Python runs the chain

        async def exchange(left):
            transport, _ = await asyncio.get_running_loop().connect_accepted_socket(asyncio.Protocol, left)
            connection = FastWorker(config).connection(transport, PlainSession(), ("127.0.0.1", 1), None)
            payload = _wire(CHAIN_REQUESTS["json"]) + _wire(CHAIN_REQUESTS["static_with_header"])
            rest = connection.pump(payload, world.fast_table)
            transport.close()
            return rest

        left, right = socket.socketpair()
        with right:
            assert asyncio.run(exchange(left)) == b""  # both answered in C
            right.settimeout(5)
            data = b""
            while not data.endswith(CSS.encode()):
                data += right.recv(65536)
    finally:
        world.retire()
    json_answer, css_answer = parse_responses(data)
    assert json_answer.body == b'{"path":"/api/item"}'
    assert css_answer.headers["x-bench"] == "script"


_REQUEST_ID = re.compile(rb"\(request [0-9a-f]{8}-[0-9a-f]+\)")


@TRANSPORTS
@pytest.mark.parametrize("name", sorted(CHAIN_REQUESTS))
def test_fastpath_chain_request_gets_python_path_bytes(chain_servers, pki, tls, name):
    """With a script chain, each outcome (static + headers, respond, handed-over) gets the Python path's bytes."""
    payload = _wire(CHAIN_REQUESTS[name]) + CLOSE
    fast, python = chain_servers
    got, expected = (_REQUEST_ID.sub(b"(request -)", _converse(server, payload, tls, pki)) for server in (fast, python))
    assert got == expected
    assert got.startswith(b"HTTP/1.1 ")


@TRANSPORTS
def test_fastpath_chain_pipelined_mix_keeps_order(chain_servers, pki, tls):
    """Pipelined requests whose scripts end every way are answered in order, as on the Python path."""
    names = ["json", "static_with_header", "script_log", "html_template_tags", "respond_replaced_length",
             "rewrite", "not_found_with_header", "html_template_unchanged", "fault", "json"]
    payload = b"".join(_wire(CHAIN_REQUESTS[name]) for name in names) + CLOSE
    fast, python = chain_servers
    raw = _converse(fast, payload, tls, pki)
    assert _REQUEST_ID.sub(b"(request -)", raw) == _REQUEST_ID.sub(b"(request -)", _converse(python, payload, tls, pki))
    assert [r.status for r in parse_responses(raw)] == [200, 200, 404, 200, 418, 200, 404, 200, 500, 200, 404]


def test_fastpath_chain_abort_closes_without_answer(chain_servers, pki):
    """zs_abort reached from C closes the connection after the answers before it, as on the Python path."""
    payload = _wire(CHAIN_REQUESTS["json"]) + _wire("GET /abort HTTP/1.1\r\n" + HOST) + CLOSE
    got = _same(chain_servers, payload, False, pki)
    assert [r.status for r in parse_responses(got)] == [200]


def test_fastpath_chain_script_log_lines_are_written(chain_servers, pki):
    """A script's zs_log line reaches stderr when C hands its request over."""
    fast, _ = chain_servers
    start = len(fast.lines)
    _converse(fast, _wire(CHAIN_REQUESTS["script_log"]) + CLOSE, False, pki)
    fast.wait_for(r"\[user_log\] [0-9a-f]{8}-[0-9a-f]+: 10-chain\.o?: a line from the script", start=start)


@TRANSPORTS
def test_fastpath_chain_proxy_is_handed_over(chain_servers, servers, pki, tls):
    """zs_reverse_proxy decided in C is carried out by Python: the upstream's answer, as on the Python path."""
    upstream = f"http://127.0.0.1:{servers[1].port}"
    payload = (f"GET /proxy/index.html HTTP/1.1\r\nHost: localhost\r\nX-Upstream: {upstream}\r\n\r\n".encode()
               + _wire(CHAIN_REQUESTS["json"]) + CLOSE)
    responses = parse_responses(_same(chain_servers, payload, tls, pki))
    assert [r.status for r in responses] == [404, 200, 404]
    assert responses[0].body == FILES["404.html"].encode()  # the upstream's own 404 page


def test_fastpath_close_notify_after_request_in_one_read(servers, pki):
    """A request and the client's close_notify in one TCP write: the answer comes, then the server closes too."""
    answers = []
    for server in servers:
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = _client_context(pki).wrap_bio(incoming, outgoing, server_hostname="localhost")
        with connect(server.tls_port) as sock:
            sock.settimeout(10)
            while True:  # the handshake, by hand over the memory BIOs
                try:
                    tls.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    sock.sendall(outgoing.read())
                    incoming.write(sock.recv(65536))
            tls.write(WARM_UP)
            sock.sendall(outgoing.read())
            received = b""
            while b"\r\n\r\n" not in received:  # the warm-up's answer (a head-only 404 page is short)
                incoming.write(sock.recv(65536))
                try:
                    received += tls.read(65536)
                except ssl.SSLWantReadError:
                    pass
            tls.write(_wire(REQUESTS["css"]))
            try:
                tls.unwrap()
            except ssl.SSLWantReadError:
                pass  # our close_notify is written; the server's comes later
            sock.sendall(outgoing.read())
            received = b""
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                incoming.write(data)
                try:
                    received += tls.read(65536)
                except (ssl.SSLWantReadError, ssl.SSLZeroReturnError):
                    pass
            answers.append(_DATE.sub(b"\r\ndate: -\r\n", received))
    assert answers[0] == answers[1]
    assert answers[0].startswith(b"HTTP/1.1 200 OK") and answers[0].endswith(CSS.encode())
