"""The core helpers, called from real BPF scripts in the VM against a filled RequestContext, on every engine."""

import base64
import hashlib
import hmac
import json
import os
import pathlib
import subprocess
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zeroserve.core.errors import ProtocolError, ScriptFault
from zeroserve.core.paths import normalize_request_path
from zeroserve.core.script_abi import (
    CHANGED_HEADERS, CHANGED_METHOD, CHANGED_URI, OUTCOME_ABORT, OUTCOME_NONE, OUTCOME_PROXY,
    OUTCOME_RESPOND, URI_INVALID, RequestContext, ScriptRun, ScriptState, core_helper_defs,
    set_version,
)
from zeroserve.vm import Program, jit_available

REPO = pathlib.Path(__file__).resolve().parent.parent
SCRIPTS = REPO / "tests" / "scripts"
ENGINES = ["interp"] + (["jit"] if jit_available() else [])
FILL = 0xAA
MASK64 = (1 << 64) - 1

HEADERS = [
    ("Host", "example.com"),
    ("Cookie", "a=1"),
    ("X-Multi", "one"),
    ("cookie", "b=2"),
    ("X-MULTI", "two"),
    ("Content-Length", "1000"),
    ("X-Forwarded-For", "10.0.0.1"),
]


def compile_script(name, out_dir):
    """Compiles tests/scripts/<name>.c with clang for BPF; returns the object bytes."""
    out = out_dir / f"{name}.o"
    subprocess.run(["clang", "-O2", "-target", "bpf", "-I", str(REPO / "sdk"), "-c",
                    str(SCRIPTS / f"{name}.c"), "-o", str(out)], check=True, capture_output=True)
    return out.read_bytes()


@pytest.fixture(scope="module")
def objects(tmp_path_factory):
    out = tmp_path_factory.mktemp("scripts")
    return {name: compile_script(name, out) for name in ("forward", "chain")}


@pytest.fixture(scope="module", params=ENGINES)
def programs(request, objects):
    helpers = core_helper_defs()
    return {name: Program.load_elf(data, helpers, engine=request.param) for name, data in objects.items()}


class Out:
    """An output buffer argument of n bytes, filled with FILL before the call."""

    def __init__(self, size):
        self.size = size
        self.addr = None


class Harness:
    """One request context and one run of forward.c; call(helper, args) runs fwd/<helper>."""

    def __init__(self, program, memory_kb=256):
        self.ctx = RequestContext()
        self.state = ScriptState()
        self.run = ScriptRun(program, self.state, memory_kb)
        self.begin()

    def begin(self, method="GET", path="/a/b%20c/", normalized="/a/b c", query="", scheme="https",
              peer="192.0.2.7:4711", proto=(1, 1), is_tls=True, headers=HEADERS, body_limit=256 * 1024,
              name="10-test.o", in_hook=False):
        self.ctx.begin(method, path, normalized, query, scheme, peer, proto, is_tls, headers, body_limit)
        self.run.begin(self.ctx, name, in_hook)

    def call(self, helper, *args):
        """The helper's signed result; Out arguments get their addr set."""
        regs = []
        for arg in args:
            if isinstance(arg, Out):
                arg.addr = self.run.alloc(bytes([FILL]) * arg.size)
                regs.append(arg.addr)
            elif isinstance(arg, (bytes, str)):
                data = arg.encode() if isinstance(arg, str) else arg
                regs.append(self.run.alloc(data) if data else self.run.alloc(1))
            else:
                regs.append(arg & MASK64)
        self.run.start(f"fwd/{helper}", regs)
        result = self.run.result
        return result - (1 << 64) if result >> 63 else result

    def string(self, helper, *args, size=64):
        """(result, bytes before the NUL) of a C-string helper writing to a `size` buffer."""
        out = Out(size)
        result = self.call(helper, *args, out, size)
        data = self.read(out)
        return result, data[:data.index(0)] if 0 in data else data

    def str_arg(self, helper, text, size=64):
        """A helper taking (name, name_len, out, out_len)."""
        data = text.encode()
        return self.string(helper, data, len(data), size=size)

    def read(self, out):
        return self.run.read(out.addr, out.size)

    def handle(self, text):
        data = text.encode()
        return self.call("zs_json_parse", data, len(data))


@pytest.fixture
def h(programs):
    return Harness(programs["forward"])


# ---- the C-string rule ----


def test_cstring_out_len_zero_writes_nothing(h):
    """out_len 0 returns 0 and leaves the buffer untouched."""
    out = Out(8)
    assert h.call("zs_req_method", out, 0) == 0
    assert h.read(out) == bytes([FILL]) * 8


def test_cstring_exact_fit_returns_length(h):
    """A buffer one longer than the value gets it whole with a NUL, and the length is returned."""
    out = Out(4)
    assert h.call("zs_req_method", out, 4) == 3
    assert h.read(out) == b"GET\0"


def test_cstring_truncation_returns_out_len(h):
    """A value as long as the buffer is truncated to out_len - 1 bytes and out_len is returned."""
    out = Out(5)
    assert h.call("zs_req_scheme", out, 3) == 3
    assert h.read(out) == b"ht\0" + bytes([FILL]) * 2
    assert h.call("zs_req_scheme", out, 5) == 5
    assert h.read(out)[:5] == b"http\0"


def test_cstring_output_outside_memory_faults(h):
    """An output range outside the script's memory faults the run."""
    with pytest.raises(ScriptFault, match="zs_req_method"):
        h.call("zs_req_method", 0x10, 8)


