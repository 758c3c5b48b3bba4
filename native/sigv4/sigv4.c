/* SPDX-License-Identifier: Apache-2.0 */
/*
 * sigv4.c: AWS Signature Version 4 on host memory (see sigv4.h for the rules).
 */
#define _GNU_SOURCE /* qsort_r */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <openssl/hmac.h>
#include <openssl/mem.h>
#include <openssl/sha.h>

#include "script_int.h"
#include "sigv4.h"

static const char ALGORITHM[] = "AWS4-HMAC-SHA256";
static const char UNSIGNED_PAYLOAD[] = "UNSIGNED-PAYLOAD";
static const char EMPTY_SHA256[] = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
static const char HEX[] = "0123456789ABCDEF";
static const char hex_lower[] = "0123456789abcdef";

/* ---- output with one failure flag, so builders check once at the end ---- */

struct out {
    struct zs_buf b;
    int failed;
};

static void put(struct out *o, const void *p, size_t n)
{
    if (!o->failed && zs_buf_append(&o->b, p, n) < 0)
        o->failed = 1;
}

static void puts_(struct out *o, const char *s)
{
    put(o, s, strlen(s));
}

static void putc_(struct out *o, char c)
{
    put(o, &c, 1);
}

static int is_unreserved(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_' || c == '.' || c == '~';
}

static void put_escaped(struct out *o, unsigned char c)
{
    char e[3] = {'%', HEX[c >> 4], HEX[c & 15]};
    put(o, e, 3);
}

/* Percent-encodes every byte but the unreserved ones (and '/' when keep_slash). */
static void put_encoded(struct out *o, const char *p, size_t n, int keep_slash)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (is_unreserved(c) || (keep_slash && c == '/'))
            putc_(o, (char)c);
        else
            put_escaped(o, c);
    }
}

/* The byte a valid "%XX" at p[i] stands for, or -1. */
static int escape_at(const char *p, size_t n, size_t i)
{
    if (p[i] != '%' || n - i < 3)
        return -1;
    int hi = zs_hexval(p[i + 1]), lo = zs_hexval(p[i + 2]);
    return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

/* A query key or value decoded and encoded again: the AWS canonical form. */
static void put_requoted(struct out *o, const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int c = escape_at(p, n, i);
        if (c >= 0)
            i += 2;
        else
            c = (unsigned char)p[i];
        if (is_unreserved((unsigned char)c))
            putc_(o, (char)c);
        else
            put_escaped(o, (unsigned char)c);
    }
}

static int is_s3(const struct zs_sigv4_request *req)
{
    return req->service_len >= 2 && memcmp(req->service, "s3", 2) == 0;
}

/* ---- canonical URI ---- */

/* Bytes a request path may carry as they are (RFC 3986 pchar, '/' and '%'). */
static int is_path_char(unsigned char c)
{
    return is_unreserved(c) || (c && strchr("!$&'()*+,;=:@/%", c));
}

/* The path as it goes on the wire: bytes that cannot be there (spaces,
 * non-ASCII) encoded, as a script may pass them raw; the rest as it is. */
static void put_wire_path(struct out *o, const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (is_path_char(c))
            putc_(o, (char)c);
        else
            put_escaped(o, c);
    }
}

/* Other services: dot segments and empty segments removed, then the whole
 * path encoded again (a second encoding of what the wire already encoded). */
