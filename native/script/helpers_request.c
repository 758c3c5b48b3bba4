/* SPDX-License-Identifier: Apache-2.0 */
/*
 * helpers_request.c: the helpers over the request context: inspection,
 * mutation, metadata, and the outcome slot (respond, abort, proxy target).
 */
#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

#include "script_int.h"

/* The longest header name or pattern the helpers take. */
#define ZS_NAME_MAX 1024

static struct zs_reqctx *ctx_of(struct zs_run *run)
{
    return zs_script_of(run)->ctx;
}

static uint64_t put_field(struct zs_run *run, int field, uint64_t out, uint64_t out_len)
{
    struct zs_reqctx *ctx = ctx_of(run);
    return zs_put_cstr(run, out, out_len, zs_ctx_str(ctx, ctx->field[field]), ctx->field[field].len);
}

/* ---- request inspection ---- */

#define FIELD_HELPER(fn, field)                                                                 \
    static uint64_t fn(struct zs_run *run, void *cookie, uint64_t out, uint64_t out_len,         \
                       uint64_t r3, uint64_t r4, uint64_t r5)                                    \
    {                                                                                           \
        return put_field(run, field, out, out_len);                                             \
    }

FIELD_HELPER(h_req_method, ZS_FIELD_METHOD)
FIELD_HELPER(h_req_path, ZS_FIELD_PATH)
FIELD_HELPER(h_req_normalized_path, ZS_FIELD_NORMALIZED_PATH)
FIELD_HELPER(h_req_query, ZS_FIELD_QUERY)
FIELD_HELPER(h_req_scheme, ZS_FIELD_SCHEME)
FIELD_HELPER(h_req_peer, ZS_FIELD_PEER)

static uint64_t h_req_uri(struct zs_run *run, void *cookie, uint64_t out, uint64_t out_len,
                          uint64_t r3, uint64_t r4, uint64_t r5)
{
    struct zs_reqctx *ctx = ctx_of(run);
    struct zs_span path = ctx->field[ZS_FIELD_PATH], query = ctx->field[ZS_FIELD_QUERY];
    if (query.len == 0)
        return put_field(run, ZS_FIELD_PATH, out, out_len);
    struct zs_buf *uri = &zs_script_of(run)->scratch;
    uri->len = 0;
    if (zs_buf_append(uri, zs_ctx_str(ctx, path), path.len) < 0 || zs_buf_append(uri, "?", 1) < 0 ||
        zs_buf_append(uri, zs_ctx_str(ctx, query), query.len) < 0) {
        zs_helper_fault(run, "zs_req_uri: out of host memory");
        return 0;
    }
    return zs_put_cstr(run, out, out_len, uri->p, uri->len);
}

static uint64_t h_req_proto_major(struct zs_run *run, void *cookie, uint64_t r1, uint64_t r2,
                                  uint64_t r3, uint64_t r4, uint64_t r5)
{
    return (uint64_t)ctx_of(run)->proto_major;
}

static uint64_t h_req_proto_minor(struct zs_run *run, void *cookie, uint64_t r1, uint64_t r2,
                                  uint64_t r3, uint64_t r4, uint64_t r5)
{
    return (uint64_t)ctx_of(run)->proto_minor;
}

static uint64_t h_req_is_tls(struct zs_run *run, void *cookie, uint64_t r1, uint64_t r2,
                             uint64_t r3, uint64_t r4, uint64_t r5)
{
    return ctx_of(run)->is_tls ? 1 : 0;
}

/* A guest name, trimmed and lowercased into buf (NULL: faulted or too long). */
static const char *lower_name(struct zs_run *run, uint64_t name, uint64_t name_len, char *buf,
                              size_t size, size_t *out_len, const char *helper)
{
    const char *p = zs_guest_ptr(run, name, name_len, 0);
    if (!p)
        return NULL;
    size_t n = name_len;
    zs_trim(&p, &n);
    if (n > size) {
        zs_helper_fault(run, "%s: the name is longer than %zu bytes", helper, size);
        return NULL;
    }
    for (size_t i = 0; i < n; i++)
        buf[i] = (p[i] >= 'A' && p[i] <= 'Z') ? (char)(p[i] + 32) : p[i];
    *out_len = n;
    return buf;
}

