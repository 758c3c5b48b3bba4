"""The scripts' request context and core helpers from Python: fill a request, run scripts against it, read what they did.

Three objects, all meant to be pooled and reused:

- `RequestContext` (C `zs_reqctx`): one per request, shared by every script of
  the chain: the request view, headers, metadata and mutation flags.
- `ScriptState` (C `zs_scriptrun`): one per script execution context (chain
  step, callee, hook): JSON handles, the outcome (respond / proxy / abort) and
  finished `zs_log` lines. `begin(ctx)` starts a new context on a request.
- `ScriptRun`: a `zeroserve.vm.Run` whose host is a ScriptState, so the core
  helpers (C functions in `core_helper_defs()`) reach the request directly.
- `CChain` (C `zs_chain`, native/script/zschain.h): a world's request chain
  run on one request by one C call, and the pools of runs and contexts that
  Python and the C fast path share.

Strings go in and out as `str` (header text as Latin-1, everything else as
UTF-8 with surrogateescape) or as `bytes` where noted.
"""

from zeroserve.core.errors import ScriptLoadError
from zeroserve.native._zsvm import ffi, lib
from zeroserve.vm import DEFAULT_MEMORY_KB, Run

__all__ = [
    "OUTCOME_NONE", "OUTCOME_ABORT", "OUTCOME_RESPOND", "OUTCOME_PROXY",
    "CHANGED_METHOD", "CHANGED_URI", "CHANGED_HEADERS", "URI_INVALID",
    "RESPONSE_HEADER_PREFIX", "DEFAULT_BODY_LIMIT",
    "RequestContext", "ScriptState", "ScriptRun", "CChain", "core_helper_defs", "set_version", "meta_headers",
    "CHAIN_FINISHED", "CHAIN_YIELDED", "CHAIN_BUSY", "CHAIN_FAULT",
]

OUTCOME_NONE = lib.ZS_OUTCOME_NONE
OUTCOME_ABORT = lib.ZS_OUTCOME_ABORT
OUTCOME_RESPOND = lib.ZS_OUTCOME_RESPOND
OUTCOME_PROXY = lib.ZS_OUTCOME_PROXY

CHANGED_METHOD = lib.ZS_CHANGED_METHOD
CHANGED_URI = lib.ZS_CHANGED_URI
CHANGED_HEADERS = lib.ZS_CHANGED_HEADERS
URI_INVALID = lib.ZS_URI_INVALID

CHAIN_FINISHED = lib.ZS_CHAIN_FINISHED
CHAIN_YIELDED = lib.ZS_CHAIN_YIELDED
CHAIN_BUSY = lib.ZS_CHAIN_BUSY
CHAIN_FAULT = lib.ZS_CHAIN_FAULT
_CHAIN_RESPOND = lib.ZS_CHAIN_RESPOND
_CHAIN_PROXY = lib.ZS_CHAIN_PROXY

RESPONSE_HEADER_PREFIX = "zs.response.header."
DEFAULT_BODY_LIMIT = 256 * 1024


def _utf8(text):
    return text if isinstance(text, bytes) else text.encode("utf-8", "surrogateescape")


def _pack_pairs(pairs):
    """[(name, value)] (all str, or all bytes) -> b"name\\0value\\0..." in one join and one encode."""
    if not pairs:
        return b""
    if isinstance(pairs[0][0], bytes):
        return b"\0".join([item for pair in pairs for item in pair]) + b"\0"
    return ("\0".join([item for pair in pairs for item in pair]) + "\0").encode("latin-1")


def _check(rc, what):
    """Raises for a C return code below zero (-1 is always out of memory)."""
    if rc < 0:
        if rc == -1:
            raise MemoryError(f"{what}: out of memory")
        raise ValueError(f"{what}: rejected (code {rc})")
    return rc


def _unpack_pairs(data, codec):
    """name NUL value NUL ... -> [(name, value)], decoded with `codec` (NUL is never inside a UTF-8 sequence)."""
    if not data:
        return []
    parts = data.decode(codec, "surrogateescape").split("\0")
    return list(zip(parts[0:-1:2], parts[1::2]))


def _fault_message(run):
    """The message a helper fault left on a C run."""
    return ffi.string(lib.zs_run_fault_message(run)).decode("utf-8", "replace")


