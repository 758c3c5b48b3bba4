"""The sigv4 signer (native/sigv4 through zeroserve.plugins.sigv4.signing) against botocore's, byte for byte."""

import calendar
import datetime
import hashlib
from types import SimpleNamespace
from unittest import mock
from urllib.parse import quote, urlsplit

import pytest
from botocore.auth import S3SigV4Auth, S3SigV4QueryAuth, SigV4Auth, SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zeroserve.plugins.sigv4 import signing

HOST = "example.amazonaws.com"
EXAMPLE = SimpleNamespace(access_key="AKIDEXAMPLE", secret_key="wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
                          token=None)
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()

# ---- strategies: requests as botocore would put them on the wire ----

SEGMENT_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1, max_size=8)
SEGMENTS = st.lists(st.one_of(st.sampled_from([".", "..", ""]), SEGMENT_TEXT), max_size=5)
# "~" is how botocore's serializer encodes paths; the wider set leaves RFC 3986 sub-delims raw
PATH_SAFE = st.sampled_from(["/~", "/~!$&'()*+,;=:@"])
QUERY_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=6)
HEADER_NAMES = st.sampled_from(["X-Custom", "x-custom", "X-Amz-Meta-Note", "Content-Type", "Range",
                                "User-Agent", "Expect", "X-Amzn-Trace-Id", "Accept", "X-Tab"])
# header values: printable ASCII with spaces, tabs and obsolete line folding
HEADER_VALUE = st.lists(st.one_of(st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1,
                                          max_size=6),
                                  st.sampled_from([" ", "  ", "\t", " \t ", "\r\n ", "\r\n\t"])),
                        max_size=6).map("".join)
SERVICES = st.sampled_from(["s3", "execute-api", "service", "sqs"])
REGIONS = st.sampled_from(["us-east-1", "eu-west-3", "ap-southeast-2"])
WHEN = st.datetimes(min_value=datetime.datetime(2000, 1, 1), max_value=datetime.datetime(2099, 12, 31))
TOKENS = st.one_of(st.none(), st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1,
                                      max_size=40))
CREDENTIALS = st.builds(SimpleNamespace,
                        access_key=st.text(st.characters(min_codepoint=0x30, max_codepoint=0x5A), min_size=16,
                                           max_size=20),
                        secret_key=st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=20,
                                           max_size=40),
                        token=TOKENS)


@st.composite
def wire_paths(draw):
    segments = draw(SEGMENTS)
    safe = draw(PATH_SAFE)
    path = "/" + "/".join(quote(segment, safe=safe) for segment in segments)
    return path + ("/" if segments and draw(st.booleans()) else "")


@st.composite
def wire_queries(draw, repeated_keys=True):
    keys = st.sampled_from(["a", "b", "prefix", "list-type"]) if repeated_keys else QUERY_TEXT
    pairs = draw(st.lists(st.tuples(st.one_of(keys, QUERY_TEXT), st.one_of(st.none(), QUERY_TEXT)), max_size=5,
                          unique_by=None if repeated_keys else (lambda pair: pair[0])))
    pieces = []
    for key, value in pairs:
        if key == "" and value is None:
            continue  # an empty piece: "a&&b"
        piece = quote(key, safe="-_.~")
        pieces.append(piece if value is None else f"{piece}={quote(value, safe='-_.~')}")
    return "&".join(pieces)


def timestamp(when):
    return calendar.timegm(when.timetuple())


def url_of(path, query):
    return f"https://{HOST}{path}" + (f"?{query}" if query else "")


def botocore_credentials(credentials):
    return Credentials(credentials.access_key, credentials.secret_key, credentials.token)


def signed_by_botocore(auth, request, when):
    with mock.patch("botocore.auth.get_current_datetime", return_value=when):
        auth.add_auth(request)
    return request


# ---- the AWS example ----


def test_sigv4_authorization_matches_the_aws_example():
    """The Authorization of the documented GET example is the documented one."""
    value = signing.authorization(EXAMPLE, "GET", "/", "", [("Host", HOST), ("X-Amz-Date", "20150830T123600Z")],
                                  EMPTY_SHA256, "us-east-1", "service",
                                  timestamp(datetime.datetime(2015, 8, 30, 12, 36)))
    assert value == ("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "
                     "SignedHeaders=host;x-amz-date, "
                     "Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31")


def test_sigv4_presign_matches_the_aws_example():
    """The presigned URL of the documented GET example ends in the documented signature."""
    url = signing.presign(EXAMPLE, "GET", "/", "", [("Host", HOST)], "us-east-1", "service",
                          timestamp(datetime.datetime(2015, 8, 30, 12, 36)), 3600)
    assert url == ("/?X-Amz-Algorithm=AWS4-HMAC-SHA256"
                   "&X-Amz-Credential=AKIDEXAMPLE%2F20150830%2Fus-east-1%2Fservice%2Faws4_request"
                   "&X-Amz-Date=20150830T123600Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host"
                   "&X-Amz-Signature=e93c787ed7f371d5c6b165c1b38ede9550f4dce4144713e844b25b7192d3865d")


# ---- header mode against SigV4Auth / S3SigV4Auth ----


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(method=st.sampled_from(["GET", "HEAD", "PUT", "POST", "DELETE", "PATCH", "get"]), path=wire_paths(),
       query=wire_queries(), headers=st.lists(st.tuples(HEADER_NAMES, HEADER_VALUE), max_size=6),
       body=st.binary(max_size=64), service=SERVICES, region=REGIONS, when=WHEN, credentials=CREDENTIALS)