def test_cstring_overlapping_output_faults(h):
    """An output overlapping the name argument of the same call faults."""
    name = h.run.alloc(b"host" + b"\0" * 60)
    with pytest.raises(ScriptFault, match="overlaps"):
        h.call("zs_req_header", name, 4, name + 2, 32)


# ---- request inspection ----


def test_request_fields_come_from_context(h):
    """method, path, normalized path, uri, query, scheme and peer come from the context."""
    h.begin(method="POST", path="/x/%41/", normalized="/x/A", query="q=1&r", scheme="http",
            peer="[2001:db8::1]:443", proto=(2, 0), is_tls=False)
    assert h.string("zs_req_method") == (4, b"POST")
    assert h.string("zs_req_path") == (7, b"/x/%41/")
    assert h.string("zs_req_normalized_path") == (4, b"/x/A")
    assert h.string("zs_req_uri") == (13, b"/x/%41/?q=1&r")
    assert h.string("zs_req_query") == (5, b"q=1&r")
    assert h.string("zs_req_scheme") == (4, b"http")
    assert h.string("zs_req_peer") == (17, b"[2001:db8::1]:443")
    assert (h.call("zs_req_proto_major"), h.call("zs_req_proto_minor")) == (2, 0)
    assert h.call("zs_req_is_tls") == 0 and h.call("zs_req_tls_handshake_complete") == 0


def test_request_normalized_path_may_hold_nul(h):
    """A decoded path holding NUL (from %00) reaches scripts whole."""
    h.begin(path="/a%00b", normalized="/a\x00b")
    out = Out(8)
    assert h.call("zs_req_normalized_path", out, 8) == 4
    assert h.read(out)[:5] == b"/a\x00b\x00"
    assert h.string("zs_req_path") == (6, b"/a%00b")


def test_request_uri_without_query_is_path(h):
    """With no query the URI is the path, without '?'."""
    assert h.string("zs_req_uri") == (9, b"/a/b%20c/")
    assert h.call("zs_req_is_tls") == 1 and h.call("zs_req_tls_handshake_complete") == 1


def test_header_last_occurrence_wins(h):
    """A repeated header gives its last value; the name is trimmed and case-insensitive."""
    assert h.str_arg("zs_req_header", "  x-multi ") == (3, b"two")
    assert h.str_arg("zs_req_header", "HOST") == (11, b"example.com")


def test_header_cookies_are_joined(h):
    """Repeated Cookie headers come back joined with '; '."""
    assert h.str_arg("zs_req_header", "Cookie") == (8, b"a=1; b=2")
    assert h.str_arg("zs_req_header", "cookie", size=5) == (5, b"a=1;")


def test_header_missing_is_empty(h):
    """A missing header writes "" and returns 0."""
    assert h.str_arg("zs_req_header", "x-absent") == (0, b"")


def test_query_param_first_value_form_decoded(h):
    """The first value of a parameter, with '+' as space and %XX decoded (also in names)."""
    h.begin(query="a=1&b=x+y%21&a=2&c&na%6De=v")
    assert h.str_arg("zs_req_query_param", "a") == (1, b"1")
    assert h.str_arg("zs_req_query_param", "b") == (4, b"x y!")
    assert h.str_arg("zs_req_query_param", "c") == (0, b"")
    assert h.str_arg("zs_req_query_param", "name") == (1, b"v")
    assert h.str_arg("zs_req_query_param", "zz") == (0, b"")
    assert h.str_arg("zs_req_query_param", "b", size=3) == (3, b"x ")


def test_query_param_matches_any_value_or_star(h):
    """matches is 1 when any decoded value is equal, or the key is present and the value is '*'."""
    h.begin(query="tag=a&tag=b+c&flag")

    def matches(name, value):
        return h.call("zs_req_query_param_matches", name, len(name), value, len(value))

    assert matches("tag", "b c") == 1
    assert matches("tag", "z") == 0
    assert matches("flag", "*") == 1
    assert matches("flag", "") == 1
    assert matches("nope", "*") == 0


@pytest.mark.parametrize("peer, ranges, expected", [
    ("192.0.2.7:4711", ["192.0.2.0/24"], 1),
    ("192.0.2.7:4711", ["192.0.2.8", "198.51.100.0/24"], 0),
    ("192.0.2.7:4711", ["192.0.2.7"], 1),
    ("192.0.2.7:4711", ["0.0.0.0/0"], 1),
    ("[2001:db8::5]:443", ["2001:db8::/32"], 1),
    ("[2001:db8::5]:443", ["2001:db9::/32", "192.0.2.0/24"], 0),
    ("[::ffff:192.0.2.7]:80", ["192.0.2.0/28"], 1),
    ("10.1.2.3:1", [], 0),
])
def test_remote_ip_matches_cidr_lists(h, peer, ranges, expected):
    """The peer address is matched against IPv4 / IPv6 addresses and CIDR ranges."""
    h.begin(peer=peer)
    text = json.dumps(ranges)
    assert h.call("zs_req_remote_ip_matches", text, len(text)) == expected


def test_remote_ip_matches_bad_entry_faults(h):
    """A list entry that is not an IP or CIDR faults the script."""
    text = '["192.0.2.0/33"]'
    with pytest.raises(ScriptFault, match="zs_req_remote_ip_matches"):
        h.call("zs_req_remote_ip_matches", text, len(text))


