"""Static file semantics, sans-IO: a request for a site path in, a StaticResponse (status, headers, body parts) out.

Covers the lookup (via Site.resolve), 404 (the site's `404.html` when present), 405,
precompressed siblings chosen by Accept-Encoding, conditional requests (If-None-Match
before If-Modified-Since, RFC 9110 §13.2.2), and byte ranges with If-Range, single or
multiple (`multipart/byteranges`).

Multi-range policy: up to MAX_RANGES specs are honoured; more than that and the Range
header is ignored (a full 200), which bounds the work one request can ask for.
Satisfiable ranges are sorted and overlapping or adjacent ones merged (RFC 9110 §14.2
allows coalescing); unsatisfiable specs are dropped, and if none is left the answer is
416. When one range remains after merging, the answer is a plain 206.

Body parts are bytes or (file offset, length) ranges into `site.fd`, so the HTTP layer
can pread or sendfile them. Date, Server and Connection are left to the HTTP layer.
Header names are lowercase.
"""

import functools
import re
import time
from dataclasses import dataclass
from datetime import datetime, timezone

GET = "GET"
HEAD = "HEAD"
MAX_RANGES = 16

_TEXT_PLAIN = "text/plain; charset=utf-8"
_NOT_FOUND_BODY = b"Not Found"
_NOT_ALLOWED_BODY = b"Method Not Allowed"


@dataclass(frozen=True, slots=True)
class StaticOptions:
    """The serve-mode flags static serving depends on."""

    index: str = "index.html"
    try_html: bool = False


@dataclass(slots=True)
class StaticResponse:
    """A response to write: body parts are bytes or (offset, length) ranges into site.fd.

    length is the total size of the body parts (0 for HEAD, where the headers are those
    of the GET, and for 304). headers never hold Date, Server or Connection.
    """

    status: int
    headers: list
    body: tuple
    length: int


def serve(site, method, rel_path, dir_hint, request_headers, options):
    """Answers a GET/HEAD (or refuses another method) for a normalised site path."""
    if method != GET and method != HEAD:
        return _method_not_allowed()
    entry = site.resolve(rel_path, dir_hint, options.index, options.try_html)
    if entry is None:
        return _not_found(site, method)
    if entry.encodings:
        entry = _negotiate(entry, request_headers.get("accept-encoding"))
    if _not_modified(entry, request_headers):
        headers = [("etag", entry.etag)]
        if entry.varies:
            headers.append(("vary", "Accept-Encoding"))
        return StaticResponse(304, headers, (), 0)
    range_header = request_headers.get("range")
    if range_header is not None and _if_range_allows(entry, request_headers.get("if-range")):
        ranges = parse_ranges(range_header, entry.size)
        if ranges is not None:
            return _ranged(entry, ranges, method == HEAD)
    if method == HEAD or not entry.size:
        return StaticResponse(200, list(entry.headers), (), 0)
    return StaticResponse(200, list(entry.headers), ((entry.offset, entry.size),), entry.size)


def _method_not_allowed():
    headers = [
        ("content-type", _TEXT_PLAIN),
        ("content-length", str(len(_NOT_ALLOWED_BODY))),
        # RFC 9110 §15.5.6 requires Allow on a 405 (the original omitted it).
        ("allow", "GET, HEAD"),
    ]
    return StaticResponse(405, headers, (_NOT_ALLOWED_BODY,), len(_NOT_ALLOWED_BODY))


def _not_found(site, method):
    page = site.not_found_page
    if page is None:
        headers = [("content-type", _TEXT_PLAIN), ("content-length", str(len(_NOT_FOUND_BODY)))]
        body, length = (_NOT_FOUND_BODY,), len(_NOT_FOUND_BODY)
    else:
        headers = [("content-type", page.content_type), ("content-length", str(page.size))]
        body, length = ((page.offset, page.size),) if page.size else (), page.size
    if method == HEAD:
        return StaticResponse(404, headers, (), 0)
    return StaticResponse(404, headers, body, length)


# --- content negotiation -------------------------------------------------------------


