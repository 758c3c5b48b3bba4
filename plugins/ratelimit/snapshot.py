"""The local table's state on disk: a msgpack snapshot written at shutdown and loaded at start, time elapsed in between accounted for.

The file is a map {"format": "zeroserve-ratelimit", "version": 1, "saved_at_ns":
wall-clock ns, "buckets": [[kind, key, [ahead_ns x 3]], ...]}. Only buckets
that are not full are written; time spent while the server was down refills
them on load (and those that refilled completely are skipped).
"""

import os
import time

import msgpack

from zeroserve.plugins.ratelimit.table import KEY_MAX, KIND_EX, KIND_WINDOWS, Bucket

__all__ = ["FORMAT", "VERSION", "SnapshotError", "save", "load"]

FORMAT = "zeroserve-ratelimit"
VERSION = 1


class SnapshotError(Exception):
    """A snapshot file that cannot be read or is not one of ours."""


def save(table, path):
    """Writes table's buckets to path (through a temporary file, so a crash never leaves half a snapshot)."""
    buckets = [[bucket.kind, bucket.key, list(bucket.ahead_ns)] for bucket in table.buckets()]
    data = msgpack.packb({"format": FORMAT, "version": VERSION, "saved_at_ns": time.time_ns(),
                          "buckets": buckets}, use_bin_type=True)
    temporary = f"{path}.tmp{os.getpid()}"
    try:
        with open(temporary, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        # A full disk fails the write: the previous snapshot stays, and so must the space it had.
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        raise
    return len(buckets)


def load(table, path):
    """Restores the buckets saved in path, less the time since; the number restored. Raises SnapshotError."""
    try:
        with open(path, "rb") as file:
            document = msgpack.unpackb(file.read(), raw=False, strict_map_key=True)
    except (OSError, ValueError, msgpack.UnpackException) as error:
        raise SnapshotError(f"cannot read {path}: {error}") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise SnapshotError(f"{path} is not a zeroserve rate-limit snapshot")
    if document.get("version") != VERSION:
        raise SnapshotError(f"{path} has snapshot version {document.get('version')!r}, expected {VERSION}")
    saved_at = document.get("saved_at_ns")
    entries = document.get("buckets")
    if not isinstance(saved_at, int) or not isinstance(entries, list):
        raise SnapshotError(f"{path} lacks saved_at_ns or buckets")
    elapsed = max(0, time.time_ns() - saved_at)
    buckets = [_bucket(entry, elapsed, path) for entry in entries]
    restored = 0
    for bucket in buckets:
        if max(bucket.ahead_ns) > 0:
            try:
                table.restore(bucket)
            except ValueError as error:
                raise SnapshotError(f"{path}: {error}") from None
            restored += 1
    return restored


def _bucket(entry, elapsed, path):
    """A Bucket from one [kind, key, ahead_ns] entry, moved `elapsed` ns forward."""
    if not (isinstance(entry, list) and len(entry) == 3 and entry[0] in (KIND_WINDOWS, KIND_EX)
            and isinstance(entry[1], bytes) and 1 <= len(entry[1]) <= KEY_MAX
            and isinstance(entry[2], list) and len(entry[2]) == 3
            and all(isinstance(ahead, int) and 0 <= ahead < 2**62 for ahead in entry[2])):
        raise SnapshotError(f"{path} holds a malformed bucket entry {entry!r:.80}")
    return Bucket(entry[0], entry[1], tuple(max(0, ahead - elapsed) for ahead in entry[2]))
