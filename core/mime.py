"""The MIME table: lowercased file extension → Content-Type value, built once at import.

The base is Python's built-in table (`mimetypes` without the host's /etc files, so every
machine serves the same types), overlaid with the types a modern site needs that the
built-in table lacks or gets wrong. Text types carry `; charset=utf-8` because sites are
written in UTF-8 and browsers otherwise guess.
"""

import mimetypes

DEFAULT_TYPE = "application/octet-stream"

# Modern web types and corrections of the built-in table (RFC 9239 makes JavaScript
# text/javascript; image/jpg and image/vnd.microsoft.icon are what browsers do not expect).
_WEB_TYPES = {
    "js": "text/javascript",
    "mjs": "text/javascript",
    "cjs": "text/javascript",
    "json": "application/json",
    "map": "application/json",
    "jsonld": "application/ld+json",
    "webmanifest": "application/manifest+json",
    "wasm": "application/wasm",
    "xml": "application/xml",
    "xhtml": "application/xhtml+xml",
    "svg": "image/svg+xml",
    "svgz": "image/svg+xml",
    "webp": "image/webp",
    "avif": "image/avif",
    "apng": "image/apng",
    "jxl": "image/jxl",
    "heic": "image/heic",
    "heif": "image/heif",
    "jpg": "image/jpeg",
    "ico": "image/x-icon",
    "woff": "font/woff",
    "woff2": "font/woff2",
    "ttf": "font/ttf",
    "otf": "font/otf",
    "md": "text/markdown",
    "markdown": "text/markdown",
    "yaml": "application/yaml",
    "yml": "application/yaml",
    "toml": "application/toml",
    "ics": "text/calendar",
    "vtt": "text/vtt",
    "flac": "audio/flac",
    "m4a": "audio/mp4",
    "oga": "audio/ogg",
    "ogg": "audio/ogg",
    "ogv": "video/ogg",
    "mkv": "video/x-matroska",
    "gz": "application/gzip",
    "tgz": "application/gzip",
    "zst": "application/zstd",
    "7z": "application/x-7z-compressed",
    "epub": "application/epub+zip",
}


def _with_charset(content_type):
    """Adds `; charset=utf-8` to the types whose body is text."""
    if content_type.startswith("text/") or content_type.endswith(("/json", "+json")):
        return content_type + "; charset=utf-8"
    return content_type


def _build_table():
    builtin = mimetypes.MimeTypes(filenames=())
    raw = {}
    # Non-strict entries first so the strict (registered) ones win on a clash.
    for types_map in (builtin.types_map[False], builtin.types_map[True]):
        raw.update((ext[1:].lower(), ctype) for ext, ctype in types_map.items())
    raw.update(_WEB_TYPES)
    return {ext: _with_charset(ctype) for ext, ctype in raw.items()}


TYPES = _build_table()


def content_type_for(path):
    """The Content-Type for a file path, by its lowercased extension; octet-stream if unknown."""
    name = path.rpartition("/")[2]
    dot = name.rfind(".")
    if dot <= 0:
        # No extension, or a dot file such as ".htaccess" whose name is not an extension.
        return DEFAULT_TYPE
    return TYPES.get(name[dot + 1 :].lower(), DEFAULT_TYPE)
