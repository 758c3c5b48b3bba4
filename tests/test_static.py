"""Static file semantics: lookup, 404/405, validators, 304, ranges, multi-range, precompressed siblings."""

import email.parser
import email.policy
import gzip
import tarfile

import pytest

from sitetars import header, response_body, write_tar
from zeroserve.core.site import Site
from zeroserve.core.static import MAX_RANGES, StaticOptions, parse_http_date, parse_ranges, serve

MTIME = 1_700_000_000  # Tue, 14 Nov 2023 22:13:20 GMT
LAST_MODIFIED = "Tue, 14 Nov 2023 22:13:20 GMT"
DIGITS = b"0123456789" * 10  # 100 bytes
CSS = b"body { margin: 0 }\n" * 50
CSS_BR = b"pretend-brotli:" + bytes(range(40))
CSS_GZ = gzip.compress(CSS, mtime=0)
OPTIONS = StaticOptions()


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    path = tmp_path_factory.mktemp("static") / "site.tar"
    write_tar(
        path,
        [
            ("index.html", b"<h1>home</h1>", MTIME),
            ("digits.txt", DIGITS, MTIME),
            ("empty.txt", b"", MTIME),
            ("nodate.txt", b"no mtime", 0),
            ("docs/index.html", b"<h1>docs</h1>", MTIME),
            ("about.html", b"<h1>about</h1>", MTIME),
            ("app.mjs", b"export {}", MTIME),
            ("img.webp", b"RIFF", MTIME),
            ("img.avif", b"avif", MTIME),
            ("font.woff2", b"wOF2", MTIME),
            ("mod.wasm", b"\0asm", MTIME),
            ("data.bin", b"\x00\x01", MTIME),
            ("style.css", CSS, MTIME),
            ("style.css.br", CSS_BR, MTIME),
            ("style.css.gz", CSS_GZ, MTIME),
            ("only-gz.js", b"let a = 1;", MTIME),
            ("only-gz.js.gz", gzip.compress(b"let a = 1;", mtime=0), MTIME),
            (".zeroserve/secret.json", b'{"key": 1}', MTIME),
        ],
        tarfile.PAX_FORMAT,
    )
    with Site.open(path) as opened:
        yield opened


@pytest.fixture(scope="module")
def site_with_404(tmp_path_factory):
    path = tmp_path_factory.mktemp("static404") / "site.tar"
    write_tar(path, [("index.html", b"home"), ("404.html", b"<h1>gone</h1>")])
    with Site.open(path) as opened:
        yield opened


def get(site, path, headers=None, method="GET", options=OPTIONS, dir_hint=False):
    return serve(site, method, path, dir_hint, headers or {}, options)


def status_and_body(site, response):
    return response.status, response_body(site, response)


# --- 200 and lookup -----------------------------------------------------------------


def test_static_get_returns_file_with_validators(site):
    """A GET answers 200 with the body, length, type, ETag, Last-Modified and Accept-Ranges."""
    response = get(site, "digits.txt")
    entry = site.get("digits.txt")
    assert status_and_body(site, response) == (200, DIGITS)
    assert response.headers == [
        ("content-type", "text/plain; charset=utf-8"),
        ("content-length", "100"),
        ("etag", entry.etag),
        ("last-modified", LAST_MODIFIED),
        ("accept-ranges", "bytes"),
    ]
    assert response.body == ((entry.offset, 100),)


def test_static_head_has_get_headers_and_no_body(site):
    """HEAD gets the headers of the GET and an empty body."""
    response = get(site, "digits.txt", method="HEAD")
    assert (response.status, response.body, response.length) == (200, (), 0)
    assert response.headers == get(site, "digits.txt").headers


def test_static_response_headers_are_a_fresh_list(site):
    """Each response owns its header list, so the HTTP layer may append to it."""
    first = get(site, "digits.txt")
    first.headers.append(("server", "zeroserve"))
    assert ("server", "zeroserve") not in get(site, "digits.txt").headers


def test_static_empty_file(site):
    """An empty file is a 200 with Content-Length 0 and no body parts."""
    response = get(site, "empty.txt")
    assert (response.status, response.body, header(response, "content-length")) == (200, (), "0")


