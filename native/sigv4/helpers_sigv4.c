/* SPDX-License-Identifier: Apache-2.0 */
/*
 * helpers_sigv4.c: the sigv4 plugin's helpers: zs_aws_v4_authorization_header
 * and zs_aws_v4_presigned_url (the original's 144-byte parameter block) and
 * zs_aws_sign_request (signs the request about to be proxied).
 *
 * The cookie of every helper is the plugin's configured credentials (struct
 * zs_sigv4_creds, access_key_len 0 when none were found); they are read at
 * load time by the plugin and never come from the site.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <openssl/mem.h>

#include "script_int.h"
#include "sigv4.h"
#include "sigv4_helpers.h"

#define KEY_MAX 256
#define NAME_MAX_ 64
#define URI_MAX 1024
#define BODY_HASH_MAX 128
#define PARAMS_SIZE 144

static const char EMPTY_SHA256[] =
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
static const char UNSIGNED_PAYLOAD[] = "UNSIGNED-PAYLOAD";

/* The fields of zs_aws_v4_sign_params, in order (sdk/zeroserve.h). */
enum {
    P_ACCESS_KEY, P_ACCESS_KEY_LEN, P_SECRET_KEY, P_SECRET_KEY_LEN, P_REGION, P_REGION_LEN,
    P_SERVICE, P_SERVICE_LEN, P_METHOD, P_METHOD_LEN, P_URI, P_URI_LEN, P_HEADERS_JSON,
    P_BODY_HASH, P_BODY_HASH_LEN, P_TIMESTAMP_MS, P_OUT, P_OUT_LEN, P_COUNT
};

_Static_assert(P_COUNT * 8 == PARAMS_SIZE, "the parameter block is 18 eight-byte fields");

static int64_t now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec;
}

/* A parameter block read and checked: what both compatible helpers sign. */
struct block {
    uint64_t f[P_COUNT];
    struct zs_sigv4_request req;
    struct zs_sigv4_creds creds;
    struct zs_sigv4_header *headers;
    size_t num_headers;
};

/* A guest string of a block; NULL with the run faulted when it is outside memory. */
static const char *field_str(struct zs_run *run, const struct block *b, int ptr, int len)
{
    if (b->f[len] == 0)
        return "";
    return zs_guest_ptr(run, b->f[ptr], b->f[len], 0);
}

enum { READ_OK = 0, READ_REFUSED = -1, READ_FAULTED = -3 };

/* Adds the string members (or string items of array members) of a JSON object as headers. */
static int read_headers(struct zs_run *run, struct block *b, uint64_t handle, const char *helper)
{
    struct zs_json *obj = zs_script_json_node(run, handle, helper);
    if (!obj)
        return READ_FAULTED;
    if (obj->type != ZS_JT_OBJECT)
        return READ_REFUSED;
    size_t count = 0;
    for (size_t i = 0; i < obj->len; i++) {
        const struct zs_json *v = obj->members[i].value;
        count += v->type == ZS_JT_STRING ? 1 : v->type == ZS_JT_ARRAY ? v->len : 0;
    }
    b->headers = calloc(count ? count : 1, sizeof(*b->headers));
    if (!b->headers) {
        zs_helper_fault(run, "%s: out of host memory", helper);
        return READ_FAULTED;
    }
    for (size_t i = 0; i < obj->len; i++) {
        const struct zs_json_member *m = &obj->members[i];
        const struct zs_json *v = m->value;
        size_t items = v->type == ZS_JT_ARRAY ? v->len : 1;
        for (size_t k = 0; k < items; k++) {
            const struct zs_json *s = v->type == ZS_JT_ARRAY ? v->items[k] : v;
            if (s->type == ZS_JT_STRING)
                b->headers[b->num_headers++] =
                    (struct zs_sigv4_header){m->key, m->key_len, s->str, s->len};
        }
    }
    return READ_OK;
}

static const struct zs_sigv4_header *find_header(const struct block *b, const char *name)
{
    for (size_t i = 0; i < b->num_headers; i++)
        if (b->headers[i].name_len == strlen(name) &&
            strncasecmp(b->headers[i].name, name, b->headers[i].name_len) == 0)
            return &b->headers[i];
    return NULL;
}