def test_body_json_parses_body_within_limit(h):
    """zs_req_body_json parses the body; an empty, over-limit or invalid body gives -1."""
    assert h.call("zs_req_body_json") == -1
    h.ctx.set_body(b'{"k":[1,2]}')
    handle = h.call("zs_req_body_json")
    assert handle > 0 and h.run.json_text(handle) == '{"k":[1,2]}'
    assert h.call("zs_req_body_limit", 5) == 1  # Content-Length: 1000 > 5
    assert h.ctx.body_limit == 5
    assert h.call("zs_req_body_json") == -1
    assert h.call("zs_req_body_limit", 2000) == 0
    assert h.ctx.body_limit == 5


def test_connection_info_defaults_to_plaintext(h):
    """Without host data the connection info is the plaintext object; host JSON is returned as set."""
    handle = h.call("zs_connection_info")
    info = json.loads(h.run.json_text(handle))
    assert info["tls"] is False and info["sni"] == {"inner": None, "outer": None}
    h.ctx.set_connection_info('{"tls":true,"alpn":"h2"}')
    handle = h.call("zs_connection_info")
    assert json.loads(h.run.json_text(handle)) == {"alpn": "h2", "tls": True}


# ---- request mutation ----


def test_set_method_changes_method(h):
    """A valid token replaces the method and sets CHANGED_METHOD; an invalid one faults."""
    assert h.call("zs_req_set_method", "PURGE", 5) == 0
    assert h.ctx.method == "PURGE" and h.ctx.changed & CHANGED_METHOD
    assert h.string("zs_req_method") == (5, b"PURGE")
    with pytest.raises(ScriptFault, match="zs_req_set_method"):
        h.call("zs_req_set_method", "BAD METHOD", 10)


@pytest.mark.parametrize("uri, raw, path, normalized, query", [
    ("/new/./x/../y/?a=1#frag", "/new/./x/../y/", "/new/y/", "/new/y", "a=1"),
    ("/%7Euser/file", "/%7Euser/file", "/%7Euser/file", "/~user/file", ""),
    ("https://other.example:8443/p?q", "/p", "/p", "/p", "q"),
    ("http://h", "/", "/", "/", ""),
])
def test_set_uri_renormalises(h, uri, raw, path, normalized, query):
    """zs_req_set_uri updates path, normalized path and query, dropping a fragment."""
    assert h.call("zs_req_set_uri", uri, len(uri)) == 0
    assert (h.ctx.raw_path, h.ctx.path, h.ctx.normalized_path, h.ctx.query) == (raw, path, normalized, query)
    assert h.ctx.changed & CHANGED_URI and not h.ctx.changed & URI_INVALID
    assert h.string("zs_req_path") == (len(path), path.encode())


@pytest.mark.parametrize("uri", ["/../etc", "/a%2Fb", "/%ff", "/%zz"])
def test_set_uri_bad_path_flags_invalid(h, uri):
    """A path escaping the root or not decoding marks the request URI_INVALID (a 400)."""
    assert h.call("zs_req_set_uri", uri, len(uri)) == 0
    assert h.ctx.changed & URI_INVALID


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.text(alphabet="/.%2fF5e0aZ~-", max_size=24))
def test_set_uri_normalises_like_the_server(h, path):
    """zs_req_set_uri normalises a path exactly as the server does for the request line."""
    h.begin()
    target = "/" + path
    assert h.call("zs_req_set_uri", target, len(target)) == 0
    try:
        expected = normalize_request_path(target)
    except ProtocolError:
        assert h.ctx.changed & URI_INVALID
        return
    assert not h.ctx.changed & URI_INVALID
    assert (h.ctx.path, h.ctx.normalized_path) == (expected.script_path, "/" + expected.rel)


def test_set_uri_unparseable_faults(h):
    """A target that is neither a path nor an absolute URI faults."""
    with pytest.raises(ScriptFault, match="zs_req_set_uri"):
        h.call("zs_req_set_uri", "no path", 7)


def test_header_set_replaces_and_append_adds(h):
    """set replaces every value (empty value removes), append adds (sets for Host)."""
    def call(helper, name, value):
        return h.call(helper, name, len(name), value, len(value))

    assert call("zs_req_set_header", "X-Multi", "only") == 0
    assert call("zs_req_append_header", "X-New", "1") == 0
    assert call("zs_req_append_header", "x-new", "2") == 0
    assert call("zs_req_append_header", "Host", "other.test") == 0
    assert call("zs_req_set_header", "X-Forwarded-For", "") == 0
    headers = h.ctx.headers()
    assert [v for n, v in headers if n == "x-multi"] == ["only"]
    assert [v for n, v in headers if n == "x-new"] == ["1", "2"]
    assert [v for n, v in headers if n == "host"] == ["other.test"]
    assert "x-forwarded-for" not in dict(headers)
    assert h.ctx.changed & CHANGED_HEADERS
    with pytest.raises(ScriptFault, match="not a valid header name"):
        call("zs_req_set_header", "Bad Name", "v")
    with pytest.raises(ScriptFault, match="control characters"):
        call("zs_req_set_header", "X-A", "a\r\nb")


@pytest.mark.parametrize("pattern, remaining", [
    ("x-multi", ["host", "cookie", "cookie", "content-length", "x-forwarded-for"]),
    ("X-*", ["host", "cookie", "cookie", "content-length"]),
    ("*-for", ["host", "cookie", "x-multi", "cookie", "x-multi", "content-length"]),
    ("*OOK*", ["host", "x-multi", "x-multi", "content-length", "x-forwarded-for"]),
    ("*", []),
])
def test_delete_header_matches_patterns(h, pattern, remaining):
    """Exact, prefix*, *suffix, *contains* and * patterns delete case-insensitively."""
    assert h.call("zs_req_delete_header", pattern, len(pattern)) == 0
    assert [n for n, _ in h.ctx.headers()] == remaining


