"""Real upstreams for the proxy tests: a small HTTP/1.1 backend process in Python, nginx with its own config, and a
site whose script proxies to the upstream a request names.

The Python backend (run as `python proxy_backends.py (--port N | --unix PATH)`) answers:
  /echo...        JSON of the request as received: method, target, headers, body length and SHA-256
  /stats          JSON {"connections": accepted so far}
  /slow?s=S       the head after S seconds
  /die            a head announcing 100000 bytes, 1000 of them, then a close
  /sse            event 1, then event 2 only once /sse-release was requested (proves incremental delivery)
  /chunked?n=N    N chunks of 1000 bytes, chunked
  /bytes?n=N      N bytes (pattern b"0123456789abcdef"), Content-Length, written with back-pressure
  /close          a small body with Connection: close
  /drop-next      a small body, and the connection's next request is dropped without an answer
  /nobody?s=S     status S (204, 304) and no body; a HEAD of anything answers headers only
  /ws             a WebSocket echo (text and binary frames, close)
Body-less requests to other paths get 404.
"""

import asyncio
import base64
import hashlib
import json
import os
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import parse_qs

import httptools

from harness import free_port, write_tree
from zeroserve.core import pack
from zeroserve.core.compile import ScriptCompiler

PATTERN = b"0123456789abcdef"
_WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class _Backend(asyncio.Protocol):
    connections = 0
    sse_release = None  # an asyncio.Event

    def connection_made(self, transport):
        _Backend.connections += 1
        self.transport = transport
        self.parser = httptools.HttpRequestParser(self)
        self.drained = asyncio.Event()
        self.drained.set()
        self.ws = None
        self.drop_next = False

    def pause_writing(self):
        self.drained.clear()

    def resume_writing(self):
        self.drained.set()

    def data_received(self, data):
        if self.ws is not None:
            self.ws += data
            self._ws_frames()
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            self.ws = bytearray(data[upgrade.args[0]:])
            self._ws_accept()
        except httptools.HttpParserError:
            self.transport.close()

    def on_message_begin(self):
        self.url = b""
        self.headers = []
        self.digest = hashlib.sha256()
        self.size = 0

    def on_url(self, url):
        self.url += url

    def on_header(self, name, value):
        self.headers.append([name.decode("latin-1"), value.decode("latin-1")])

    def on_body(self, body):
        self.size += len(body)
        self.digest.update(body)

    def on_message_complete(self):
        if self.parser.should_upgrade():
            return
        self.method = self.parser.get_method().decode()
        self.keep = self.parser.should_keep_alive()
        asyncio.ensure_future(self._respond(self.url.decode("latin-1")))

    def _send(self, status, headers, body=b""):
        lines = [f"HTTP/1.1 {status} X"] + [f"{n}: {v}" for n, v in headers]
        if not self.keep:
            lines.append("connection: close")
        self.transport.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        if not self.keep:
            self.transport.close()

    async def _respond(self, target):
        if self.drop_next:  # an idle keep-alive connection the server closed just as a request arrived
            self.transport.close()
            return
        path, _, query = target.partition("?")
        args = {k: v[0] for k, v in parse_qs(query).items()}
        if self.method == "HEAD":
            return self._send(200, [("content-length", "100"), ("x-head", "yes")])
        if path.startswith("/echo"):
            body = json.dumps({"method": self.method, "target": target, "headers": self.headers,
                               "body_length": self.size, "body_sha256": self.digest.hexdigest()}).encode()
            return self._send(200, [("content-type", "application/json"), ("content-length", len(body)),
                                    ("connection", "x-drop-me"), ("x-drop-me", "1"), ("keep-alive", "timeout=5"),
                                    ("x-backend", "python")], body)
        if path == "/stats":
            body = json.dumps({"connections": _Backend.connections}).encode()
            return self._send(200, [("content-length", len(body))], body)
        if path == "/slow":
            await asyncio.sleep(float(args.get("s", "1")))
            return self._send(200, [("content-length", "4")], b"slow")
        if path == "/die":
            self.transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\n" + b"x" * 1000)
            await asyncio.sleep(0.2)
            self.transport.close()
            return
        if path == "/sse":
            _Backend.sse_release = asyncio.Event()
            self.transport.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                                 b"transfer-encoding: chunked\r\n\r\n")
            self.transport.write(_chunk(b"data: one\n\n"))
            await _Backend.sse_release.wait()
            self.transport.write(_chunk(b"data: two\n\n") + b"0\r\n\r\n")
            return
        if path == "/sse-release":
            if _Backend.sse_release is not None:
                _Backend.sse_release.set()
            return self._send(200, [("content-length", "2")], b"ok")
        if path == "/chunked":
            self.transport.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
            for index in range(int(args.get("n", "10"))):
                self.transport.write(_chunk(bytes([97 + index % 26]) * 1000))
                await self.drained.wait()
            self.transport.write(b"0\r\n\r\n")
            return
        if path == "/bytes":
            total = int(args.get("n", "0"))
            self.transport.write(f"HTTP/1.1 200 OK\r\ncontent-length: {total}\r\n\r\n".encode())
            block = PATTERN * 4096
            sent = 0
            while sent < total:
                piece = block[:total - sent]
                self.transport.write(piece)
                sent += len(piece)
                await self.drained.wait()
            return
        if path == "/drop-next":
            self.drop_next = True
            return self._send(200, [("content-length", "2")], b"ok")
        if path == "/close":
            self.keep = False
            return self._send(200, [("content-length", "5")], b"close")
        if path == "/nobody":
            return self._send(int(args.get("s", "204")), [("x-status", args.get("s", "204"))])
        body = b"not found"
        return self._send(404, [("content-length", len(body))], body)

    # -- WebSocket echo --------------------------------------------------------

    def _ws_accept(self):
        key = dict((n.lower(), v) for n, v in self.headers).get("sec-websocket-key", "").encode()
        accept = base64.b64encode(hashlib.sha1(key + _WS_GUID).digest()).decode()
        self.transport.write(("HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n"
                              f"sec-websocket-accept: {accept}\r\n\r\n").encode())
        self._ws_frames()

    def _ws_frames(self):
        buffer = self.ws
        while len(buffer) >= 2:
            opcode = buffer[0] & 0x0F
            masked = buffer[1] & 0x80
            length = buffer[1] & 0x7F
            offset = 2
            if length == 126:
                if len(buffer) < 4:
                    return
                length = struct.unpack("!H", buffer[2:4])[0]
                offset = 4
            elif length == 127:
                if len(buffer) < 10:
                    return
                length = struct.unpack("!Q", buffer[2:10])[0]
                offset = 10
            mask = buffer[offset:offset + 4] if masked else b"\0\0\0\0"
            offset += 4 if masked else 0
            if len(buffer) < offset + length:
                return
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(buffer[offset:offset + length]))
            del buffer[:offset + length]
            self.transport.write(_ws_frame(opcode, payload))
            if opcode == 8:
                self.transport.close()
                return