static int header_is(const struct zs_reqctx *ctx, const struct zs_pair *h, const char *name, size_t n)
{
    return h->name.len == n && memcmp(zs_ctx_str(ctx, h->name), name, n) == 0;
}

static uint64_t h_req_header(struct zs_run *run, void *cookie, uint64_t name, uint64_t name_len,
                             uint64_t out, uint64_t out_len, uint64_t r5)
{
    static const char helper[] = "zs_req_header";
    char key[ZS_NAME_MAX];
    size_t n;
    if (!lower_name(run, name, name_len, key, sizeof(key), &n, helper) ||
        zs_check_overlap(run, helper, out, out_len, name, name_len) < 0)
        return 0;
    struct zs_reqctx *ctx = ctx_of(run);
    if (n == 6 && memcmp(key, "cookie", 6) == 0) {
        /* Repeated Cookie headers are one value joined with "; ". */
        struct zs_buf *joined = &zs_script_of(run)->scratch;
        joined->len = 0;
        for (size_t i = 0; i < ctx->headers.n; i++) {
            const struct zs_pair *h = &ctx->headers.items[i];
            if (!header_is(ctx, h, key, n))
                continue;
            if ((joined->len && zs_buf_append(joined, "; ", 2) < 0) ||
                zs_buf_append(joined, zs_ctx_str(ctx, h->value), h->value.len) < 0) {
                zs_helper_fault(run, "%s: out of host memory", helper);
                return 0;
            }
        }
        return zs_put_cstr(run, out, out_len, joined->p ? joined->p : "", joined->len);
    }
    for (size_t i = ctx->headers.n; i-- > 0;) {
        const struct zs_pair *h = &ctx->headers.items[i];
        if (header_is(ctx, h, key, n))
            return zs_put_cstr(run, out, out_len, zs_ctx_str(ctx, h->value), h->value.len);
    }
    return zs_put_cstr(run, out, out_len, "", 0);
}

struct query_match {
    const char *name;
    size_t name_len;
    const char *value; /* NULL: find the first value */
    size_t value_len;
    struct zs_run *run;
    uint64_t out, out_len, result;
};

static int visit_first(void *arg, const char *key, size_t key_len, const char *value,
                       size_t value_len)
{
    struct query_match *m = arg;
    if (key_len != m->name_len || memcmp(key, m->name, key_len) != 0)
        return 0;
    m->result = zs_put_cstr(m->run, m->out, m->out_len, value, value_len);
    return 1;
}

static int visit_match(void *arg, const char *key, size_t key_len, const char *value,
                       size_t value_len)
{
    struct query_match *m = arg;
    if (key_len != m->name_len || memcmp(key, m->name, key_len) != 0)
        return 0;
    if (m->value_len == 1 && m->value[0] == '*')
        return 1;
    return value_len == m->value_len && memcmp(value, m->value, value_len) == 0;
}

static uint64_t h_req_query_param(struct zs_run *run, void *cookie, uint64_t name,
                                  uint64_t name_len, uint64_t out, uint64_t out_len, uint64_t r5)
{
    static const char helper[] = "zs_req_query_param";
    struct query_match m = {zs_guest_ptr(run, name, name_len, 0), name_len, NULL, 0, run, out,
                            out_len, 0};
    if (!m.name || zs_check_overlap(run, helper, out, out_len, name, name_len) < 0)
        return 0;
    struct zs_reqctx *ctx = ctx_of(run);
    int rc = zs_each_query_pair(zs_ctx_str(ctx, ctx->field[ZS_FIELD_QUERY]),
                                ctx->field[ZS_FIELD_QUERY].len, visit_first, &m);
    if (rc < 0) {
        zs_helper_fault(run, "%s: out of host memory", helper);
        return 0;
    }
    return rc ? m.result : zs_put_cstr(run, out, out_len, "", 0);
}

static uint64_t h_req_query_param_matches(struct zs_run *run, void *cookie, uint64_t name,
                                          uint64_t name_len, uint64_t value, uint64_t value_len,
                                          uint64_t r5)
{
    struct query_match m = {zs_guest_ptr(run, name, name_len, 0), name_len,
                            zs_guest_ptr(run, value, value_len, 0), value_len, run, 0, 0, 0};
    if (!m.name || !m.value)
        return 0;
    struct zs_reqctx *ctx = ctx_of(run);
    int rc = zs_each_query_pair(zs_ctx_str(ctx, ctx->field[ZS_FIELD_QUERY]),
                                ctx->field[ZS_FIELD_QUERY].len, visit_match, &m);
    if (rc < 0) {
        zs_helper_fault(run, "zs_req_query_param_matches: out of host memory");
        return 0;
    }
    return rc ? 1 : 0;
}

