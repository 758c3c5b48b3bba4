/* SPDX-License-Identifier: Apache-2.0 */
/*
 * reqctx.c: the per-request context and the per-run execution context the
 * Python side fills, pools and reads back; plus the byte-buffer and string
 * tools the helper files share.
 */
#include <stdlib.h>
#include <string.h>

#include "script_int.h"

/* ---- buffers ---- */

int zs_buf_reserve(struct zs_buf *b, size_t extra)
{
    if (b->cap - b->len >= extra)
        return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap - b->len < extra) {
        if (cap > SIZE_MAX / 2)
            return -1;
        cap *= 2;
    }
    char *p = realloc(b->p, cap);
    if (!p)
        return -1;
    b->p = p;
    b->cap = cap;
    return 0;
}

int zs_buf_append(struct zs_buf *b, const void *p, size_t n)
{
    if (zs_buf_reserve(b, n) < 0)
        return -1;
    if (n)
        memcpy(b->p + b->len, p, n);
    b->len += n;
    return 0;
}

void zs_buf_free(struct zs_buf *b)
{
    free(b->p);
    memset(b, 0, sizeof(*b));
}

/* ---- string tools ---- */

static int is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

void zs_trim(const char **p, size_t *n)
{
    while (*n && is_space(**p)) {
        (*p)++;
        (*n)--;
    }
    while (*n && is_space((*p)[*n - 1]))
        (*n)--;
}

int zs_is_utf8(const unsigned char *p, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned char c = p[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t len;
        uint32_t cp;
        if (c >= 0xc2 && c <= 0xdf) {
            len = 2;
            cp = c & 0x1f;
        } else if (c >= 0xe0 && c <= 0xef) {
            len = 3;
            cp = c & 0x0f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            len = 4;
            cp = c & 0x07;
        } else {
            return 0;
        }
        if (n - i < len)
            return 0;
        for (size_t k = 1; k < len; k++) {
            if ((p[i + k] & 0xc0) != 0x80)
                return 0;
            cp = (cp << 6) | (p[i + k] & 0x3f);
        }
        if ((len == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
            (len == 4 && (cp < 0x10000 || cp > 0x10ffff)))
            return 0;
        i += len;
    }
    return 1;
}

int zs_is_token(const char *p, size_t n)
{
    if (n == 0)
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
            continue;
        if (!c || !strchr("!#$%&'*+-.^_`|~", c))
            return 0;
    }
    return 1;
}

int zs_hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Form-decodes p ('+' is a space, %XX a byte; a bad escape stays as it is)
 * into out, which has room for n bytes; returns the decoded length. */
static size_t form_decode(const char *p, size_t n, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        int hi, lo;
        if (p[i] == '%' && n - i >= 3 && (hi = zs_hexval(p[i + 1])) >= 0 && (lo = zs_hexval(p[i + 2])) >= 0) {
            out[o++] = (char)(hi << 4 | lo);
            i += 2;
        } else if (p[i] == '+') {
            out[o++] = ' ';
        } else {
            out[o++] = p[i];
        }
    }
    return o;
}

int zs_each_query_pair(const char *query, size_t n, zs_pair_visit visit, void *arg)
{
    if (n == 0)
        return 0;
    char *buf = malloc(n);
    if (!buf)
        return -1;
    const char *p = query, *end = query + n;
    int rc = 0;
    while (p < end && rc == 0) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *pair_end = amp ? amp : end;
        if (pair_end > p) {
            const char *eq = memchr(p, '=', (size_t)(pair_end - p));
            const char *key_end = eq ? eq : pair_end;
            size_t key_len = form_decode(p, (size_t)(key_end - p), buf);
            const char *vp = eq ? eq + 1 : pair_end;
            size_t value_len = form_decode(vp, (size_t)(pair_end - vp), buf + key_len);
            rc = visit(arg, buf, key_len, buf + key_len, value_len);
        }
        p = pair_end + 1;
    }
    free(buf);
    return rc;
}

/* ---- the request context ---- */

struct zs_reqctx *zs_reqctx_new(void)
{
    return calloc(1, sizeof(struct zs_reqctx));
}

void zs_reqctx_free(struct zs_reqctx *ctx)
{
    if (!ctx)
        return;
    zs_buf_free(&ctx->arena);
    zs_buf_free(&ctx->export);
    free(ctx->headers.items);
    free(ctx->meta.items);
    free(ctx->res_headers.items);
    free(ctx->hooks);
    free(ctx);
}

