"""The benchmark workloads: each one a declarative entry saying what both servers serve and how the client asks.

Adding a workload is adding one `Workload(...)` to WORKLOADS. The harness writes `site` into a directory that
nginx uses as its root and zeroserve packs (with `zeroserve_scripts` under `.zeroserve/scripts/`), checks
that both servers answer `path` with `expected_status` (and `expected_body` when given), then loads them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Mapping

CLIENTS = ("wrk", "h2load")
# Stands for the origin's 127.0.0.1:PORT in a workload's scripts and nginx directives until the harness knows it.
ORIGIN = "@ORIGIN@"


@dataclass(frozen=True)
class Transport:
    """How the client talks to a server in one run: TLS 1.3 or plaintext, and which load generator."""

    tls: bool
    client: str  # "wrk" speaks HTTP/1.1; "h2load" speaks HTTP/2 (h2 over TLS, h2c prior knowledge without)

    @property
    def h2(self) -> bool:
        return self.client == "h2load"

    @property
    def label(self) -> str:
        return ("h2" if self.tls else "h2c") if self.h2 else ("https/1.1" if self.tls else "http/1.1")


@dataclass(frozen=True)
class Workload:
    """One thing to measure, described the same way for zeroserve and for nginx."""

    name: str  # what --workloads selects, e.g. "a"
    title: str  # one line for the results table
    site: Mapping[str, bytes]  # relative path -> content, served by both servers
    path: str  # the request path
    expected_status: int = 200
    expected_body: bytes | None = None  # None: only the status is checked before the run
    request_headers: tuple[str, ...] = ()  # extra "Name: value" headers the client sends
    zeroserve_scripts: Mapping[str, str] = field(default_factory=dict)  # file name -> C source of a script
    zeroserve_flags: tuple[str, ...] = ()  # extra `zeroserve run` flags
    nginx_modules: tuple[str, ...] = ()  # dynamic modules to load, e.g. ("ndk_http_module", "ngx_http_lua_module")
    nginx_http: str = ""  # directives at nginx's http level (upstream blocks, limit_req_zone ...)
    nginx_location: str = ""  # directives inside nginx's `location / { }`
    client: str | None = None  # a fixed load generator; None follows --h2
    tls: bool | None = None  # fixed TLS on/off; None follows --tls
    origin: bool = False  # both servers proxy to a keep-alive nginx serving `site` at ORIGIN
    caddy_site: str = "file_server"  # directives in Caddy's site block (its root is the site)
    # An ASGI app's source defining `app` (SITE_ROOT names the site directory); None: Granian serves the
    # site itself (--static-path-mount).
    granian_app: str | None = None
    unsupported: tuple[str, ...] = ()  # servers that cannot do this workload without add-ons: not run

    def __post_init__(self):
        if self.client not in (None, *CLIENTS):
            raise ValueError(f"workload {self.name!r}: client must be one of {CLIENTS} or None, not {self.client!r}")

    def with_origin(self, address: str) -> Workload:
        """Returns this workload with ORIGIN replaced by the origin's address in its scripts and nginx directives."""
        return replace(
            self,
            zeroserve_scripts=MappingProxyType(
                {name: code.replace(ORIGIN, address) for name, code in self.zeroserve_scripts.items()}
            ),
            nginx_http=self.nginx_http.replace(ORIGIN, address),
            nginx_location=self.nginx_location.replace(ORIGIN, address),
            caddy_site=self.caddy_site.replace(ORIGIN, address),
        )

    def transport(self, tls: bool, h2: bool) -> Transport:
        """Returns the transport for this workload given the command line's --tls and --h2."""
        return Transport(
            tls=self.tls if self.tls is not None else tls,
            client=self.client or ("h2load" if h2 else "wrk"),
        )


def static_file(name: str, title: str, file_path: str, content: bytes, **settings) -> Workload:
    """A workload that fetches one file, identical on both servers; `settings` are further Workload fields."""
    return Workload(
        name=name,
        title=title,
        site=MappingProxyType({file_path: content}),
        path="/" + file_path,
        expected_body=content,
        **settings,
    )