def test_static_no_last_modified_for_zero_mtime(site):
    """A file with mtime 0 has no Last-Modified."""
    assert header(get(site, "nodate.txt"), "last-modified") is None


def test_static_lookup_index_and_try_html(site):
    """The root and directories serve their index; --try-html adds .html on a miss."""
    assert status_and_body(site, get(site, "", dir_hint=True)) == (200, b"<h1>home</h1>")
    assert status_and_body(site, get(site, "docs")) == (200, b"<h1>docs</h1>")
    assert get(site, "about").status == 404
    try_html = StaticOptions(try_html=True)
    assert status_and_body(site, get(site, "about", options=try_html)) == (200, b"<h1>about</h1>")


def test_static_custom_index(site):
    """The index option names the directory index file."""
    response = get(site, "", dir_hint=True, options=StaticOptions(index="about.html"))
    assert status_and_body(site, response) == (200, b"<h1>about</h1>")


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("index.html", "text/html; charset=utf-8"),
        ("app.mjs", "text/javascript; charset=utf-8"),
        ("img.webp", "image/webp"),
        ("img.avif", "image/avif"),
        ("font.woff2", "font/woff2"),
        ("mod.wasm", "application/wasm"),
        ("data.bin", "application/octet-stream"),
    ],
)
def test_static_content_types(site, path, content_type):
    """Content-Type comes from the extension, modern web types included."""
    assert header(get(site, path), "content-type") == content_type


def test_static_private_files_are_404(site):
    """Files under .zeroserve/ are never served."""
    assert get(site, ".zeroserve/secret.json").status == 404
    assert get(site, ".zeroserve", dir_hint=True).status == 404


# --- 404 and 405 --------------------------------------------------------------------


def test_static_404_plain(site):
    """A miss without a site 404.html answers 404 "Not Found" in plain text."""
    response = get(site, "missing.png")
    assert status_and_body(site, response) == (404, b"Not Found")
    assert header(response, "content-type") == "text/plain; charset=utf-8"
    assert header(response, "content-length") == "9"


def test_static_404_uses_site_page(site_with_404):
    """A miss answers 404 with the site's 404.html when it has one; HEAD gets no body."""
    response = get(site_with_404, "nope")
    assert status_and_body(site_with_404, response) == (404, b"<h1>gone</h1>")
    assert header(response, "content-type") == "text/html; charset=utf-8"
    head = get(site_with_404, "nope", method="HEAD")
    assert (head.status, head.body, header(head, "content-length")) == (404, (), "13")


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "OPTIONS", "PATCH"])
@pytest.mark.parametrize("path", ["digits.txt", "missing"])
def test_static_other_methods_are_405(site, method, path):
    """Methods other than GET and HEAD get 405 with Allow: GET, HEAD, whether the file exists or not."""
    response = get(site, path, method=method)
    assert status_and_body(site, response) == (405, b"Method Not Allowed")
    assert header(response, "allow") == "GET, HEAD"


# --- conditional requests -----------------------------------------------------------


@pytest.mark.parametrize(
    "if_none_match",
    ["{etag}", "W/{etag}", '"other", {etag}', "*", ' "a" ,W/{etag} '],
    ids=["exact", "weak", "list", "star", "spaces"],
)
def test_static_if_none_match_gives_304(site, if_none_match):
    """A matching If-None-Match (weak comparison, lists, *) answers 304 with the ETag and no body."""
    etag = site.get("digits.txt").etag
    response = get(site, "digits.txt", {"if-none-match": if_none_match.format(etag=etag)})
    assert (response.status, response.body, response.length) == (304, (), 0)
    assert response.headers == [("etag", etag)]


def test_static_if_none_match_mismatch_gives_200(site):
    """A non-matching If-None-Match answers the full 200."""
    response = get(site, "digits.txt", {"if-none-match": '"nope"'})
    assert status_and_body(site, response) == (200, DIGITS)


