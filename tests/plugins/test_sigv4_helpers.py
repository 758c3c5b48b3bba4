"""The sigv4 helpers called from a real BPF script in the VM, on every engine, checked against botocore."""

import calendar
import datetime
import hashlib
import json
import pathlib
import struct
import subprocess
from types import SimpleNamespace
from unittest import mock
from urllib.parse import quote, urlsplit

import pytest
from botocore.auth import S3SigV4Auth, S3SigV4QueryAuth, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zeroserve.core.errors import ScriptFault
from zeroserve.core.script_abi import RequestContext, ScriptRun, ScriptState, core_helper_defs
from zeroserve.plugins.sigv4.signing import c_credentials, helper_functions
from zeroserve.vm import Program, jit_available

REPO = pathlib.Path(__file__).resolve().parent.parent.parent
ENGINES = ["interp"] + (["jit"] if jit_available() else [])
MASK64 = (1 << 64) - 1
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
CONFIGURED = SimpleNamespace(access_key="AKIACONFIGURED000001", secret_key="configured/secret+key",
                             token="FwoGZXIvYXdzEP//session+token/==")
SCRIPT_KEYS = SimpleNamespace(access_key="AKIDEXAMPLE", secret_key="wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
                              token=None)
WHEN = datetime.datetime(2024, 2, 29, 23, 59, 58)
WHEN_MS = calendar.timegm(WHEN.timetuple()) * 1000 + 999  # floored to the second


@pytest.fixture(scope="module")
def script_object(tmp_path_factory):
    out = tmp_path_factory.mktemp("sigv4") / "sigv4_forward.o"
    subprocess.run(["clang", "-O2", "-target", "bpf", "-I", str(REPO / "sdk"), "-c",
                    str(REPO / "tests" / "plugins" / "scripts" / "sigv4_forward.c"), "-o", str(out)],
                   check=True, capture_output=True)
    return out.read_bytes()


def load(data, engine, credentials):
    cookie = c_credentials(credentials)
    helpers = dict(core_helper_defs())
    helpers.update((name, (function, cookie)) for name, function in helper_functions().items())
    return Program.load_elf(data, helpers, engine=engine), cookie


@pytest.fixture(scope="module", params=ENGINES)
def programs(request, script_object):
    """The forward script loaded with configured credentials, and without any."""
    return {"configured": load(script_object, request.param, CONFIGURED),
            "none": load(script_object, request.param, None)}


class Harness:
    """A request context and a run of sigv4_forward.c; call(helper, *args) runs fwd/<helper>."""

    def __init__(self, program):
        self.ctx = RequestContext()
        self.run = ScriptRun(program, ScriptState(), 256)
        self.begin()

    def begin(self, method="GET", path="/", query="", headers=(("host", "zeroserve.test"),)):
        self.ctx.begin(method, path, path, query, "https", "192.0.2.1:4000", (1, 1), True, list(headers))
        self.run.begin(self.ctx, "10-sigv4.o")

    def bytes_arg(self, data):
        data = data.encode() if isinstance(data, str) else data
        return self.run.alloc(data) if data else self.run.alloc(1)

    def call(self, helper, *args):
        regs = [self.bytes_arg(a) if isinstance(a, (bytes, str)) else a & MASK64 for a in args]
        self.run.start(f"fwd/{helper}", regs)
        result = self.run.result
        return result - (1 << 64) if result >> 63 else result

    def params(self, fields, size=144, misalign=0):
        """A zs_aws_v4_sign_params block at an 8-byte aligned address (+ misalign); its address."""
        base = self.run.alloc(size + 16)
        addr = (base + 7) // 8 * 8 + misalign
        self.run.write(addr, struct.pack("<18Q", *(f & MASK64 for f in fields))[:size])
        return addr

    def sign_params(self, keys, method, uri, headers, region, service, body_hash="", timestamp_ms=WHEN_MS,
                    out_len=1024):
        """The fields of a parameter block for these inputs, and the output buffer's address."""
        def string(value):
            data = value.encode()
            return self.bytes_arg(data), len(data)
        handle = 0
        if headers is not None:
            handle = self.call("zs_json_parse", json.dumps(headers).encode(), len(json.dumps(headers).encode()))
        out = self.run.alloc(out_len)
        fields = [*string(keys.access_key), *string(keys.secret_key), *string(region), *string(service),
                  *string(method), *string(uri), handle, *string(body_hash), timestamp_ms, out, out_len]
        return fields, out

    def text(self, addr, length):
        data = self.run.read(addr, length)
        return data[:data.index(0)].decode()