def core_helper_defs():
    """{name: (C function pointer, cookie)} of every core helper, for Program.load_elf."""
    count = ffi.new("size_t *")
    table = lib.zs_core_helpers(count)
    return {ffi.string(table[i].name).decode(): (table[i].fn, table[i].cookie) for i in range(count[0])}


def set_version(version):
    """Sets the string zs_version answers (once, at start-up)."""
    data = _utf8(version)
    if lib.zs_core_set_version(data, len(data)) < 0:
        raise ValueError(f"version string {version!r} is longer than 63 bytes")


class RequestContext:
    """One request as scripts see it (C zs_reqctx); reuse it with begin()."""

    __slots__ = ("_ctx", "_ptr", "_len")

    def __init__(self):
        ctx = lib.zs_reqctx_new()
        if ctx == ffi.NULL:
            raise MemoryError("cannot allocate a request context")
        self._ctx = ffi.gc(ctx, lib.zs_reqctx_free)
        self._ptr = ffi.new("const char **")
        self._len = ffi.new("size_t *")

    def begin(self, method, path, normalized_path, query, scheme, peer, proto=(1, 1), is_tls=False,
              headers=(), body_limit=DEFAULT_BODY_LIMIT):
        """Empties the context and fills it. path is the normalised, still-encoded path
        (NormalizedPath.script_path), normalized_path "/" + the decoded relative path,
        peer "ip:port" ("[v6]:port"), headers [(name, value)] in wire order. The fields are
        all str (headers Latin-1, the rest UTF-8) or all bytes; bytes skip the encoding."""
        fields = (method, path, query, scheme, peer)
        if method.__class__ is bytes:
            request = b"\0".join(fields) + b"\0"
        else:
            request = ("\0".join(fields) + "\0").encode("utf-8", "surrogateescape")
            normalized_path = normalized_path.encode("utf-8", "surrogateescape")
        packed = _pack_pairs(headers)
        _check(lib.zs_reqctx_begin(self._ctx, request, len(request), normalized_path, len(normalized_path),
                                   packed, len(packed), proto[0], proto[1], 1 if is_tls else 0, body_limit),
               "request context")

    def set_body(self, body):
        """The buffered request body zs_req_body_json parses (bytes)."""
        _check(lib.zs_reqctx_set_field(self._ctx, lib.ZS_FIELD_BODY, body, len(body)), "request body")

    def set_connection_info(self, json_text):
        """The JSON zs_connection_info answers (default: the plaintext object)."""
        data = _utf8(json_text)
        _check(lib.zs_reqctx_set_field(self._ctx, lib.ZS_FIELD_CONNECTION_INFO, data, len(data)),
               "connection info")

    def _field(self, field):
        _check(lib.zs_reqctx_get(self._ctx, field, self._ptr, self._len), "request field")
        return ffi.unpack(self._ptr[0], self._len[0]).decode("utf-8", "surrogateescape")

    @property
    def method(self):
        return self._field(lib.ZS_FIELD_METHOD)

    @property
    def path(self):
        """Normalised, still percent-encoded, trailing slash kept."""
        return self._field(lib.ZS_FIELD_PATH)

    @property
    def normalized_path(self):
        return self._field(lib.ZS_FIELD_NORMALIZED_PATH)

    @property
    def raw_path(self):
        """The path as zs_req_set_uri gave it (set once CHANGED_URI is)."""
        return self._field(lib.ZS_FIELD_RAW_PATH)

    @property
    def query(self):
        return self._field(lib.ZS_FIELD_QUERY)

    @property
    def scheme(self):
        """"http" or "https"."""
        return self._field(lib.ZS_FIELD_SCHEME)

    @property
    def connection_info(self):
        """The JSON text zs_connection_info answers ("" until set_connection_info)."""
        return self._field(lib.ZS_FIELD_CONNECTION_INFO)

    @property
    def changed(self):
        """CHANGED_METHOD | CHANGED_URI | CHANGED_HEADERS | URI_INVALID bits."""
        return lib.zs_reqctx_changed(self._ctx)

    @property
    def body_limit(self):
        """The body limit, possibly lowered by zs_req_body_limit."""
        return lib.zs_reqctx_body_limit(self._ctx)

    def headers(self):
        """[(lowercase name, value)] as the scripts left them."""
        _check(lib.zs_reqctx_headers_export(self._ctx, self._ptr, self._len), "request headers")
        return _unpack_pairs(ffi.unpack(self._ptr[0], self._len[0]), "latin-1")

    def metadata(self):
        """[(key, value)] in insertion order."""
        if not lib.zs_reqctx_meta_count(self._ctx):
            return []
        _check(lib.zs_reqctx_meta_export(self._ctx, self._ptr, self._len), "metadata")
        return _unpack_pairs(ffi.unpack(self._ptr[0], self._len[0]), "utf-8")

    def response_headers(self):
        """[(name, value)] from zs.response.header.<name> metadata."""
        cut = len(RESPONSE_HEADER_PREFIX)
        return [(key[cut:].strip(), value) for key, value in self.metadata()
                if key.startswith(RESPONSE_HEADER_PREFIX)]

    def response_hooks(self):
        """[(script, func, input JSON text)] registered by zs_res_hook, in order."""
        if not lib.zs_reqctx_hook_count(self._ctx):
            return []
        _check(lib.zs_reqctx_hooks_export(self._ctx, self._ptr, self._len), "response hooks")
        parts = ffi.unpack(self._ptr[0], self._len[0]).decode("utf-8", "surrogateescape").split("\0")
        return [tuple(parts[i:i + 3]) for i in range(0, len(parts) - 1, 3)]

    def begin_response(self, status, headers):
        """The response hooks see: status and [(name, value)] (names are lowercased)."""
        packed = _pack_pairs(headers)
        _check(lib.zs_reqctx_response_begin(self._ctx, status, packed, len(packed)), "response")

    def response(self):
        """(status, [(name, value)], continue_request) after the hooks ran."""
        _check(lib.zs_reqctx_response_headers_export(self._ctx, self._ptr, self._len), "response")
        headers = _unpack_pairs(ffi.unpack(self._ptr[0], self._len[0]), "latin-1")
        return (lib.zs_reqctx_response_status(self._ctx), headers,
                bool(lib.zs_reqctx_response_continue(self._ctx)))

    def set_meta(self, key, value):
        """Sets metadata from the host side (plugins); the key is trimmed."""
        k, v = _utf8(key), _utf8(value)
        rc = lib.zs_reqctx_meta_set(self._ctx, k, len(k), v, len(v))
        if rc == -2:
            raise ValueError("metadata key is empty")
        _check(rc, "metadata")