def test_static_if_none_match_takes_precedence(site):
    """If-Modified-Since is ignored when If-None-Match is present (RFC 9110 §13.2.2)."""
    headers = {"if-none-match": '"nope"', "if-modified-since": "Sat, 01 Jan 2050 00:00:00 GMT"}
    assert get(site, "digits.txt", headers).status == 200


@pytest.mark.parametrize(
    ("since", "status"),
    [
        (LAST_MODIFIED, 304),
        ("Wed, 15 Nov 2023 00:00:00 GMT", 304),
        ("Tue, 14 Nov 2023 22:13:19 GMT", 200),
        ("Tuesday, 14-Nov-23 22:13:20 GMT", 304),
        ("Tue Nov 14 22:13:20 2023", 304),
        ("Tue Nov  1 22:13:20 2023", 200),
        ("not a date", 200),
        ("Tue, 31 Feb 2023 00:00:00 GMT", 200),
    ],
    ids=["equal", "later", "earlier", "rfc850", "asctime", "asctime-earlier", "garbage", "impossible"],
)
def test_static_if_modified_since(site, since, status):
    """If-Modified-Since gives 304 when the file is not newer; unparsable dates are ignored."""
    response = get(site, "digits.txt", {"if-modified-since": since})
    assert response.status == status
    if status == 304:
        assert header(response, "last-modified") is None
        assert header(response, "content-length") is None


def test_static_if_modified_since_ignored_without_last_modified(site):
    """A file with no Last-Modified never answers 304 to If-Modified-Since."""
    assert get(site, "nodate.txt", {"if-modified-since": "Sat, 01 Jan 2050 00:00:00 GMT"}).status == 200


def test_static_parse_http_date_formats():
    """The three HTTP-date formats parse to the same instant; the weekday is not checked."""
    expected = 784111777
    assert parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT") == expected
    assert parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT") == expected
    assert parse_http_date("Sun Nov  6 08:49:37 1994") == expected
    assert parse_http_date("Mon, 06 Nov 1994 08:49:37 GMT") == expected
    assert parse_http_date("Sun, 06 Nov 1994 08:49:37 UTC") is None


# --- single ranges ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("range_value", "first", "last"),
    [
        ("bytes=0-9", 0, 9),
        ("bytes=90-", 90, 99),
        ("bytes=-5", 95, 99),
        ("bytes=95-500", 95, 99),
        ("bytes=-500", 0, 99),
        ("Bytes = 10-19", 10, 19),
        ("bytes=10-19,", 10, 19),
    ],
    ids=["closed", "open", "suffix", "clamped", "suffix-longer", "case-spaces", "trailing-comma"],
)
def test_static_single_range_gives_206(site, range_value, first, last):
    """A satisfiable single range answers 206 with Content-Range and that slice."""
    response = get(site, "digits.txt", {"range": range_value})
    assert status_and_body(site, response) == (206, DIGITS[first : last + 1])
    assert header(response, "content-range") == f"bytes {first}-{last}/100"
    assert header(response, "content-length") == str(last - first + 1)
    assert header(response, "etag") == site.get("digits.txt").etag


def test_static_head_range_has_get_headers(site):
    """HEAD with a Range gets the 206 headers of the GET and no body."""
    response = get(site, "digits.txt", {"range": "bytes=0-9"}, method="HEAD")
    assert (response.status, response.body, header(response, "content-range")) == (206, (), "bytes 0-9/100")


@pytest.mark.parametrize(
    ("path", "range_value"),
    [
        ("digits.txt", "bytes=100-"),
        ("digits.txt", "bytes=-0"),
        ("digits.txt", "bytes=50-40"),
        ("empty.txt", "bytes=0-"),
    ],
    ids=["past-end", "zero-suffix", "reversed", "empty-file"],
)
def test_static_unsatisfiable_range_gives_416(site, path, range_value):
    """An unsatisfiable range answers 416 with Content-Range: bytes */size and no body."""
    response = get(site, path, {"range": range_value})
    size = site.get(path).size
    assert (response.status, response.body) == (416, ())
    assert header(response, "content-range") == f"bytes */{size}"
    assert header(response, "content-length") == "0"