int zs_ctx_store(struct zs_reqctx *ctx, const char *p, size_t n, int lower, struct zs_span *out)
{
    if (n > UINT32_MAX || ctx->arena.len > UINT32_MAX - n || zs_buf_append(&ctx->arena, p, n) < 0)
        return -1;
    out->off = (uint32_t)(ctx->arena.len - n);
    out->len = (uint32_t)n;
    if (lower) {
        char *s = ctx->arena.p + out->off;
        for (size_t i = 0; i < n; i++)
            if (s[i] >= 'A' && s[i] <= 'Z')
                s[i] = (char)(s[i] + 32);
    }
    return 0;
}

/* A new zeroed slot at the end of list, or NULL out of memory. */
static struct zs_pair *pairs_push(struct zs_pairs *list)
{
    if (list->n == list->cap) {
        size_t cap = list->cap ? list->cap * 2 : 16;
        struct zs_pair *grown = realloc(list->items, cap * sizeof(*grown));
        if (!grown)
            return NULL;
        list->items = grown;
        list->cap = cap;
    }
    struct zs_pair *slot = &list->items[list->n++];
    memset(slot, 0, sizeof(*slot));
    return slot;
}

int zs_ctx_add_header(struct zs_reqctx *ctx, const char *name, size_t name_len, const char *value,
                      size_t value_len)
{
    struct zs_pair *h = pairs_push(&ctx->headers);
    if (!h)
        return -1;
    if (zs_ctx_store(ctx, name, name_len, 1, &h->name) < 0 ||
        zs_ctx_store(ctx, value, value_len, 0, &h->value) < 0) {
        ctx->headers.n--;
        return -1;
    }
    return 0;
}

/* Appends the pairs of a packed block (name NUL value NUL ...) to list, names
 * lowercased: one copy of the whole block, the pairs are spans into it. */
static int add_packed(struct zs_reqctx *ctx, struct zs_pairs *list, const char *packed, size_t len)
{
    struct zs_span block;
    if (zs_ctx_store(ctx, packed, len, 0, &block) < 0)
        return -1;
    char *base = ctx->arena.p;
    uint32_t at = block.off, end = block.off + block.len;
    while (at < end) {
        char *name = base + at;
        char *name_end = memchr(name, '\0', end - at);
        char *value_end =
            name_end ? memchr(name_end + 1, '\0', (size_t)(base + end - name_end - 1)) : NULL;
        if (!value_end)
            return -2;
        struct zs_pair *h = pairs_push(list);
        if (!h)
            return -1;
        for (char *c = name; c < name_end; c++)
            if (*c >= 'A' && *c <= 'Z')
                *c = (char)(*c + 32);
        h->name = (struct zs_span){at, (uint32_t)(name_end - name)};
        h->value = (struct zs_span){(uint32_t)(name_end + 1 - base),
                                    (uint32_t)(value_end - name_end - 1)};
        at = (uint32_t)(value_end + 1 - base);
    }
    return 0;
}

int zs_reqctx_begin(struct zs_reqctx *ctx, const char *request, size_t request_len,
                    const char *normalized_path, size_t normalized_path_len, const char *headers,
                    size_t headers_len, int proto_major, int proto_minor, int is_tls,
                    uint64_t body_limit)
{
    static const int order[] = {ZS_FIELD_METHOD, ZS_FIELD_PATH, ZS_FIELD_QUERY, ZS_FIELD_SCHEME,
                                ZS_FIELD_PEER};
    ctx->arena.len = 0;
    ctx->headers.n = 0;
    ctx->meta.n = 0;
    ctx->res_headers.n = 0;
    ctx->res_status = 0;
    ctx->res_continue = 0;
    ctx->num_hooks = 0;
    ctx->changed = 0;
    memset(ctx->field, 0, sizeof(ctx->field));
    ctx->proto_major = proto_major;
    ctx->proto_minor = proto_minor;
    ctx->is_tls = is_tls;
    ctx->body_limit = body_limit;
    /* One copy of the request block; the fields are spans into it. */
    struct zs_span block;
    if (zs_ctx_store(ctx, request, request_len, 0, &block) < 0)
        return -1;
    uint32_t at = block.off, end = block.off + block.len;
    for (size_t i = 0; i < sizeof(order) / sizeof(order[0]); i++) {
        const char *field = ctx->arena.p + at;
        const char *nul = at < end ? memchr(field, '\0', end - at) : NULL;
        if (!nul)
            return -2;
        ctx->field[order[i]] = (struct zs_span){at, (uint32_t)(nul - field)};
        at += (uint32_t)(nul - field) + 1;
    }
    if (at != end)
        return -2;
    if (zs_ctx_store(ctx, normalized_path, normalized_path_len, 0,
                     &ctx->field[ZS_FIELD_NORMALIZED_PATH]) < 0)
        return -1;
    return add_packed(ctx, &ctx->headers, headers, headers_len);
}

