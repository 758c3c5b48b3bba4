"""The HTTP/1.1 fast path's Python side: the per-World static table, the worker's C state and each connection's pump.

The C side (native/fast, zsfast.h) answers the common request of a keep-alive
HTTP/1.1 connection (GET/HEAD of a static path, no body, nothing to negotiate)
in one call per socket read: it decrypts, parses, answers from the table below
and sends with send(2). Every other request, and every byte after it, goes to
the Python path, which stays the reference: the table is made from what
`static.serve` answers, so both paths send the same bytes (Date aside).

With a script chain that C can run alone, C runs it too and answers what
`handler` would (static with the scripts' headers, zs_respond); any other end
is handed over (`FastConnection.respond_adopted`, `ScriptChain.adopt`), so no
script runs twice.

The table belongs to its World (built in `World.build`, freed with it), so a
request answered in C reads the tar fd of the World current at that moment;
the answer is complete when the call returns, so it needs no lease.
"""

import os
from http import HTTPStatus

from zeroserve.core import static, template
from zeroserve.core.errors import ProtocolError, ZeroserveError
from zeroserve.core.handler import SERVER_HEADER, after_chain
from zeroserve.core.http1 import STATUS_LINES
from zeroserve.core.paths import normalize_request_path
from zeroserve.core.script_abi import DEFAULT_BODY_LIMIT
from zeroserve.native._zsvm import ffi, lib

# A body above this is left to Python's file-body machinery (pread as the socket drains), so one
# call's output stays bounded.
BODY_MAX = 256 * 1024
_INLINE = 64 * 1024  # bodies up to this are held in memory, within _INLINE_TOTAL per table
_INLINE_TOTAL = 32 * 1024 * 1024
_ERR_SIZE = 256
_DID_LOG, _DID_UNSENT, _DID_REST = lib.ZS_FAST_DID_LOG, lib.ZS_FAST_DID_UNSENT, lib.ZS_FAST_DID_REST
# Path segments the C parser takes as they are (no percent-decoding): RFC 3986 pchar minus '%'.
_CLEAN = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,;=:@")
# A site-relative path no tar member can have (names end at NUL): what static.serve answers 404 for.
_MISSING = "\0"


def eligible(chain):
    """True when the fast path can serve a World with this script chain: none, or one C runs alone."""
    return not chain or chain.c_chain is not None


class FastTable:
    """One World's static table: request path → the preformatted answer (zsfast.h), and its C chain."""

    __slots__ = ("table", "_chain")

    def __init__(self, site, options, hostnames, chain):
        self.table = ffi.gc(_check_ptr(lib.zs_fast_table_new(site.fd)), lib.zs_fast_table_free)
        err = ffi.new("char[]", _ERR_SIZE)
        inline_budget = [_INLINE_TOTAL]
        self._chain = chain if chain else None  # keeps the C chain alive as long as the table points at it
        for key, rel, dir_hint in _request_paths(site, options):
            answer = static.serve(site, static.GET, rel, dir_hint, {}, options)
            if answer.status != 200:
                continue  # the not-found answer below covers every clean path outside the table
            entry = site.resolve(rel, dir_hint, options.index, options.try_html)
            flags = lib.ZS_FAST_VARIES if entry.varies else 0
            head, body, offset, length, more = _answer_parts(site, answer, inline_budget)
            tmpl_head = ffi.NULL
            if self._chain is not None and template.applies(entry.content_type, (("", ""),)):
                # With metadata, _static answers with the template pass: C can send it when it changes nothing.
                if more & lib.ZS_FAST_PYTHON or template.OPEN.encode() in site.read(entry):
                    flags |= lib.ZS_FAST_TEMPLATE_PYTHON
                else:
                    flags |= lib.ZS_FAST_TEMPLATE
                    tmpl_head = _head(200, [("content-type", entry.content_type),
                                            ("content-length", str(entry.size)), SERVER_HEADER])
            _check(lib.zs_fast_table_add(self.table, key, len(key), head, len(head), body, offset, length,
                                         flags | more, tmpl_head, len(tmpl_head) if tmpl_head else 0, err,
                                         _ERR_SIZE), err)
        head, body, offset, length, more = _answer_parts(site, static.serve(site, static.GET, _MISSING, False, {},
                                                                            options), inline_budget)
        _check(lib.zs_fast_table_set_not_found(self.table, head, len(head), body, offset, length, more, err,
                                               _ERR_SIZE), err)
        for name in hostnames:
            encoded = name.encode("latin-1", "replace")
            _check(lib.zs_fast_table_allow_host(self.table, encoded, len(encoded), err, _ERR_SIZE), err)
        if self._chain is not None:
            lib.zs_fast_table_set_chain(self.table, self._chain.c_chain, DEFAULT_BODY_LIMIT)
            for status in HTTPStatus:
                line = STATUS_LINES[status.value]
                _check(lib.zs_fast_table_set_status_line(self.table, status.value, line, len(line), err, _ERR_SIZE),
                       err)


