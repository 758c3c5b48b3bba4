/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fuzz_fast.c: libFuzzer target for the fast path's request-head parser (native/fast/parse.c).
 *
 * For any input the parser stays inside it, and a head it takes (> 0) is one the
 * fast path may answer: GET or HEAD, HTTP/1.0 or 1.1, a target starting with '/'
 * whose path has no '%' and no empty, "." or ".." segment, a plain Host. Every
 * proper prefix of a taken head is "incomplete" (0), and the head alone parses
 * to the same length and fields.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "zsfast.h"

static void check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_fast: %s\n", what);
        abort();
    }
}

static const struct zs_fast_limits LIMITS = {4096, 16, 1024};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* A private copy, so ASan sees any read past the end. */
    uint8_t *buf = malloc(size ? size : 1);
    memcpy(buf, data, size);
    struct zs_fast_head head;
    long used = zs_fast_parse_head(buf, size, &LIMITS, &head);
    check(used >= -1 && used <= (long)size, "the result is outside the input");
    if (used > 0) {
        check(head.method == ZS_FAST_GET || head.method == ZS_FAST_HEAD, "a method other than GET or HEAD");
        check(head.minor == 0 || head.minor == 1, "a version other than 1.0 or 1.1");
        check(head.target >= buf && head.target + head.target_len <= buf + used, "the target is outside the head");
        check(head.target_len >= 1 && head.target[0] == '/', "the target does not start with '/'");
        check(head.path_len <= head.target_len && head.target_len <= LIMITS.max_uri_bytes, "bad target lengths");
        check(memchr(head.target, '%', head.path_len) == NULL, "a '%' in the path");
        check(head.host != NULL && head.host_len > 0 && head.host + head.host_len <= buf + used, "a bad Host");
        check((size_t)used <= LIMITS.max_head_bytes, "a head above the limit");
        for (size_t i = 0; i + 1 < head.path_len; i++)
            check(!(head.target[i] == '/' && head.target[i + 1] == '/'), "an empty path segment");
        struct zs_fast_head again;
        check(zs_fast_parse_head(buf, (size_t)used, &LIMITS, &again) == used, "the head alone parses differently");
        check(again.keep_alive == head.keep_alive && again.flags == head.flags && again.path_len == head.path_len,
              "the head alone gives other fields");
        size_t cuts[] = {(size_t)used - 1, (size_t)used / 2, 1};
        for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++)
            check(zs_fast_parse_head(buf, cuts[i], &LIMITS, &again) == 0, "a prefix of a taken head is not incomplete");
    }
    free(buf);
    return 0;
}