/* ---- remote address matching ---- */

struct ip_addr {
    int family; /* AF_INET (4 bytes used) or AF_INET6 */
    uint8_t b[16];
};

static int parse_ip(const char *p, size_t n, struct ip_addr *ip)
{
    char text[INET6_ADDRSTRLEN + 1];
    if (n >= sizeof(text))
        return -1;
    memcpy(text, p, n);
    text[n] = '\0';
    if (inet_pton(AF_INET, text, ip->b) == 1) {
        ip->family = AF_INET;
        return 0;
    }
    if (inet_pton(AF_INET6, text, ip->b) == 1) {
        static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        ip->family = AF_INET6;
        if (memcmp(ip->b, mapped, 12) == 0) { /* ::ffff:a.b.c.d is the IPv4 address */
            memmove(ip->b, ip->b + 12, 4);
            ip->family = AF_INET;
        }
        return 0;
    }
    return -1;
}

/* The address part of "ip:port", "[v6]:port", a bare v6 address or a bare IP. */
static int parse_peer(const char *p, size_t n, struct ip_addr *ip)
{
    if (n && p[0] == '[') {
        const char *close = memchr(p, ']', n);
        return close ? parse_ip(p + 1, (size_t)(close - p - 1), ip) : -1;
    }
    const char *colon = memchr(p, ':', n);
    if (colon && !memchr(colon + 1, ':', (size_t)(p + n - colon - 1)))
        n = (size_t)(colon - p);
    return parse_ip(p, n, ip);
}

static int prefix_matches(const struct ip_addr *peer, const struct ip_addr *net, unsigned bits)
{
    if (peer->family != net->family)
        return 0;
    unsigned full = bits / 8, rest = bits % 8;
    if (memcmp(peer->b, net->b, full) != 0)
        return 0;
    if (rest == 0)
        return 1;
    uint8_t mask = (uint8_t)(0xff << (8 - rest));
    return (peer->b[full] & mask) == (net->b[full] & mask);
}

/* 1 / 0 for one "ip" or "ip/bits" entry; -1 when it is not one. */
static int range_matches(const struct ip_addr *peer, const char *s, size_t n)
{
    const char *slash = memchr(s, '/', n);
    struct ip_addr net;
    if (parse_ip(s, slash ? (size_t)(slash - s) : n, &net) < 0)
        return -1;
    unsigned max = net.family == AF_INET ? 32 : 128, bits = max;
    if (slash) {
        const char *d = slash + 1, *end = s + n;
        if (d == end || end - d > 3)
            return -1;
        bits = 0;
        for (; d < end; d++) {
            if (*d < '0' || *d > '9')
                return -1;
            bits = bits * 10 + (unsigned)(*d - '0');
        }
        if (bits > max)
            return -1;
        if (net.family == AF_INET6 && memchr(s, '.', (size_t)(slash - s)) && bits >= 96)
            bits -= 96; /* ::ffff:a.b.c.d/120 was turned into IPv4 above */
    }
    return prefix_matches(peer, &net, bits);
}

static uint64_t h_req_remote_ip_matches(struct zs_run *run, void *cookie, uint64_t ranges,
                                        uint64_t ranges_len, uint64_t r3, uint64_t r4, uint64_t r5)
{
    static const char helper[] = "zs_req_remote_ip_matches";
    const char *text = zs_guest_ptr(run, ranges, ranges_len, 0);
    if (!text)
        return 0;
    struct zs_reqctx *ctx = ctx_of(run);
    struct ip_addr peer;
    if (parse_peer(zs_ctx_str(ctx, ctx->field[ZS_FIELD_PEER]), ctx->field[ZS_FIELD_PEER].len,
                   &peer) < 0)
        return 0;
    struct zs_json *list;
    int rc = zs_json_parse_text(text, ranges_len, &list);
    if (rc < 0 || list->type != ZS_JT_ARRAY) {
        if (rc == 0)
            zs_json_free(list);
        zs_helper_fault(run, "%s: the ranges are not a JSON array of IP / CIDR strings", helper);
        return 0;
    }
    uint64_t result = 0;
    for (size_t i = 0; i < list->len; i++) {
        const struct zs_json *item = list->items[i];
        int m = item->type == ZS_JT_STRING ? range_matches(&peer, item->str, item->len) : -1;
        if (m < 0) {
            zs_helper_fault(run, "%s: entry %zu is not an IP address or CIDR range", helper, i);
            break;
        }
        if (m) {
            result = 1;
            break;
        }
    }
    zs_json_free(list);
    return result;
}