def _request_paths(site, options):
    """(raw request path, rel, dir_hint) for every clean request path that may resolve to a file.

    A path resolves through its own name, its directory's index file or, with try_html, its
    `.html` sibling (Site.resolve); each is taken with and without a trailing slash.
    """
    index = options.index or "index.html"
    rels = set()
    for path in site.servable_paths():
        segments = path.split("/")
        if not all(segment and segment not in (".", "..") and _CLEAN.issuperset(segment) for segment in segments):
            continue  # its request path needs percent-encoding: Python's
        rels.add(path)
        if segments[-1] == index:
            rels.add("/".join(segments[:-1]))
        if options.try_html and path.endswith(".html") and len(segments[-1]) > 5:
            rels.add(path[:-5])
    for rel in rels:
        for key in (("/",) if not rel else ("/" + rel, "/" + rel + "/")):
            try:
                normalized = normalize_request_path(key)
            except ProtocolError:
                continue
            yield key.encode("ascii"), normalized.rel, normalized.dir_hint


def _answer_parts(site, answer, inline_budget):
    """(head, body or NULL, offset, length, flags) of a StaticResponse, as zs_fast_table_add takes them."""
    head = _head(answer.status, answer.headers + [SERVER_HEADER])
    if not answer.body:
        return head, ffi.NULL, 0, 0, 0
    (part,) = answer.body
    if type(part) is bytes:
        return head, part, 0, len(part), 0
    offset, length = part
    if length > BODY_MAX:
        return head, ffi.NULL, offset, length, lib.ZS_FAST_PYTHON
    if length <= _INLINE and length <= inline_budget[0]:
        inline_budget[0] -= length
        data = os.pread(site.fd, length, offset)
        if len(data) != length:
            raise ZeroserveError(f"{site.path}: a file ends early at offset {offset + len(data)}; reload with an "
                                 f"intact tar")
        return head, data, offset, length, 0
    return head, ffi.NULL, offset, length, 0


def _head(status, headers):
    """The status line and header lines as http1.response_head writes them, up to the date line."""
    return STATUS_LINES[status] + b"".join(f"{name}: {value}\r\n".encode("latin-1") for name, value in headers)


class FastWorker:
    """One worker's C state: scratch buffers, the access-log buffer and the request-id counter."""

    __slots__ = ("_ids", "_prefix", "worker", "_result", "_err", "_log_size", "access_log")

    def __init__(self, config):
        self._ids = ffi.new("struct zs_fast_ids *")
        self._prefix = os.urandom(4).hex()
        self._ids.prefix = self._prefix.encode("ascii")
        limits = config.limits
        c_limits = ffi.new("struct zs_fast_limits *", (limits.max_head_bytes, limits.max_header_count,
                                                       limits.max_uri_bytes))
        if not config.request_logging:
            log_format = lib.ZS_FAST_LOG_NONE
        elif config.log_format == "json":
            log_format = lib.ZS_FAST_LOG_JSON
        else:
            log_format = lib.ZS_FAST_LOG_TEXT
        self.worker = ffi.gc(_check_ptr(lib.zs_fast_worker_new(c_limits, self._ids, log_format)),
                             lib.zs_fast_worker_free)
        self._result = ffi.new("struct zs_fast_result *")
        self._err = ffi.new("char[]", _ERR_SIZE)
        self._log_size = ffi.new("size_t *")
        self.access_log = None  # the worker's AccessLog once its loop runs

    def next_request_id(self):
        """A new request id, "<process prefix>-<counter in hex>"; C answers count on the same counter."""
        ids = self._ids
        ids.counter += 1
        return f"{self._prefix}-{ids.counter:x}"

    def connection(self, transport, session, peer, connection_info):
        """The fast state of one HTTP/1.1 connection."""
        return FastConnection(self, transport, session, peer, connection_info)

    def _flush_log(self):
        size = self._log_size
        text = lib.zs_fast_worker_take_log(self.worker, size)
        access_log = self.access_log
        if size[0] and access_log is not None:
            # The same batch as the Python path's lines, so one connection's lines stay in order.
            access_log.record_preformatted(
                ffi.unpack(text, size[0]).decode("utf-8", "backslashreplace").rstrip("\n").split("\n"))