class ScriptState:
    """One script execution context (C zs_scriptrun): JSON handles, outcome, log lines."""

    __slots__ = ("_sr", "_ptr", "_len", "ctx")

    def __init__(self):
        sr = lib.zs_scriptrun_new()
        if sr == ffi.NULL:
            raise MemoryError("cannot allocate a script state")
        self._sr = ffi.gc(sr, lib.zs_scriptrun_free)
        self._ptr = ffi.new("const char **")
        self._len = ffi.new("size_t *")
        self.ctx = None

    @property
    def ptr(self):
        """The C struct zs_scriptrun *."""
        return self._sr

    def begin(self, ctx, name="", in_hook=False):
        """A new execution context of script `name` on request ctx (in_hook: as a response
        hook): handles freed, outcome and logs cleared."""
        self.ctx = ctx
        data = _utf8(name)
        _check(lib.zs_scriptrun_begin(self._sr, ctx._ctx, data, len(data), 1 if in_hook else 0),
               "script state")

    @property
    def outcome(self):
        """OUTCOME_NONE, _ABORT, _RESPOND or _PROXY (abort wins, then respond, then proxy)."""
        return lib.zs_scriptrun_outcome(self._sr)

    @property
    def status(self):
        """The response status (already mapped: outside 100..999 is 500)."""
        return lib.zs_scriptrun_status(self._sr)

    @property
    def body(self):
        """The response body (bytes)."""
        lib.zs_scriptrun_body(self._sr, self._ptr, self._len)
        return ffi.unpack(self._ptr[0], self._len[0])

    def respond(self, status, body=b""):
        """Sets the outcome to respond with `status` (outside 100..999 is 500) and `body` (bytes), as zs_respond."""
        if lib.zs_scriptrun_respond(self._sr, status, body, len(body)) < 0:
            raise MemoryError("cannot store the script's response body")

    @property
    def proxy_url(self):
        lib.zs_scriptrun_proxy_url(self._sr, self._ptr, self._len)
        return ffi.unpack(self._ptr[0], self._len[0]).decode("utf-8", "surrogateescape")

    def take_log_lines(self):
        """Finished zs_log lines (str, without newline), removed from the buffer."""
        lib.zs_scriptrun_log_lines(self._sr, self._ptr, self._len)
        if not self._len[0]:
            return []
        text = ffi.unpack(self._ptr[0], self._len[0]).decode("ascii")
        lib.zs_scriptrun_log_clear(self._sr)
        return text[:-1].split("\n")


