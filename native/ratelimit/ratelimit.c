/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ratelimit.c: the shared GCRA table behind zs_rate_limit and
 * zs_rate_limit_ex (see zsratelimit.h for the design); the helpers that
 * reach it from scripts are in helpers.c.
 *
 * GCRA keeps one "theoretical arrival time" (tat) per limit: a limit of N per
 * window W emits a token every T = W / N and tolerates a burst of N, i.e. a
 * check at `now` passes when max(tat, now) - now <= T * (N - 1), and then tat
 * moves to max(tat, now) + T. A denied check changes nothing.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "zsratelimit.h"

#define ZS_RL_WAYS 16
#define ZS_RL_MAGIC 0x7a73726c74626c31ULL
#define NS_PER_SEC 1000000000LL
/* Large enough that tat + interval never overflows however long a burst. */
#define ZS_RL_TIME_CAP (INT64_MAX / 4)
/* A full table is swept for expired buckets at most this often. */
#define ZS_RL_SWEEP_INTERVAL_NS 1000000LL
/* Spins before asking whether the lock's owner still exists. */
#define ZS_RL_SPINS_BEFORE_OWNER_CHECK (1u << 20)
#define ZS_RL_TAG_USED (1ULL << 63)

struct zs_rl_slot {
    int64_t tat[ZS_RL_LIMITS];
    int64_t expires; /* the latest tat: from then on the bucket is full again */
    uint16_t key_len;
    uint8_t kind;
    uint8_t key[ZS_RL_KEY_MAX];
};

struct zs_rl_group {
    _Alignas(64) _Atomic int32_t owner; /* pid holding the group, 0 = free */
    uint64_t tag[ZS_RL_WAYS];           /* hash | ZS_RL_TAG_USED, 0 = empty slot */
    struct zs_rl_slot slot[ZS_RL_WAYS];
};

struct zs_rl_table {
    uint64_t magic;
    size_t map_size;
    uint64_t max_buckets;
    uint64_t group_mask;
    _Atomic int64_t manual_now; /* -1: CLOCK_MONOTONIC */
    _Atomic int64_t last_sweep;
    _Atomic uint64_t live;
    _Atomic uint64_t reclaimed;
    _Atomic uint64_t refused;
    struct zs_rl_group groups[];
};

/* One limit of a check: emission interval and burst tolerance, in ns;
 * interval < 0 means unlimited. */
struct zs_rl_limit {
    int64_t interval;
    int64_t tolerance;
};

/* The groups a located bucket's caller holds. */
struct zs_rl_place {
    struct zs_rl_group *first, *second;
    struct zs_rl_slot *slot;
};