# (e), (f) Every request proxied to the origin: by zs_reverse_proxy on zeroserve, by proxy_pass on nginx, both
# keeping their upstream connections alive.
_PROXY_SCRIPT = f"""#include "zeroserve.h"

ZS_ENTRY zs_u64 entry(void)
{{
    zs_reverse_proxy(ZS_STR("http://{ORIGIN}"));
    return 0;
}}
"""


def proxied_file(name: str, title: str, file_path: str, content: bytes) -> Workload:
    """A workload that fetches one file through each server from a keep-alive nginx origin on loopback."""
    return static_file(
        name,
        title,
        file_path,
        content,
        zeroserve_scripts=MappingProxyType({"10-proxy.c": _PROXY_SCRIPT}),
        nginx_http=f"upstream origin {{\n    server {ORIGIN};\n    keepalive 128;\n}}",
        nginx_location='proxy_pass http://origin;\nproxy_http_version 1.1;\nproxy_set_header Connection "";',
        caddy_site=f"reverse_proxy {ORIGIN}",  # keeps its upstream connections alive by default
        unsupported=("granian",),  # an ASGI proxy app would measure an HTTP client library, not Granian
        origin=True,
    )


def _html_of_size(size: int) -> bytes:
    """Returns a small valid HTML page padded to exactly `size` bytes."""
    head = b"<!doctype html>\n<html><head><title>zeroserve bench</title></head><body><p>"
    tail = b"</p></body></html>\n"
    return head + b"x" * (size - len(head) - len(tail)) + tail


def _text_of_size(size: int) -> bytes:
    """Returns `size` bytes of deterministic, incompressible-looking hex text."""
    chunks, counter = [], 0
    while sum(map(len, chunks)) < size:
        chunks.append(hashlib.sha256(counter.to_bytes(8, "big")).hexdigest().encode() + b"\n")
        counter += 1
    return b"".join(chunks)[:size]


_LUA_MODULES = ("ndk_http_module", "ngx_http_lua_module")

# (c) The small file of (a) plus one response header: added by a script on zeroserve, by Lua on nginx.
_HEADER_SCRIPT = """#include "zeroserve.h"

ZS_ENTRY zs_u64 entry(void)
{
    zs_meta_set(ZS_STR("zs.response.header.x-bench"), ZS_STR("script"));
    return 0;
}
"""

# (d) A JSON body built per request from the method and path: by a script on zeroserve, by Lua on nginx.
_JSON_SCRIPT = """#include "zeroserve.h"

ZS_ENTRY zs_u64 entry(void)
{
    char method[16], path[128];
    zs_req_method(method, sizeof method);
    zs_s64 path_len = zs_req_path(path, sizeof path);
    if (path_len >= (zs_s64)sizeof path)
        return 0;
    zs_s64 reply = zs_json_new_object();
    zs_s64 value = zs_json_new_object();
    zs_json_set_string(value, ZS_STR(method));
    zs_json_set(reply, ZS_STR("method"), value);
    zs_json_set_string(value, path, path_len);
    zs_json_set(reply, ZS_STR("path"), value);
    zs_json_respond(200, reply);
    return 0;
}
"""
_JSON_LUA = r"""default_type application/json;
content_by_lua_block {
    ngx.print('{"method":"' .. ngx.req.get_method() .. '","path":"' .. ngx.var.uri .. '"}')
}"""
_JSON_CADDY = """header Content-Type application/json
respond `{"method":"{method}","path":"{path}"}` 200"""
_JSON_ASGI = """import json

_HEADERS = [(b"content-type", b"application/json")]


async def app(scope, receive, send):
    body = json.dumps({"method": scope["method"], "path": scope["path"]}, separators=(",", ":")).encode()
    await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
    await send({"type": "http.response.body", "body": body})
"""
# Granian sends the file itself through the ASGI pathsend extension; the app adds the header.
_HEADER_ASGI = """import os

_PATH = os.path.join(SITE_ROOT, "small.html")
_HEADERS = [(b"content-type", b"text/html"), (b"x-bench", b"script")]


async def app(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
    await send({"type": "http.response.pathsend", "path": _PATH})
"""


