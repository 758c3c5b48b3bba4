"""The `Date` header value (RFC 9110 IMF-fixdate), formatted once per second."""

import time
from email.utils import formatdate

_second = -1
_value = b""


def current():
    """Today's IMF-fixdate as bytes, e.g. b"Sun, 06 Nov 1994 08:49:37 GMT"."""
    global _second, _value
    now = int(time.time())
    if now != _second:
        _value = formatdate(now, usegmt=True).encode("ascii")
        _second = now
    return _value