class ScriptRun(Run):
    """A vm.Run whose host is a ScriptState, so core helpers find the request.

    The C run is created with the state as its host; the state's first member
    carries the wrapper's handle, which the VM's Python helper dispatch must
    read from there (requested of native/vm: `Run(..., host=)`).
    """

    __slots__ = ("state",)

    def __init__(self, program, state, memory_kb=DEFAULT_MEMORY_KB):
        super().__init__(program, memory_kb)
        self.state = state
        ffi.cast("void **", state.ptr)[0] = self._handle
        errmsg = ffi.new("char **")
        run = lib.zs_run_new(program._prog, int(memory_kb) * 1024, state.ptr, errmsg)
        if run == ffi.NULL:
            message = ffi.string(errmsg[0]).decode("utf-8", "replace") if errmsg[0] else "out of memory"
            lib.free(errmsg[0])
            raise ScriptLoadError(f"cannot create a script run: {message}")
        self._run = ffi.gc(run, lib.zs_run_free)
        self._regs = lib.zs_run_regs(run)

    def begin(self, ctx, name="", in_hook=False):
        """Prepares this run for a new execution context on ctx (state and memory charges)."""
        self.state.begin(ctx, name, in_hook)
        self.reset()

    def json_parse(self, text):
        """A new JSON handle in this run for text (from a Python helper); -1 if not JSON."""
        data = _utf8(text)
        handle = lib.zs_script_json_parse(self._run, data, len(data))
        if handle == -2:
            raise MemoryError(_fault_message(self._run))
        return handle

    def json_copy_from(self, other, handle):
        """Copies handle of run `other` into this run (zs_call input and result)."""
        copied = lib.zs_script_json_copy(self._run, other._run, handle)
        if copied == -2:
            raise ValueError(_fault_message(other._run))
        if copied < 0:
            raise MemoryError(_fault_message(self._run))
        return copied

    def json_text(self, handle):
        """The compact JSON text of a live handle of this run."""
        ptr, length = ffi.new("const char **"), ffi.new("size_t *")
        if lib.zs_script_json_serialize(self._run, handle, ptr, length) < 0:
            raise ValueError(_fault_message(self._run))
        return ffi.unpack(ptr[0], length[0]).decode("utf-8")


def meta_headers(metadata):
    """[(lowercase name, value)] the `zs.response.header.<name>` keys of `metadata` ((key, value) str pairs)
    set, in order; a name that is not a token (ASCII whitespace trimmed) or a value with control bytes is skipped.

    The filter is the C one (zs_chain_meta_headers) the fast path applies.
    """
    packed = _pack_pairs([(_utf8(key), _utf8(value)) for key, value in metadata])
    out = ffi.new("char[]", len(packed) or 1)
    written = lib.zs_chain_meta_headers(packed, len(packed), out)
    return _unpack_pairs(ffi.unpack(out, written), "utf-8")