def test_delete_header_empty_pattern_faults(h):
    """An empty pattern faults."""
    with pytest.raises(ScriptFault, match="zs_req_delete_header"):
        h.call("zs_req_delete_header", "  ", 2)


# ---- metadata ----


def test_meta_set_get_trimmed_and_ordered(h):
    """Keys are trimmed, a set replaces in place, and export keeps insertion order."""
    def put(key, value):
        return h.call("zs_meta_set", key, len(key), value, len(value))

    assert put(" b ", "1") == 0
    assert put("a", "2") == 0
    assert put("zs.response.header.x-frame-options", "DENY") == 0
    assert put("b", "3") == 0
    assert h.ctx.metadata() == [("b", "3"), ("a", "2"), ("zs.response.header.x-frame-options", "DENY")]
    assert h.ctx.response_headers() == [("x-frame-options", "DENY")]
    assert h.str_arg("zs_meta_get", "  b") == (1, b"3")
    assert h.str_arg("zs_meta_get", "missing") == (0, b"")


def test_meta_set_from_host_is_visible_to_scripts(h):
    """Metadata the host sets (plugins) is read by zs_meta_get; an empty host key is refused."""
    h.ctx.set_meta(" oidc.sub ", "user-1")
    assert h.str_arg("zs_meta_get", "oidc.sub") == (6, b"user-1")
    with pytest.raises(ValueError, match="empty"):
        h.ctx.set_meta("  ", "x")


def test_meta_set_empty_key_faults(h):
    """An empty (after trimming) metadata key faults, and so does a non-UTF-8 value."""
    with pytest.raises(ScriptFault, match="zs_meta_set: the key is empty"):
        h.call("zs_meta_set", " ", 1, "v", 1)
    with pytest.raises(ScriptFault, match="UTF-8"):
        h.call("zs_meta_set", "k", 1, b"\xff", 1)


# ---- response and outcome ----


def test_respond_records_outcome(h):
    """zs_respond records status and body; a later call replaces it; clear forgets it."""
    assert h.state.outcome == OUTCOME_NONE
    assert h.call("zs_respond", 201, "first", 5) == 0
    assert h.call("zs_respond", 202, "second", 6) == 0
    assert (h.state.outcome, h.state.status, h.state.body) == (OUTCOME_RESPOND, 202, b"second")
    assert h.call("zs_response_pending") == 1
    assert h.call("zs_response_clear") == 0
    assert h.call("zs_response_pending") == 0 and h.state.outcome == OUTCOME_NONE


def test_respond_status_outside_range_is_500(h):
    """A status outside 100..999 is sent as 500; one above 65535 faults."""
    h.call("zs_respond", 99, "", 0)
    assert h.state.status == 500
    h.call("zs_respond", 999, "", 0)
    assert h.state.status == 999
    with pytest.raises(ScriptFault, match="zs_respond"):
        h.call("zs_respond", 65536, "", 0)


def test_abort_wins_over_response(h):
    """zs_abort makes the outcome ABORT even with a response recorded."""
    h.call("zs_respond", 200, "x", 1)
    assert h.call("zs_abort") == 0
    assert h.state.outcome == OUTCOME_ABORT


def test_reverse_proxy_records_url_and_rules(h):
    """The proxy URL is trimmed; a second proxy or a proxy after a response faults; a response after it wins."""
    url = "  http://127.0.0.1:9000/base "
    assert h.call("zs_reverse_proxy", url, len(url)) == 0
    assert (h.state.outcome, h.state.proxy_url) == (OUTCOME_PROXY, "http://127.0.0.1:9000/base")
    h.call("zs_respond", 204, "", 0)
    assert h.state.outcome == OUTCOME_RESPOND
    with pytest.raises(ScriptFault, match="already set a response"):
        h.call("zs_reverse_proxy", "http://x", 8)
    h.begin()
    with pytest.raises(ScriptFault, match="the URL is empty"):
        h.call("zs_reverse_proxy", " ", 1)


# ---- logging, time, environment ----


def test_log_emits_only_finished_lines(h):
    """Text is buffered until a newline; each line is emitted with unsafe bytes as '?'."""
    def log(text):
        return h.call("zs_log", text, len(text))

    assert log(b"partial ") == 0
    assert h.state.take_log_lines() == []
    log(b"line\x01\xc3\xa9\tend\nnext")
    assert h.state.take_log_lines() == ["partial line???\tend"]
    log(b" a\nb\nc")
    assert h.state.take_log_lines() == ["next a", "b"]
    assert h.state.take_log_lines() == []


def test_log_flushes_at_512_bytes(h):
    """An unfinished line is emitted once it holds 512 bytes."""
    h.call("zs_log", "x" * 511, 511)
    assert h.state.take_log_lines() == []
    h.call("zs_log", "yz", 2)
    assert h.state.take_log_lines() == ["x" * 511 + "yz"]


def test_log_unfinished_line_dropped_on_begin(h):
    """A new execution context forgets an unfinished line."""
    h.call("zs_log", "dangling", 8)
    h.begin()
    h.call("zs_log", "\n", 1)
    assert h.state.take_log_lines() == [""]


def test_now_ms_is_unix_milliseconds(h):
    """zs_now_ms lies between two readings of the host clock."""
    before = int(time.time() * 1000)
    value = h.call("zs_now_ms")
    after = int(time.time() * 1000)
    assert before - 1 <= value <= after + 1


def test_version_is_set_string(h):
    """zs_version answers the string set at start-up, by the C-string rule."""
    set_version("1.2.3-test")
    assert h.string("zs_version") == (10, b"1.2.3-test")
    assert h.string("zs_version", size=4) == (4, b"1.2")