/* ---- body and connection ---- */

static uint64_t h_req_body_json(struct zs_run *run, void *cookie, uint64_t r1, uint64_t r2,
                                uint64_t r3, uint64_t r4, uint64_t r5)
{
    struct zs_reqctx *ctx = ctx_of(run);
    struct zs_span body = ctx->field[ZS_FIELD_BODY];
    if (body.len == 0 || body.len > ctx->body_limit)
        return (uint64_t)-1;
    struct zs_json *root;
    int rc = zs_json_parse_text(zs_ctx_str(ctx, body), body.len, &root);
    if (rc == -2) {
        zs_helper_fault(run, "zs_req_body_json: out of host memory");
        return 0;
    }
    if (rc < 0)
        return (uint64_t)-1;
    return (uint64_t)zs_json_handle_new(run, root, "zs_req_body_json");
}

static uint64_t h_req_body_limit(struct zs_run *run, void *cookie, uint64_t max, uint64_t r2,
                                 uint64_t r3, uint64_t r4, uint64_t r5)
{
    struct zs_reqctx *ctx = ctx_of(run);
    if (max < ctx->body_limit)
        ctx->body_limit = max;
    for (size_t i = ctx->headers.n; i-- > 0;) {
        const struct zs_pair *h = &ctx->headers.items[i];
        if (!header_is(ctx, h, "content-length", 14))
            continue;
        const char *v = zs_ctx_str(ctx, h->value);
        uint64_t length = 0;
        for (size_t k = 0; k < h->value.len; k++) {
            if (v[k] < '0' || v[k] > '9')
                return 0;
            if (length > (UINT64_MAX - 9) / 10)
                return 1;
            length = length * 10 + (uint64_t)(v[k] - '0');
        }
        return length > max;
    }
    return 0;
}

static uint64_t h_connection_info(struct zs_run *run, void *cookie, uint64_t r1, uint64_t r2,
                                  uint64_t r3, uint64_t r4, uint64_t r5)
{
    static const char plain[] =
        "{\"tls\":false,\"tls_handshake_complete\":false,\"alpn\":null,"
        "\"sni\":{\"inner\":null,\"outer\":null},\"ech\":null,\"fingerprint\":{\"ja4\":null},"
        "\"tls_client\":{\"certificate\":null,\"chain_fingerprints_sha256\":[]}}";
    struct zs_reqctx *ctx = ctx_of(run);
    struct zs_span info = ctx->field[ZS_FIELD_CONNECTION_INFO];
    struct zs_json *root;
    int rc = info.len ? zs_json_parse_text(zs_ctx_str(ctx, info), info.len, &root)
                      : zs_json_parse_text(plain, sizeof(plain) - 1, &root);
    if (rc < 0) {
        zs_helper_fault(run, "zs_connection_info: %s",
                        rc == -2 ? "out of host memory" : "the host gave invalid JSON");
        return 0;
    }
    return (uint64_t)zs_json_handle_new(run, root, "zs_connection_info");
}

/* ---- request mutation ---- */

static int valid_header_value(const char *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)v[i];
        if ((c < 0x20 && c != '\t') || c == 0x7f)
            return 0;
    }
    return 1;
}

static uint64_t h_req_set_method(struct zs_run *run, void *cookie, uint64_t p, uint64_t n,
                                 uint64_t r3, uint64_t r4, uint64_t r5)
{
    const char *m = zs_guest_ptr(run, p, n, 0);
    if (!m)
        return 0;
    if (!zs_is_token(m, n)) {
        zs_helper_fault(run, "zs_req_set_method: \"%.*s\" is not a valid method token",
                        (int)(n < 64 ? n : 64), m);
        return 0;
    }
    struct zs_reqctx *ctx = ctx_of(run);
    if (zs_ctx_store(ctx, m, n, 0, &ctx->field[ZS_FIELD_METHOD]) < 0) {
        zs_helper_fault(run, "zs_req_set_method: out of host memory");
        return 0;
    }
    ctx->changed |= ZS_CHANGED_METHOD;
    return 0;
}

