/* SPDX-License-Identifier: Apache-2.0 */
/*
 * rl_bench.c: what one local rate-limit check costs (zs_rl_check on the
 * shared table), for one hot key, for 10000 keys in turn, and with two
 * processes checking one key at once.
 *
 *   cc -O2 -I native/vm -I native/ratelimit native/ratelimit/bench/rl_bench.c \
 *      native/ratelimit/ratelimit.c -o /tmp/rl_bench -lpthread && /tmp/rl_bench
 */
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "zsratelimit.h"

#define CHECKS 5000000
#define KEYS 10000

static double seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* ns per check of `checks` checks cycling through `keys` keys. */
static double run(struct zs_rl_table *table, int keys, long checks)
{
    int lengths[KEYS];
    char names[KEYS][32];
    for (int i = 0; i < keys; i++)
        lengths[i] = snprintf(names[i], sizeof names[i], "198.51.%d.%d", i / 256, i % 256);
    double start = seconds();
    long allowed = 0;
    for (long n = 0; n < checks; n++) {
        int i = (int)(n % keys);
        allowed += zs_rl_check(table, names[i], (size_t)lengths[i], 1000000, 0, 0) == ZS_RL_ALLOWED;
    }
    double elapsed = seconds() - start;
    if (allowed == 0)
        fprintf(stderr, "no check was allowed\n");
    return elapsed * 1e9 / checks;
}

int main(void)
{
    char *errmsg = NULL;
    struct zs_rl_table *table = zs_rl_create(2 * KEYS, &errmsg);
    if (!table) {
        fprintf(stderr, "%s\n", errmsg);
        return 1;
    }
    run(table, 1, CHECKS / 10); /* warm up */
    printf("one key:          %.1f ns/check\n", run(table, 1, CHECKS));
    run(table, KEYS, KEYS); /* create the buckets */
    printf("%d keys:       %.1f ns/check\n", KEYS, run(table, KEYS, CHECKS));
    fflush(stdout);
    pid_t child = fork();
    if (child == 0) {
        printf("two processes, one key: %.1f ns/check (child)\n", run(table, 1, CHECKS));
        fflush(stdout);
        _exit(0);
    }
    printf("two processes, one key: %.1f ns/check (parent)\n", run(table, 1, CHECKS));
    waitpid(child, NULL, 0);
    zs_rl_destroy(table);
    return 0;
}