@pytest.mark.parametrize(
    "range_value",
    ["bytes=abc", "items=0-5", "bytes=", "bytes=-", "bytes=1-2-3", "bytes=+1-2", "bytes=٣-5", "0-5"],
)
def test_static_malformed_range_is_ignored(site, range_value):
    """A malformed Range or another unit is ignored: the full 200."""
    assert status_and_body(site, get(site, "digits.txt", {"range": range_value})) == (200, DIGITS)


def test_static_if_range(site):
    """If-Range allows the range only for the exact strong ETag or the exact Last-Modified date."""
    etag = site.get("digits.txt").etag
    cases = {
        etag: 206,
        etag[1:-1]: 206,
        "W/" + etag: 200,
        '"other"': 200,
        LAST_MODIFIED: 206,
        "Wed, 15 Nov 2023 00:00:00 GMT": 200,
        "garbage": 200,
    }
    for if_range, status in cases.items():
        response = get(site, "digits.txt", {"range": "bytes=0-1", "if-range": if_range})
        assert response.status == status, if_range


# --- multiple ranges ----------------------------------------------------------------


def parse_multipart(site, response):
    """(content-range, bytes) of each part of a multipart/byteranges response, parsed by email."""
    content_type = header(response, "content-type")
    raw = b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + response_body(site, response)
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(raw)
    assert message.is_multipart()
    return [(part["Content-Range"], part.get_payload(decode=True)) for part in message.iter_parts()]


def test_static_multi_range_gives_multipart(site):
    """Several ranges answer 206 multipart/byteranges, each part with its type and Content-Range."""
    response = get(site, "digits.txt", {"range": "bytes=0-1, 10-12, -3"})
    assert response.status == 206
    assert header(response, "content-type").startswith("multipart/byteranges; boundary=")
    assert header(response, "content-range") is None
    assert header(response, "content-length") == str(response.length)
    assert parse_multipart(site, response) == [
        ("bytes 0-1/100", b"01"),
        ("bytes 10-12/100", b"012"),
        ("bytes 97-99/100", b"789"),
    ]


def test_static_multi_range_parts_carry_content_type(site):
    """Each part names the file's own Content-Type."""
    response = get(site, "digits.txt", {"range": "bytes=0-0,5-5"})
    body = response_body(site, response)
    assert body.count(b"Content-Type: text/plain; charset=utf-8\r\n") == 2
    assert body.startswith(b"--zeroserve-")
    assert body.endswith(b"--\r\n")


def test_static_multi_range_coalesces_overlaps(site):
    """Overlapping and adjacent ranges are merged; one merged range is a plain 206."""
    response = get(site, "digits.txt", {"range": "bytes=10-20, 15-30, 31-35"})
    assert status_and_body(site, response) == (206, DIGITS[10:36])
    assert header(response, "content-range") == "bytes 10-35/100"


def test_static_multi_range_sorted_and_unsatisfiable_dropped(site):
    """Parts come in offset order; unsatisfiable specs among satisfiable ones are dropped."""
    response = get(site, "digits.txt", {"range": "bytes=50-51, 500-600, 0-1"})
    assert parse_multipart(site, response) == [("bytes 0-1/100", b"01"), ("bytes 50-51/100", b"01")]


def test_static_multi_range_all_unsatisfiable_gives_416(site):
    """When no spec is satisfiable the answer is 416."""
    assert get(site, "digits.txt", {"range": "bytes=200-300, 400-"}).status == 416


def test_static_too_many_ranges_falls_back_to_200(site):
    """More than MAX_RANGES specs are ignored: the full 200."""
    many = ",".join(f"{n * 5}-{n * 5 + 1}" for n in range(MAX_RANGES + 1))
    assert status_and_body(site, get(site, "digits.txt", {"range": "bytes=" + many})) == (200, DIGITS)
    allowed = ",".join(f"{n * 5}-{n * 5 + 1}" for n in range(MAX_RANGES))
    assert len(parse_multipart(site, get(site, "digits.txt", {"range": "bytes=" + allowed}))) == MAX_RANGES