/* Reads the block at (params, params_len). Faults on a bad size or alignment
 * (READ_FAULTED); READ_REFUSED for an input the helper answers -1 to: a field
 * over its limit, an empty method/region/service, no host header, no
 * credentials. Empty keys select the configured credentials when
 * `configured_ok`. */
static int read_block(struct zs_run *run, uint64_t params, uint64_t params_len,
                      const struct zs_sigv4_creds *configured, int configured_ok, struct block *b,
                      const char *helper)
{
    memset(b, 0, sizeof(*b));
    if (params_len != PARAMS_SIZE || params % 8) {
        zs_helper_fault(run,
                        "%s: params must point to a %d-byte zs_aws_v4_sign_params at an 8-byte "
                        "aligned address (got %llu bytes at 0x%llx)",
                        helper, PARAMS_SIZE, (unsigned long long)params_len,
                        (unsigned long long)params);
        return READ_FAULTED;
    }
    const void *raw = zs_guest_ptr(run, params, PARAMS_SIZE, 0);
    if (!raw)
        return READ_FAULTED;
    memcpy(b->f, raw, sizeof(b->f));
    const uint64_t *f = b->f;
    if (f[P_ACCESS_KEY_LEN] > KEY_MAX || f[P_SECRET_KEY_LEN] > KEY_MAX ||
        f[P_REGION_LEN] > NAME_MAX_ || f[P_SERVICE_LEN] > NAME_MAX_ || f[P_METHOD_LEN] > NAME_MAX_ ||
        f[P_URI_LEN] > URI_MAX || f[P_BODY_HASH_LEN] > BODY_HASH_MAX || !f[P_REGION_LEN] ||
        !f[P_SERVICE_LEN] || !f[P_METHOD_LEN])
        return READ_REFUSED;
    const char *ak = field_str(run, b, P_ACCESS_KEY, P_ACCESS_KEY_LEN);
    const char *sk = field_str(run, b, P_SECRET_KEY, P_SECRET_KEY_LEN);
    const char *region = field_str(run, b, P_REGION, P_REGION_LEN);
    const char *service = field_str(run, b, P_SERVICE, P_SERVICE_LEN);
    const char *method = field_str(run, b, P_METHOD, P_METHOD_LEN);
    const char *uri = field_str(run, b, P_URI, P_URI_LEN);
    const char *body_hash = field_str(run, b, P_BODY_HASH, P_BODY_HASH_LEN);
    if (!ak || !sk || !region || !service || !method || !uri || !body_hash)
        return READ_FAULTED;
    if (f[P_ACCESS_KEY_LEN] || f[P_SECRET_KEY_LEN]) {
        if (!f[P_ACCESS_KEY_LEN] || !f[P_SECRET_KEY_LEN])
            return READ_REFUSED;
        b->creds = (struct zs_sigv4_creds){ak, f[P_ACCESS_KEY_LEN], sk, f[P_SECRET_KEY_LEN], "", 0};
    } else {
        if (!configured_ok || !configured->access_key_len)
            return READ_REFUSED;
        b->creds = *configured;
    }
    if (f[P_HEADERS_JSON]) {
        int rc = read_headers(run, b, f[P_HEADERS_JSON], helper);
        if (rc != READ_OK)
            return rc;
    }
    if (!find_header(b, "host"))
        return READ_REFUSED;
    size_t uri_len = f[P_URI_LEN];
    const char *hash = memchr(uri, '#', uri_len);
    if (hash)
        uri_len = (size_t)(hash - uri);
    const char *q = memchr(uri, '?', uri_len);
    size_t path_len = q ? (size_t)(q - uri) : uri_len;
    int64_t ts_ms = (int64_t)f[P_TIMESTAMP_MS];
    b->req = (struct zs_sigv4_request){
        .method = method, .method_len = f[P_METHOD_LEN],
        .path = uri, .path_len = path_len,
        .query = q ? q + 1 : "", .query_len = q ? uri_len - path_len - 1 : 0,
        .headers = b->headers, .num_headers = b->num_headers,
        .payload_hash = body_hash, .payload_hash_len = f[P_BODY_HASH_LEN],
        .region = region, .region_len = f[P_REGION_LEN],
        .service = service, .service_len = f[P_SERVICE_LEN],
        .timestamp = ts_ms > 0 ? ts_ms / 1000 : now_seconds(),
    };
    return READ_OK;
}