@pytest.fixture
def h(programs):
    return Harness(programs["configured"][0])


@pytest.fixture
def bare(programs):
    return Harness(programs["none"][0])


def botocore_request(method, url, headers, body=b""):
    request = AWSRequest(method=method, url=url, data=body)
    for name, value in headers.items():
        request.headers[name] = value
    return request


def botocore_sign(auth, request, when=WHEN):
    with mock.patch("botocore.auth.get_current_datetime", return_value=when):
        auth.add_auth(request)
    return request


# ---- zs_aws_v4_authorization_header ----


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(method=st.sampled_from(["GET", "PUT", "DELETE"]),
       key=st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1, max_size=12),
       service=st.sampled_from(["s3", "execute-api"]), token=st.sampled_from([None, "tok/en+=="]))
def test_sigv4_authorization_helper_equals_botocore(h, method, key, service, token):
    """The helper's Authorization for a 144-byte block equals botocore's for the same request."""
    h.begin()  # one harness serves every example: start from empty memory and handles
    path = "/bucket/" + quote(key, safe="/~")
    headers = {"Host": "s3.eu-west-3.amazonaws.com", "X-Amz-Date": "20240229T235958Z",
               "X-Amz-Content-SHA256": EMPTY_SHA256}
    if token:
        headers["X-Amz-Security-Token"] = token
    expected_request = botocore_request(method, f"https://s3.eu-west-3.amazonaws.com{path}?list-type=2", headers)
    auth_class = S3SigV4Auth if service == "s3" else SigV4Auth
    keys = SimpleNamespace(access_key=SCRIPT_KEYS.access_key, secret_key=SCRIPT_KEYS.secret_key)
    botocore_sign(auth_class(Credentials(keys.access_key, keys.secret_key, token), service, "eu-west-3"),
                  expected_request)
    fields, out = h.sign_params(keys, method, f"{path}?list-type=2", headers, "eu-west-3", service, EMPTY_SHA256)
    expected = expected_request.headers["Authorization"]
    assert h.call("zs_aws_v4_authorization_header", h.params(fields), 144) == len(expected)
    assert h.text(out, 1024) == expected


def test_sigv4_authorization_helper_hashes_the_empty_body_when_no_hash_is_given(h):
    """An empty body_hash signs the empty body's SHA-256, as botocore does for a bodiless request."""
    headers = {"Host": "api.example.com", "X-Amz-Date": "20240229T235958Z"}
    expected = botocore_sign(SigV4Auth(Credentials(SCRIPT_KEYS.access_key, SCRIPT_KEYS.secret_key), "execute-api",
                                       "us-east-1"),
                             botocore_request("GET", "https://api.example.com/v1/items?b=2&a=1", headers))
    fields, out = h.sign_params(SCRIPT_KEYS, "GET", "/v1/items?b=2&a=1#frag", headers, "us-east-1", "execute-api")
    assert h.call("zs_aws_v4_authorization_header", h.params(fields), 144) > 0
    assert h.text(out, 1024) == expected.headers["Authorization"]


def test_sigv4_helper_output_follows_the_cstring_rule(h):
    """A short output buffer gets a truncated, NUL-terminated value and out_len is returned."""
    fields, out = h.sign_params(SCRIPT_KEYS, "GET", "/", {"host": "h.example"}, "us-east-1", "s3", out_len=10)
    assert h.call("zs_aws_v4_authorization_header", h.params(fields), 144) == 10
    assert h.run.read(out, 10) == b"AWS4-HMAC\0"


def test_sigv4_helper_bad_block_size_or_alignment_faults(h):
    """A size other than 144 or a misaligned block faults the script."""
    fields, _ = h.sign_params(SCRIPT_KEYS, "GET", "/", {"host": "h.example"}, "us-east-1", "s3")
    with pytest.raises(ScriptFault, match="144-byte"):
        h.call("zs_aws_v4_authorization_header", h.params(fields), 136)
    with pytest.raises(ScriptFault, match="aligned"):
        h.call("zs_aws_v4_presigned_url", h.params(fields, misalign=4), 144, 60)


