"""The MIME table: the stdlib set, modern web types, charset on text, and the fallback."""

import mimetypes

import pytest

from zeroserve.core.mime import DEFAULT_TYPE, TYPES, content_type_for


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("index.html", "text/html; charset=utf-8"),
        ("a/b/STYLE.CSS", "text/css; charset=utf-8"),
        ("app.js", "text/javascript; charset=utf-8"),
        ("app.mjs", "text/javascript; charset=utf-8"),
        ("data.json", "application/json; charset=utf-8"),
        ("site.webmanifest", "application/manifest+json; charset=utf-8"),
        ("feed.xml", "application/xml"),
        ("logo.svg", "image/svg+xml"),
        ("photo.webp", "image/webp"),
        ("photo.avif", "image/avif"),
        ("photo.JPG", "image/jpeg"),
        ("favicon.ico", "image/x-icon"),
        ("font.woff2", "font/woff2"),
        ("module.wasm", "application/wasm"),
        ("doc.pdf", "application/pdf"),
        ("clip.mp4", "video/mp4"),
        ("archive.tar.gz", "application/gzip"),
    ],
)
def test_mime_known_types(path, content_type):
    """Extensions map case-insensitively to their type, text types with charset=utf-8."""
    assert content_type_for(path) == content_type


@pytest.mark.parametrize("path", ["README", ".htaccess", "dir.d/file", "file.unknownext", "trailing."])
def test_mime_fallback(path):
    """No extension, a dot file, or an unknown extension is application/octet-stream."""
    assert content_type_for(path) == DEFAULT_TYPE


def test_mime_covers_the_stdlib_table():
    """Every extension Python's built-in table knows is in the table."""
    builtin = mimetypes.MimeTypes(filenames=())
    extensions = {ext[1:].lower() for table in builtin.types_map for ext in table}
    assert extensions <= TYPES.keys()
    assert all(value.endswith("; charset=utf-8") for value in TYPES.values() if value.startswith("text/"))