class FastConnection:
    """One connection's pump: bytes read in, fast answers sent, the rest returned for the Python path."""

    __slots__ = ("_fast", "_conn", "_keep", "_transport", "closing", "tls_event", "adopted")

    @property
    def worker(self):
        """The worker's struct zs_fast_worker * (HTTP/2 answers with it too)."""
        return self._fast.worker

    @property
    def conn(self):
        """This connection's struct zs_fast_conn *."""
        return self._conn

    def __init__(self, fast, transport, session, peer, connection_info):
        self._fast = fast
        self._transport = transport
        conn = self._conn = ffi.new("struct zs_fast_conn *")
        sock = transport.get_extra_info("socket")
        conn.fd = sock.fileno() if sock is not None else -1
        keep = []  # the C strings the struct points to live as long as it does
        if session.is_tls:
            # The SSL * of the other cffi module (_boringssl), over the same libssl, passed as an address.
            conn.ssl = ffi.cast("void *", session.ssl_address)
            if session.sni:
                keep.append(ffi.new("char[]", session.sni.encode("latin-1", "replace")))
                conn.sni, conn.sni_len = keep[-1], len(keep[-1]) - 1
        client = f"{peer[0]}:{peer[1]}".encode("utf-8", "backslashreplace")
        keep.append(ffi.new("char[]", client))
        conn.client, conn.client_len = keep[-1], len(client)
        ja4 = connection_info.ja4 if connection_info is not None else None
        if ja4 is not None:
            keep.append(ffi.new("char[]", ja4.encode("utf-8", "backslashreplace")))
            conn.ja4, conn.ja4_len = keep[-1], len(keep[-1]) - 1
        script_peer = (f"[{peer[0]}]:{peer[1]}" if ":" in peer[0] else f"{peer[0]}:{peer[1]}").encode(
            "utf-8", "surrogateescape")
        keep.append(ffi.new("char[]", script_peer))
        conn.peer, conn.peer_len = keep[-1], len(script_peer)
        if connection_info is not None:
            info = connection_info.info_json.encode("utf-8", "surrogateescape")
            keep.append(ffi.new("char[]", info))
            conn.info_json, conn.info_json_len = keep[-1], len(info)
        self._keep = keep
        self.adopted = None  # the head of a request whose scripts ran in C, for `respond_adopted`
        self.closing = False  # the last answer ended the connection
        self.tls_event = False  # the TLS session must read the alert or close_notify C stopped at

    def pump(self, data, table):
        """Answer what C can of `data`; return the plaintext left for the Python path.

        Raises ConnectionError when the peer has gone, OSError (with the reason) when the
        site cannot be read or TLS fails: either way the connection is to be dropped.
        """
        fast = self._fast
        transport = self._transport
        result = fast._result
        did = lib.zs_fast_pump(fast.worker, table.table, self._conn, data, len(data),
                               transport.get_write_buffer_size() == 0, result, fast._err, _ERR_SIZE)
        if not did:  # the common case: every request answered and sent
            return b""
        if did < 0:
            message = ffi.string(fast._err).decode("utf-8", "replace")
            raise ConnectionError(message) if did == -2 else OSError(message)
        if did & _DID_LOG:
            fast._flush_log()
        if did & _DID_UNSENT:
            transport.write(ffi.buffer(result.unsent, result.unsent_len)[:])
        if not did & _DID_REST:
            return b""
        # Set once: after a close or a TLS alert nothing more is pumped.
        self.closing = bool(result.close)
        self.tls_event = bool(result.tls_event)
        if not result.rest_len:
            return b""
        if self._conn.ssl == ffi.NULL:
            rest = data[result.rest_offset:] if result.rest_offset else data
        else:
            rest = ffi.buffer(result.rest, result.rest_len)[:]
        if result.adopt:
            self.adopted = rest[:result.adopt_len]
            rest = rest[result.adopt_len:]
        return rest

    def send(self, head, body=b""):
        """Write `head` then `body` (bytes-like) for the Python path: encrypted and sent by C, no copy made
        unless the socket is full (what it does not take goes to the transport's buffer, in order).

        Raises ConnectionError when the peer has gone, ZeroserveError when TLS fails.
        """
        fast = self._fast
        transport = self._transport
        result = fast._result
        if type(head) is not bytes:
            head = ffi.from_buffer(head)
        if type(body) is not bytes:
            body = ffi.from_buffer(body)
        did = lib.zs_fast_send(fast.worker, self._conn, head, len(head), body, len(body),
                               transport.get_write_buffer_size() == 0, result, fast._err, _ERR_SIZE)
        if not did:
            return
        if did < 0:
            message = ffi.string(fast._err).decode("utf-8", "replace")
            raise ConnectionError(message) if did == -2 else ZeroserveError(message)
        transport.write(ffi.buffer(result.unsent, result.unsent_len)[:])

    def respond_adopted(self, request, world):
        """handler.handle for the adopted request: its scripts' result is taken over from C, not run again."""
        result = world.chain.adopt(world, request.request_id, lib.zs_fast_worker_chain_req(self._fast.worker))
        return after_chain(result, request, normalize_request_path(request.path), world)


def _check_ptr(pointer):
    if pointer == ffi.NULL:
        raise MemoryError("the fast path could not allocate its state")
    return pointer


def _check(status, err):
    if status != 0:
        raise ZeroserveError(ffi.string(err).decode("utf-8", "replace"))