def test_env_get_reads_trimmed_name(h, monkeypatch):
    """zs_env_get reads the process environment with the name trimmed; missing is ""."""
    monkeypatch.setenv("ZS_TEST_ENV", "value-1")
    assert h.str_arg("zs_env_get", " ZS_TEST_ENV ") == (7, b"value-1")
    assert h.str_arg("zs_env_get", "ZS_TEST_ENV_MISSING") == (0, b"")


# ---- memory helpers ----


def test_memory_helpers_copy_compare_fill(h):
    """memcpy copies and returns dst; memcmp gives the byte difference; memset fills."""
    dst = Out(8)
    src = h.run.alloc(b"abcdefgh")
    assert h.call("zs_memcpy", dst, src, 8) == dst.addr
    assert h.read(dst) == b"abcdefgh"
    assert h.call("zs_memcmp", b"abc", b"abd", 3) == -1
    assert h.call("zs_memcmp", b"b", b"a", 1) == 1
    assert h.call("zs_memcmp", b"same", b"same", 4) == 0
    assert h.call("zs_memset", dst.addr, ord("z"), 4) == dst.addr
    assert h.read(dst) == b"zzzzefgh"
    with pytest.raises(ScriptFault, match="overlaps"):
        h.call("zs_memcpy", dst.addr + 2, dst.addr, 4)


# ---- crypto and encoding ----


def test_getrandom_fills_buffer(h):
    """zs_getrandom fills n bytes and returns n."""
    out = Out(32)
    assert h.call("zs_getrandom", out, 32) == 32
    assert h.read(out) != bytes([FILL]) * 32


def test_sha256_matches_hashlib(h):
    """zs_sha256 writes the SHA-256 digest; out_len other than 32 faults."""
    data = b"zeroserve" * 100
    out = Out(32)
    assert h.call("zs_sha256", data, len(data), out, 32) == 32
    assert h.read(out) == hashlib.sha256(data).digest()
    with pytest.raises(ScriptFault, match="zs_sha256: out_len must be 32"):
        h.call("zs_sha256", data, len(data), Out(33), 31)


def test_hmac_sha256_matches_hmac(h):
    """zs_hmac_sha256 writes HMAC-SHA-256 and returns 32."""
    key, msg = b"k" * 70, b"message to sign"
    out = Out(32)
    assert h.call("zs_hmac_sha256", key, len(key), msg, len(msg), out) == 32
    assert h.read(out) == hmac.new(key, msg, hashlib.sha256).digest()


B64 = {
    0: base64.standard_b64encode,
    1: lambda d: base64.standard_b64encode(d).rstrip(b"="),
    2: base64.urlsafe_b64encode,
    3: lambda d: base64.urlsafe_b64encode(d).rstrip(b"="),
}


@pytest.mark.parametrize("encoding", [0, 1, 2, 3])
@pytest.mark.parametrize("data", [b"", b"f", b"fo", b"foo", b"\xfb\xff\xfe", bytes(range(256))])
def test_base64_encodes_and_decodes_vectors(h, encoding, data):
    """Encoding matches Python's base64 per alphabet, out_len 0 gives the length, and decoding inverts it."""
    expected = B64[encoding](data)
    assert h.call("zs_base64_encode", data, len(data), Out(1), 0, encoding) == len(expected)
    out = Out(len(expected) + 4)
    assert h.call("zs_base64_encode", data, len(data), out, out.size, encoding) == len(expected)
    assert h.read(out)[:len(expected)] == expected
    buf = Out(len(expected) + 1)
    buf.addr = h.run.alloc(expected + b"\0")
    assert h.call("zs_base64_decode_in_place", buf.addr, len(expected), encoding) == len(data)
    assert h.read(buf)[:len(data)] == data


@pytest.mark.parametrize("text, encoding", [
    (b"Zm9", 0), (b"Zm9v=", 0), (b"Zg", 0), (b"Zh==", 0), (b"Zg==", 1), (b"Z+8=", 2), (b"Z_8", 0),
    (b"Z", 1), (b"Zm 9v", 0),
])
def test_base64_decode_rejects_bad_input(h, text, encoding):
    """Bad characters, bad padding and non-canonical trailing bits give -1."""
    assert h.call("zs_base64_decode_in_place", text, len(text), encoding) == -1


def test_base64_encode_bad_arguments_fault(h):
    """A short buffer or an unknown alphabet faults."""
    with pytest.raises(ScriptFault, match="too small"):
        h.call("zs_base64_encode", b"abcd", 4, Out(8), 7, 0)
    with pytest.raises(ScriptFault, match="unknown encoding"):
        h.call("zs_base64_encode", b"abcd", 4, Out(8), 8, 4)


def test_hex_encodes_and_decodes(h):
    """Hex in both cases, out_len 0 gives 2n; decoding takes either case; odd or bad input gives -1."""
    data = bytes([0, 0x1F, 0xAB, 0xFF])
    assert h.call("zs_hex_encode", data, 4, Out(1), 0, 0) == 8
    out = Out(8)
    assert h.call("zs_hex_encode", data, 4, out, 8, 0) == 8
    assert h.read(out) == b"001fabff"
    assert h.call("zs_hex_encode", data, 4, out, 8, 1) == 8
    assert h.read(out) == b"001FABFF"
    buf = h.run.alloc(b"001fABff")
    assert h.call("zs_hex_decode_in_place", buf, 8) == 4
    assert h.run.read(buf, 4) == data
    assert h.call("zs_hex_decode_in_place", b"abc", 3) == -1
    assert h.call("zs_hex_decode_in_place", b"zz", 2) == -1
    with pytest.raises(ScriptFault, match="too small"):
        h.call("zs_hex_encode", data, 4, Out(8), 7, 0)
    with pytest.raises(ScriptFault, match="case flag"):
        h.call("zs_hex_encode", data, 4, Out(8), 8, 2)


