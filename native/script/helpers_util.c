/* SPDX-License-Identifier: Apache-2.0 */
/*
 * helpers_util.c: the helpers that need no request: logging, time, version,
 * environment, guest memory copies, randomness, SHA-256/HMAC, base64 and hex;
 * plus the C-string output rule every string helper shares.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include "script_int.h"

/* ---- shared plumbing ---- */

uint64_t zs_put_cstr(struct zs_run *run, uint64_t out, uint64_t out_len, const char *s, size_t n)
{
    if (out_len == 0)
        return 0;
    char *dst = zs_guest_ptr(run, out, out_len, 1);
    if (!dst)
        return 0;
    size_t w = n < out_len - 1 ? n : (size_t)out_len - 1;
    memmove(dst, s, w);
    dst[w] = '\0';
    return n < out_len ? n : out_len;
}

int zs_check_overlap(struct zs_run *run, const char *helper, uint64_t a, uint64_t alen, uint64_t b,
                     uint64_t blen)
{
    if (alen && blen && a < b + blen && b < a + alen) {
        zs_helper_fault(run, "%s: the output buffer overlaps an input buffer", helper);
        return -1;
    }
    return 0;
}

/* ---- logging, time, environment ---- */

static char version_text[64] = "0";
static size_t version_len = 1;

int zs_core_set_version(const char *version, size_t len)
{
    if (len >= sizeof(version_text))
        return -1;
    memcpy(version_text, version, len);
    version_len = len;
    return 0;
}

/* Moves text[0, n) to the finished lines, with unsafe bytes replaced. */
static int finish_line(struct zs_scriptrun *sr, const char *text, size_t n)
{
    if (zs_buf_reserve(&sr->log_lines, n + 1) < 0)
        return -1;
    char *dst = sr->log_lines.p + sr->log_lines.len;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)text[i];
        dst[i] = (c == '\t' || (c >= 0x20 && c < 0x7f)) ? (char)c : '?';
    }
    dst[n] = '\n';
    sr->log_lines.len += n + 1;
    return 0;
}

static uint64_t h_log(struct zs_run *run, void *cookie, uint64_t msg, uint64_t len, uint64_t r3,
                      uint64_t r4, uint64_t r5)
{
    const char *text = zs_guest_ptr(run, msg, len, 0);
    if (!text)
        return 0;
    struct zs_scriptrun *sr = zs_script_of(run);
    struct zs_buf *part = &sr->log_partial;
    if (zs_buf_append(part, text, len) < 0)
        goto oom;
    /* Emit every finished line, then the rest once it reaches the line limit. */
    size_t start = 0;
    for (;;) {
        const char *nl = memchr(part->p + start, '\n', part->len - start);
        if (!nl)
            break;
        size_t n = (size_t)(nl - (part->p + start));
        if (finish_line(sr, part->p + start, n) < 0)
            goto oom;
        start += n + 1;
    }
    if (part->len - start >= ZS_LOG_LINE_MAX) {
        if (finish_line(sr, part->p + start, part->len - start) < 0)
            goto oom;
        start = part->len;
    }
    memmove(part->p, part->p + start, part->len - start);
    part->len -= start;
    return 0;
oom:
    zs_helper_fault(run, "zs_log: out of host memory");
    return 0;
}

static uint64_t h_now_ms(struct zs_run *run, void *cookie, uint64_t r1, uint64_t r2, uint64_t r3,
                         uint64_t r4, uint64_t r5)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static uint64_t h_version(struct zs_run *run, void *cookie, uint64_t out, uint64_t out_len,
                          uint64_t r3, uint64_t r4, uint64_t r5)
{
    return zs_put_cstr(run, out, out_len, version_text, version_len);
}

static uint64_t h_env_get(struct zs_run *run, void *cookie, uint64_t name, uint64_t name_len,
                          uint64_t out, uint64_t out_len, uint64_t r5)
{
    const char *n = zs_guest_ptr(run, name, name_len, 0);
    if (!n || zs_check_overlap(run, "zs_env_get", out, out_len, name, name_len) < 0)
        return 0;
    size_t len = name_len;
    zs_trim(&n, &len);
    char key[256];
    const char *value = NULL;
    if (len < sizeof(key) && !memchr(n, '\0', len)) {
        memcpy(key, n, len);
        key[len] = '\0';
        value = len ? getenv(key) : NULL;
    }
    return zs_put_cstr(run, out, out_len, value ? value : "", value ? strlen(value) : 0);
}

/* ---- guest memory ---- */

static uint64_t h_memcpy(struct zs_run *run, void *cookie, uint64_t dst, uint64_t src, uint64_t n,
                         uint64_t r4, uint64_t r5)
{
    void *d = zs_guest_ptr(run, dst, n, 1);
    const void *s = d ? zs_guest_ptr(run, src, n, 0) : NULL;
    if (!s || zs_check_overlap(run, "zs_memcpy", dst, n, src, n) < 0)
        return 0;
    memcpy(d, s, n);
    return dst;
}

