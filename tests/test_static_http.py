"""Static semantics end to end with curl over HTTP/1.1 and h2c: status codes, ranges, 304, HEAD, 404, 405, gzip."""

import gzip
import json

import pytest

from harness import curl, start_server

CSS = "body { color: #123456; }\n" * 40
DATA = bytes(range(256)) * 4
FILES = {
    "index.html": "<h1>home</h1>",
    "about/index.html": "<h1>about</h1>",
    "404.html": "<h1>lost</h1>",
    "style.css": CSS,
    "style.css.gz": gzip.compress(CSS.encode(), mtime=0),
    "data.bin": DATA,
    "docs/page.html": "<p>page</p>",
    "empty.txt": "",
    ".zeroserve/private.json": '{"secret": true}',
}
PROTOCOLS = pytest.mark.parametrize("proto", ["--http1.1", "--http2-prior-knowledge"], ids=["h1", "h2c"])


@pytest.fixture(scope="module")
def server(request, make_site):
    return start_server(request, make_site(FILES), "--try-html")


class Fetched:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body


def fetch(url, *args):
    """One request with curl -i; the final response's status, headers (lowercase names) and body."""
    result = curl("-i", *args, url)
    assert result.returncode == 0, result.stderr
    head, _, body = result.stdout.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Fetched(int(lines[0].split()[1]), headers, body)


@PROTOCOLS
def test_static_root_serves_index(server, proto):
    """/ serves index.html as text/html with validators."""
    response = fetch(server.url("/"), proto)
    assert response.status == 200 and response.body == b"<h1>home</h1>"
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["etag"].startswith('"') and response.headers["accept-ranges"] == "bytes"
    assert response.headers["server"] == "zeroserve" and "date" in response.headers


@PROTOCOLS
def test_static_directory_without_slash_serves_its_index(server, proto):
    """/about serves about/index.html without a redirect."""
    response = fetch(server.url("/about"), proto)
    assert (response.status, response.body) == (200, b"<h1>about</h1>")


@PROTOCOLS
def test_static_missing_path_gets_site_404_page(server, proto):
    """A missing path gets 404 with the site's 404.html."""
    response = fetch(server.url("/no/such/thing"), proto)
    assert (response.status, response.body) == (404, b"<h1>lost</h1>")
    assert response.headers["content-type"] == "text/html; charset=utf-8"


@PROTOCOLS
def test_static_other_method_gets_405_with_allow(server, proto):
    """DELETE on a file gets 405 with Allow: GET, HEAD."""
    response = fetch(server.url("/style.css"), proto, "-X", "DELETE")
    assert response.status == 405 and response.headers["allow"] == "GET, HEAD"


@PROTOCOLS
def test_static_head_sends_headers_without_body(server, proto):
    """HEAD gets the GET's headers, Content-Length included, and no body."""
    response = fetch(server.url("/data.bin"), proto, "-I")
    assert response.status == 200 and response.body == b""
    assert response.headers["content-length"] == str(len(DATA))


@PROTOCOLS
def test_static_single_range_gets_206(server, proto):
    """A single byte range gets 206 with Content-Range and exactly those bytes."""
    response = fetch(server.url("/data.bin"), proto, "-r", "10-19")
    assert response.status == 206 and response.body == DATA[10:20]
    assert response.headers["content-range"] == f"bytes 10-19/{len(DATA)}"


@PROTOCOLS
def test_static_unsatisfiable_range_gets_416(server, proto):
    """A range past the end gets 416 with Content-Range bytes */size."""
    response = fetch(server.url("/data.bin"), proto, "-r", "5000-6000")
    assert response.status == 416 and response.headers["content-range"] == f"bytes */{len(DATA)}"


@PROTOCOLS
def test_static_multiple_ranges_get_multipart(server, proto):
    """Two ranges get 206 multipart/byteranges holding both parts."""
    response = fetch(server.url("/data.bin"), proto, "-r", "0-1,100-101")
    assert response.status == 206
    assert response.headers["content-type"].startswith("multipart/byteranges; boundary=")
    assert b"Content-Range: bytes 0-1/1024".lower() in response.body.lower()
    assert DATA[100:102] in response.body
    assert int(response.headers["content-length"]) == len(response.body)