# ---- JSON ----


def test_json_reads_parsed_values(h):
    """parse, get, array_get, read_string / i64 / bool, len and type follow the reference."""
    root = h.handle('{"s":"héllo","n":-42,"big":18446744073709551615,"f":1.5,"b":true,'
                    '"z":null,"a":[10,"x",{"k":false}],"o":{}}')
    assert root > 0 and h.call("zs_json_type", root) == 5
    assert h.call("zs_json_len", root) == 8
    key = lambda obj, k: h.call("zs_json_get", obj, k, len(k))
    s = key(root, "s")
    assert h.call("zs_json_type", s) == 3 and h.call("zs_json_len", s) == 6
    assert h.string("zs_json_read_string", s) == (6, "héllo".encode())
    assert h.string("zs_json_read_string", s, size=3) == (3, b"h\xc3")
    n = key(root, "n")
    out = Out(8)
    assert h.call("zs_json_read_i64", n, out, 8) == 8
    assert int.from_bytes(h.read(out), "little", signed=True) == -42
    assert h.call("zs_json_read_i64", key(root, "big"), Out(8), 8) == -1
    assert h.call("zs_json_read_i64", key(root, "f"), Out(8), 8) == -1
    assert h.call("zs_json_read_string", n, Out(8), 8) == -1
    flag = Out(1)
    assert h.call("zs_json_read_bool", key(root, "b"), flag, 1) == 1 and h.read(flag) == b"\x01"
    assert h.call("zs_json_read_bool", n, Out(1), 1) == -1
    assert h.call("zs_json_type", key(root, "z")) == 0 and h.call("zs_json_len", key(root, "z")) == -1
    arr = key(root, "a")
    assert h.call("zs_json_type", arr) == 4 and h.call("zs_json_len", arr) == 3
    third = h.call("zs_json_array_get", arr, 2)
    assert h.call("zs_json_type", third) == 5
    assert h.call("zs_json_array_get", arr, 3) == -1
    assert h.call("zs_json_array_get", root, 0) == -1
    assert key(root, "missing") == -1 and key(arr, "k") == -1
    assert h.call("zs_json_len", key(root, "o")) == 0


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**64 - 1) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=JSON_VALUES)
def test_json_round_trip_matches_python(h, value):
    """Parsing and serialising any JSON value gives Python's compact, key-sorted text."""
    h.begin()
    text = json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    handle = h.handle(text)
    assert handle > 0
    assert h.run.json_text(handle) == text


def test_json_parse_invalid_returns_minus_one(h):
    """Invalid JSON, trailing bytes and bad UTF-8 give -1."""
    for text in [b"{", b"[1,]", b"01", b'{"a":1} x', b'"\xff"', b"nul", b'"\\ud800"']:
        assert h.call("zs_json_parse", text, len(text)) == -1, text


def test_json_read_size_rules_fault(h):
    """read_i64 needs out_len 8 and read_bool out_len 1, else the script faults."""
    n = h.handle("5")
    with pytest.raises(ScriptFault, match="out_len must be 8"):
        h.call("zs_json_read_i64", n, Out(16), 16)
    with pytest.raises(ScriptFault, match="out_len must be 1"):
        h.call("zs_json_read_bool", n, Out(2), 2)


def test_json_builds_and_serialises_tree(h):
    """new_object/array, set, array_push/set, set_* and clone build a tree serialised compactly, keys sorted."""
    obj = h.call("zs_json_new_object")
    arr = h.call("zs_json_new_array")
    val = h.handle('"v"')
    set_ = lambda o, k, v: h.call("zs_json_set", o, k, len(k), v)
    assert h.call("zs_json_array_push", arr, val) == 1
    assert h.call("zs_json_array_push", arr, val) == 2
    assert h.call("zs_json_array_set", arr, 1, h.handle("[true]")) == 0
    assert h.call("zs_json_array_set", arr, 5, val) == -1
    assert set_(obj, "z", arr) == 0
    assert set_(obj, "a", val) == 0
    assert set_(arr, "x", val) == -1
    assert h.run.json_text(obj) == '{"a":"v","z":["v",[true]]}'
    target = h.call("zs_json_get", obj, "a", 1)
    assert h.call("zs_json_set_i64", target, -7) == 0
    assert h.call("zs_json_reset", obj) == 0
    assert h.run.json_text(obj) == '{"a":-7,"z":["v",[true]]}'
    copy = h.call("zs_json_clone", obj)
    assert h.call("zs_json_remove", copy, "z", 1) == 0
    assert h.call("zs_json_remove", copy, "z", 1) == -1
    assert h.run.json_text(copy) == '{"a":-7}'
    assert h.run.json_text(obj) == '{"a":-7,"z":["v",[true]]}'
    s = h.handle('{"q":1}')
    assert h.call("zs_json_set_string", s, 'a"\n\x01', 4) == 0
    assert h.run.json_text(s) == '"a\\"\\n\\u0001"'
    assert h.call("zs_json_set_bool", s, 1) == 0 and h.run.json_text(s) == "true"
    assert h.call("zs_json_set_null", s) == 0 and h.run.json_text(s) == "null"
    assert h.run.json_text(h.handle("[1.5,1e300,1.0,-0.25,1e-7]")) == "[1.5,1e300,1.0,-0.25,1e-7]"