static uint64_t h_memcmp(struct zs_run *run, void *cookie, uint64_t a, uint64_t b, uint64_t n,
                         uint64_t r4, uint64_t r5)
{
    const unsigned char *x = zs_guest_ptr(run, a, n, 0);
    const unsigned char *y = x ? zs_guest_ptr(run, b, n, 0) : NULL;
    if (!y)
        return 0;
    for (uint64_t i = 0; i < n; i++)
        if (x[i] != y[i])
            return (uint64_t)(int64_t)((int)x[i] - (int)y[i]);
    return 0;
}

static uint64_t h_memset(struct zs_run *run, void *cookie, uint64_t dst, uint64_t c, uint64_t n,
                         uint64_t r4, uint64_t r5)
{
    void *d = zs_guest_ptr(run, dst, n, 1);
    if (!d)
        return 0;
    memset(d, (int)(unsigned char)c, n);
    return dst;
}

/* ---- crypto ---- */

static uint64_t h_getrandom(struct zs_run *run, void *cookie, uint64_t out, uint64_t n, uint64_t r3,
                            uint64_t r4, uint64_t r5)
{
    uint8_t *d = zs_guest_ptr(run, out, n, 1);
    if (!d)
        return 0;
    if (n && !RAND_bytes(d, n)) {
        zs_helper_fault(run, "zs_getrandom: the random generator failed");
        return 0;
    }
    return n;
}

static uint64_t h_sha256(struct zs_run *run, void *cookie, uint64_t data, uint64_t n, uint64_t out,
                         uint64_t out_len, uint64_t r5)
{
    if (out_len != 32) {
        zs_helper_fault(run, "zs_sha256: out_len must be 32, not %llu", (unsigned long long)out_len);
        return 0;
    }
    const uint8_t *in = zs_guest_ptr(run, data, n, 0);
    uint8_t *d = in ? zs_guest_ptr(run, out, 32, 1) : NULL;
    if (!d || zs_check_overlap(run, "zs_sha256", out, 32, data, n) < 0)
        return 0;
    SHA256(in, n, d);
    return 32;
}

static uint64_t h_hmac_sha256(struct zs_run *run, void *cookie, uint64_t key, uint64_t key_len,
                              uint64_t msg, uint64_t msg_len, uint64_t out)
{
    const uint8_t *k = zs_guest_ptr(run, key, key_len, 0);
    const uint8_t *m = k ? zs_guest_ptr(run, msg, msg_len, 0) : NULL;
    uint8_t *d = m ? zs_guest_ptr(run, out, 32, 1) : NULL;
    if (!d || zs_check_overlap(run, "zs_hmac_sha256", out, 32, key, key_len) < 0 ||
        zs_check_overlap(run, "zs_hmac_sha256", out, 32, msg, msg_len) < 0)
        return 0;
    unsigned int len = 0;
    if (!HMAC(EVP_sha256(), k, key_len, m, msg_len, d, &len)) {
        zs_helper_fault(run, "zs_hmac_sha256: HMAC failed");
        return 0;
    }
    return 32;
}

/* ---- base64 ---- */

static const char b64_std[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static const char b64_url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static uint64_t b64_len(uint64_t n, int pad)
{
    return pad ? (n + 2) / 3 * 4 : n / 3 * 4 + (n % 3 ? n % 3 + 1 : 0);
}

static uint64_t h_base64_encode(struct zs_run *run, void *cookie, uint64_t data, uint64_t n,
                                uint64_t out, uint64_t out_len, uint64_t encoding)
{
    if (encoding > 3) {
        zs_helper_fault(run, "zs_base64_encode: unknown encoding %llu (use ZS_BASE64_*)",
                        (unsigned long long)encoding);
        return 0;
    }
    const char *alphabet = encoding >= 2 ? b64_url : b64_std;
    int pad = encoding == 0 || encoding == 2;
    if (n > (UINT64_MAX / 4) - 3) {
        zs_helper_fault(run, "zs_base64_encode: input too long");
        return 0;
    }
    uint64_t need = b64_len(n, pad);
    if (out_len == 0)
        return need;
    if (out_len < need) {
        zs_helper_fault(run, "zs_base64_encode: out_len %llu is too small for %llu bytes",
                        (unsigned long long)out_len, (unsigned long long)need);
        return 0;
    }
    const uint8_t *in = zs_guest_ptr(run, data, n, 0);
    char *d = in ? zs_guest_ptr(run, out, out_len, 1) : NULL;
    if (!d || zs_check_overlap(run, "zs_base64_encode", out, out_len, data, n) < 0)
        return 0;
    uint64_t o = 0, i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        d[o++] = alphabet[v >> 18];
        d[o++] = alphabet[(v >> 12) & 63];
        d[o++] = alphabet[(v >> 6) & 63];
        d[o++] = alphabet[v & 63];
    }
    if (n - i) {
        uint32_t v = (uint32_t)in[i] << 16 | (n - i == 2 ? (uint32_t)in[i + 1] << 8 : 0);
        d[o++] = alphabet[v >> 18];
        d[o++] = alphabet[(v >> 12) & 63];
        if (n - i == 2)
            d[o++] = alphabet[(v >> 6) & 63];
        else if (pad)
            d[o++] = '=';
        if (pad)
            d[o++] = '=';
    }
    return o;
}

