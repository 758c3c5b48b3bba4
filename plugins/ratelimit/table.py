"""The shared-memory bucket table (native/ratelimit) from Python: create it, check keys, move its clock, dump and refill it.

A `LocalTable` is made once per server, in the parent before it forks, and
every worker reaches the same buckets. Scripts use it through the C helpers in
`helpers()`; the methods here serve snapshots, tests and benchmarks.
"""

from dataclasses import dataclass

from zeroserve.native._zsvm import ffi, lib

__all__ = ["KEY_MAX", "KIND_WINDOWS", "KIND_EX", "ALLOWED", "LIMITED", "TABLE_FULL", "BAD_ARGS",
           "Bucket", "LocalTable"]

KEY_MAX = lib.ZS_RL_KEY_MAX
KIND_WINDOWS = lib.ZS_RL_KIND_WINDOWS  # buckets of zs_rate_limit
KIND_EX = lib.ZS_RL_KIND_EX  # buckets of zs_rate_limit_ex
ALLOWED = lib.ZS_RL_ALLOWED
LIMITED = lib.ZS_RL_LIMITED
TABLE_FULL = lib.ZS_RL_TABLE_FULL
BAD_ARGS = lib.ZS_RL_BAD_ARGS


@dataclass(frozen=True, slots=True)
class Bucket:
    """One bucket that is not full: ahead_ns[i] is how far limit i's next free token is past now."""

    kind: int
    key: bytes
    ahead_ns: tuple


def _take_error(errmsg, what):
    message = ffi.string(errmsg[0]).decode("utf-8", "replace") if errmsg[0] != ffi.NULL else "out of memory"
    if errmsg[0] != ffi.NULL:
        lib.free(errmsg[0])
    return f"{what}: {message}"


class LocalTable:
    """Token buckets (GCRA) in one anonymous shared mapping, for every process forked after it was made."""

    def __init__(self, max_buckets):
        errmsg = ffi.new("char **")
        table = lib.zs_rl_create(max_buckets, errmsg)
        if table == ffi.NULL:
            raise ValueError(_take_error(errmsg, "rate-limit table"))
        self._table = ffi.gc(table, lib.zs_rl_destroy)
        self._retry = ffi.new("uint64_t *")

    def helpers(self):
        """{helper name: (C function, cookie)}: zs_rate_limit and zs_rate_limit_ex on this table."""
        return {
            "zs_rate_limit": (lib.zs_rl_helper_rate_limit, self._table),
            "zs_rate_limit_ex": (lib.zs_rl_helper_rate_limit_ex, self._table),
        }

    def check(self, key, per_second, per_minute, per_hour):
        """zs_rate_limit: ALLOWED, 1/2/3 (the first limit exceeded), TABLE_FULL or BAD_ARGS."""
        return lib.zs_rl_check(self._table, key, len(key), per_second, per_minute, per_hour)

    def check_ex(self, key, rate_per_sec_milli, burst):
        """zs_rate_limit_ex: (ALLOWED | LIMITED | TABLE_FULL | BAD_ARGS, retry-after in ms)."""
        result = lib.zs_rl_check_ex(self._table, key, len(key), rate_per_sec_milli, burst, self._retry)
        return result, self._retry[0]

    def set_clock(self, now_ns):
        """Freezes the table's clock at now_ns (in every process sharing it); None returns to the real clock."""
        if now_ns is not None and now_ns < 0:
            raise ValueError(f"clock value must be >= 0, got {now_ns}")
        lib.zs_rl_set_clock(self._table, -1 if now_ns is None else now_ns)

    def now(self):
        """The table's clock, in ns (CLOCK_MONOTONIC unless frozen)."""
        return lib.zs_rl_now(self._table)

    def buckets(self):
        """Every bucket that is not full, as `Bucket`s (full ones are the same as absent)."""
        cursor = ffi.new("uint64_t *")
        entry = ffi.new("struct zs_rl_entry *")
        found = []
        while lib.zs_rl_export(self._table, cursor, entry):
            found.append(Bucket(entry.kind, bytes(ffi.buffer(entry.key, entry.key_len)),
                                tuple(entry.ahead_ns)))
        return found

    def restore(self, bucket):
        """Puts a bucket back with its tokens as they were `bucket.ahead_ns` ago."""
        key = bytes(bucket.key)
        ahead = tuple(bucket.ahead_ns)
        if not 1 <= len(key) <= KEY_MAX or len(ahead) != lib.ZS_RL_LIMITS:
            raise ValueError(f"bucket of a {len(key)}-byte key with {len(ahead)} limits cannot be restored")
        entry = ffi.new("struct zs_rl_entry *", {"kind": bucket.kind, "key_len": len(key),
                                                 "ahead_ns": list(ahead)})
        ffi.memmove(entry.key, key, len(key))
        errmsg = ffi.new("char **")
        if lib.zs_rl_import(self._table, entry, errmsg) < 0:
            raise ValueError(_take_error(errmsg, "cannot restore bucket"))

    def stats(self):
        """{live, max_buckets, slots, reclaimed, refused}."""
        stats = ffi.new("struct zs_rl_stats *")
        lib.zs_rl_stats(self._table, stats)
        return {name: getattr(stats, name) for name in ("live", "max_buckets", "slots", "reclaimed", "refused")}