def test_static_parse_ranges_edge_cases():
    """parse_ranges: None means ignore, [] means unsatisfiable."""
    assert parse_ranges("bytes=0-0", 1) == [(0, 0)]
    assert parse_ranges("bytes=0-", 0) == []
    assert parse_ranges("bytes=-1", 0) == []
    assert parse_ranges("bytes=,,", 10) is None
    assert parse_ranges("bytes=1-1,1-1", 10) == [(1, 1)]


# --- precompressed siblings ---------------------------------------------------------


@pytest.mark.parametrize(
    ("accept_encoding", "expected"),
    [
        ("br", "br"),
        ("gzip, deflate, br", "br"),
        ("gzip", "gzip"),
        ("x-gzip", "gzip"),
        ("br;q=0.5, gzip;q=0.9", "gzip"),
        ("br;q=0, gzip", "gzip"),
        ("*", "br"),
        ("*;q=0.1, br;q=0", "gzip"),
        ("identity, br;q=0.5", None),
        ("deflate", None),
        ("", None),
        ("br;q=abc, gzip;q=0", None),
    ],
)
def test_static_precompressed_negotiation(site, accept_encoding, expected):
    """Accept-Encoding (with q-values) picks the .br or .gz sibling; Vary is always sent."""
    response = get(site, "style.css", {"accept-encoding": accept_encoding})
    bodies = {"br": CSS_BR, "gzip": CSS_GZ, None: CSS}
    sibling_paths = {"br": "style.css.br", "gzip": "style.css.gz", None: "style.css"}
    assert status_and_body(site, response) == (200, bodies[expected])
    assert header(response, "content-encoding") == expected
    assert header(response, "content-type") == "text/css; charset=utf-8"
    assert header(response, "vary") == "Accept-Encoding"
    assert header(response, "etag") == site.get(sibling_paths[expected]).etag


def test_static_precompressed_without_accept_encoding_still_varies(site):
    """A file with siblings sends Vary even when the request has no Accept-Encoding."""
    response = get(site, "only-gz.js")
    assert (header(response, "content-encoding"), header(response, "vary")) == (None, "Accept-Encoding")


def test_static_precompressed_range_applies_to_encoded_bytes(site):
    """A range on a negotiated sibling slices the encoded representation."""
    response = get(site, "style.css", {"accept-encoding": "br", "range": "bytes=0-4"})
    assert status_and_body(site, response) == (206, CSS_BR[:5])
    assert header(response, "content-range") == f"bytes 0-4/{len(CSS_BR)}"
    assert header(response, "content-encoding") == "br"
    assert header(response, "vary") == "Accept-Encoding"


def test_static_precompressed_multi_range_marks_coding_per_part(site):
    """In a multipart answer the coding is named in each part, not on the multipart body."""
    response = get(site, "style.css", {"accept-encoding": "gzip", "range": "bytes=0-1,10-11"})
    assert header(response, "content-encoding") is None
    assert header(response, "vary") == "Accept-Encoding"
    assert response_body(site, response).count(b"Content-Encoding: gzip\r\n") == 2
    assert [data for _, data in parse_multipart(site, response)] == [CSS_GZ[0:2], CSS_GZ[10:12]]


def test_static_precompressed_304_per_representation(site):
    """Each representation validates against its own ETag; 304 and 416 carry Vary."""
    br_etag = site.get("style.css.br").etag
    not_modified = get(site, "style.css", {"accept-encoding": "br", "if-none-match": br_etag})
    assert not_modified.status == 304
    assert not_modified.headers == [("etag", br_etag), ("vary", "Accept-Encoding")]
    assert get(site, "style.css", {"if-none-match": br_etag}).status == 200
    unsatisfiable = get(site, "style.css", {"range": "bytes=99999-"})
    assert (unsatisfiable.status, header(unsatisfiable, "vary")) == (416, "Accept-Encoding")


def test_static_sibling_requested_directly_is_plain(site):
    """Asking for style.css.gz itself serves the raw gzip file, without Content-Encoding."""
    response = get(site, "style.css.gz", {"accept-encoding": "gzip"})
    assert status_and_body(site, response) == (200, CSS_GZ)
    assert header(response, "content-encoding") is None
    assert header(response, "content-type") == "application/gzip"