static void put_normalized_path(struct out *o, const char *p, size_t n)
{
    struct out segs = {0};
    size_t *ends = malloc((n / 2 + 2) * sizeof(*ends)); /* end offset of each kept segment in segs */
    size_t kept = 0;
    if (!ends) {
        o->failed = 1;
        return;
    }
    for (size_t i = 0; i <= n;) {
        size_t j = i;
        while (j < n && p[j] != '/')
            j++;
        size_t len = j - i;
        if (len == 2 && p[i] == '.' && p[i + 1] == '.') {
            if (kept)
                segs.b.len = --kept ? ends[kept - 1] : 0;
        } else if (len && !(len == 1 && p[i] == '.')) {
            put(&segs, p + i, len);
            ends[kept++] = segs.b.len;
        }
        i = j + 1;
    }
    if (n && p[0] == '/')
        putc_(o, '/');
    for (size_t s = 0, start = 0; s < kept; start = ends[s++]) {
        if (s)
            putc_(o, '/');
        put_encoded(o, segs.b.p + start, ends[s] - start, 0);
    }
    if (n && p[n - 1] == '/' && kept)
        putc_(o, '/');
    o->failed |= segs.failed;
    zs_buf_free(&segs.b);
    free(ends);
}

/* ---- canonical query ---- */

struct qpair {
    size_t key, key_len, value, value_len; /* offsets into the list's store */
};

struct qlist {
    struct out store;
    struct qpair *items;
    size_t n, cap;
    int failed;
};

static void qlist_add(struct qlist *q, size_t key, size_t key_len, size_t value, size_t value_len)
{
    if (q->n == q->cap) {
        size_t cap = q->cap ? q->cap * 2 : 16;
        struct qpair *items = realloc(q->items, cap * sizeof(*items));
        if (!items) {
            q->failed = 1;
            return;
        }
        q->items = items;
        q->cap = cap;
    }
    q->items[q->n++] = (struct qpair){key, key_len, value, value_len};
}

/* Adds each non-empty piece of a raw query, key and value in canonical form. */
static void qlist_parse(struct qlist *q, const char *query, size_t n)
{
    for (size_t i = 0; i < n;) {
        const char *amp = memchr(query + i, '&', n - i);
        size_t end = amp ? (size_t)(amp - query) : n;
        if (end > i) {
            const char *eq = memchr(query + i, '=', end - i);
            size_t key_end = eq ? (size_t)(eq - query) : end;
            size_t key = q->store.b.len;
            put_requoted(&q->store, query + i, key_end - i);
            size_t value = q->store.b.len;
            if (eq)
                put_requoted(&q->store, eq + 1, end - key_end - 1);
            qlist_add(q, key, value - key, value, q->store.b.len - value);
        }
        i = end + 1;
    }
}

/* Adds a pair whose key and value are given already encoded. */
static void qlist_add_encoded(struct qlist *q, const char *key, const char *value, size_t value_len)
{
    size_t k = q->store.b.len;
    puts_(&q->store, key);
    size_t v = q->store.b.len;
    put(&q->store, value, value_len);
    qlist_add(q, k, v - k, v, value_len);
}

static int bytes_cmp(const char *a, size_t an, const char *b, size_t bn)
{
    int c = memcmp(a, b, an < bn ? an : bn);
    return c ? c : (an > bn) - (an < bn);
}

/* Comparators get the store the offsets point into as their argument. */
static int qpair_cmp(const void *x, const void *y, void *store)
{
    const char *sort_base = store;
    const struct qpair *a = x, *b = y;
    int c = bytes_cmp(sort_base + a->key, a->key_len, sort_base + b->key, b->key_len);
    return c ? c : bytes_cmp(sort_base + a->value, a->value_len, sort_base + b->value, b->value_len);
}

/* "k=v&..." of the pairs, in their order (sorted when `sorted`). */
static void put_query(struct out *o, struct qlist *q, int sorted)
{
    struct qpair *items = q->items;
    /* A query of empty pairs ("=", "=&=") stores no bytes: the store is still NULL. */
    const char *base = q->store.b.p ? q->store.b.p : "";
    if (sorted && q->n > 1) {
        items = malloc(q->n * sizeof(*items));
        if (!items) {
            o->failed = 1;
            return;
        }
        memcpy(items, q->items, q->n * sizeof(*items));
        qsort_r(items, q->n, sizeof(*items), qpair_cmp, (void *)base);
    }
    for (size_t i = 0; i < q->n; i++) {
        if (i)
            putc_(o, '&');
        put(o, base + items[i].key, items[i].key_len);
        putc_(o, '=');
        put(o, base + items[i].value, items[i].value_len);
    }
    if (items != q->items)
        free(items);
}

