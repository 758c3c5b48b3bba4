/* SPDX-License-Identifier: Apache-2.0 */
/*
 * zsratelimit.h: a GCRA token-bucket table in shared memory, used by every
 * worker process of one server at once.
 *
 * The table is one anonymous MAP_SHARED mapping made by the parent before it
 * forks, so workers share it with no file and no server process. Each key
 * lives in one of two candidate groups of ZS_RL_WAYS slots; a group is
 * guarded by a spinlock held only for the few loads and stores of one check.
 * A bucket whose theoretical arrival times are all in the past is full again,
 * exactly like a missing one, so such "expired" buckets are reclaimed freely.
 * Functions return 0 / a pointer on success and -1 / NULL with a malloc'd
 * message in *errmsg; nothing here prints or aborts.
 */
#ifndef ZSRATELIMIT_H
#define ZSRATELIMIT_H

#include <stddef.h>
#include <stdint.h>

#include "include/zsvm.h"

#define ZS_RL_KEY_MAX 256
#define ZS_RL_LIMITS 3

/* Results: the original server's zs_rate_limit codes. zs_rl_check_ex answers
 * ZS_RL_ALLOWED, ZS_RL_LIMITED, ZS_RL_TABLE_FULL or ZS_RL_BAD_ARGS. */
enum zs_rl_result {
    ZS_RL_BAD_ARGS = -1,
    ZS_RL_ALLOWED = 0,
    ZS_RL_LIMITED = 1, /* also: the per-second limit was exceeded */
    ZS_RL_EXCEEDED_MINUTE = 2,
    ZS_RL_EXCEEDED_HOUR = 3,
    ZS_RL_TABLE_FULL = 4,
};

/* Which helper a bucket belongs to: the same key bytes name different
 * buckets in zs_rate_limit and zs_rate_limit_ex. */
enum zs_rl_kind {
    ZS_RL_KIND_WINDOWS = 0,
    ZS_RL_KIND_EX = 1,
};

/* One bucket as a snapshot sees it: ahead_ns[i] is how far limit i's
 * theoretical arrival time is past now (0 = that limit is full). */
struct zs_rl_entry {
    uint32_t kind;
    uint32_t key_len;
    uint8_t key[ZS_RL_KEY_MAX];
    int64_t ahead_ns[ZS_RL_LIMITS];
};

struct zs_rl_stats {
    uint64_t live;        /* buckets in the table */
    uint64_t max_buckets; /* --max-rate-limit-buckets */
    uint64_t slots;       /* capacity of the mapping */
    uint64_t reclaimed;   /* expired buckets removed to make room */
    uint64_t refused;     /* new keys refused with ZS_RL_TABLE_FULL */
};

struct zs_rl_table;

struct zs_rl_table *zs_rl_create(uint64_t max_buckets, char **errmsg);
void zs_rl_destroy(struct zs_rl_table *table);

/* zs_rate_limit: per-second, per-minute and per-hour buckets of key, each
 * with a burst equal to its limit (0 = unlimited). Denied checks take
 * nothing. Returns ZS_RL_ALLOWED, the first exceeded limit (1..3),
 * ZS_RL_TABLE_FULL or ZS_RL_BAD_ARGS (key length not 1..256). */
int64_t zs_rl_check(struct zs_rl_table *table, const void *key, size_t key_len, uint64_t per_second,
                    uint64_t per_minute, uint64_t per_hour);
/* zs_rate_limit_ex: one bucket refilled with rate_milli / 1000 tokens a
 * second up to burst. *retry_after_ms (when not NULL) is 0 when allowed, else
 * the milliseconds until a token is there. ZS_RL_BAD_ARGS when the key length
 * is not 1..256 or rate_milli or burst is 0. */
int64_t zs_rl_check_ex(struct zs_rl_table *table, const void *key, size_t key_len,
                       uint64_t rate_milli, uint64_t burst, uint64_t *retry_after_ms);

/* The table's clock: now_ns >= 0 freezes it at that value (tests move it
 * by hand, for every process sharing the table); -1 returns to
 * CLOCK_MONOTONIC. */
void zs_rl_set_clock(struct zs_rl_table *table, int64_t now_ns);
int64_t zs_rl_now(struct zs_rl_table *table);

/* Snapshot: zs_rl_export writes the next bucket that is not full at or after
 * *cursor (start at 0) and returns 1, or 0 when there are no more;
 * zs_rl_import puts one back (-1 with a message when it does not fit). */
int zs_rl_export(struct zs_rl_table *table, uint64_t *cursor, struct zs_rl_entry *entry);
int zs_rl_import(struct zs_rl_table *table, const struct zs_rl_entry *entry, char **errmsg);
void zs_rl_stats(struct zs_rl_table *table, struct zs_rl_stats *stats);

/* The helpers, cookie = the table: zs_rate_limit(key, key_len, per_second,
 * per_minute, per_hour) and zs_rate_limit_ex(key, key_len, rate_per_sec_milli,
 * burst, out_retry_after_ms). */
uint64_t zs_rl_helper_rate_limit(struct zs_run *run, void *cookie, uint64_t key, uint64_t key_len,
                                 uint64_t per_second, uint64_t per_minute, uint64_t per_hour);
uint64_t zs_rl_helper_rate_limit_ex(struct zs_run *run, void *cookie, uint64_t key,
                                    uint64_t key_len, uint64_t rate_milli, uint64_t burst,
                                    uint64_t out_retry_after_ms);

#endif