/* Writes a signing result by the C-string rule (or answers -2 when signing failed). */
static uint64_t answer(struct zs_run *run, const struct block *b, int rc, char *text, size_t len)
{
    if (rc == -2)
        return (uint64_t)-1;
    if (rc < 0)
        return (uint64_t)-2;
    uint64_t written = zs_put_cstr(run, b->f[P_OUT], b->f[P_OUT_LEN], text, len);
    zs_sigv4_free(text);
    return written;
}

static uint64_t h_authorization_header(struct zs_run *run, void *cookie, uint64_t params,
                                       uint64_t params_len, uint64_t r3, uint64_t r4, uint64_t r5)
{
    static const char helper[] = "zs_aws_v4_authorization_header";
    struct block b;
    int rc = read_block(run, params, params_len, cookie, 0, &b, helper);
    uint64_t result = rc == READ_REFUSED ? (uint64_t)-1 : 0;
    if (rc == READ_OK) {
        if (!b.req.payload_hash_len) {
            /* No hash given: the one the request declares, else the empty body's. */
            const struct zs_sigv4_header *declared = find_header(&b, "x-amz-content-sha256");
            b.req.payload_hash = declared ? declared->value : EMPTY_SHA256;
            b.req.payload_hash_len = declared ? declared->value_len : sizeof(EMPTY_SHA256) - 1;
        }
        char *text = NULL;
        size_t len = 0;
        int signed_rc = zs_sigv4_authorization(&b.req, &b.creds, &text, &len);
        result = answer(run, &b, signed_rc, text, len);
    }
    free(b.headers);
    return result;
}

static uint64_t h_presigned_url(struct zs_run *run, void *cookie, uint64_t params,
                                uint64_t params_len, uint64_t expires, uint64_t r4, uint64_t r5)
{
    static const char helper[] = "zs_aws_v4_presigned_url";
    struct block b;
    int rc = read_block(run, params, params_len, cookie, 1, &b, helper);
    uint64_t result = rc == READ_REFUSED ? (uint64_t)-1 : 0;
    if (rc == READ_OK) {
        char *text = NULL;
        size_t len = 0;
        int signed_rc = zs_sigv4_presign(&b.req, &b.creds, expires, &text, &len);
        result = answer(run, &b, signed_rc, text, len);
    }
    free(b.headers);
    return result;
}

/* ---- zs_aws_sign_request ---- */

/* The upstream request the proxy will send for target URL `url`: Host,
 * path (base path joined with the request path) and query (base & request). */
struct upstream {
    struct zs_buf host, path, query;
};

static int has_prefix_ci(const char *p, size_t n, const char *prefix)
{
    size_t k = strlen(prefix);
    return n >= k && strncasecmp(p, prefix, k) == 0;
}

static int has_suffix(const char *p, size_t n, const char *suffix)
{
    size_t k = strlen(suffix);
    return n >= k && memcmp(p + n - k, suffix, k) == 0;
}

/* 0, -1 when the target is not an http(s) URL, -2 out of memory. */
static int upstream_of(struct upstream *u, const char *url, size_t n, const char *path,
                       size_t path_len, const char *query, size_t query_len)
{
    size_t at;
    const char *default_port;
    if (has_prefix_ci(url, n, "http://"))
        at = 7, default_port = ":80";
    else if (has_prefix_ci(url, n, "https://"))
        at = 8, default_port = ":443";
    else
        return -1;
    size_t host_end = at;
    while (host_end < n && url[host_end] != '/' && url[host_end] != '?' && url[host_end] != '#')
        host_end++;
    size_t host_len = host_end - at;
    if (host_len == 0)
        return -1;
    if (has_suffix(url + at, host_len, default_port))
        host_len -= strlen(default_port);
    int failed = 0;
    for (size_t i = 0; i < host_len; i++) {
        char c = url[at + i];
        c = c >= 'A' && c <= 'Z' ? (char)(c + 32) : c;
        failed |= zs_buf_append(&u->host, &c, 1);
    }
    size_t base_end = host_end;
    while (base_end < n && url[base_end] != '?' && url[base_end] != '#')
        base_end++;
    size_t base_len = base_end - host_end;
    while (base_len && url[host_end + base_len - 1] == '/')
        base_len--;
    while (path_len && path[0] == '/')
        path++, path_len--;
    failed |= zs_buf_append(&u->path, url + host_end, base_len);
    failed |= zs_buf_append(&u->path, "/", 1);
    failed |= zs_buf_append(&u->path, path, path_len);
    if (base_end < n && url[base_end] == '?') {
        size_t q_end = base_end + 1;
        while (q_end < n && url[q_end] != '#')
            q_end++;
        failed |= zs_buf_append(&u->query, url + base_end + 1, q_end - base_end - 1);
    }
    if (u->query.len && query_len)
        failed |= zs_buf_append(&u->query, "&", 1);
    failed |= zs_buf_append(&u->query, query, query_len);
    return failed ? -2 : 0;
}