@PROTOCOLS
def test_static_if_none_match_gets_304(server, proto):
    """Sending back the ETag in If-None-Match gets 304 with no body."""
    etag = fetch(server.url("/data.bin"), proto).headers["etag"]
    response = fetch(server.url("/data.bin"), proto, "-H", f"If-None-Match: {etag}")
    assert response.status == 304 and response.body == b""
    assert response.headers["etag"] == etag


@PROTOCOLS
def test_static_if_modified_since_gets_304(server, proto):
    """If-Modified-Since equal to Last-Modified gets 304."""
    modified = fetch(server.url("/data.bin"), proto).headers["last-modified"]
    response = fetch(server.url("/data.bin"), proto, "-H", f"If-Modified-Since: {modified}")
    assert response.status == 304


@PROTOCOLS
def test_static_precompressed_sibling_for_gzip_client(server, proto):
    """A gzip-accepting client gets style.css.gz with Content-Encoding; others get the plain file."""
    zipped = fetch(server.url("/style.css"), proto, "-H", "Accept-Encoding: gzip")
    assert zipped.status == 200 and zipped.headers["content-encoding"] == "gzip"
    assert zipped.headers["vary"] == "Accept-Encoding"
    assert gzip.decompress(zipped.body).decode() == CSS
    plain = fetch(server.url("/style.css"), proto)
    assert plain.body.decode() == CSS and "content-encoding" not in plain.headers


@PROTOCOLS
def test_static_try_html_serves_page(server, proto):
    """With --try-html, /docs/page serves docs/page.html."""
    assert fetch(server.url("/docs/page"), proto).body == b"<p>page</p>"


@PROTOCOLS
def test_static_empty_file_serves_empty_200(server, proto):
    """An empty file is a 200 with Content-Length 0."""
    response = fetch(server.url("/empty.txt"), proto)
    assert response.status == 200 and response.body == b"" and response.headers["content-length"] == "0"


@PROTOCOLS
def test_static_private_directory_is_never_served(server, proto):
    """Files under .zeroserve/ get 404."""
    assert fetch(server.url("/.zeroserve/private.json"), proto).status == 404


@PROTOCOLS
def test_static_encoded_slash_gets_400(server, proto):
    """A percent-encoded '/' in a path segment gets 400."""
    assert fetch(server.url("/docs%2Fpage.html"), proto).status == 400


@PROTOCOLS
def test_static_validate_hostnames_gets_421_for_other_hosts(request, make_site, proto):
    """With --validate-hostnames, an allowed Host is served (any port) and another gets 421."""
    guarded = start_server(request, make_site({"a.txt": "alpha"}),
                           "--validate-hostnames", "site.test,other.test")
    ok = fetch(guarded.url("/a.txt"), proto, "-H", "Host: site.test:8080")
    assert (ok.status, ok.body) == (200, b"alpha")
    assert fetch(guarded.url("/a.txt"), proto, "-H", "Host: OTHER.test").status == 200
    assert fetch(guarded.url("/a.txt"), proto, "-H", "Host: evil.test").status == 421


@PROTOCOLS
def test_static_example_site_serves_every_asset(request, example_tar, proto):
    """The example site serves its page, stylesheet and images with their types, and its 404 page."""
    site = start_server(request, example_tar)
    expected = {
        "/": "text/html; charset=utf-8",
        "/about": "text/html; charset=utf-8",
        "/css/style.css": "text/css; charset=utf-8",
        "/img/logo.svg": "image/svg+xml",
        "/img/dot.png": "image/png",
    }
    for path, content_type in expected.items():
        response = fetch(site.url(path), proto)
        assert response.status == 200, path
        assert response.headers["content-type"] == content_type, path
    missing = fetch(site.url("/missing"), proto)
    assert missing.status == 404 and b"404" in missing.body


def test_static_example_site_runs_its_scripts(request, example_tar):
    """The example site's scripts add headers, answer /api/hello with JSON and fill the welcome page."""
    site = start_server(request, example_tar)
    home = fetch(site.url("/"), "--http1.1")
    assert home.headers["x-content-type-options"] == "nosniff"
    api = fetch(site.url("/api/hello?name=Ada"), "--http1.1")
    assert api.status == 200 and api.headers["content-type"] == "application/json"
    assert json.loads(api.body)["greeting"] == "hello, Ada"
    welcome = fetch(site.url("/welcome/"), "--http1.1")
    assert welcome.status == 200
    assert b"Welcome, 127.0.0.1" in welcome.body and b"<zs-meta>" not in welcome.body