static void qlist_free(struct qlist *q)
{
    zs_buf_free(&q->store.b);
    free(q->items);
}

/* ---- canonical headers ---- */

struct hentry {
    size_t name, name_len, value, value_len, index;
};

static int hentry_cmp(const void *x, const void *y, void *store)
{
    const char *sort_base = store;
    const struct hentry *a = x, *b = y;
    int c = bytes_cmp(sort_base + a->name, a->name_len, sort_base + b->name, b->name_len);
    return c ? c : (a->index > b->index) - (a->index < b->index);
}

static int is_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

/* The value with leading and trailing whitespace dropped and inner runs folded to one space. */
static void put_trimall(struct out *o, const char *p, size_t n)
{
    int pending = 0, any = 0;
    for (size_t i = 0; i < n; i++) {
        if (is_ws(p[i])) {
            pending = any;
            continue;
        }
        if (pending)
            putc_(o, ' ');
        pending = 0;
        any = 1;
        putc_(o, p[i]);
    }
}

static int never_signed(const char *lname, size_t n)
{
    static const char *const names[] = {"expect", "transfer-encoding", "user-agent",
                                        "x-amzn-trace-id"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (strlen(names[i]) == n && memcmp(names[i], lname, n) == 0)
            return 1;
    return 0;
}

/* Canonical header lines (each ending '\n') into `lines`, "a;b" into `signed_names`. */
static void put_headers(struct out *lines, struct out *signed_names,
                        const struct zs_sigv4_request *req)
{
    struct out store = {0};
    struct hentry *entries = malloc((req->num_headers + 1) * sizeof(*entries));
    size_t n = 0;
    if (!entries) {
        lines->failed = 1;
        return;
    }
    for (size_t i = 0; i < req->num_headers; i++) {
        const struct zs_sigv4_header *h = &req->headers[i];
        const char *name = h->name;
        size_t name_len = h->name_len;
        zs_trim(&name, &name_len);
        struct hentry *e = &entries[n];
        e->name = store.b.len;
        for (size_t k = 0; k < name_len; k++) {
            char c = name[k];
            putc_(&store, c >= 'A' && c <= 'Z' ? (char)(c + 32) : c);
        }
        if (store.failed || name_len == 0 || never_signed(store.b.p + e->name, name_len)) {
            store.b.len = e->name;
            continue;
        }
        e->name_len = name_len;
        e->value = store.b.len;
        put_trimall(&store, h->value, h->value_len);
        e->value_len = store.b.len - e->value;
        e->index = i;
        n++;
    }
    if (!store.failed)
        qsort_r(entries, n, sizeof(*entries), hentry_cmp, store.b.p);
    for (size_t i = 0; i < n && !store.failed; i++) {
        const struct hentry *e = &entries[i];
        const char *name = store.b.p + e->name;
        int continues = i && bytes_cmp(name, e->name_len, store.b.p + entries[i - 1].name,
                                       entries[i - 1].name_len) == 0;
        if (continues) {
            lines->b.len -= !lines->failed; /* the '\n' of the same name's line */
            putc_(lines, ',');
        } else {
            if (i)
                putc_(signed_names, ';');
            put(signed_names, name, e->name_len);
            put(lines, name, e->name_len);
            putc_(lines, ':');
        }
        put(lines, store.b.p + e->value, e->value_len);
        putc_(lines, '\n');
    }
    lines->failed |= store.failed;
    zs_buf_free(&store.b);
    free(entries);
}

/* ---- the signature ---- */

void zs_sigv4_amz_date(int64_t timestamp, char out[17])
{
    time_t t = (time_t)timestamp;
    struct tm tm;
    gmtime_r(&t, &tm);
    const struct {
        int value, digits;
    } parts[] = {{(tm.tm_year + 1900) % 10000, 4}, {tm.tm_mon + 1, 2}, {tm.tm_mday, 2},
                 {tm.tm_hour, 2}, {tm.tm_min, 2}, {tm.tm_sec, 2}};
    char *p = out;
    for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++) {
        for (int d = parts[i].digits - 1, v = parts[i].value; d >= 0; d--, v /= 10)
            p[d] = (char)('0' + v % 10);
        p += parts[i].digits;
        if (i == 2)
            *p++ = 'T';
    }
    p[0] = 'Z';
    p[1] = '\0';
}