# (ratelimit) Every request checked against its client address's token bucket, with a limit far above what
# the client sends, so the run measures the check: zs_rate_limit on zeroserve, limit_req on nginx.
_RATELIMIT_SCRIPT = r"""#include "zeroserve.h"

ZS_ENTRY zs_u64 entry(void)
{
    char peer[64];
    zs_req_peer(peer, sizeof peer);
    char *port = zs_strrchr(peer, ':');
    if (port)
        *port = '\0';
    if (zs_rate_limit(ZS_STR(peer), 1000000, 0, 0) != ZS_RATE_LIMIT_ALLOWED)
        zs_respond(429, ZS_STR("Too Many Requests\n"));
    return 0;
}
"""

WORKLOADS: tuple[Workload, ...] = (
    static_file("a", "static file, 174 B", "small.html", _html_of_size(174)),
    static_file("b", "static file, 100 KiB", "large.txt", _text_of_size(100 * 1024)),
    static_file(
        "c",
        "static 174 B + a header from a script (nginx: Lua)",
        "small.html",
        _html_of_size(174),
        zeroserve_scripts=MappingProxyType({"10-header.c": _HEADER_SCRIPT}),
        nginx_modules=_LUA_MODULES,
        nginx_location='header_filter_by_lua_block { ngx.header["x-bench"] = "script" }',
        caddy_site="header x-bench script\nfile_server",
        granian_app=_HEADER_ASGI,
    ),
    Workload(
        name="d",
        title="JSON built by a script (nginx: Lua)",
        site=MappingProxyType({"index.html": b"unused"}),
        path="/api/item",
        expected_body=b'{"method":"GET","path":"/api/item"}',
        zeroserve_scripts=MappingProxyType({"10-json.c": _JSON_SCRIPT}),
        nginx_modules=_LUA_MODULES,
        nginx_location=_JSON_LUA,
        caddy_site=_JSON_CADDY,
        granian_app=_JSON_ASGI,
    ),
    proxied_file("e", "proxied to a keep-alive nginx origin, 174 B", "small.html", _html_of_size(174)),
    proxied_file("f", "proxied to a keep-alive nginx origin, 100 KiB", "large.txt", _text_of_size(100 * 1024)),
    # Every request on a new connection with a full TLS 1.3 handshake (wrk does not resume sessions),
    # so requests/s is handshakes/s.
    static_file(
        "handshake",
        "new TLS handshake per request, 174 B",
        "small.html",
        _html_of_size(174),
        request_headers=("Connection: close",),
        client="wrk",
        tls=True,
    ),
    static_file(
        "ratelimit",
        "static 174 B, rate-limited by client IP (nginx: limit_req)",
        "small.html",
        _html_of_size(174),
        zeroserve_scripts=MappingProxyType({"10-ratelimit.c": _RATELIMIT_SCRIPT}),
        zeroserve_flags=("--plugins", "ratelimit"),
        nginx_http="limit_req_zone $binary_remote_addr zone=per_ip:10m rate=1000000r/s;\nlimit_req_status 429;",
        nginx_location="limit_req zone=per_ip burst=1000000 nodelay;",
        unsupported=("caddy", "granian"),  # neither limits rates without a plugin
    ),
)


def select(names: str | None) -> list[Workload]:
    """Returns the workloads named in a comma-separated list (all when names is None), in list order."""
    by_name = {w.name: w for w in WORKLOADS}
    if names is None:
        return list(WORKLOADS)
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in wanted if n not in by_name]
    if unknown:
        raise SystemExit(f"bench: unknown workload(s) {', '.join(unknown)}; available: {', '.join(by_name)}")
    return [by_name[n] for n in wanted]