/* Normalises raw (the rules of core/paths.py) into the script path and "/" +
 * decoded path, both written to out (room for 2 * n + 4 bytes). 0, or -1 for
 * a path that escapes the root or does not decode (400). */
static int normalize_path(const char *raw, size_t n, char *out, size_t *script_len,
                          size_t *decoded_len)
{
    char *script = out, *decoded = out + n + 2;
    size_t s = 0, d = 0, depth = 0;
    for (size_t i = 0; i < n;) {
        size_t start = i;
        while (i < n && raw[i] != '/')
            i++;
        size_t len = i - start;
        i++;
        if (len == 0)
            continue;
        /* decode after a provisional '/', so a kept segment needs no copy */
        char *seg = decoded + d + 1;
        size_t k = 0;
        for (size_t j = start; j < start + len; j++) {
            int hi, lo;
            if (raw[j] != '%' || start + len - j < 3) {
                seg[k++] = raw[j];
                continue;
            }
            if ((hi = zs_hexval(raw[j + 1])) < 0 || (lo = zs_hexval(raw[j + 2])) < 0)
                return -1;
            seg[k++] = (char)(hi << 4 | lo);
            j += 2;
        }
        if (!zs_is_utf8((const unsigned char *)seg, k) || memchr(seg, '/', k))
            return -1;
        if (k == 1 && seg[0] == '.')
            continue;
        if (k == 2 && seg[0] == '.' && seg[1] == '.') {
            if (depth == 0)
                return -1;
            depth--;
            /* segments hold no '/', so the previous one starts at the last '/' */
            while (script[--s] != '/')
                ;
            while (decoded[--d] != '/')
                ;
            continue;
        }
        depth++;
        script[s++] = '/';
        memcpy(script + s, raw + start, len);
        s += len;
        decoded[d] = '/';
        d += 1 + k;
    }
    if (s == 0 || raw[n - 1] == '/')
        script[s++] = '/';
    if (d == 0)
        decoded[d++] = '/';
    *script_len = s;
    *decoded_len = d;
    return 0;
}

static int uri_char_ok(unsigned char c)
{
    return c > 0x20 && c < 0x7f;
}

int zs_ctx_set_uri(struct zs_run *run, const char *uri, size_t n, const char *helper)
{
    const char *hash = memchr(uri, '#', n);
    size_t len = hash ? (size_t)(hash - uri) : n;
    for (size_t i = 0; i < len; i++) {
        if (!uri_char_ok((unsigned char)uri[i])) {
            zs_helper_fault(run, "%s: byte %zu of the URI is not allowed in a request target",
                            helper, i);
            return -1;
        }
    }
    const char *path = uri, *end = uri + len;
    if (len == 0 || uri[0] != '/') {
        /* scheme "://" authority [path] */
        const char *sep = len ? memchr(uri, ':', len) : NULL;
        int ok = sep && sep > uri && end - sep >= 3 && sep[1] == '/' && sep[2] == '/';
        for (const char *c = uri; ok && c < sep; c++)
            ok = ((*c | 32) >= 'a' && (*c | 32) <= 'z') ||
                 (c > uri && ((*c >= '0' && *c <= '9') || *c == '+' || *c == '-' || *c == '.'));
        if (!ok) {
            zs_helper_fault(run, "%s: \"%.*s\" is neither a path nor an absolute URI", helper,
                            (int)(len < 64 ? len : 64), uri);
            return -1;
        }
        path = sep + 3;
        while (path < end && *path != '/' && *path != '?')
            path++;
    }
    const char *q = memchr(path, '?', (size_t)(end - path));
    const char *path_end = q ? q : end;
    size_t path_len = (size_t)(path_end - path);
    if (path_len == 0) {
        path = "/";
        path_len = 1;
    }
    struct zs_reqctx *ctx = ctx_of(run);
    char *norm = malloc(2 * path_len + 4);
    if (!norm) {
        zs_helper_fault(run, "%s: out of host memory", helper);
        return -1;
    }
    size_t script_len = 0, decoded_len = 0;
    int valid = normalize_path(path, path_len, norm, &script_len, &decoded_len) == 0;
    int rc = zs_ctx_store(ctx, path, path_len, 0, &ctx->field[ZS_FIELD_RAW_PATH]);
    if (rc == 0)
        rc = zs_ctx_store(ctx, q ? q + 1 : "", q ? (size_t)(end - q - 1) : 0, 0,
                          &ctx->field[ZS_FIELD_QUERY]);
    if (rc == 0 && valid)
        rc = zs_ctx_store(ctx, norm, script_len, 0, &ctx->field[ZS_FIELD_PATH]);
    if (rc == 0 && valid)
        rc = zs_ctx_store(ctx, norm + path_len + 2, decoded_len, 0,
                          &ctx->field[ZS_FIELD_NORMALIZED_PATH]);
    free(norm);
    if (rc < 0) {
        zs_helper_fault(run, "%s: out of host memory", helper);
        return -1;
    }
    if (!valid) {
        /* The path stays what the script gave; the request ends in a 400. */
        ctx->field[ZS_FIELD_PATH] = ctx->field[ZS_FIELD_RAW_PATH];
        ctx->field[ZS_FIELD_NORMALIZED_PATH] = ctx->field[ZS_FIELD_RAW_PATH];
        ctx->changed |= ZS_URI_INVALID;
    } else {
        ctx->changed &= ~ZS_URI_INVALID;
    }
    ctx->changed |= ZS_CHANGED_URI;
    return 0;
}