def test_json_epoch_rule_makes_other_handles_stale(h):
    """After a mutation through one handle, other handles into the tree fault until reset."""
    root = h.handle('{"a":{"b":1},"c":2}')
    child = h.call("zs_json_get", root, "a", 1)
    other = h.call("zs_json_get", root, "c", 1)
    assert h.call("zs_json_set_i64", other, 3) == 0
    assert h.call("zs_json_type", other) == 2  # the mutating handle stays valid
    with pytest.raises(ScriptFault, match="stale"):
        h.call("zs_json_type", child)
    with pytest.raises(ScriptFault, match="stale"):
        h.call("zs_json_len", root)
    assert h.call("zs_json_reset", root) == 0
    assert h.run.json_text(root) == '{"a":{"b":1},"c":3}'
    independent = h.handle("[1]")
    assert h.call("zs_json_array_push", independent, root) == 2
    assert h.call("zs_json_type", root) == 5  # another tree's mutation leaves it valid


def test_json_free_and_unknown_handle_faults(h):
    """zs_object_free frees a handle; using or freeing an unknown handle faults."""
    handle = h.handle("1")
    assert h.call("zs_object_free", handle) == 0
    with pytest.raises(ScriptFault, match="not a live JSON handle"):
        h.call("zs_json_type", handle)
    with pytest.raises(ScriptFault, match="zs_object_free"):
        h.call("zs_object_free", handle)


def test_json_handle_limit_is_32_live(h):
    """33 live handles fault; freeing one makes room, and handles are never reused."""
    handles = [h.call("zs_json_new_array") for _ in range(32)]
    assert handles == list(range(1, 33))
    with pytest.raises(ScriptFault, match="more than 32 live JSON handles"):
        h.call("zs_json_new_array")
    h.call("zs_object_free", handles[0])
    assert h.call("zs_json_new_array") == 33  # not 1: a freed handle number never returns


def test_json_memory_cap_faults(programs):
    """JSON beyond the run's memory faults the script; freeing returns the memory."""
    small = Harness(programs["forward"], memory_kb=64)
    text = json.dumps("x" * 6000).encode()
    addr = small.run.alloc(text)
    parse = lambda: small.call("zs_json_parse", addr, len(text))
    live = [parse() for _ in range(2)]
    with pytest.raises(ScriptFault, match="script memory is full"):
        for _ in range(8):
            live.append(parse())
    for handle in live:
        small.call("zs_object_free", handle)
    for _ in range(8):
        small.call("zs_object_free", parse())


def test_json_respond_sets_body_and_content_type(h):
    """zs_json_respond responds with compact JSON and stores the content-type metadata."""
    obj = h.handle('{ "ok" : [ 1 , 2 ] }')
    assert h.call("zs_json_respond", 200, obj) == 0
    assert (h.state.outcome, h.state.status, h.state.body) == (OUTCOME_RESPOND, 200, b'{"ok":[1,2]}')
    assert h.ctx.response_headers() == [("content-type", "application/json")]


def test_json_host_copy_gives_callee_handle_one(programs):
    """A handle copied into a fresh context is handle 1 there, independent of the source."""
    caller = Harness(programs["forward"])
    callee = Harness(programs["forward"])
    source = caller.handle('{"in":1}')
    assert callee.run.json_copy_from(caller.run, source) == 1
    assert callee.run.json_text(1) == '{"in":1}'
    assert caller.run.json_parse("[2]") == source + 1
    with pytest.raises(ValueError, match="not a live JSON handle"):
        callee.run.json_copy_from(caller.run, 99)


# ---- a whole request script ----


def test_chain_script_reads_request_and_responds(programs):
    """A ZS_ENTRY script sees the request, sets metadata, logs and responds."""
    ctx, state = RequestContext(), ScriptState()
    run = ScriptRun(programs["chain"], state)
    ctx.begin("GET", "/hello", "/hello", "name=World", "https", "127.0.0.1:1", (2, 0), True,
              [("user-agent", "pytest")])
    run.begin(ctx)
    run.start("zeroserve.request")
    assert (state.outcome, state.status, state.body) == (OUTCOME_RESPOND, 200, b"hello World")
    assert ctx.metadata() == [("greeted", "World"), ("zs.response.header.content-type", "text/plain")]
    assert state.take_log_lines() == ["greeting World from pytest"]
    ctx.begin("GET", "/other", "/other", "", "https", "127.0.0.1:1", (2, 0), True, [])
    run.begin(ctx)
    run.start("zeroserve.request")
    assert state.outcome == OUTCOME_NONE and ctx.metadata() == []


# ---- Caddy-style rewrite operations ----


def ops(h, helper, value):
    """Calls a helper taking (JSON text, length) with value serialised."""
    text = json.dumps(value)
    return h.call(helper, text, len(text))


def test_replace_header_literal_and_regexp(h):
    """search replaces every occurrence; search_regexp expands $N; '*' edits every header."""
    assert ops(h, "zs_req_replace_header", {"name": "x-MULTI", "search": "o", "replace": "0"}) == 0
    assert [v for n, v in h.ctx.headers() if n == "x-multi"] == ["0ne", "tw0"]
    assert ops(h, "zs_req_replace_header",
               {"name": "host", "search_regexp": "^([a-z]+)\\.(com)$", "replace": "${1}-$2-$$"}) == 0
    assert dict(h.ctx.headers())["host"] == "example-com-$"
    assert ops(h, "zs_req_replace_header", {"name": "*", "search": "1", "replace": "one"}) == 0
    assert dict(h.ctx.headers())["cookie"] == "b=2" and ("cookie", "a=one") in h.ctx.headers()
    assert h.ctx.changed & CHANGED_HEADERS
    with pytest.raises(ScriptFault, match="search_regexp"):
        ops(h, "zs_req_replace_header", {"name": "host", "search_regexp": "(", "replace": ""})