static int set_error(char **errmsg, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int set_error(char **errmsg, const char *fmt, ...)
{
    if (errmsg) {
        va_list ap;
        va_start(ap, fmt);
        if (vasprintf(errmsg, fmt, ap) < 0)
            *errmsg = NULL;
        va_end(ap);
    }
    return -1;
}

/* ---- process identity (the lock owner), refreshed after fork ---- */

static _Atomic int32_t cached_pid;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void forget_pid(void) { atomic_store(&cached_pid, 0); }
static void install_atfork(void) { pthread_atfork(NULL, NULL, forget_pid); }

static int32_t this_pid(void)
{
    int32_t pid = atomic_load_explicit(&cached_pid, memory_order_relaxed);
    if (!pid) {
        pid = (int32_t)getpid();
        atomic_store_explicit(&cached_pid, pid, memory_order_relaxed);
    }
    return pid;
}

/* ---- group locks ---- */

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static void group_lock(struct zs_rl_group *group)
{
    int32_t self = this_pid();
    unsigned spins = 0;
    for (;;) {
        int32_t owner = 0;
        if (atomic_compare_exchange_weak_explicit(&group->owner, &owner, self, memory_order_acquire,
                                                  memory_order_relaxed))
            return;
        /* A worker killed inside its few instructions of critical section
         * would hold the group forever: take it over from a dead owner. */
        if (++spins >= ZS_RL_SPINS_BEFORE_OWNER_CHECK) {
            spins = 0;
            if (owner != 0 && kill(owner, 0) == -1 && errno == ESRCH &&
                atomic_compare_exchange_strong_explicit(&group->owner, &owner, self,
                                                        memory_order_acquire, memory_order_relaxed))
                return;
        }
        cpu_relax();
    }
}

static inline void group_unlock(struct zs_rl_group *group)
{
    atomic_store_explicit(&group->owner, 0, memory_order_release);
}

static void place_release(struct zs_rl_place *place)
{
    group_unlock(place->first);
    if (place->second)
        group_unlock(place->second);
}

/* ---- clock, hashing, limits ---- */

void zs_rl_set_clock(struct zs_rl_table *table, int64_t now_ns)
{
    atomic_store(&table->manual_now, now_ns < 0 ? -1 : now_ns);
}

int64_t zs_rl_now(struct zs_rl_table *table)
{
    int64_t manual = atomic_load_explicit(&table->manual_now, memory_order_relaxed);
    if (manual >= 0)
        return manual;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * NS_PER_SEC + ts.tv_nsec;
}

static inline uint64_t mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

static uint64_t key_hash(unsigned kind, const uint8_t *key, size_t len)
{
    uint64_t h = 0xcbf29ce484222325ULL ^ kind;
    for (size_t i = 0; i < len; i++) {
        h ^= key[i];
        h *= 0x100000001b3ULL;
    }
    return mix64(h);
}

static int64_t saturating_mul(int64_t a, uint64_t b)
{
    unsigned __int128 product = (unsigned __int128)(uint64_t)a * b;
    return product > ZS_RL_TIME_CAP ? ZS_RL_TIME_CAP : (int64_t)product;
}

/* A token every `interval` ns, up to `burst` at once. */
static struct zs_rl_limit make_limit(int64_t interval, uint64_t burst)
{
    struct zs_rl_limit limit = {interval, saturating_mul(interval, burst - 1)};
    return limit;
}

/* `count` per `window_ns` with a burst of `count`; 0 = unlimited. */
static struct zs_rl_limit window_limit(uint64_t count, int64_t window_ns)
{
    if (count == 0) {
        struct zs_rl_limit unlimited = {-1, 0};
        return unlimited;
    }
    return make_limit((int64_t)((uint64_t)window_ns / count), count);
}

/* Takes a token from every limit of the bucket, or from none: the 1-based
 * index of the first limit that has none (and *wait_ns until it has), or 0. */
static int64_t gcra_take(struct zs_rl_slot *slot, const struct zs_rl_limit *limits, int count,
                         int64_t now, int64_t *wait_ns)
{
    for (int i = 0; i < count; i++) {
        if (limits[i].interval < 0)
            continue;
        int64_t tat = slot->tat[i] > now ? slot->tat[i] : now;
        if (tat - now > limits[i].tolerance) {
            *wait_ns = tat - limits[i].tolerance - now;
            return i + 1;
        }
    }
    int64_t expires = slot->expires;
    for (int i = 0; i < count; i++) {
        if (limits[i].interval < 0)
            continue;
        int64_t tat = (slot->tat[i] > now ? slot->tat[i] : now) + limits[i].interval;
        slot->tat[i] = tat;
        if (tat > expires)
            expires = tat;
    }
    slot->expires = expires;
    *wait_ns = 0;
    return ZS_RL_ALLOWED;
}

/* ---- the table ---- */

struct zs_rl_table *zs_rl_create(uint64_t max_buckets, char **errmsg)
{
    if (max_buckets == 0 || max_buckets > (1ULL << 32)) {
        set_error(errmsg, "--max-rate-limit-buckets must be between 1 and %llu, got %llu",
                  (unsigned long long)(1ULL << 32), (unsigned long long)max_buckets);
        return NULL;
    }
    /* Twice the slots the limit needs, so that a key's two groups almost
     * never both fill up before the table does. */
    uint64_t groups = 1;
    while (groups * ZS_RL_WAYS < 2 * max_buckets)
        groups <<= 1;
    size_t size = sizeof(struct zs_rl_table) + groups * sizeof(struct zs_rl_group);
    void *map = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (map == MAP_FAILED) {
        set_error(errmsg, "cannot map %zu bytes of shared memory for the rate-limit table: %s",
                  size, strerror(errno));
        return NULL;
    }
    pthread_once(&atfork_once, install_atfork);
    struct zs_rl_table *table = map; /* the mapping starts zeroed: every group free and empty */
    table->magic = ZS_RL_MAGIC;
    table->map_size = size;
    table->max_buckets = max_buckets;
    table->group_mask = groups - 1;
    atomic_init(&table->manual_now, -1);
    atomic_init(&table->last_sweep, INT64_MIN);
    return table;
}

void zs_rl_destroy(struct zs_rl_table *table)
{
    if (table)
        munmap(table, table->map_size);
}

static int slot_matches(const struct zs_rl_group *group, int i, uint64_t tag, unsigned kind,
                        const void *key, size_t len)
{
    const struct zs_rl_slot *slot = &group->slot[i];
    return group->tag[i] == tag && slot->kind == kind && slot->key_len == len &&
           memcmp(slot->key, key, len) == 0;
}

static struct zs_rl_slot *group_find(struct zs_rl_group *group, uint64_t tag, unsigned kind,
                                     const void *key, size_t len)
{
    for (int i = 0; i < ZS_RL_WAYS; i++)
        if (slot_matches(group, i, tag, kind, key, len))
            return &group->slot[i];
    return NULL;
}

/* One more live bucket, unless the table holds max_buckets already. */
static int reserve(struct zs_rl_table *table)
{
    uint64_t live = atomic_load(&table->live);
    while (live < table->max_buckets)
        if (atomic_compare_exchange_weak(&table->live, &live, live + 1))
            return 1;
    return 0;
}

static struct zs_rl_slot *fill_slot(struct zs_rl_group *group, int i, uint64_t tag, unsigned kind,
                                    const void *key, size_t len)
{
    struct zs_rl_slot *slot = &group->slot[i];
    group->tag[i] = tag;
    memset(slot->tat, 0, sizeof slot->tat);
    slot->expires = 0;
    slot->kind = (uint8_t)kind;
    slot->key_len = (uint16_t)len;
    memcpy(slot->key, key, len);
    return slot;
}

/* A slot for a new key in one of its (locked) groups: an expired bucket's
 * first, then an empty one if the table may grow; NULL when neither. */
static struct zs_rl_slot *claim(struct zs_rl_table *table, struct zs_rl_group **groups, int count,
                                int64_t now, uint64_t tag, unsigned kind, const void *key, size_t len)
{
    for (int g = 0; g < count; g++)
        for (int i = 0; i < ZS_RL_WAYS; i++)
            if (groups[g]->tag[i] && groups[g]->slot[i].expires <= now) {
                atomic_fetch_add(&table->reclaimed, 1);
                return fill_slot(groups[g], i, tag, kind, key, len);
            }
    for (int g = 0; g < count; g++)
        for (int i = 0; i < ZS_RL_WAYS; i++)
            if (!groups[g]->tag[i])
                return reserve(table) ? fill_slot(groups[g], i, tag, kind, key, len) : NULL;
    return NULL;
}

/* Removes every expired bucket, unless a sweep ran less than
 * ZS_RL_SWEEP_INTERVAL_NS ago; 1 when it ran. */
static int sweep(struct zs_rl_table *table, int64_t now)
{
    int64_t last = atomic_load(&table->last_sweep);
    if (last != INT64_MIN && now - last < ZS_RL_SWEEP_INTERVAL_NS)
        return 0;
    if (!atomic_compare_exchange_strong(&table->last_sweep, &last, now))
        return 1; /* another process is sweeping right now */
    for (uint64_t g = 0; g <= table->group_mask; g++) {
        struct zs_rl_group *group = &table->groups[g];
        uint64_t freed = 0;
        group_lock(group);
        for (int i = 0; i < ZS_RL_WAYS; i++)
            if (group->tag[i] && group->slot[i].expires <= now) {
                group->tag[i] = 0;
                freed++;
            }
        group_unlock(group);
        if (freed) {
            atomic_fetch_sub(&table->live, freed);
            atomic_fetch_add(&table->reclaimed, freed);
        }
    }
    return 1;
}

/* Finds key's bucket, or makes one, and returns with its group(s) locked:
 * 0, or -1 when no new bucket fits. */
static int locate(struct zs_rl_table *table, unsigned kind, const void *key, size_t len,
                  int64_t now, struct zs_rl_place *place)
{
    uint64_t hash = key_hash(kind, key, len);
    uint64_t tag = hash | ZS_RL_TAG_USED;
    struct zs_rl_group *first = &table->groups[hash & table->group_mask];
    struct zs_rl_group *second = &table->groups[mix64(hash ^ 0x5bd1e995ULL) & table->group_mask];

    /* Most checks are of a known key: one lock. */
    group_lock(first);
    if ((place->slot = group_find(first, tag, kind, key, len))) {
        place->first = first;
        place->second = NULL;
        return 0;
    }
    group_unlock(first);
    if (second != first) {
        group_lock(second);
        if ((place->slot = group_find(second, tag, kind, key, len))) {
            place->first = second;
            place->second = NULL;
            return 0;
        }
        group_unlock(second);
    }

    /* New keys are made with both groups held (in address order), so two
     * processes cannot make the same key twice. */
    struct zs_rl_group *groups[2] = {first, second};
    int count = second != first ? 2 : 1;
    place->first = first < second ? first : second;
    place->second = count == 2 ? (first < second ? second : first) : NULL;
    for (int attempt = 0; attempt < 2; attempt++) {
        group_lock(place->first);
        if (place->second)
            group_lock(place->second);
        for (int g = 0; g < count; g++)
            if ((place->slot = group_find(groups[g], tag, kind, key, len)))
                return 0;
        if ((place->slot = claim(table, groups, count, now, tag, kind, key, len)))
            return 0;
        place_release(place);
        if (attempt == 0 && !sweep(table, now))
            break;
    }
    atomic_fetch_add(&table->refused, 1);
    return -1;
}

static int64_t check(struct zs_rl_table *table, unsigned kind, const void *key, size_t len,
                     const struct zs_rl_limit *limits, int count, int64_t *wait_ns)
{
    *wait_ns = 0;
    if (len == 0 || len > ZS_RL_KEY_MAX)
        return ZS_RL_BAD_ARGS;
    int limited = 0;
    for (int i = 0; i < count; i++)
        limited |= limits[i].interval >= 0;
    if (!limited)
        return ZS_RL_ALLOWED; /* nothing to count */
    int64_t now = zs_rl_now(table);
    struct zs_rl_place place;
    if (locate(table, kind, key, len, now, &place) < 0)
        return ZS_RL_TABLE_FULL;
    int64_t result = gcra_take(place.slot, limits, count, now, wait_ns);
    place_release(&place);
    return result;
}

int64_t zs_rl_check(struct zs_rl_table *table, const void *key, size_t key_len, uint64_t per_second,
                    uint64_t per_minute, uint64_t per_hour)
{
    struct zs_rl_limit limits[ZS_RL_LIMITS] = {
        window_limit(per_second, NS_PER_SEC),
        window_limit(per_minute, 60 * NS_PER_SEC),
        window_limit(per_hour, 3600 * NS_PER_SEC),
    };
    int64_t wait_ns;
    return check(table, ZS_RL_KIND_WINDOWS, key, key_len, limits, ZS_RL_LIMITS, &wait_ns);
}

int64_t zs_rl_check_ex(struct zs_rl_table *table, const void *key, size_t key_len,
                       uint64_t rate_milli, uint64_t burst, uint64_t *retry_after_ms)
{
    if (retry_after_ms)
        *retry_after_ms = 0;
    if (rate_milli == 0 || burst == 0)
        return ZS_RL_BAD_ARGS;
    /* ns per token = 1e9 / (rate_milli / 1000) */
    struct zs_rl_limit limit = make_limit((int64_t)(1000ULL * NS_PER_SEC / rate_milli), burst);
    int64_t wait_ns;
    int64_t result = check(table, ZS_RL_KIND_EX, key, key_len, &limit, 1, &wait_ns);
    if (result == ZS_RL_LIMITED && retry_after_ms)
        *retry_after_ms = (uint64_t)((wait_ns + 999999) / 1000000);
    return result;
}

/* ---- snapshots and statistics ---- */

int zs_rl_export(struct zs_rl_table *table, uint64_t *cursor, struct zs_rl_entry *entry)
{
    int64_t now = zs_rl_now(table);
    uint64_t total = (table->group_mask + 1) * ZS_RL_WAYS;
    while (*cursor < total) {
        struct zs_rl_group *group = &table->groups[*cursor / ZS_RL_WAYS];
        int i = (int)(*cursor % ZS_RL_WAYS);
        (*cursor)++;
        int found = 0;
        group_lock(group);
        const struct zs_rl_slot *slot = &group->slot[i];
        if (group->tag[i] && slot->expires > now) {
            entry->kind = slot->kind;
            entry->key_len = slot->key_len;
            memcpy(entry->key, slot->key, slot->key_len);
            for (int l = 0; l < ZS_RL_LIMITS; l++)
                entry->ahead_ns[l] = slot->tat[l] > now ? slot->tat[l] - now : 0;
            found = 1;
        }
        group_unlock(group);
        if (found)
            return 1;
    }
    return 0;
}

int zs_rl_import(struct zs_rl_table *table, const struct zs_rl_entry *entry, char **errmsg)
{
    if (entry->key_len == 0 || entry->key_len > ZS_RL_KEY_MAX)
        return set_error(errmsg, "bucket key of %u bytes (must be 1..%d)", entry->key_len,
                         ZS_RL_KEY_MAX);
    if (entry->kind != ZS_RL_KIND_WINDOWS && entry->kind != ZS_RL_KIND_EX)
        return set_error(errmsg, "unknown bucket kind %u", entry->kind);
    int64_t now = zs_rl_now(table);
    int64_t tat[ZS_RL_LIMITS];
    int64_t expires = now;
    for (int l = 0; l < ZS_RL_LIMITS; l++) {
        int64_t ahead = entry->ahead_ns[l];
        tat[l] = ahead > 0 ? now + (ahead > ZS_RL_TIME_CAP ? ZS_RL_TIME_CAP : ahead) : 0;
        if (tat[l] > expires)
            expires = tat[l];
    }
    if (expires <= now)
        return 0; /* full again: the same as no bucket */
    struct zs_rl_place place;
    if (locate(table, entry->kind, entry->key, entry->key_len, now, &place) < 0)
        return set_error(errmsg, "the table is full (%llu buckets)",
                         (unsigned long long)table->max_buckets);
    memcpy(place.slot->tat, tat, sizeof tat);
    place.slot->expires = expires;
    place_release(&place);
    return 0;
}

void zs_rl_stats(struct zs_rl_table *table, struct zs_rl_stats *stats)
{
    stats->live = atomic_load(&table->live);
    stats->max_buckets = table->max_buckets;
    stats->slots = (table->group_mask + 1) * ZS_RL_WAYS;
    stats->reclaimed = atomic_load(&table->reclaimed);
    stats->refused = atomic_load(&table->refused);
}