def _ws_frame(opcode, payload):
    size = len(payload)
    if size < 126:
        head = struct.pack("!BB", 0x80 | opcode, size)
    elif size < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 126, size)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 127, size)
    return head + payload


def _chunk(data):
    return b"%x\r\n%b\r\n" % (len(data), data)


async def _serve(argv):
    loop = asyncio.get_running_loop()
    if argv[0] == "--unix":
        server = await loop.create_unix_server(_Backend, argv[1])
        print("listening", argv[1], flush=True)
    else:
        server = await loop.create_server(_Backend, "127.0.0.1", int(argv[1]))
        print("listening", server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()


# -- starting backends from tests ---------------------------------------------------

# Proxies a request to the URL in its X-Upstream header (test-only); one without the header is served statically.
PROXY_SCRIPT = """#include "zeroserve.h"
ZS_ENTRY zs_u64 entry(void)
{
    char url[256];
    zs_s64 length = zs_req_header(ZS_STR("x-upstream"), url, sizeof url);
    if (length > 0)
        zs_reverse_proxy(url, (zs_u64)length);
    return 0;
}
"""


def proxy_site(directory, script=PROXY_SCRIPT):
    """Pack a static index.html and `script` (the X-Upstream proxy by default) under `directory`; the tar's path."""
    write_tree(directory / "src", {"index.html": "<p>static</p>", ".zeroserve/scripts/10-main.c": script})
    pack.build(directory / "src", directory / "site.tar", compiler=ScriptCompiler.find("clang"))
    return directory / "site.tar"


class PythonBackend:
    """The backend above as a child process, on a loopback port or a Unix socket."""

    def __init__(self, unix_path=None):
        argv = ["--unix", str(unix_path)] if unix_path else ["--port", "0"]
        self.proc = subprocess.Popen([sys.executable, __file__, *argv], stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline().split()
        if not line or line[0] != "listening":
            self.proc.kill()
            raise RuntimeError("the Python backend did not start")
        self.port = None if unix_path else int(line[1])
        self.unix_path = unix_path

    @property
    def url(self):
        return f"unix/{self.unix_path}" if self.unix_path else f"http://127.0.0.1:{self.port}"

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)


class Nginx:
    """nginx from Debian with its own prefix and config, serving `root` on a loopback port (HTTP, or HTTPS)."""

    def __init__(self, directory, root, *, cert=None, key=None):
        self.dir = Path(directory)
        self.port = free_port()
        for sub in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        tls = f"ssl_certificate {cert}; ssl_certificate_key {key};" if cert else ""
        flags = " ssl" if cert else ""
        # Also on 127.0.0.2, an address the test certificate does not name.
        listen = f"127.0.0.1:{self.port}{flags}; listen 127.0.0.2:{self.port}{flags}"
        config = f"""
daemon off;
user root;
worker_processes 1;
pid {self.dir}/nginx.pid;
error_log {self.dir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {self.dir}/client_body;
    proxy_temp_path {self.dir}/proxy;
    fastcgi_temp_path {self.dir}/fastcgi;
    uwsgi_temp_path {self.dir}/uwsgi;
    scgi_temp_path {self.dir}/scgi;
    keepalive_requests 100000;
    default_type application/octet-stream;
    server {{
        listen {listen};
        {tls}
        root {root};
        add_header x-connection $connection always;
        add_header x-forwarded-for-seen "$http_x_forwarded_for" always;
        location = /hello {{ return 200 "hello from nginx\\n"; }}
    }}
}}
"""
        (self.dir / "nginx.conf").write_text(config)
        self.proc = subprocess.Popen(["/usr/sbin/nginx", "-p", str(self.dir), "-c", str(self.dir / "nginx.conf")],
                                     stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"nginx did not start: {self.proc.stderr.read().decode()}")
                time.sleep(0.05)
        raise RuntimeError("nginx did not start listening")

    def url(self, scheme="http", host="127.0.0.1"):
        return f"{scheme}://{host}:{self.port}"

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    asyncio.run(_serve(sys.argv[1:]))