static void upstream_free(struct upstream *u)
{
    zs_buf_free(&u->host);
    zs_buf_free(&u->path);
    zs_buf_free(&u->query);
}

static const struct zs_pair *ctx_header(const struct zs_reqctx *ctx, const char *lname)
{
    size_t n = strlen(lname);
    for (size_t i = 0; i < ctx->headers.n; i++) {
        const struct zs_pair *h = &ctx->headers.items[i];
        if (h->name.len == n && memcmp(zs_ctx_str(ctx, h->name), lname, n) == 0)
            return h;
    }
    return NULL;
}

/* The payload hash of the request: of the buffered body when there is one,
 * of the empty body when none will be sent, else UNSIGNED-PAYLOAD (streamed). */
static const char *payload_hash(const struct zs_reqctx *ctx, char digest[65])
{
    struct zs_span body = ctx->field[ZS_FIELD_BODY];
    struct zs_span method = ctx->field[ZS_FIELD_METHOD];
    const char *m = zs_ctx_str(ctx, method);
    if ((method.len == 3 && memcmp(m, "GET", 3) == 0) ||
        (method.len == 4 && memcmp(m, "HEAD", 4) == 0))
        return EMPTY_SHA256;
    if (body.len) {
        zs_sigv4_sha256_hex(zs_ctx_str(ctx, body), body.len, digest);
        return digest;
    }
    const struct zs_pair *length = ctx_header(ctx, "content-length");
    int no_body = !ctx_header(ctx, "transfer-encoding") &&
                  (!length || (length->value.len == 1 && zs_ctx_str(ctx, length->value)[0] == '0'));
    return no_body ? EMPTY_SHA256 : UNSIGNED_PAYLOAD;
}

static int set_ctx_header(struct zs_reqctx *ctx, const char *lname, const char *value, size_t n)
{
    zs_ctx_remove_header(ctx, lname, strlen(lname));
    return n ? zs_ctx_add_header(ctx, lname, strlen(lname), value, n) : 0;
}

/* The headers zs_aws_sign_request signs: host, content-md5 and every x-amz-*. */
static int signs_header(const char *lname, size_t n)
{
    return (n == 4 && memcmp(lname, "host", 4) == 0) ||
           (n == 11 && memcmp(lname, "content-md5", 11) == 0) ||
           (n >= 6 && memcmp(lname, "x-amz-", 6) == 0);
}

