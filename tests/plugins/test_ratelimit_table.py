"""The shared GCRA bucket table of the ratelimit plugin: exact allow/deny sequences on a frozen clock, the bucket limit, two processes, snapshots."""

import os
import time

import msgpack
import pytest

from zeroserve.plugins.ratelimit import snapshot
from zeroserve.plugins.ratelimit.table import (
    ALLOWED, BAD_ARGS, KIND_EX, KIND_WINDOWS, LIMITED, TABLE_FULL, Bucket, LocalTable,
)

SECOND = 1_000_000_000
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE


@pytest.fixture
def table():
    table = LocalTable(100)
    table.set_clock(0)
    return table


def run(table, key, count, *limits):
    """The results of `count` zs_rate_limit checks of key at the current frozen time."""
    return [table.check(key, *limits) for _ in range(count)]


def test_ratelimit_burst_equals_limit(table):
    """A fresh key gets exactly its per-second limit at once, then 1 (per-second exceeded)."""
    assert run(table, b"client", 4, 3, 0, 0) == [ALLOWED, ALLOWED, ALLOWED, 1]


def test_ratelimit_refill_one_token_per_interval(table):
    """Tokens come back one per 1/limit second, not earlier."""
    assert run(table, b"k", 3, 2, 0, 0) == [ALLOWED, ALLOWED, 1]
    table.set_clock(SECOND // 2 - 1)
    assert table.check(b"k", 2, 0, 0) == 1
    table.set_clock(SECOND // 2)
    assert run(table, b"k", 2, 2, 0, 0) == [ALLOWED, 1]
    table.set_clock(10 * SECOND)  # long idle: the bucket refills only up to its burst
    assert run(table, b"k", 3, 2, 0, 0) == [ALLOWED, ALLOWED, 1]


def test_ratelimit_window_edge_allows_no_double_burst(table):
    """A burst just before a second boundary is not followed by a second burst just after it (fixed windows would allow 20)."""
    table.set_clock(990_000_000)
    assert run(table, b"edge", 10, 10, 0, 0) == [ALLOWED] * 10
    table.set_clock(1_010_000_000)
    assert run(table, b"edge", 5, 10, 0, 0) == [1] * 5
    table.set_clock(1_090_000_000)  # 0.1 s after the burst: one token
    assert run(table, b"edge", 2, 10, 0, 0) == [ALLOWED, 1]


def test_ratelimit_denied_calls_consume_nothing(table):
    """Any number of denied checks does not delay the next token."""
    assert run(table, b"k", 1, 1, 0, 0) == [ALLOWED]
    assert run(table, b"k", 100, 1, 0, 0) == [1] * 100
    table.set_clock(SECOND)
    assert run(table, b"k", 2, 1, 0, 0) == [ALLOWED, 1]


def test_ratelimit_minute_and_hour_codes(table):
    """The first exceeded limit is reported in order second, minute, hour; 0 is unlimited."""
    assert run(table, b"k", 3, 0, 2, 3) == [ALLOWED, ALLOWED, 2]
    table.set_clock(30 * SECOND)  # one minute token back
    assert run(table, b"k", 2, 0, 2, 3) == [ALLOWED, 2]
    table.set_clock(60 * SECOND)  # another minute token, but the hour's 3 are used
    assert table.check(b"k", 0, 2, 3) == 3
    table.set_clock(20 * MINUTE)  # one hour token every 20 minutes; the minute bucket is full again
    assert run(table, b"k", 2, 0, 2, 3) == [ALLOWED, 3]
    table.set_clock(HOUR)
    assert run(table, b"k", 3, 1, 5, 100) == [ALLOWED, 1, 1]


def test_ratelimit_unlimited_creates_no_bucket(table):
    """All-zero limits always allow and store nothing."""
    assert run(table, b"free", 1000, 0, 0, 0) == [ALLOWED] * 1000
    assert table.stats()["live"] == 0


def test_ratelimit_keys_are_independent(table):
    """Each key has its own buckets; zs_rate_limit and zs_rate_limit_ex never share one."""
    assert run(table, b"a", 2, 1, 0, 0) == [ALLOWED, 1]
    assert run(table, b"b", 2, 1, 0, 0) == [ALLOWED, 1]
    assert table.check_ex(b"a", 1000, 1) == (ALLOWED, 0)
    assert table.check(b"a\0", 1, 0, 0) == ALLOWED
    assert table.stats()["live"] == 4


def test_ratelimit_key_length_bounds(table):
    """Keys of 1..256 bytes are accepted; empty or longer keys get -1 from both checks."""
    assert table.check(b"", 1, 0, 0) == BAD_ARGS
    assert table.check(b"x" * 257, 1, 0, 0) == BAD_ARGS
    assert table.check(b"x" * 256, 1, 0, 0) == ALLOWED
    assert table.check_ex(b"", 1000, 1) == (BAD_ARGS, 0)
    assert table.check_ex(b"y" * 257, 1000, 1) == (BAD_ARGS, 0)


def test_ratelimit_ex_retry_after(table):
    """zs_rate_limit_ex allows the burst, then reports 1 and the milliseconds until the next token (rounded up)."""
    assert [table.check_ex(b"ip", 5000, 10)[0] for _ in range(10)] == [ALLOWED] * 10
    assert table.check_ex(b"ip", 5000, 10) == (LIMITED, 200)
    table.set_clock(150_000_000)
    assert table.check_ex(b"ip", 5000, 10) == (LIMITED, 50)
    table.set_clock(200_000_000)
    assert table.check_ex(b"ip", 5000, 10) == (ALLOWED, 0)
    assert table.check_ex(b"slow", 1500, 1) == (ALLOWED, 0)
    assert table.check_ex(b"slow", 1500, 1) == (LIMITED, 667)  # 666.67 ms rounded up


def test_ratelimit_ex_bad_arguments(table):
    """A rate or burst of 0 is a bad argument (-1)."""
    assert table.check_ex(b"k", 0, 5) == (BAD_ARGS, 0)
    assert table.check_ex(b"k", 1000, 0) == (BAD_ARGS, 0)


def test_ratelimit_table_limit_then_reclaim():
    """A new key beyond --max-rate-limit-buckets gets 4 while known keys work; expired buckets then make room."""
    table = LocalTable(2)
    table.set_clock(0)
    assert table.check(b"a", 0, 0, 2) == ALLOWED
    assert table.check(b"b", 0, 0, 2) == ALLOWED
    assert table.check(b"c", 0, 0, 2) == TABLE_FULL
    assert table.check(b"a", 0, 0, 2) == ALLOWED
    assert table.check(b"a", 0, 0, 2) == 3
    table.set_clock(30 * MINUTE)  # b is full again (expired); a still owes half an hour
    assert table.check(b"c", 0, 0, 2) == ALLOWED
    assert table.check(b"d", 0, 0, 2) == TABLE_FULL
    assert run(table, b"a", 2, 0, 0, 2) == [ALLOWED, 3]  # a kept its state: one token back, not two
    stats = table.stats()
    assert (stats["live"], stats["reclaimed"], stats["refused"]) == (2, 1, 2)


def test_ratelimit_many_keys_fill_exactly_to_the_limit():
    """With 5000 buckets allowed, 5000 distinct keys fit and the next one is refused."""
    table = LocalTable(5000)
    table.set_clock(0)
    results = [table.check(b"key-%d" % i, 1, 0, 0) for i in range(5001)]
    assert results[:5000] == [ALLOWED] * 5000
    assert results[5000] == TABLE_FULL


def test_ratelimit_two_processes_share_one_limit():
    """Two forked processes hammering one key together get exactly the limit between them."""
    table = LocalTable(10)
    table.set_clock(0)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: count its own allowed checks and report them
        allowed = sum(table.check(b"shared", 0, 0, 5000) == ALLOWED for _ in range(20000))
        os.write(write_end, str(allowed).encode())
        os._exit(0)
    os.close(write_end)
    allowed_here = sum(table.check(b"shared", 0, 0, 5000) == ALLOWED for _ in range(20000))
    _, status = os.waitpid(pid, 0)
    allowed_there = int(os.read(read_end, 64))
    os.close(read_end)
    assert os.waitstatus_to_exitcode(status) == 0
    assert allowed_here + allowed_there == 5000
    assert table.check(b"shared", 0, 0, 5000) == 3


def test_ratelimit_clock_is_shared_across_processes():
    """Moving the frozen clock in one process moves it for a forked one."""
    table = LocalTable(10)
    table.set_clock(0)
    assert run(table, b"k", 2, 1, 0, 0) == [ALLOWED, 1]
    pid = os.fork()
    if pid == 0:
        table.set_clock(SECOND)
        os._exit(0)
    os.waitpid(pid, 0)
    assert table.now() == SECOND
    assert table.check(b"k", 1, 0, 0) == ALLOWED


def test_ratelimit_snapshot_round_trip(table, tmp_path):
    """A saved table restores into a new one with the same buckets (time since the save refilled them)."""
    run(table, b"a", 2, 0, 0, 2)
    table.check_ex(b"b", 1000, 3)
    path = tmp_path / "state.msgpack"
    assert snapshot.save(table, path) == 2
    restored = LocalTable(100)
    restored.set_clock(5 * SECOND)
    assert snapshot.load(restored, path) == 2
    assert restored.check(b"a", 0, 0, 2) == 3
    assert [restored.check_ex(b"b", 1000, 3)[0] for _ in range(3)] == [ALLOWED, ALLOWED, LIMITED]
    assert restored.check(b"fresh", 0, 0, 2) == ALLOWED


def test_ratelimit_snapshot_accounts_for_downtime(table, tmp_path):
    """Buckets restored from a snapshot taken half an hour ago got half an hour of tokens back."""
    run(table, b"a", 2, 0, 0, 2)  # both hour tokens used; one back every 30 minutes
    run(table, b"b", 1, 1, 0, 0)  # refilled within a second
    path = tmp_path / "state.msgpack"
    snapshot.save(table, path)
    document = msgpack.unpackb(path.read_bytes())
    document["saved_at_ns"] -= 30 * MINUTE + SECOND
    path.write_bytes(msgpack.packb(document))
    restored = LocalTable(100)
    restored.set_clock(0)
    assert snapshot.load(restored, path) == 1  # b refilled completely while the server was down
    assert run(restored, b"a", 2, 0, 0, 2) == [ALLOWED, 3]


@pytest.mark.parametrize("content", [
    b"",
    b"\xc1not msgpack",
    msgpack.packb({"format": "something-else", "version": 1}),
    msgpack.packb({"format": "zeroserve-ratelimit", "version": 99, "saved_at_ns": 0, "buckets": []}),
    msgpack.packb({"format": "zeroserve-ratelimit", "version": 1, "saved_at_ns": 0, "buckets": [[7, b"k", [1, 2, 3]]]}),
    msgpack.packb({"format": "zeroserve-ratelimit", "version": 1, "saved_at_ns": 0, "buckets": [[0, b"", [1, 2, 3]]]}),
    msgpack.packb([1, 2, 3]),
], ids=["empty", "garbage", "other-format", "other-version", "bad-kind", "empty-key", "not-a-map"])
def test_ratelimit_corrupt_snapshot_is_rejected(table, tmp_path, content):
    """A corrupt or foreign snapshot raises SnapshotError and restores nothing."""
    path = tmp_path / "state.msgpack"
    path.write_bytes(content)
    with pytest.raises(snapshot.SnapshotError):
        snapshot.load(table, path)
    assert table.buckets() == []


def test_ratelimit_restore_keeps_bucket_state(table):
    """A bucket restored with its tokens ahead is limited exactly as before."""
    table.restore(Bucket(KIND_WINDOWS, b"k", (0, 0, HOUR - 1)))  # one hour token owed, of 1
    assert table.check(b"k", 0, 0, 1) == 3
    table.restore(Bucket(KIND_EX, b"k", (SECOND, 0, 0)))
    assert table.check_ex(b"k", 1000, 1) == (LIMITED, 1000)
    assert {bucket.key for bucket in table.buckets()} == {b"k"}
    assert len(table.buckets()) == 2