class CChain:
    """A world's request chain in C (zs_chain) and the pools of runs and contexts it shares with Python.

    Slots are the world's scripts in name order. Pooled objects are Python
    ScriptRuns (C pointer `_run`) and RequestContexts (`_ctx`): each is
    registered once, then moves between the C pool and its users, and the C
    pointer the chain hands out maps back to its Python object here.
    """

    __slots__ = ("_chain", "_runs", "_contexts", "req", "__weakref__")

    def __init__(self, num_scripts, slice_budget):
        chain = lib.zs_chain_new(num_scripts, slice_budget)
        if chain == ffi.NULL:
            raise MemoryError("cannot allocate the script chain")
        self._chain = ffi.gc(chain, lib.zs_chain_free)
        self._runs = {}  # zs_run pointer -> ScriptRun, every run of every slot
        self._contexts = {}  # zs_reqctx pointer -> RequestContext
        self.req = ffi.gc(ffi.new("struct zs_chain_req *"), lib.zs_chain_req_done)  # for requests from Python
        self.put_context(self.take_context())  # one idle context, so the first request need not be BUSY

    @property
    def ptr(self):
        """The C struct zs_chain * (for the fast path)."""
        return self._chain

    def set_script(self, slot, name, request_entry):
        """Slot `slot` is script `name`; request_entry is its request entry index, or None."""
        data = _utf8(name)
        _check(lib.zs_chain_set_script(self._chain, slot, data, len(data),
                                       -1 if request_entry is None else request_entry), "script chain")

    def register_run(self, run):
        """Registers a new ScriptRun (busy: put_run makes it idle)."""
        self._runs[run._run] = run

    def take_run(self, slot):
        """An idle ScriptRun of slot `slot`, or None."""
        ptr = lib.zs_chain_take_run(self._chain, slot)
        return self._runs[ptr] if ptr else None

    def put_run(self, slot, run):
        _check(lib.zs_chain_put_run(self._chain, slot, run._run), "script run pool")

    def take_context(self):
        """An idle RequestContext (a new one when the pool is empty)."""
        ptr = lib.zs_chain_take_ctx(self._chain)
        if ptr:
            return self._contexts[ptr]
        ctx = RequestContext()
        self._contexts[ctx._ctx] = ctx
        return ctx

    def put_context(self, ctx):
        _check(lib.zs_chain_put_ctx(self._chain, ctx._ctx), "request context pool")

    def begin(self):
        """Takes a context into `req`: its RequestContext, or None when the pool is empty (BUSY)."""
        if lib.zs_chain_begin(self._chain, self.req) == CHAIN_BUSY:
            return None
        return self._contexts[self.req.ctx]

    def run(self):
        """Runs the request scripts on `req`: CHAIN_FINISHED, CHAIN_YIELDED or CHAIN_BUSY."""
        return _check(lib.zs_chain_run(self._chain, self.req), "script chain")

    def release(self, req):
        """Gives what `req` holds back to the pools."""
        lib.zs_chain_release(self._chain, req)

    def take_over(self, req):
        """What the C runner left in `req` (struct zs_chain_req *, or its address), as a ChainOutcome whose
        context and run (if any) now belong to the caller; req is left empty."""
        if type(req) is int:
            req = ffi.cast("struct zs_chain_req *", req)
        taken = ChainOutcome()
        taken.ctx = self._contexts[req.ctx]
        req.ctx = ffi.NULL
        run = req.run
        taken.run = self._runs[run] if run else None
        req.run = ffi.NULL
        taken.script = req.script
        taken.run_status = req.run_status
        kind = taken.kind = req.kind
        taken.status = req.status
        taken.body = b""
        taken.proxy_url = taken.fault_message = ""
        if kind == _CHAIN_RESPOND:
            taken.body = ffi.unpack(req.body, req.body_len)
        elif kind == _CHAIN_PROXY:
            taken.proxy_url = ffi.unpack(req.body, req.body_len).decode("utf-8", "surrogateescape")
        elif kind == CHAIN_FAULT:
            taken.fault_message = ffi.string(req.fault_message).decode("utf-8", "replace")
        taken.fault_pc = req.fault_pc
        taken.log = ()
        if req.log_len:
            parts = ffi.unpack(req.log, req.log_len).split(b"\0")
            taken.log = [(parts[i].decode("utf-8", "replace"), parts[i + 1].decode("ascii"))
                         for i in range(0, len(parts) - 1, 2)]
            req.log_len = 0
        return taken


class ChainOutcome:
    """What the C runner left for one request (CChain.take_over); fields as in struct zs_chain_req."""

    __slots__ = ("ctx", "run", "script", "run_status", "kind", "status", "body", "proxy_url", "fault_pc",
                 "fault_message", "log")