static uint64_t h_req_set_uri(struct zs_run *run, void *cookie, uint64_t p, uint64_t n,
                              uint64_t r3, uint64_t r4, uint64_t r5)
{
    const char *uri = zs_guest_ptr(run, p, n, 0);
    if (uri)
        zs_ctx_set_uri(run, uri, n, "zs_req_set_uri");
    return 0;
}

/* Reads and checks a (name, value) pair for the header setters. */
static int header_args(struct zs_run *run, uint64_t name, uint64_t name_len, uint64_t value,
                       uint64_t value_len, char *key, size_t *key_len, const char **v,
                       const char *helper)
{
    if (!lower_name(run, name, name_len, key, ZS_NAME_MAX, key_len, helper))
        return -1;
    if (!zs_is_token(key, *key_len)) {
        zs_helper_fault(run, "%s: \"%.*s\" is not a valid header name", helper, (int)*key_len, key);
        return -1;
    }
    *v = zs_guest_ptr(run, value, value_len, 0);
    if (!*v)
        return -1;
    if (!valid_header_value(*v, value_len)) {
        zs_helper_fault(run, "%s: the value of header %.*s holds control characters", helper,
                        (int)*key_len, key);
        return -1;
    }
    return 0;
}

static uint64_t set_header(struct zs_run *run, uint64_t name, uint64_t name_len, uint64_t value,
                           uint64_t value_len, int append, const char *helper)
{
    char key[ZS_NAME_MAX];
    size_t key_len;
    const char *v;
    if (header_args(run, name, name_len, value, value_len, key, &key_len, &v, helper) < 0)
        return 0;
    struct zs_reqctx *ctx = ctx_of(run);
    int is_host = key_len == 4 && memcmp(key, "host", 4) == 0;
    if (!append || is_host)
        zs_ctx_remove_header(ctx, key, key_len);
    if ((append || value_len) && zs_ctx_add_header(ctx, key, key_len, v, value_len) < 0) {
        zs_helper_fault(run, "%s: out of host memory", helper);
        return 0;
    }
    ctx->changed |= ZS_CHANGED_HEADERS;
    return 0;
}

static uint64_t h_req_set_header(struct zs_run *run, void *cookie, uint64_t name,
                                 uint64_t name_len, uint64_t value, uint64_t value_len,
                                 uint64_t r5)
{
    return set_header(run, name, name_len, value, value_len, 0, "zs_req_set_header");
}

static uint64_t h_req_append_header(struct zs_run *run, void *cookie, uint64_t name,
                                    uint64_t name_len, uint64_t value, uint64_t value_len,
                                    uint64_t r5)
{
    return set_header(run, name, name_len, value, value_len, 1, "zs_req_append_header");
}