@pytest.mark.parametrize("change", ["access_key", "region", "method", "uri", "no_host", "one_key", "expires"])
def test_sigv4_helper_refuses_bad_input_with_minus_one(h, change):
    """Over-long fields, a missing host header, half a key pair or a bad expiry return -1."""
    keys = SimpleNamespace(access_key="A" * (257 if change == "access_key" else 20),
                           secret_key="" if change == "one_key" else "secret")
    headers = {"x-other": "1"} if change == "no_host" else {"host": "h.example"}
    fields, _ = h.sign_params(keys, "G" * 65 if change == "method" else "GET",
                              "/" + "a" * 1024 if change == "uri" else "/", headers,
                              "r" * 65 if change == "region" else "us-east-1", "s3")
    expires = 604801 if change == "expires" else 60
    assert h.call("zs_aws_v4_presigned_url", h.params(fields), 144, expires) == -1


def test_sigv4_authorization_helper_does_not_use_configured_keys(h):
    """Header mode with empty keys answers -1: configured keys are for presigning and zs_aws_sign_request."""
    fields, _ = h.sign_params(SimpleNamespace(access_key="", secret_key=""), "GET", "/", {"host": "h.example"},
                              "us-east-1", "s3")
    assert h.call("zs_aws_v4_authorization_header", h.params(fields), 144) == -1


# ---- zs_aws_v4_presigned_url ----


@pytest.mark.parametrize("method", ["GET", "PUT"])
def test_sigv4_presigned_url_helper_equals_botocore(h, method):
    """Download and upload URLs equal S3SigV4QueryAuth's, with the expiry given."""
    request = botocore_request(method, "https://bucket.s3.amazonaws.com/dir/file%20name.txt?versionId=3",
                               {"Host": "bucket.s3.amazonaws.com"})
    botocore_sign(S3SigV4QueryAuth(Credentials(SCRIPT_KEYS.access_key, SCRIPT_KEYS.secret_key), "s3", "us-east-1",
                                   expires=900), request)
    parts = urlsplit(request.url)
    expected = f"{parts.path}?{parts.query}"
    fields, out = h.sign_params(SCRIPT_KEYS, method, "/dir/file%20name.txt?versionId=3",
                                {"host": "bucket.s3.amazonaws.com"}, "us-east-1", "s3")
    assert h.call("zs_aws_v4_presigned_url", h.params(fields), 144, 900) == len(expected)
    assert h.text(out, 1024) == expected


def test_sigv4_presigned_url_helper_with_empty_keys_uses_configured_credentials(h):
    """Empty keys presign with the configured credentials, session token included."""
    request = botocore_request("GET", "https://bucket.s3.amazonaws.com/report.csv",
                               {"Host": "bucket.s3.amazonaws.com"})
    botocore_sign(S3SigV4QueryAuth(Credentials(CONFIGURED.access_key, CONFIGURED.secret_key, CONFIGURED.token),
                                   "s3", "us-east-1", expires=60), request)
    parts = urlsplit(request.url)
    fields, out = h.sign_params(SimpleNamespace(access_key="", secret_key=""), "GET", "/report.csv",
                                {"host": "bucket.s3.amazonaws.com"}, "us-east-1", "s3")
    assert h.call("zs_aws_v4_presigned_url", h.params(fields), 144, 60) > 0
    assert h.text(out, 1024) == f"{parts.path}?{parts.query}"
    assert "X-Amz-Security-Token=" in h.text(out, 1024)


def test_sigv4_presigned_url_helper_without_configured_credentials_answers_minus_one(bare):
    """Empty keys and no configured credentials give -1."""
    fields, _ = bare.sign_params(SimpleNamespace(access_key="", secret_key=""), "GET", "/k",
                                 {"host": "b.s3.amazonaws.com"}, "us-east-1", "s3")
    assert bare.call("zs_aws_v4_presigned_url", bare.params(fields), 144, 60) == -1


# ---- zs_aws_sign_request ----


def verify_like_moto(headers, method, url, body=b"", service="s3", region="us-east-1"):
    """botocore's signature for the request as an upstream receives it (moto's check); (expected, sent)."""
    authorization = headers["authorization"]
    signed = authorization.split("SignedHeaders=")[1].split(",")[0].split(";")
    request = AWSRequest(method=method, url=url, data=body,
                         headers={name: value for name, value in headers.items() if name in signed})
    request.context["timestamp"] = headers["x-amz-date"]
    auth = (S3SigV4Auth if service == "s3" else SigV4Auth)(
        Credentials(CONFIGURED.access_key, CONFIGURED.secret_key, CONFIGURED.token), service, region)
    canonical = auth.canonical_request(request)
    expected = auth.signature(auth.string_to_sign(request, canonical), request)
    return expected, authorization.split("Signature=")[1]


