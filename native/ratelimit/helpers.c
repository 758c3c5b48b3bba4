/* SPDX-License-Identifier: Apache-2.0 */
/*
 * helpers.c: zs_rate_limit and zs_rate_limit_ex, the script helpers on the
 * shared table (the cookie): arguments checked, the key read from the
 * script's memory, the retry-after written back to it.
 */
#include <string.h>

#include "zsratelimit.h"

uint64_t zs_rl_helper_rate_limit(struct zs_run *run, void *cookie, uint64_t key, uint64_t key_len,
                                 uint64_t per_second, uint64_t per_minute, uint64_t per_hour)
{
    if (key_len == 0 || key_len > ZS_RL_KEY_MAX)
        return (uint64_t)(int64_t)ZS_RL_BAD_ARGS;
    const void *bytes = zs_guest_ptr(run, key, key_len, 0);
    if (!bytes)
        return 0; /* the run faulted */
    return (uint64_t)zs_rl_check(cookie, bytes, key_len, per_second, per_minute, per_hour);
}

uint64_t zs_rl_helper_rate_limit_ex(struct zs_run *run, void *cookie, uint64_t key,
                                    uint64_t key_len, uint64_t rate_milli, uint64_t burst,
                                    uint64_t out_retry_after_ms)
{
    uint64_t *out = NULL;
    if (out_retry_after_ms && !(out = zs_guest_ptr(run, out_retry_after_ms, sizeof *out, 1)))
        return 0;
    if (key_len == 0 || key_len > ZS_RL_KEY_MAX) {
        if (out)
            memset(out, 0, sizeof *out);
        return (uint64_t)(int64_t)ZS_RL_BAD_ARGS;
    }
    const void *bytes = zs_guest_ptr(run, key, key_len, 0);
    if (!bytes)
        return 0;
    uint64_t retry_after_ms;
    int64_t result = zs_rl_check_ex(cookie, bytes, key_len, rate_milli, burst, &retry_after_ms);
    if (out)
        memcpy(out, &retry_after_ms, sizeof retry_after_ms);
    return (uint64_t)result;
}