static int pattern_matches(const char *pat, size_t pn, const char *name, size_t nn)
{
    size_t star_start = pn && pat[0] == '*';
    size_t star_end = pn > star_start && pat[pn - 1] == '*';
    const char *core = pat + star_start;
    size_t cn = pn - star_start - star_end;
    if (star_start && star_end) {
        if (cn == 0)
            return 1;
        for (size_t i = 0; i + cn <= nn; i++)
            if (memcmp(name + i, core, cn) == 0)
                return 1;
        return 0;
    }
    if (star_start)
        return nn >= cn && memcmp(name + nn - cn, core, cn) == 0;
    if (star_end)
        return nn >= cn && memcmp(name, core, cn) == 0;
    return nn == cn && memcmp(name, core, cn) == 0;
}

static uint64_t h_req_delete_header(struct zs_run *run, void *cookie, uint64_t pattern,
                                    uint64_t pattern_len, uint64_t r3, uint64_t r4, uint64_t r5)
{
    static const char helper[] = "zs_req_delete_header";
    char pat[ZS_NAME_MAX];
    size_t pn;
    if (!lower_name(run, pattern, pattern_len, pat, sizeof(pat), &pn, helper))
        return 0;
    if (pn == 0) {
        zs_helper_fault(run, "%s: the pattern is empty", helper);
        return 0;
    }
    struct zs_reqctx *ctx = ctx_of(run);
    size_t kept = 0;
    for (size_t i = 0; i < ctx->headers.n; i++) {
        struct zs_pair *h = &ctx->headers.items[i];
        if (!pattern_matches(pat, pn, zs_ctx_str(ctx, h->name), h->name.len))
            ctx->headers.items[kept++] = *h;
    }
    if (kept != ctx->headers.n)
        ctx->changed |= ZS_CHANGED_HEADERS;
    ctx->headers.n = kept;
    return 0;
}

/* ---- metadata ---- */

static uint64_t h_meta_get(struct zs_run *run, void *cookie, uint64_t key, uint64_t key_len,
                           uint64_t out, uint64_t out_len, uint64_t r5)
{
    const char *k = zs_guest_ptr(run, key, key_len, 0);
    if (!k || zs_check_overlap(run, "zs_meta_get", out, out_len, key, key_len) < 0)
        return 0;
    struct zs_reqctx *ctx = ctx_of(run);
    const struct zs_pair *m = zs_ctx_meta_find(ctx, k, key_len);
    if (!m)
        return zs_put_cstr(run, out, out_len, "", 0);
    return zs_put_cstr(run, out, out_len, zs_ctx_str(ctx, m->value), m->value.len);
}

static uint64_t h_meta_set(struct zs_run *run, void *cookie, uint64_t key, uint64_t key_len,
                           uint64_t value, uint64_t value_len, uint64_t r5)
{
    static const char helper[] = "zs_meta_set";
    const char *k = zs_guest_ptr(run, key, key_len, 0);
    const char *v = k ? zs_guest_ptr(run, value, value_len, 0) : NULL;
    if (!v)
        return 0;
    size_t n = key_len;
    zs_trim(&k, &n);
    if (n == 0) {
        zs_helper_fault(run, "%s: the key is empty", helper);
        return 0;
    }
    if (!zs_is_utf8((const unsigned char *)k, n) || !zs_is_utf8((const unsigned char *)v, value_len)) {
        zs_helper_fault(run, "%s: the key or value is not UTF-8", helper);
        return 0;
    }
    if (zs_ctx_meta_put(ctx_of(run), k, n, v, value_len) < 0)
        zs_helper_fault(run, "%s: out of host memory", helper);
    return 0;
}

/* ---- response ---- */

static uint64_t h_respond(struct zs_run *run, void *cookie, uint64_t status, uint64_t body,
                          uint64_t body_len, uint64_t r4, uint64_t r5)
{
    if (status > 65535) {
        zs_helper_fault(run, "zs_respond: status %llu does not fit in 16 bits",
                        (unsigned long long)status);
        return 0;
    }
    const char *b = zs_guest_ptr(run, body, body_len, 0);
    if (!b)
        return 0;
    if (zs_set_response(zs_script_of(run), zs_response_status(status), b, body_len) < 0)
        zs_helper_fault(run, "zs_respond: out of host memory");
    return 0;
}