def test_sigv4_sign_request_signs_what_the_proxy_sends(h):
    """Host, X-Amz-Date, X-Amz-Content-SHA256, the token and Authorization are set, and botocore agrees."""
    h.begin(method="GET", path="/photos/a%20b.jpg", query="versionId=7",
            headers=[("host", "zeroserve.test"), ("range", "bytes=0-9"), ("authorization", "Basic eDp5"),
                     ("x-amz-meta-note", " hello   world ")])
    url = "http://127.0.0.1:9000/bucket/"
    assert h.call("zs_reverse_proxy", url, len(url)) == 0
    assert h.call("zs_aws_sign_request", "s3", 2, "us-east-1", 9) == 0
    headers = dict(h.ctx.headers())
    assert headers["host"] == "127.0.0.1:9000"
    assert headers["x-amz-content-sha256"] == EMPTY_SHA256
    assert headers["x-amz-security-token"] == CONFIGURED.token
    assert headers["range"] == "bytes=0-9"
    assert headers["authorization"].startswith(f"AWS4-HMAC-SHA256 Credential={CONFIGURED.access_key}/")
    assert "SignedHeaders=host;x-amz-content-sha256;x-amz-date;x-amz-meta-note;x-amz-security-token," in \
        headers["authorization"]
    expected, sent = verify_like_moto(headers, "GET", "http://127.0.0.1:9000/bucket/photos/a%20b.jpg?versionId=7")
    assert sent == expected


def test_sigv4_sign_request_hashes_a_buffered_body_and_leaves_a_streamed_one_unsigned(h):
    """A buffered body is hashed; a body still to be streamed is signed UNSIGNED-PAYLOAD."""
    url = "https://bucket.s3.amazonaws.com"
    h.begin(method="PUT", path="/k", headers=[("host", "z"), ("content-length", "5")])
    h.ctx.set_body(b"hello")
    h.call("zs_reverse_proxy", url, len(url))
    assert h.call("zs_aws_sign_request", "s3", 2, "us-east-1", 9) == 0
    headers = dict(h.ctx.headers())
    assert headers["host"] == "bucket.s3.amazonaws.com"
    assert headers["x-amz-content-sha256"] == hashlib.sha256(b"hello").hexdigest()
    expected, sent = verify_like_moto(headers, "PUT", f"{url}/k", b"hello")
    assert sent == expected
    h.begin(method="PUT", path="/k", headers=[("host", "z"), ("transfer-encoding", "chunked")])
    h.call("zs_reverse_proxy", url, len(url))
    assert h.call("zs_aws_sign_request", "s3", 2, "us-east-1", 9) == 0
    assert dict(h.ctx.headers())["x-amz-content-sha256"] == "UNSIGNED-PAYLOAD"


def test_sigv4_sign_request_double_encodes_paths_for_other_services(h):
    """For a service other than S3 the path is normalised and encoded again, as botocore verifies."""
    h.begin(method="GET", path="/v1/a%20b", query="z=1&a=2")
    url = "https://api.example.com:8443/stage/"
    h.call("zs_reverse_proxy", url, len(url))
    assert h.call("zs_aws_sign_request", "execute-api", 11, "eu-west-3", 9) == 0
    headers = dict(h.ctx.headers())
    assert headers["host"] == "api.example.com:8443"
    expected, sent = verify_like_moto(headers, "GET", "https://api.example.com:8443/stage/v1/a%20b?z=1&a=2",
                                      service="execute-api", region="eu-west-3")
    assert sent == expected


def test_sigv4_sign_request_without_proxy_target_or_credentials_answers_minus_one(h, bare):
    """Signing before zs_reverse_proxy, to a non-HTTP target, or without credentials returns -1."""
    assert h.call("zs_aws_sign_request", "s3", 2, "us-east-1", 9) == -1
    target = "unix//run/s3.sock"
    h.call("zs_reverse_proxy", target, len(target))
    assert h.call("zs_aws_sign_request", "s3", 2, "us-east-1", 9) == -1
    url = "http://127.0.0.1:9000"
    bare.call("zs_reverse_proxy", url, len(url))
    assert bare.call("zs_aws_sign_request", "s3", 2, "us-east-1", 9) == -1
    assert "authorization" not in dict(bare.ctx.headers())