def test_sigv4_authorization_equals_botocore(method, path, query, headers, body, service, region, when,
                                              credentials):
    """For generated requests the Authorization header is byte-equal to botocore's."""
    request = AWSRequest(method=method, url=url_of(path, query), data=body)
    request.headers["Host"] = HOST
    for name, value in headers:
        request.headers[name] = value  # HTTPHeaders appends: repeated names stay repeated
    auth_class = S3SigV4Auth if service == "s3" else SigV4Auth
    signed_by_botocore(auth_class(botocore_credentials(credentials), service, region), request, when)
    expected = request.headers["Authorization"]
    sent = [(name, value) for name, value in request.headers.items() if name != "Authorization"]
    payload = request.headers.get("X-Amz-Content-SHA256") or hashlib.sha256(body).hexdigest()
    assert signing.authorization(credentials, method, urlsplit(request.url).path, urlsplit(request.url).query,
                                 sent, payload, region, service, timestamp(when)) == expected


# ---- query mode against SigV4QueryAuth / S3SigV4QueryAuth ----


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(method=st.sampled_from(["GET", "PUT", "HEAD", "DELETE"]), path=wire_paths(),
       query=wire_queries(repeated_keys=False), headers=st.lists(st.tuples(HEADER_NAMES, HEADER_VALUE), max_size=2),
       service=SERVICES, region=REGIONS, when=WHEN, credentials=CREDENTIALS,
       expires=st.integers(min_value=1, max_value=signing.MAX_EXPIRES))
def test_sigv4_presign_equals_botocore(method, path, query, headers, service, region, when, credentials,
                                       expires):
    """For generated requests the presigned path and query are byte-equal to botocore's query signer's."""
    request = AWSRequest(method=method, url=url_of(path, query))
    request.headers["Host"] = HOST
    for name, value in headers:
        request.headers[name] = value
    auth_class = S3SigV4QueryAuth if service == "s3" else SigV4QueryAuth
    signed_by_botocore(auth_class(botocore_credentials(credentials), service, region, expires=expires), request,
                       when)
    parts = urlsplit(request.url)
    sent = [(name, value) for name, value in request.headers.items()]
    assert signing.presign(credentials, method, path, query, sent, region, service, timestamp(when),
                           expires) == f"{parts.path}?{parts.query}"


# ---- the rules, one at a time ----


def test_sigv4_canonical_request_double_encodes_paths_except_for_s3():
    """Other services sign the normalised path encoded again; S3 signs the wire path as it is."""
    args = ("GET", "/a/./b/../c%20d//e", "", [("host", HOST)], EMPTY_SHA256, "us-east-1")
    assert signing.canonical_request(*args, "execute-api").split("\n")[1] == "/a/c%2520d/e"
    assert signing.canonical_request(*args, "s3").split("\n")[1] == "/a/./b/../c%20d//e"


def test_sigv4_canonical_request_encodes_raw_bytes_a_script_passes():
    """Spaces and non-ASCII bytes in a path or query are percent-encoded per UTF-8 byte, '%' escapes kept."""
    canonical = signing.canonical_request("GET", "/a b/é", "k=v w&é", [("host", HOST)], EMPTY_SHA256,
                                          "us-east-1", "s3").split("\n")
    assert canonical[1] == "/a%20b/%C3%A9"
    assert canonical[2] == "%C3%A9=&k=v%20w"


def test_sigv4_canonical_query_sorts_keys_then_values_and_signs_bare_keys_with_equals():
    """Repeated keys sort by value, a bare key is signed as "k=", empty pieces are skipped."""
    canonical = signing.canonical_request("GET", "/", "b=2&a=2&&a=1&c&a", [("host", HOST)], EMPTY_SHA256,
                                          "us-east-1", "sqs").split("\n")
    assert canonical[2] == "a=&a=1&a=2&b=2&c="


def test_sigv4_canonical_headers_fold_whitespace_and_join_repeats():
    """Header values are trimmed with inner runs folded to one space; repeats join with ',' in order."""
    canonical = signing.canonical_request(
        "GET", "/", "", [("Host", HOST), ("X-B", "  two\r\n   words "), ("x-a", "1"), ("X-A", "\t0 ")],
        EMPTY_SHA256, "us-east-1", "sqs").split("\n")
    assert canonical[3:7] == [f"host:{HOST}", "x-a:1,0", "x-b:two words", ""]
    assert canonical[7] == "host;x-a;x-b"


def test_sigv4_presign_rejects_expiry_out_of_range():
    """An expiry of 0 or over seven days is refused."""
    for expires in (0, signing.MAX_EXPIRES + 1):
        with pytest.raises(signing.SigningError, match="cannot be signed"):
            signing.presign(EXAMPLE, "GET", "/", "", [("host", HOST)], "us-east-1", "s3", 0, expires)


@pytest.mark.parametrize("service", ["s3", "execute-api"])
def test_sigv4_raw_path_signs_and_presigns_as_its_encoded_form(service):
    """A path passed raw (space, non-ASCII) is signed and returned exactly as its percent-encoded form is."""
    when = timestamp(datetime.datetime(2024, 5, 1, 8, 30))
    headers = [("host", HOST)]
    raw = signing.presign(EXAMPLE, "GET", "/dir/a b/é.txt", "", headers, "us-east-1", service, when, 60)
    encoded = signing.presign(EXAMPLE, "GET", "/dir/a%20b/%C3%A9.txt", "", headers, "us-east-1", service, when, 60)
    assert raw == encoded and raw.startswith("/dir/a%20b/%C3%A9.txt?")
    assert signing.authorization(EXAMPLE, "GET", "/dir/a b/é.txt", "", headers, EMPTY_SHA256, "us-east-1", service,
                                 when) == signing.authorization(EXAMPLE, "GET", "/dir/a%20b/%C3%A9.txt", "", headers,
                                                                EMPTY_SHA256, "us-east-1", service, when)