static uint64_t h_abort(struct zs_run *run, void *cookie, uint64_t r1, uint64_t r2, uint64_t r3,
                        uint64_t r4, uint64_t r5)
{
    struct zs_scriptrun *sr = zs_script_of(run);
    if (sr->in_hook) {
        zs_helper_fault(run, "zs_abort: a response hook cannot abort (the response is decided)");
        return 0;
    }
    sr->abort_set = 1;
    return 0;
}

static uint64_t h_response_pending(struct zs_run *run, void *cookie, uint64_t r1, uint64_t r2,
                                   uint64_t r3, uint64_t r4, uint64_t r5)
{
    return zs_script_of(run)->respond_set ? 1 : 0;
}

static uint64_t h_response_clear(struct zs_run *run, void *cookie, uint64_t r1, uint64_t r2,
                                 uint64_t r3, uint64_t r4, uint64_t r5)
{
    struct zs_scriptrun *sr = zs_script_of(run);
    sr->respond_set = 0;
    sr->status = 0;
    sr->body.len = 0;
    return 0;
}

static uint64_t h_reverse_proxy(struct zs_run *run, void *cookie, uint64_t url, uint64_t url_len,
                                uint64_t r3, uint64_t r4, uint64_t r5)
{
    static const char helper[] = "zs_reverse_proxy";
    const char *u = zs_guest_ptr(run, url, url_len, 0);
    if (!u)
        return 0;
    size_t n = url_len;
    zs_trim(&u, &n);
    struct zs_scriptrun *sr = zs_script_of(run);
    if (n == 0) {
        zs_helper_fault(run, "%s: the URL is empty", helper);
        return 0;
    }
    if (sr->respond_set || sr->proxy_set) {
        zs_helper_fault(run, "%s: this script already set a %s", helper,
                        sr->respond_set ? "response" : "proxy target");
        return 0;
    }
    sr->proxy_url.len = 0;
    if (zs_buf_append(&sr->proxy_url, u, n) < 0) {
        zs_helper_fault(run, "%s: out of host memory", helper);
        return 0;
    }
    sr->proxy_set = 1;
    return 0;
}

const struct zs_helper_def zs_request_helpers[] = {
    {"zs_req_method", h_req_method, NULL},
    {"zs_req_path", h_req_path, NULL},
    {"zs_req_normalized_path", h_req_normalized_path, NULL},
    {"zs_req_uri", h_req_uri, NULL},
    {"zs_req_query", h_req_query, NULL},
    {"zs_req_scheme", h_req_scheme, NULL},
    {"zs_req_peer", h_req_peer, NULL},
    {"zs_req_proto_major", h_req_proto_major, NULL},
    {"zs_req_proto_minor", h_req_proto_minor, NULL},
    {"zs_req_is_tls", h_req_is_tls, NULL},
    {"zs_req_tls_handshake_complete", h_req_is_tls, NULL},
    {"zs_req_header", h_req_header, NULL},
    {"zs_req_query_param", h_req_query_param, NULL},
    {"zs_req_query_param_matches", h_req_query_param_matches, NULL},
    {"zs_req_remote_ip_matches", h_req_remote_ip_matches, NULL},
    {"zs_req_body_json", h_req_body_json, NULL},
    {"zs_req_body_limit", h_req_body_limit, NULL},
    {"zs_connection_info", h_connection_info, NULL},
    {"zs_req_set_method", h_req_set_method, NULL},
    {"zs_req_set_uri", h_req_set_uri, NULL},
    {"zs_req_set_header", h_req_set_header, NULL},
    {"zs_req_append_header", h_req_append_header, NULL},
    {"zs_req_delete_header", h_req_delete_header, NULL},
    {"zs_meta_get", h_meta_get, NULL},
    {"zs_meta_set", h_meta_set, NULL},
    {"zs_respond", h_respond, NULL},
    {"zs_abort", h_abort, NULL},
    {"zs_response_pending", h_response_pending, NULL},
    {"zs_response_clear", h_response_clear, NULL},
    {"zs_reverse_proxy", h_reverse_proxy, NULL},
};
const size_t zs_request_helpers_count = sizeof(zs_request_helpers) / sizeof(zs_request_helpers[0]);
