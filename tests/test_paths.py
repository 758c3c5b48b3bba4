"""Request path normalisation (original §2.2): decoding, dot segments, dir hint, script path, 400s."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zeroserve.core.errors import ProtocolError
from zeroserve.core.paths import NormalizedPath, normalize_request_path


@pytest.mark.parametrize(
    ("raw", "rel", "dir_hint", "script_path"),
    [
        ("/", "", True, "/"),
        ("", "", False, "/"),
        ("/index.html", "index.html", False, "/index.html"),
        ("/docs/", "docs", True, "/docs/"),
        ("//a///b//", "a/b", True, "/a/b/"),
        ("/a/./b/.", "a/b", False, "/a/b"),
        ("/a/b/../c", "a/c", False, "/a/c"),
        ("/a/b/../../", "", True, "/"),
        ("/a/%2e%2E/b", "b", False, "/b"),
        ("/%2e/x", "x", False, "/x"),
        ("/caf%C3%A9/na%c3%afve.txt", "café/naïve.txt", False, "/caf%C3%A9/na%c3%afve.txt"),
        ("/a%20b", "a b", False, "/a%20b"),
        ("/50%", "50%", False, "/50%"),
        ("/x%4", "x%4", False, "/x%4"),
        ("/file?x=1&y=/..", "file", False, "/file"),
        ("/caf\xc3\xa9", "café", False, "/caf\xc3\xa9"),
        ("/a+b", "a+b", False, "/a+b"),
    ],
    ids=[
        "root", "empty", "file", "dir", "empty-segments", "dot", "dotdot", "dotdot-to-root", "encoded-dotdot",
        "encoded-dot", "utf8-escapes", "space", "percent-at-end", "short-escape", "query-ignored",
        "raw-utf8-bytes", "plus-kept",
    ],
)
def test_paths_normalize(raw, rel, dir_hint, script_path):
    """A raw path normalises to its decoded relative path, dir hint and still-encoded script path."""
    assert normalize_request_path(raw) == NormalizedPath(rel, dir_hint, script_path)


def test_paths_accept_bytes():
    """Bytes straight from the parser give the same result as their latin-1 text."""
    assert normalize_request_path(b"/caf\xc3\xa9/%41/") == normalize_request_path("/caf\xc3\xa9/%41/")


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("/..", "goes above the site root"),
        ("/a/../..", "goes above the site root"),
        ("/%2e%2e/etc/passwd", "goes above the site root"),
        ("/a%2Fb", "encoded '/'"),
        ("/a%2fb", "encoded '/'"),
        ("/%zz", "malformed percent escape"),
        ("/%4g/x", "malformed percent escape"),
        ("/%ff", "not UTF-8"),
        ("/%c3", "not UTF-8"),
        ("/\xff", "not UTF-8"),
        ("/\u20ac", "not bytes"),
    ],
    ids=[
        "above-root", "above-root-deep", "encoded-above-root", "encoded-slash", "encoded-slash-lower",
        "bad-escape", "bad-escape-second", "invalid-utf8", "truncated-utf8", "raw-invalid-utf8", "not-latin1",
    ],
)
def test_paths_invalid_is_400(raw, reason):
    """Paths escaping the root or failing to decode raise ProtocolError with status 400."""
    with pytest.raises(ProtocolError, match=reason) as caught:
        normalize_request_path(raw)
    assert caught.value.status_hint == 400


SEGMENT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=8)


@given(st.lists(st.one_of(SEGMENT, st.sampled_from([".", "..", ""])), max_size=8), st.booleans())
def test_paths_result_has_no_dot_or_empty_segments(segments, trailing_slash):
    """Whatever the input, a normalised path holds no empty, "." or ".." segment and stays under the root."""
    raw = "/" + "/".join(segments) + ("/" if trailing_slash else "")
    try:
        result = normalize_request_path(raw.encode("utf-8"))
    except ProtocolError as error:
        assert error.status_hint == 400
        return
    if result.rel:
        assert all(part not in ("", ".", "..") for part in result.rel.split("/"))
    assert result.script_path.startswith("/")
    assert "//" not in result.script_path
