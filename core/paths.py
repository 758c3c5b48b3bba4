"""Request path normalisation: a raw request path in, the site-relative path scripts and files use out.

Rules (compatible with the original server): split on "/", drop empty segments,
percent-decode each segment on its own, drop ".", let ".." pop the previous segment.
A ".." above the root, an encoded "/" inside a segment, a malformed escape or a segment
that is not UTF-8 once decoded is a 400. A "%" with fewer than two characters after it
is kept literally.
"""

from dataclasses import dataclass
from functools import lru_cache

from zeroserve.core.errors import ProtocolError

_HEX = frozenset(b"0123456789abcdefABCDEF")


@dataclass(frozen=True, slots=True)
class NormalizedPath:
    """A request path after normalisation.

    rel: decoded segments joined by "/", no leading or trailing slash ("" is the root).
    dir_hint: the raw path is "/" or ends with "/".
    script_path: "/" + the surviving raw (still percent-encoded) segments, trailing slash
    kept; what scripts see as the path.
    """

    rel: str
    dir_hint: bool
    script_path: str


def _percent_decode(raw):
    """Decodes one raw segment (bytes) to text, or raises ProtocolError."""
    if b"%" in raw:
        out = bytearray()
        i = 0
        end = len(raw)
        while i < end:
            byte = raw[i]
            if byte == 0x25 and i + 2 < end:
                if raw[i + 1] not in _HEX or raw[i + 2] not in _HEX:
                    raise ProtocolError(
                        f"malformed percent escape {raw[i:i + 3]!r} in request path segment {raw!r}",
                        status_hint=400,
                    )
                out.append(int(raw[i + 1 : i + 3], 16))
                i += 3
            else:
                out.append(byte)
                i += 1
        raw_decoded = bytes(out)
    else:
        raw_decoded = raw
    try:
        text = raw_decoded.decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError(f"request path segment {raw!r} is not UTF-8 once decoded", status_hint=400) from None
    if "/" in text:
        raise ProtocolError(f"request path segment {raw!r} holds an encoded '/'", status_hint=400)
    return text


@lru_cache(maxsize=1024)  # a site's requests repeat a few paths; a path that fails (raises) is not kept
def normalize_request_path(raw_path):
    """Normalises a raw request path; a query part, if any, is ignored.

    raw_path is the path as it came off the wire: bytes, or a str holding those bytes
    as latin-1 (what the HTTP layers produce). Returns NormalizedPath; script_path is
    a latin-1 str of raw bytes like the input. Raises ProtocolError(status_hint=400)
    for a path that escapes the root or cannot be decoded.
    """
    if isinstance(raw_path, str):
        try:
            raw_path = raw_path.encode("latin-1")
        except UnicodeEncodeError:
            raise ProtocolError(
                f"request path {raw_path!r} holds characters that are not bytes; percent-encode them",
                status_hint=400,
            ) from None
    raw_path = raw_path.partition(b"?")[0]
    raw_segments = []
    decoded_segments = []
    for raw in raw_path.split(b"/"):
        if not raw:
            continue
        decoded = _percent_decode(raw)
        if decoded == ".":
            continue
        if decoded == "..":
            if not decoded_segments:
                raise ProtocolError(f"request path {raw_path!r} goes above the site root", status_hint=400)
            decoded_segments.pop()
            raw_segments.pop()
            continue
        raw_segments.append(raw)
        decoded_segments.append(decoded)
    dir_hint = raw_path == b"/" or raw_path.endswith(b"/")
    script_path = b"/" + b"/".join(raw_segments)
    if dir_hint and raw_segments:
        script_path += b"/"
    return NormalizedPath("/".join(decoded_segments), dir_hint, script_path.decode("latin-1"))