size_t zs_ctx_remove_header(struct zs_reqctx *ctx, const char *lower_name, size_t len)
{
    size_t kept = 0, removed = 0;
    for (size_t i = 0; i < ctx->headers.n; i++) {
        struct zs_pair *h = &ctx->headers.items[i];
        if (h->name.len == len && memcmp(zs_ctx_str(ctx, h->name), lower_name, len) == 0)
            removed++;
        else
            ctx->headers.items[kept++] = *h;
    }
    ctx->headers.n = kept;
    return removed;
}

int zs_reqctx_set_field(struct zs_reqctx *ctx, int field, const char *value, size_t len)
{
    if (field < 0 || field >= ZS_NUM_FIELDS)
        return -2;
    return zs_ctx_store(ctx, value, len, 0, &ctx->field[field]);
}

int zs_reqctx_get(struct zs_reqctx *ctx, int field, const char **value, size_t *len)
{
    if (field < 0 || field >= ZS_NUM_FIELDS)
        return -2;
    *value = zs_ctx_str(ctx, ctx->field[field]);
    *len = ctx->field[field].len;
    return 0;
}

int zs_reqctx_changed(const struct zs_reqctx *ctx)
{
    return ctx->changed;
}

uint64_t zs_reqctx_body_limit(const struct zs_reqctx *ctx)
{
    return ctx->body_limit;
}

static int export_pairs(struct zs_reqctx *ctx, const struct zs_pairs *list, const char **packed,
                        size_t *len)
{
    const struct zs_pair *pairs = list->items;
    ctx->export.len = 0;
    for (size_t i = 0; i < list->n; i++) {
        if (zs_buf_append(&ctx->export, zs_ctx_str(ctx, pairs[i].name), pairs[i].name.len) < 0 ||
            zs_buf_append(&ctx->export, "", 1) < 0 ||
            zs_buf_append(&ctx->export, zs_ctx_str(ctx, pairs[i].value), pairs[i].value.len) < 0 ||
            zs_buf_append(&ctx->export, "", 1) < 0)
            return -1;
    }
    *packed = ctx->export.p ? ctx->export.p : "";
    *len = ctx->export.len;
    return 0;
}

int zs_reqctx_headers_export(struct zs_reqctx *ctx, const char **packed, size_t *len)
{
    return export_pairs(ctx, &ctx->headers, packed, len);
}

int zs_reqctx_meta_export(struct zs_reqctx *ctx, const char **packed, size_t *len)
{
    return export_pairs(ctx, &ctx->meta, packed, len);
}

size_t zs_reqctx_meta_count(const struct zs_reqctx *ctx)
{
    return ctx->meta.n;
}

struct zs_pair *zs_ctx_meta_find(struct zs_reqctx *ctx, const char *key, size_t key_len)
{
    zs_trim(&key, &key_len);
    for (size_t i = 0; i < ctx->meta.n; i++) {
        struct zs_pair *m = &ctx->meta.items[i];
        if (m->name.len == key_len && memcmp(zs_ctx_str(ctx, m->name), key, key_len) == 0)
            return m;
    }
    return NULL;
}

int zs_ctx_meta_put(struct zs_reqctx *ctx, const char *key, size_t key_len, const char *value,
                    size_t value_len)
{
    zs_trim(&key, &key_len);
    struct zs_pair *m = zs_ctx_meta_find(ctx, key, key_len);
    if (m)
        return zs_ctx_store(ctx, value, value_len, 0, &m->value);
    if (!(m = pairs_push(&ctx->meta)))
        return -1;
    if (zs_ctx_store(ctx, key, key_len, 0, &m->name) < 0 ||
        zs_ctx_store(ctx, value, value_len, 0, &m->value) < 0) {
        ctx->meta.n--;
        return -1;
    }
    return 0;
}

int zs_reqctx_meta_set(struct zs_reqctx *ctx, const char *key, size_t key_len, const char *value,
                       size_t value_len)
{
    zs_trim(&key, &key_len);
    if (key_len == 0)
        return -2;
    return zs_ctx_meta_put(ctx, key, key_len, value, value_len);
}

/* ---- response hooks ---- */

int zs_reqctx_response_begin(struct zs_reqctx *ctx, unsigned status, const char *packed, size_t len)
{
    ctx->res_status = status;
    ctx->res_continue = 0;
    ctx->res_headers.n = 0;
    return add_packed(ctx, &ctx->res_headers, packed, len);
}

unsigned zs_reqctx_response_status(const struct zs_reqctx *ctx)
{
    return ctx->res_status;
}

int zs_reqctx_response_continue(const struct zs_reqctx *ctx)
{
    return ctx->res_continue;
}

