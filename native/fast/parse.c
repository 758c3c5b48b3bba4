/* SPDX-License-Identifier: Apache-2.0 */
/* parse.c: the fast path's strict HTTP/1.1 request-head parser (RFC 9112 syntax, a subset it is sure of). */
#include <string.h>

#include "fast_int.h"
#include "zsfast.h"

/* tchar (RFC 9110 §5.6.2). */
static int is_tchar(uint8_t c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return 1;
    return c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* A path byte that needs no percent-decoding: unreserved, sub-delims, ':' '@' '/'. */
static int is_path_char(uint8_t c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return 1;
    return c != 0 && strchr("-._~!$&'()*+,;=:@/", c) != NULL;
}

/* Field-value bytes: HTAB, visible ASCII, SP, obs-text (no other control byte). */
static int is_value_char(uint8_t c)
{
    return c == '\t' || (c >= 0x20 && c != 0x7f);
}

int zs_fast_lower_equal(const uint8_t *any, const uint8_t *lower, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        uint8_t c = any[i];
        if (c >= 'A' && c <= 'Z')
            c += 32;
        if (c != lower[i])
            return 0;
    }
    return 1;
}

static int name_is(const uint8_t *name, size_t len, const char *lower)
{
    return len == strlen(lower) && zs_fast_lower_equal(name, (const uint8_t *)lower, len);
}

/* The path (up to '?') is one Python would leave as it is: no '%', no empty, "." or ".." segment. */
static int path_is_clean(const uint8_t *path, size_t len)
{
    size_t start = 1;
    for (size_t i = 1; i <= len; i++) {
        if (i < len && path[i] != '/')
            continue;
        size_t seg = i - start;
        if (seg == 0 && i < len)
            return 0; /* "//" */
        if ((seg == 1 && path[start] == '.') || (seg == 2 && path[start] == '.' && path[start + 1] == '.'))
            return 0;
        start = i + 1;
    }
    return 1;
}

/* Host as Python's Request.host reads it: letters, digits, '.', '-', then an optional ":port". */
static int split_host(const uint8_t *value, size_t len, struct zs_fast_head *head)
{
    size_t i = 0;
    while (i < len && value[i] != ':') {
        uint8_t c = value[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '-'))
            return -1;
        i++;
    }
    if (i == 0)
        return -1;
    for (size_t j = i + 1; j < len; j++)
        if (value[j] < '0' || value[j] > '9')
            return -1;
    head->host = value;
    head->host_len = i;
    return 0;
}

long zs_fast_parse_head(const uint8_t *buf, size_t len, const struct zs_fast_limits *limits,
                        struct zs_fast_head *head)
{
    size_t p = 0;
    memset(head, 0, sizeof *head);
    /* The request line. */
    if (len >= 4 && memcmp(buf, "GET ", 4) == 0) {
        head->method = ZS_FAST_GET;
        p = 4;
    } else if (len >= 5 && memcmp(buf, "HEAD ", 5) == 0) {
        head->method = ZS_FAST_HEAD;
        p = 5;
    } else {
        static const char get[] = "GET ", hd[] = "HEAD ";
        /* A prefix of a method we take: wait for more; anything else is Python's. */
        if ((len < 4 && memcmp(buf, get, len) == 0) || (len < 5 && memcmp(buf, hd, len) == 0))
            return 0;
        return -1;
    }
    size_t target = p;
    if (p >= len)
        return 0;
    if (buf[p] != '/')
        return -1;
    size_t path_end = 0;
    for (; p < len && buf[p] != ' '; p++) {
        uint8_t c = buf[p];
        if (is_path_char(c))
            continue;
        if (c == '?' || (c == '%' && path_end)) {
            if (!path_end)
                path_end = p;
            continue;
        }
        return -1;
    }
    if (p - target > limits->max_uri_bytes)
        return -1;
    if (p == len)
        return 0;
    head->target = buf + target;
    head->target_len = p - target;
    head->path_len = (path_end ? path_end : p) - target;
    if (!path_is_clean(head->target, head->path_len))
        return -1;
    static const char v11[] = " HTTP/1.1\r\n", v10[] = " HTTP/1.0\r\n";
    size_t rest = len - p < 11 ? len - p : 11;
    if (memcmp(buf + p, v11, rest) == 0)
        head->minor = 1;
    else if (memcmp(buf + p, v10, rest) == 0)
        head->minor = 0;
    else
        return -1;
    if (rest < 11)
        return 0;
    p += 11;

    /* The header fields, up to the empty line. */
    size_t count = 0;
    int connection = -1; /* -1 absent, 0 close, 1 keep-alive */
    for (;;) {
        if (p > limits->max_head_bytes)
            return -1;
        if (p + 2 > len)
            return 0;
        if (buf[p] == '\r') {
            if (buf[p + 1] != '\n')
                return -1;
            p += 2;
            break;
        }
        size_t name = p;
        while (p < len && is_tchar(buf[p]))
            p++;
        if (p == len)
            return 0;
        if (p == name || buf[p] != ':')
            return -1;
        size_t name_len = p - name;
        p++;
        while (p < len && (buf[p] == ' ' || buf[p] == '\t'))
            p++;
        size_t value = p;
        while (p < len && is_value_char(buf[p]))
            p++;
        if (p + 2 > len)
            return 0;
        if (buf[p] != '\r' || buf[p + 1] != '\n')
            return -1;
        size_t value_len = p - value;
        p += 2;
        if (++count > limits->max_headers)
            return -1;
        const uint8_t *n = buf + name, *v = buf + value;
        /* Trailing whitespace: whether it belongs to the value is not worth a difference with llhttp. */
        if (value_len && (v[value_len - 1] == ' ' || v[value_len - 1] == '\t'))
            return -1;
        switch (n[0] | 0x20) {
        case 'h':
            if (name_is(n, name_len, "host")) {
                if (head->host != NULL || split_host(v, value_len, head) != 0)
                    return -1;
            }
            break;
        case 'c':
            if (name_is(n, name_len, "connection")) {
                if (connection != -1)
                    return -1;
                if (name_is(v, value_len, "close"))
                    connection = 0;
                else if (name_is(v, value_len, "keep-alive"))
                    connection = 1;
                else
                    return -1;
            } else if (name_is(n, name_len, "content-length")) {
                return -1;
            }
            break;
        case 't':
            if (name_is(n, name_len, "transfer-encoding"))
                return -1;
            break;
        case 'u':
            if (name_is(n, name_len, "upgrade"))
                return -1;
            break;
        case 'e':
            if (name_is(n, name_len, "expect"))
                return -1;
            break;
        case 'a':
            if (name_is(n, name_len, "accept-encoding"))
                head->flags |= ZS_FAST_HAS_ACCEPT_ENCODING;
            break;
        case 'i':
            if (name_is(n, name_len, "if-none-match") || name_is(n, name_len, "if-modified-since"))
                head->flags |= ZS_FAST_HAS_CONDITIONAL;
            break;
        case 'r':
            if (name_is(n, name_len, "range"))
                head->flags |= ZS_FAST_HAS_CONDITIONAL;
            break;
        default:
            break;
        }
    }
    if (p > limits->max_head_bytes || head->host == NULL)
        return -1;
    head->keep_alive = head->minor == 1 ? connection != 0 : connection == 1;
    return (long)p;
}