static void hex_of(const unsigned char *digest, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hex_lower[digest[i] >> 4];
        out[2 * i + 1] = hex_lower[digest[i] & 15];
    }
    out[2 * n] = '\0';
}

void zs_sigv4_sha256_hex(const void *data, size_t len, char out[65])
{
    unsigned char digest[SHA256_DIGEST_LENGTH];
    SHA256(data, len, digest);
    hex_of(digest, sizeof(digest), out);
}

/* The credential scope "YYYYMMDD/region/service/aws4_request". */
static void put_scope(struct out *o, const struct zs_sigv4_request *req, const char *amz_date)
{
    put(o, amz_date, 8);
    putc_(o, '/');
    put(o, req->region, req->region_len);
    putc_(o, '/');
    put(o, req->service, req->service_len);
    puts_(o, "/aws4_request");
}

/* Hex HMAC-SHA256 signature of the canonical request with the derived key; 0 or -1. */
static int sign(const struct zs_sigv4_request *req, const struct zs_sigv4_creds *creds,
                const char *amz_date, const struct out *canonical, char signature[65])
{
    struct out sts = {0}, key = {0};
    char hash[65];
    zs_sigv4_sha256_hex(canonical->b.p, canonical->b.len, hash);
    puts_(&sts, ALGORITHM);
    putc_(&sts, '\n');
    put(&sts, amz_date, 16);
    putc_(&sts, '\n');
    put_scope(&sts, req, amz_date);
    putc_(&sts, '\n');
    put(&sts, hash, 64);
    puts_(&key, "AWS4");
    put(&key, creds->secret_key, creds->secret_key_len);
    int rc = -1;
    if (!sts.failed && !key.failed) {
        unsigned char k[SHA256_DIGEST_LENGTH];
        unsigned int k_len = sizeof(k);
        const struct {
            const char *p;
            size_t n;
        } chain[] = {{amz_date, 8},
                     {req->region, req->region_len},
                     {req->service, req->service_len},
                     {"aws4_request", 12},
                     {sts.b.p, sts.b.len}};
        const unsigned char *prev = (const unsigned char *)key.b.p;
        size_t prev_len = key.b.len;
        rc = 0;
        for (size_t i = 0; i < sizeof(chain) / sizeof(chain[0]) && rc == 0; i++) {
            if (!HMAC(EVP_sha256(), prev, prev_len, (const unsigned char *)chain[i].p, chain[i].n,
                      k, &k_len))
                rc = -1;
            prev = k;
            prev_len = k_len;
        }
        if (rc == 0)
            hex_of(k, k_len, signature);
        OPENSSL_cleanse(k, sizeof(k));
    }
    if (key.b.p)
        OPENSSL_cleanse(key.b.p, key.b.len);
    zs_buf_free(&key.b);
    zs_buf_free(&sts.b);
    return rc;
}