static uint64_t h_sign_request(struct zs_run *run, void *cookie, uint64_t service,
                               uint64_t service_len, uint64_t region, uint64_t region_len,
                               uint64_t r5)
{
    static const char helper[] = "zs_aws_sign_request";
    const struct zs_sigv4_creds *creds = cookie;
    struct zs_scriptrun *sr = zs_script_of(run);
    struct zs_reqctx *ctx = sr->ctx;
    if (!creds->access_key_len || !service_len || service_len > NAME_MAX_ || !region_len ||
        region_len > NAME_MAX_ || !sr->proxy_set)
        return (uint64_t)-1;
    const char *svc = zs_guest_ptr(run, service, service_len, 0);
    const char *reg = zs_guest_ptr(run, region, region_len, 0);
    if (!svc || !reg)
        return 0;

    struct upstream u = {0};
    const char *path, *query;
    size_t path_len, query_len;
    zs_reqctx_get(ctx, ZS_FIELD_PATH, &path, &path_len);
    zs_reqctx_get(ctx, ZS_FIELD_QUERY, &query, &query_len);
    int rc = upstream_of(&u, sr->proxy_url.p, sr->proxy_url.len, path, path_len, query, query_len);
    if (rc == -1) {
        upstream_free(&u);
        return (uint64_t)-1;
    }
    char digest[65], amz_date[17];
    const char *hash = payload_hash(ctx, digest);
    int64_t now = now_seconds();
    zs_sigv4_amz_date(now, amz_date);
    if (rc == 0)
        rc = set_ctx_header(ctx, "host", u.host.p, u.host.len) |
             set_ctx_header(ctx, "x-amz-date", amz_date, 16) |
             set_ctx_header(ctx, "x-amz-content-sha256", hash, strlen(hash)) |
             set_ctx_header(ctx, "x-amz-security-token", creds->token, creds->token_len);
    zs_ctx_remove_header(ctx, "authorization", 13);
    struct zs_sigv4_header *headers = calloc(ctx->headers.n + 1, sizeof(*headers));
    size_t n = 0;
    char *text = NULL;
    size_t text_len = 0;
    if (rc == 0 && headers) {
        for (size_t i = 0; i < ctx->headers.n; i++) {
            const struct zs_pair *h = &ctx->headers.items[i];
            if (signs_header(zs_ctx_str(ctx, h->name), h->name.len))
                headers[n++] = (struct zs_sigv4_header){zs_ctx_str(ctx, h->name), h->name.len,
                                                        zs_ctx_str(ctx, h->value), h->value.len};
        }
        struct zs_sigv4_request req = {
            .method = zs_ctx_str(ctx, ctx->field[ZS_FIELD_METHOD]),
            .method_len = ctx->field[ZS_FIELD_METHOD].len,
            .path = u.path.p, .path_len = u.path.len,
            .query = u.query.p ? u.query.p : "", .query_len = u.query.len,
            .headers = headers, .num_headers = n,
            .payload_hash = hash, .payload_hash_len = strlen(hash),
            .region = reg, .region_len = region_len,
            .service = svc, .service_len = service_len,
            .timestamp = now,
        };
        rc = zs_sigv4_authorization(&req, creds, &text, &text_len);
        if (rc == 0)
            rc = zs_ctx_add_header(ctx, "authorization", 13, text, text_len);
    }
    ctx->changed |= ZS_CHANGED_HEADERS;
    free(headers);
    zs_sigv4_free(text);
    upstream_free(&u);
    if (rc < 0 || !headers) {
        zs_helper_fault(run, "%s: out of host memory", helper);
        return 0;
    }
    return 0;
}

struct zs_sigv4_creds *zs_sigv4_creds_new(const char *access_key, size_t access_key_len,
                                          const char *secret_key, size_t secret_key_len,
                                          const char *token, size_t token_len)
{
    size_t total = access_key_len + secret_key_len + token_len + 3;
    struct zs_sigv4_creds *creds = malloc(sizeof(*creds) + total);
    if (!creds)
        return NULL;
    char *p = (char *)(creds + 1);
    const char *fields[] = {access_key, secret_key, token};
    const size_t lens[] = {access_key_len, secret_key_len, token_len};
    const char **slots[] = {&creds->access_key, &creds->secret_key, &creds->token};
    for (int i = 0; i < 3; i++) {
        memcpy(p, fields[i], lens[i]);
        p[lens[i]] = '\0';
        *slots[i] = p;
        p += lens[i] + 1;
    }
    creds->access_key_len = access_key_len;
    creds->secret_key_len = secret_key_len;
    creds->token_len = token_len;
    return creds;
}

void zs_sigv4_creds_free(struct zs_sigv4_creds *creds)
{
    if (!creds)
        return;
    OPENSSL_cleanse(creds, sizeof(*creds) + creds->access_key_len + creds->secret_key_len +
                               creds->token_len + 3);
    free(creds);
}

const struct zs_helper_def *zs_sigv4_helpers(size_t *count)
{
    static const struct zs_helper_def helpers[] = {
        {"zs_aws_v4_authorization_header", h_authorization_header, NULL},
        {"zs_aws_v4_presigned_url", h_presigned_url, NULL},
        {"zs_aws_sign_request", h_sign_request, NULL},
    };
    *count = sizeof(helpers) / sizeof(helpers[0]);
    return helpers;
}