static int b64_value(char c, int url)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == (url ? '-' : '+'))
        return 62;
    if (c == (url ? '_' : '/'))
        return 63;
    return -1;
}

static uint64_t h_base64_decode_in_place(struct zs_run *run, void *cookie, uint64_t buf, uint64_t n,
                                         uint64_t encoding, uint64_t r4, uint64_t r5)
{
    if (encoding > 3) {
        zs_helper_fault(run, "zs_base64_decode_in_place: unknown encoding %llu (use ZS_BASE64_*)",
                        (unsigned long long)encoding);
        return 0;
    }
    char *p = zs_guest_ptr(run, buf, n, 1);
    if (!p)
        return 0;
    int url = encoding >= 2, pad = encoding == 0 || encoding == 2;
    uint64_t len = n;
    /* Padded alphabets need whole quads with canonical '='; unpadded ones take none. */
    if (pad) {
        if (len % 4)
            return (uint64_t)-1;
        for (int pads = 0; pads < 2 && len && p[len - 1] == '='; pads++)
            len--;
    }
    if (len % 4 == 1)
        return (uint64_t)-1;
    uint64_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (uint64_t i = 0; i < len; i++) {
        int v = b64_value(p[i], url);
        if (v < 0)
            return (uint64_t)-1;
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            p[o++] = (char)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    if (acc != 0) /* leftover bits must be zero (canonical encoding) */
        return (uint64_t)-1;
    return o;
}

/* ---- hex ---- */

static uint64_t h_hex_encode(struct zs_run *run, void *cookie, uint64_t data, uint64_t n,
                             uint64_t out, uint64_t out_len, uint64_t case_flag)
{
    if (case_flag > 1) {
        zs_helper_fault(run, "zs_hex_encode: unknown case flag %llu (use ZS_HEX_*)",
                        (unsigned long long)case_flag);
        return 0;
    }
    if (n > UINT64_MAX / 2) {
        zs_helper_fault(run, "zs_hex_encode: input too long");
        return 0;
    }
    if (out_len == 0)
        return 2 * n;
    if (out_len < 2 * n) {
        zs_helper_fault(run, "zs_hex_encode: out_len %llu is too small for %llu bytes",
                        (unsigned long long)out_len, (unsigned long long)(2 * n));
        return 0;
    }
    const uint8_t *in = zs_guest_ptr(run, data, n, 0);
    char *d = in ? zs_guest_ptr(run, out, out_len, 1) : NULL;
    if (!d || zs_check_overlap(run, "zs_hex_encode", out, out_len, data, n) < 0)
        return 0;
    const char *digits = case_flag ? "0123456789ABCDEF" : "0123456789abcdef";
    for (uint64_t i = 0; i < n; i++) {
        d[2 * i] = digits[in[i] >> 4];
        d[2 * i + 1] = digits[in[i] & 15];
    }
    return 2 * n;
}

static uint64_t h_hex_decode_in_place(struct zs_run *run, void *cookie, uint64_t buf, uint64_t n,
                                      uint64_t r3, uint64_t r4, uint64_t r5)
{
    char *p = zs_guest_ptr(run, buf, n, 1);
    if (!p)
        return 0;
    if (n % 2)
        return (uint64_t)-1;
    for (uint64_t i = 0; i < n; i++)
        if (zs_hexval(p[i]) < 0)
            return (uint64_t)-1;
    for (uint64_t i = 0; i < n / 2; i++)
        p[i] = (char)(zs_hexval(p[2 * i]) << 4 | zs_hexval(p[2 * i + 1]));
    return n / 2;
}

const struct zs_helper_def zs_util_helpers[] = {
    {"zs_log", h_log, NULL},
    {"zs_now_ms", h_now_ms, NULL},
    {"zs_version", h_version, NULL},
    {"zs_env_get", h_env_get, NULL},
    {"zs_memcpy", h_memcpy, NULL},
    {"memcpy", h_memcpy, NULL},
    {"zs_memcmp", h_memcmp, NULL},
    {"zs_memset", h_memset, NULL},
    {"memset", h_memset, NULL},
    {"zs_getrandom", h_getrandom, NULL},
    {"zs_sha256", h_sha256, NULL},
    {"zs_hmac_sha256", h_hmac_sha256, NULL},
    {"zs_base64_encode", h_base64_encode, NULL},
    {"zs_base64_decode_in_place", h_base64_decode_in_place, NULL},
    {"zs_hex_encode", h_hex_encode, NULL},
    {"zs_hex_decode_in_place", h_hex_decode_in_place, NULL},
};
const size_t zs_util_helpers_count = sizeof(zs_util_helpers) / sizeof(zs_util_helpers[0]);