/* METHOD \n path \n query \n headers \n signed \n payload; `query` is already canonical. */
static void put_canonical(struct out *o, const struct zs_sigv4_request *req, const struct out *query,
                          const struct out *lines, const struct out *signed_names,
                          const char *payload, size_t payload_len)
{
    for (size_t i = 0; i < req->method_len; i++) {
        char c = req->method[i];
        putc_(o, c >= 'a' && c <= 'z' ? (char)(c - 32) : c);
    }
    putc_(o, '\n');
    if (req->path_len == 0) {
        putc_(o, '/');
    } else if (is_s3(req)) {
        put_wire_path(o, req->path, req->path_len); /* S3 signs it as it is, as botocore does */
    } else {
        struct out wire = {0};
        put_wire_path(&wire, req->path, req->path_len);
        put_normalized_path(o, wire.b.p, wire.b.len);
        o->failed |= wire.failed;
        zs_buf_free(&wire.b);
    }
    putc_(o, '\n');
    put(o, query->b.p, query->b.len);
    putc_(o, '\n');
    put(o, lines->b.p, lines->b.len);
    putc_(o, '\n');
    put(o, signed_names->b.p, signed_names->b.len);
    putc_(o, '\n');
    put(o, payload, payload_len);
}

static int finish(struct out *o, char **out, size_t *out_len)
{
    putc_(o, '\0');
    if (o->failed) {
        zs_buf_free(&o->b);
        return -1;
    }
    *out = o->b.p;
    *out_len = o->b.len - 1;
    return 0;
}

/* The header-mode canonical request into `canonical`, the signed names into `signed_names`. */
static int header_canonical(const struct zs_sigv4_request *req, struct out *canonical,
                            struct out *signed_names)
{
    struct qlist q = {0};
    struct out query = {0}, lines = {0};
    qlist_parse(&q, req->query, req->query_len);
    put_query(&query, &q, 1);
    put_headers(&lines, signed_names, req);
    put_canonical(canonical, req, &query, &lines, signed_names, req->payload_hash,
                  req->payload_hash_len);
    int failed = q.failed || q.store.failed || query.failed || lines.failed || signed_names->failed ||
                 canonical->failed;
    qlist_free(&q);
    zs_buf_free(&query.b);
    zs_buf_free(&lines.b);
    return failed ? -1 : 0;
}

int zs_sigv4_canonical_request(const struct zs_sigv4_request *req, char **out, size_t *out_len)
{
    struct out canonical = {0}, signed_names = {0};
    int rc = header_canonical(req, &canonical, &signed_names);
    zs_buf_free(&signed_names.b);
    if (rc < 0) {
        zs_buf_free(&canonical.b);
        return rc;
    }
    return finish(&canonical, out, out_len);
}

int zs_sigv4_authorization(const struct zs_sigv4_request *req, const struct zs_sigv4_creds *creds,
                           char **out, size_t *out_len)
{
    struct out canonical = {0}, signed_names = {0}, result = {0};
    char amz_date[17], signature[65];
    zs_sigv4_amz_date(req->timestamp, amz_date);
    int rc = header_canonical(req, &canonical, &signed_names);
    if (rc == 0)
        rc = sign(req, creds, amz_date, &canonical, signature);
    if (rc == 0) {
        puts_(&result, ALGORITHM);
        puts_(&result, " Credential=");
        put(&result, creds->access_key, creds->access_key_len);
        putc_(&result, '/');
        put_scope(&result, req, amz_date);
        puts_(&result, ", SignedHeaders=");
        put(&result, signed_names.b.p, signed_names.b.len);
        puts_(&result, ", Signature=");
        put(&result, signature, 64);
        rc = finish(&result, out, out_len);
    }
    zs_buf_free(&canonical.b);
    zs_buf_free(&signed_names.b);
    if (rc < 0)
        zs_buf_free(&result.b);
    return rc;
}

/* The payload hash presigning signs, as botocore: an X-Amz-Content-SHA256
 * header's value; else UNSIGNED-PAYLOAD for S3; else the given hash, or the
 * empty body's. */