@pytest.mark.parametrize("operations, path, query", [
    ({"strip_path_prefix": "/api"}, "/v1/items", "a=1"),
    ({"strip_path_prefix": "api/v1"}, "/items", "a=1"),
    ({"strip_path_prefix": "/other"}, "/api/v1/items", "a=1"),
    ({"strip_path_suffix": "/items"}, "/api/v1", "a=1"),
    ({"path_regexp": [{"find": "/v([0-9]+)/", "replace": "/version$1/"}]}, "/api/version1/items", "a=1"),
    ({"uri_substring": [{"find": "a=1", "replace": "b=2"}]}, "/api/v1/items", "b=2"),
    ({"uri_substring": [{"find": "i", "replace": "I", "limit": 1}]}, "/apI/v1/items", "a=1"),
])
def test_rewrite_uri_applies_operations(h, operations, path, query):
    """strip_path_prefix/suffix, path_regexp and uri_substring rewrite the URI and renormalise."""
    h.begin(path="/api/v1/items", normalized="/api/v1/items", query="a=1")
    assert ops(h, "zs_req_rewrite_uri", operations) == 0
    assert (h.ctx.path, h.ctx.query) == (path, query)
    assert h.ctx.changed & CHANGED_URI


@pytest.mark.parametrize("operations, query", [
    ({"rename": [{"key": "a", "val": "z"}]}, "b=x+y&z=1&z=3"),
    ({"set": [{"key": "a", "val": "9"}]}, "a=9&b=x+y"),
    ({"add": [{"key": "c", "val": "a b&"}]}, "a=1&a=3&b=x+y&c=a+b%26"),
    ({"replace": [{"key": "b", "search": "x", "replace": "X"}]}, "a=1&a=3&b=X+y"),
    ({"replace": [{"key": "*", "search_regexp": "[0-9]", "replace": "#"}]}, "a=%23&a=%23&b=x+y"),
    ({"delete": ["a"]}, "b=x+y"),
])
def test_rewrite_query_applies_operations(h, operations, query):
    """rename, set, add, replace and delete edit the query, re-encoded with keys sorted."""
    h.begin(query="b=x+y&a=1&a=3")
    assert ops(h, "zs_req_rewrite_query", operations) == 0
    assert h.ctx.query == query


def test_rewrite_bad_operations_fault(h):
    """Operations that are not a JSON object fault."""
    with pytest.raises(ScriptFault, match="not a JSON object"):
        ops(h, "zs_req_rewrite_query", ["delete"])


# ---- response hooks ----


def test_res_hook_registers_hooks_in_order(h):
    """zs_res_hook records (script, func, copy of the JSON) in order; "" is this script; clear drops them."""
    data = h.handle('{"k":1}')
    assert h.call("zs_res_hook", "", 0, "audit", 5, data) == 0
    assert h.call("zs_res_hook", "lib.o", 5, "stamp", 5, data) == 0
    assert h.ctx.response_hooks() == [("10-test.o", "audit", '{"k":1}'), ("lib.o", "stamp", '{"k":1}')]
    assert h.call("zs_res_hooks_clear") == 0
    assert h.ctx.response_hooks() == []
    with pytest.raises(ScriptFault, match="function name is empty"):
        h.call("zs_res_hook", "", 0, "", 0, data)
    with pytest.raises(ScriptFault, match="not a live JSON handle"):
        h.call("zs_res_hook", "", 0, "f", 1, 999)


@pytest.mark.parametrize("helper, args", [
    ("zs_res_status", ()), ("zs_res_set_status", (200,)), ("zs_res_continue_request", ()),
    ("zs_res_header", ("a", 1, Out(8), 8)), ("zs_res_replace_header", ('{"name":"a","search":"b","replace":"c"}', 39)),
])
def test_hook_only_helpers_fault_outside_hooks(h, helper, args):
    """The zs_res_* helpers fault outside a response hook."""
    with pytest.raises(ScriptFault, match="only a response hook"):
        h.call(helper, *args)


def test_hook_reads_and_edits_response(h):
    """In a hook: status read and set (100..999), headers read and edited, continue flagged, abort faults."""
    h.begin(in_hook=True)
    h.ctx.begin_response(404, [("Content-Type", "text/plain"), ("X-Trace", "abc-1")])
    assert h.call("zs_res_status") == 404
    assert h.call("zs_res_set_status", 410) == 0
    assert h.str_arg("zs_res_header", " content-type ") == (10, b"text/plain")
    assert h.str_arg("zs_res_header", "missing") == (0, b"")
    assert ops(h, "zs_res_replace_header", {"name": "x-trace", "search_regexp": "[0-9]+", "replace": "N"}) == 0
    assert h.call("zs_res_continue_request") == 0
    assert h.ctx.response() == (410, [("content-type", "text/plain"), ("x-trace", "abc-N")], True)
    with pytest.raises(ScriptFault, match="outside 100..999"):
        h.call("zs_res_set_status", 1000)
    with pytest.raises(ScriptFault, match="header name is empty"):
        h.call("zs_res_header", " ", 1, Out(4), 4)
    with pytest.raises(ScriptFault, match="zs_abort"):
        h.call("zs_abort")