@functools.lru_cache(maxsize=256)
def parse_accept_encoding(value):
    """{coding: qvalue} from an Accept-Encoding value; elements with a bad qvalue are left out."""
    weights = {}
    for element in value.split(","):
        coding, _, params = element.partition(";")
        coding = coding.strip().lower()
        if not coding:
            continue
        weight = 1.0
        for param in params.split(";"):
            name, _, raw = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    weight = float(raw.strip())
                except ValueError:
                    weight = -1.0
        if 0.0 <= weight <= 1.0:
            weights["gzip" if coding == "x-gzip" else coding] = weight
    return weights


def _negotiate(entry, accept_encoding):
    """The representation to send: a precompressed sibling when the client accepts it."""
    if not accept_encoding:
        return entry
    weights = parse_accept_encoding(accept_encoding)
    wildcard = weights.get("*", 0.0)
    chosen, chosen_weight = entry, 0.0
    for coding, sibling in entry.encodings:
        weight = weights.get(coding, wildcard)
        if weight > chosen_weight:
            chosen, chosen_weight = sibling, weight
    # Identity wins only when the client ranks it above every coding it accepts.
    if "identity" in weights and weights["identity"] > chosen_weight:
        return entry
    return chosen


# --- conditional requests ------------------------------------------------------------


def _not_modified(entry, request_headers):
    if_none_match = request_headers.get("if-none-match")
    if if_none_match is not None:
        return etag_list_matches(if_none_match, entry.etag)
    if_modified_since = request_headers.get("if-modified-since")
    if if_modified_since is None or entry.last_modified is None:
        return False
    since = parse_http_date(if_modified_since)
    return since is not None and entry.mtime <= since


def etag_list_matches(header_value, etag):
    """Weak comparison of an If-None-Match list against our (strong) ETag; "*" matches."""
    for candidate in header_value.split(","):
        candidate = candidate.strip()
        if candidate == "*":
            return True
        if candidate.startswith("W/"):
            candidate = candidate[2:]
        if candidate == etag:
            return True
    return False


def _if_range_allows(entry, if_range):
    """If-Range allows the range only for an exact strong match (RFC 9110 §13.1.5)."""
    if if_range is None:
        return True
    if_range = if_range.strip()
    if if_range.startswith("W/"):
        return False
    if if_range.startswith('"'):
        return if_range == entry.etag
    if if_range == entry.etag[1:-1]:
        return True  # an unquoted ETag, accepted like the original
    date = parse_http_date(if_range)
    return date is not None and entry.last_modified is not None and date == entry.mtime