static void presign_payload(const struct zs_sigv4_request *req, const char **p, size_t *n)
{
    static const char name[] = "x-amz-content-sha256";
    for (size_t i = 0; i < req->num_headers; i++) {
        const struct zs_sigv4_header *h = &req->headers[i];
        if (h->name_len == sizeof(name) - 1 && strncasecmp(h->name, name, h->name_len) == 0) {
            *p = h->value;
            *n = h->value_len;
            return;
        }
    }
    if (is_s3(req)) {
        *p = UNSIGNED_PAYLOAD;
        *n = sizeof(UNSIGNED_PAYLOAD) - 1;
    } else if (req->payload_hash_len) {
        *p = req->payload_hash;
        *n = req->payload_hash_len;
    } else {
        *p = EMPTY_SHA256;
        *n = sizeof(EMPTY_SHA256) - 1;
    }
}

int zs_sigv4_presign(const struct zs_sigv4_request *req, const struct zs_sigv4_creds *creds,
                     uint64_t expires, char **out, size_t *out_len)
{
    if (expires < 1 || expires > ZS_SIGV4_MAX_EXPIRES)
        return -2;
    struct qlist q = {0};
    struct out credential = {0}, lines = {0}, signed_names = {0}, encoded = {0}, query = {0},
               canonical = {0}, result = {0};
    char amz_date[17], signature[65], expires_text[24];
    zs_sigv4_amz_date(req->timestamp, amz_date);
    snprintf(expires_text, sizeof(expires_text), "%llu", (unsigned long long)expires);
    put(&credential, creds->access_key, creds->access_key_len);
    putc_(&credential, '/');
    put_scope(&credential, req, amz_date);
    put_headers(&lines, &signed_names, req);

    qlist_parse(&q, req->query, req->query_len);
    qlist_add_encoded(&q, "X-Amz-Algorithm", ALGORITHM, sizeof(ALGORITHM) - 1);
    put_encoded(&encoded, credential.b.p, credential.b.len, 0);
    qlist_add_encoded(&q, "X-Amz-Credential", encoded.b.p, encoded.b.len);
    qlist_add_encoded(&q, "X-Amz-Date", amz_date, 16);
    qlist_add_encoded(&q, "X-Amz-Expires", expires_text, strlen(expires_text));
    encoded.b.len = 0;
    put_encoded(&encoded, signed_names.b.p, signed_names.b.len, 0);
    qlist_add_encoded(&q, "X-Amz-SignedHeaders", encoded.b.p, encoded.b.len);
    if (creds->token_len) {
        encoded.b.len = 0;
        put_encoded(&encoded, creds->token, creds->token_len, 0);
        qlist_add_encoded(&q, "X-Amz-Security-Token", encoded.b.p, encoded.b.len);
    }
    put_query(&query, &q, 1);
    const char *payload;
    size_t payload_len;
    presign_payload(req, &payload, &payload_len);
    put_canonical(&canonical, req, &query, &lines, &signed_names, payload, payload_len);
    int rc = q.failed || q.store.failed || credential.failed || lines.failed ||
                     signed_names.failed || encoded.failed || query.failed || canonical.failed
                 ? -1
                 : sign(req, creds, amz_date, &canonical, signature);
    if (rc == 0) {
        /* botocore's order: the operation's parameters, then ours, then the signature. */
        put_wire_path(&result, req->path, req->path_len);
        putc_(&result, '?');
        put_query(&result, &q, 0);
        puts_(&result, "&X-Amz-Signature=");
        put(&result, signature, 64);
        rc = finish(&result, out, out_len);
    }
    qlist_free(&q);
    zs_buf_free(&credential.b);
    zs_buf_free(&lines.b);
    zs_buf_free(&signed_names.b);
    zs_buf_free(&encoded.b);
    zs_buf_free(&query.b);
    zs_buf_free(&canonical.b);
    if (rc < 0)
        zs_buf_free(&result.b);
    return rc;
}

void zs_sigv4_free(char *p)
{
    free(p);
}