int zs_reqctx_response_headers_export(struct zs_reqctx *ctx, const char **packed, size_t *len)
{
    return export_pairs(ctx, &ctx->res_headers, packed, len);
}

size_t zs_reqctx_hook_count(const struct zs_reqctx *ctx)
{
    return ctx->num_hooks;
}

int zs_reqctx_hooks_export(struct zs_reqctx *ctx, const char **packed, size_t *len)
{
    ctx->export.len = 0;
    for (size_t i = 0; i < ctx->num_hooks; i++) {
        const struct zs_span parts[3] = {ctx->hooks[i].script, ctx->hooks[i].func,
                                         ctx->hooks[i].input};
        for (int k = 0; k < 3; k++)
            if (zs_buf_append(&ctx->export, zs_ctx_str(ctx, parts[k]), parts[k].len) < 0 ||
                zs_buf_append(&ctx->export, "", 1) < 0)
                return -1;
    }
    *packed = ctx->export.p ? ctx->export.p : "";
    *len = ctx->export.len;
    return 0;
}

/* ---- the execution context ---- */

struct zs_scriptrun *zs_scriptrun_new(void)
{
    struct zs_scriptrun *sr = calloc(1, sizeof(*sr));
    if (sr)
        sr->next_id = 1;
    return sr;
}

static void free_handles(struct zs_scriptrun *sr)
{
    for (unsigned i = 0; i < ZS_JSON_MAX_HANDLES; i++) {
        struct zs_json_slot *slot = &sr->slots[i];
        if (slot->id && --slot->tree->refs == 0) {
            zs_json_free(slot->tree->root);
            free(slot->tree);
        }
        slot->id = 0;
    }
    sr->live = 0;
}

void zs_scriptrun_free(struct zs_scriptrun *sr)
{
    if (!sr)
        return;
    free_handles(sr);
    zs_buf_free(&sr->name);
    zs_buf_free(&sr->body);
    zs_buf_free(&sr->proxy_url);
    zs_buf_free(&sr->log_partial);
    zs_buf_free(&sr->log_lines);
    zs_buf_free(&sr->scratch);
    free(sr);
}

int zs_scriptrun_begin(struct zs_scriptrun *sr, struct zs_reqctx *ctx, const char *name,
                       size_t name_len, int in_hook)
{
    free_handles(sr);
    sr->ctx = ctx;
    sr->in_hook = in_hook;
    sr->name.len = 0;
    sr->next_id = 1;
    sr->respond_set = sr->proxy_set = sr->abort_set = 0;
    sr->status = 0;
    sr->body.len = 0;
    sr->proxy_url.len = 0;
    sr->log_partial.len = 0;
    sr->log_lines.len = 0;
    return zs_buf_append(&sr->name, name, name_len);
}

int zs_scriptrun_outcome(const struct zs_scriptrun *sr)
{
    if (sr->abort_set)
        return ZS_OUTCOME_ABORT;
    if (sr->respond_set)
        return ZS_OUTCOME_RESPOND;
    if (sr->proxy_set)
        return ZS_OUTCOME_PROXY;
    return ZS_OUTCOME_NONE;
}

unsigned zs_scriptrun_status(const struct zs_scriptrun *sr)
{
    return sr->status;
}

void zs_scriptrun_body(const struct zs_scriptrun *sr, const char **body, size_t *len)
{
    *body = sr->body.p ? sr->body.p : "";
    *len = sr->body.len;
}

void zs_scriptrun_proxy_url(const struct zs_scriptrun *sr, const char **url, size_t *len)
{
    *url = sr->proxy_url.p ? sr->proxy_url.p : "";
    *len = sr->proxy_url.len;
}

void zs_scriptrun_log_lines(const struct zs_scriptrun *sr, const char **lines, size_t *len)
{
    *lines = sr->log_lines.p ? sr->log_lines.p : "";
    *len = sr->log_lines.len;
}

void zs_scriptrun_log_clear(struct zs_scriptrun *sr)
{
    sr->log_lines.len = 0;
}

unsigned zs_response_status(uint64_t status)
{
    return status >= 100 && status <= 999 ? (unsigned)status : 500;
}

int zs_scriptrun_respond(struct zs_scriptrun *sr, unsigned status, const char *body, size_t len)
{
    return zs_set_response(sr, zs_response_status(status), body, len);
}

int zs_set_response(struct zs_scriptrun *sr, unsigned status, const char *body, size_t len)
{
    sr->body.len = 0;
    if (zs_buf_append(&sr->body, body, len) < 0)
        return -1;
    sr->status = status;
    sr->respond_set = 1;
    return 0;
}
