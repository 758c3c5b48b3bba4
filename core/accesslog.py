"""The access log: one line per finished request, text or JSON, written to stderr in batches.

Lines are buffered and written once per event-loop iteration, so a burst of
pipelined or multiplexed requests costs one write(2), not one per request.
"""

import json
import os
import sys
import time

_stamp_second = -1
_stamp = ""


def _timestamp(now):
    global _stamp_second, _stamp
    second = int(now)
    if second != _stamp_second:
        _stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(second))
        _stamp_second = second
    return _stamp


def log_error(message):
    """An error or notice for the operator: one line on stderr, at once."""
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


class AccessLog:
    """Collects access-log lines and hands them to stderr after the current loop iteration."""

    def __init__(self, log_format, call_soon, fd=2):
        self._json = log_format == "json"
        self._call_soon = call_soon
        self._fd = fd
        self._lines = []

    def record(self, request_id, client, method, target, status, sent, duration, protocol, ja4=None):
        """Add one line; `duration` in seconds, `client` as (ip, port), `ja4` the TLS fingerprint when known."""
        now = time.time()
        ms = round(duration * 1000, 3)
        if self._json:
            fields = {
                "time": _timestamp(now), "id": request_id, "client": f"{client[0]}:{client[1]}",
                "method": method, "path": target, "status": status, "bytes": sent,
                "duration_ms": ms, "protocol": protocol,
            }
            if ja4 is not None:
                fields["ja4"] = ja4
            line = json.dumps(fields, separators=(",", ":"))
        else:
            line = (f"[request] {_timestamp(now)} {request_id} {client[0]}:{client[1]} {method} {target} "
                    f"{status} {sent} {ms}ms {protocol}")
            if ja4 is not None:
                line += f" ja4={ja4}"
        if not self._lines:
            self._call_soon(self.flush)
        self._lines.append(line)

    def record_preformatted(self, lines):
        """Add lines already in this log's format (the C fast path writes its own), in the same batch."""
        if not self._lines:
            self._call_soon(self.flush)
        self._lines.extend(lines)

    def flush(self):
        """Write every buffered line now."""
        if self._lines:
            data = ("\n".join(self._lines) + "\n").encode("utf-8", "backslashreplace")
            self._lines.clear()
            while data:
                data = data[os.write(self._fd, data):]