_MONTHS = {name: number for number, name in enumerate("Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split(), 1)}
# RFC 9110 §5.6.7: IMF-fixdate, the obsolete RFC 850 form and asctime; the weekday is ignored.
_IMF_FIXDATE = re.compile(r"[A-Za-z]{3}, (\d\d) ([A-Za-z]{3}) (\d{4}) (\d\d):(\d\d):(\d\d) GMT", re.ASCII)
_RFC850_DATE = re.compile(r"[A-Za-z]+, (\d\d)-([A-Za-z]{3})-(\d\d) (\d\d):(\d\d):(\d\d) GMT", re.ASCII)
_ASCTIME_DATE = re.compile(r"[A-Za-z]{3} ([A-Za-z]{3}) ([ \d]\d) (\d\d):(\d\d):(\d\d) (\d{4})", re.ASCII)


def parse_http_date(value):
    """Seconds since the epoch for an HTTP-date, or None when it is not one."""
    value = value.strip()
    if match := _IMF_FIXDATE.fullmatch(value):
        day, month, year, hour, minute, second = match.groups()
    elif match := _RFC850_DATE.fullmatch(value):
        day, month, year, hour, minute, second = match.groups()
        year = _full_year(int(year))
    elif match := _ASCTIME_DATE.fullmatch(value):
        month, day, hour, minute, second, year = match.groups()
    else:
        return None
    month_number = _MONTHS.get(month.title())
    if month_number is None:
        return None
    try:
        moment = datetime(int(year), month_number, int(day), int(hour), int(minute), int(second), tzinfo=timezone.utc)
    except ValueError:
        return None
    return int(moment.timestamp())


def _full_year(two_digits):
    """RFC 9110 §5.6.7: a two-digit year more than 50 years ahead is in the past century."""
    this_year = time.gmtime().tm_year
    year = this_year - this_year % 100 + two_digits
    if year > this_year + 50:
        year -= 100
    return year


# --- ranges --------------------------------------------------------------------------


_RANGE_SPEC = re.compile(r"(\d*)-(\d*)", re.ASCII)


def parse_ranges(value, size):
    """Satisfiable (first, last) byte ranges of a Range value, sorted and merged.

    None: the header is ignored (not bytes, malformed, or more than MAX_RANGES specs).
    []: no spec is satisfiable (416).
    """
    unit, equals, specs = value.partition("=")
    if not equals or unit.strip().lower() != "bytes":
        return None
    parsed = []
    for spec in specs.split(","):
        spec = spec.strip()
        if not spec:
            continue  # empty list elements are allowed (RFC 9110 §5.6.1)
        if len(parsed) == MAX_RANGES:
            return None
        match = _RANGE_SPEC.fullmatch(spec)
        if match is None or spec == "-":
            return None
        parsed.append(match.groups())
    if not parsed:
        return None
    satisfiable = []
    for first, last in parsed:
        if not first:
            suffix = int(last)
            if suffix == 0 or size == 0:
                continue
            satisfiable.append((max(size - suffix, 0), size - 1))
            continue
        start = int(first)
        end = int(last) if last else size - 1
        if start >= size or end < start:
            continue
        satisfiable.append((start, min(end, size - 1)))
    satisfiable.sort()
    merged = []
    for start, end in satisfiable:
        if merged and start <= merged[-1][1] + 1:
            if end > merged[-1][1]:
                merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged


def _unsatisfiable(entry):
    headers = [("content-range", f"bytes */{entry.size}"), ("content-length", "0")]
    if entry.varies:
        headers.append(("vary", "Accept-Encoding"))
    return StaticResponse(416, headers, (), 0)


def _ranged(entry, ranges, head):
    if not ranges:
        return _unsatisfiable(entry)
    if len(ranges) == 1:
        start, end = ranges[0]
        length = end - start + 1
        headers = [(name, value) for name, value in entry.headers if name != "content-length"]
        headers.append(("content-length", str(length)))
        headers.append(("content-range", f"bytes {start}-{end}/{entry.size}"))
        if head:
            return StaticResponse(206, headers, (), 0)
        return StaticResponse(206, headers, ((entry.offset + start, length),), length)
    # The boundary comes from the content hash: content holding its own hash is not a
    # practical collision, and no randomness is spent per request.
    boundary = "zeroserve-" + entry.etag[1:-1]
    # The coding describes each part's bytes, not the multipart body, so it goes in the
    # parts; on the outer message a client would try to decode the multipart framing.
    part_fields = f"Content-Type: {entry.content_type}\r\n"
    if entry.content_encoding is not None:
        part_fields += f"Content-Encoding: {entry.content_encoding}\r\n"
    body = []
    length = 0
    for number, (start, end) in enumerate(ranges):
        part_head = (b"" if number == 0 else b"\r\n") + (
            f"--{boundary}\r\n{part_fields}Content-Range: bytes {start}-{end}/{entry.size}\r\n\r\n"
        ).encode("latin-1")
        body.append(part_head)
        body.append((entry.offset + start, end - start + 1))
        length += len(part_head) + end - start + 1
    closing = f"\r\n--{boundary}--\r\n".encode("latin-1")
    body.append(closing)
    length += len(closing)
    headers = [
        (name, value)
        for name, value in entry.headers
        if name not in ("content-length", "content-type", "content-encoding")
    ]
    headers.append(("content-type", f"multipart/byteranges; boundary={boundary}"))
    headers.append(("content-length", str(length)))
    if head:
        return StaticResponse(206, headers, (), 0)
    return StaticResponse(206, headers, tuple(body), length)
