/* SPDX-License-Identifier: Apache-2.0 */
/*
 * helpers_rewrite.c: the Caddy-style request edits driven by JSON operations:
 * zs_req_replace_header, zs_req_rewrite_uri and zs_req_rewrite_query.
 *
 * Regular expressions are POSIX extended (regcomp), the closest C has to
 * Caddy's RE2; a replacement expands $N, ${N} and $$ like Go's Expand.
 * Query rewriting re-encodes the query the way Go's url.Values does: keys in
 * byte order, each key's values in order, QueryEscape'd.
 */
#define _GNU_SOURCE /* memmem */
#include <regex.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "script_int.h"

#define MAX_GROUPS 10

/* Appends repl with $N / ${N} / $$ expanded from the match m over s. */
static int expand(struct zs_buf *out, const char *repl, size_t rn, const char *s,
                  const regmatch_t *m)
{
    for (size_t i = 0; i < rn; i++) {
        if (repl[i] != '$' || i + 1 == rn) {
            if (zs_buf_append(out, &repl[i], 1) < 0)
                return -1;
            continue;
        }
        if (repl[i + 1] == '$') {
            if (zs_buf_append(out, "$", 1) < 0)
                return -1;
            i++;
            continue;
        }
        size_t j = i + 1, braced = repl[j] == '{';
        j += braced;
        unsigned group = 0;
        size_t digits = 0;
        while (j < rn && repl[j] >= '0' && repl[j] <= '9' && digits < 3) {
            group = group * 10 + (unsigned)(repl[j] - '0');
            j++;
            digits++;
        }
        if (!digits || (braced && (j == rn || repl[j] != '}'))) {
            if (zs_buf_append(out, "$", 1) < 0)
                return -1;
            continue;
        }
        if (group < MAX_GROUPS && m[group].rm_so >= 0 &&
            zs_buf_append(out, s + m[group].rm_so, (size_t)(m[group].rm_eo - m[group].rm_so)) < 0)
            return -1;
        i = j - 1 + braced;
    }
    return 0;
}

/* out = s with every match of re replaced. */
static int regex_replace(const regex_t *re, const char *s, size_t n, const char *repl, size_t rn,
                         struct zs_buf *out)
{
    char *text = malloc(n + 1);
    if (!text)
        return -1;
    memcpy(text, s, n);
    text[n] = '\0';
    size_t pos = 0;
    int rc = 0;
    while (pos <= n) {
        regmatch_t m[MAX_GROUPS];
        if (regexec(re, text + pos, MAX_GROUPS, m, pos ? REG_NOTBOL : 0) != 0)
            break;
        if (zs_buf_append(out, text + pos, (size_t)m[0].rm_so) < 0 ||
            expand(out, repl, rn, text + pos, m) < 0) {
            rc = -1;
            break;
        }
        size_t advance = (size_t)m[0].rm_eo;
        if (m[0].rm_eo == m[0].rm_so) { /* an empty match: keep one byte and move on */
            if (pos + advance < n && zs_buf_append(out, text + pos + advance, 1) < 0) {
                rc = -1;
                break;
            }
            advance++;
        }
        pos += advance;
    }
    if (rc == 0 && pos < n)
        rc = zs_buf_append(out, text + pos, n - pos);
    free(text);
    return rc;
}

/* out = s with `find` replaced (at most limit times; 0 = all). */
static int literal_replace(const char *s, size_t n, const char *find, size_t fn, const char *repl,
                           size_t rn, size_t limit, struct zs_buf *out)
{
    size_t i = 0, done = 0;
    while (fn && i + fn <= n && (!limit || done < limit)) {
        const char *hit = memmem(s + i, n - i, find, fn);
        if (!hit)
            break;
        if (zs_buf_append(out, s + i, (size_t)(hit - s - i)) < 0 || zs_buf_append(out, repl, rn) < 0)
            return -1;
        i = (size_t)(hit - s) + fn;
        done++;
    }
    return zs_buf_append(out, s + i, n - i);
}

/* The string member `key` of obj, or NULL. */
static const struct zs_json *str_member(const struct zs_json *obj, const char *key)
{
    const struct zs_json *v = zs_json_member_get(obj, key, strlen(key));
    return v && v->type == ZS_JT_STRING ? v : NULL;
}

/* An operation's search/search_regexp/replace applied to s into out. */
struct replace_op {
    const struct zs_json *search, *replace;
    int is_regex;
    regex_t re;
};

static int op_compile(struct zs_run *run, const struct zs_json *obj, struct replace_op *op,
                      const char *helper)
{
    const struct zs_json *regex = str_member(obj, "search_regexp");
    op->search = str_member(obj, "search");
    op->replace = str_member(obj, "replace");
    op->is_regex = regex != NULL;
    if (!op->replace || (!op->search && !regex)) {
        zs_helper_fault(run, "%s: an operation needs \"replace\" and \"search\" or "
                             "\"search_regexp\" strings", helper);
        return -1;
    }
    if (regex && regcomp(&op->re, regex->str, REG_EXTENDED) != 0) {
        zs_helper_fault(run, "%s: search_regexp \"%.64s\" is not a valid regular expression",
                        helper, regex->str);
        return -1;
    }
    return 0;
}

static int op_apply(const struct replace_op *op, const char *s, size_t n, struct zs_buf *out)
{
    out->len = 0;
    if (op->is_regex)
        return regex_replace(&op->re, s, n, op->replace->str, op->replace->len, out);
    return literal_replace(s, n, op->search->str, op->search->len, op->replace->str,
                           op->replace->len, 0, out);
}

static void op_free(struct replace_op *op)
{
    if (op->is_regex)
        regfree(&op->re);
}

/* Parses guest JSON (an object) for an ops helper; NULL with the run faulted. */
static struct zs_json *ops_object(struct zs_run *run, uint64_t p, uint64_t n, const char *helper)
{
    const char *text = zs_guest_ptr(run, p, n, 0);
    if (!text)
        return NULL;
    struct zs_json *ops;
    int rc = zs_json_parse_text(text, n, &ops);
    if (rc == 0 && ops->type == ZS_JT_OBJECT)
        return ops;
    if (rc == 0)
        zs_json_free(ops);
    zs_helper_fault(run, "%s: %s", helper,
                    rc == -2 ? "out of host memory" : "the operations are not a JSON object");
    return NULL;
}

/* ---- zs_req_replace_header, zs_res_replace_header ---- */

/* Applies a {name, search | search_regexp, replace} operation to the values
 * of the headers in list named name ("*": every header). 1 if any changed. */
static int replace_header(struct zs_run *run, struct zs_pairs *list, uint64_t p, uint64_t n,
                          const char *helper)
{
    struct zs_json *op_json = ops_object(run, p, n, helper);
    if (!op_json)
        return 0;
    const struct zs_json *name = str_member(op_json, "name");
    struct replace_op op;
    if (!name || name->len == 0) {
        zs_helper_fault(run, "%s: the operation needs a \"name\"", helper);
        zs_json_free(op_json);
        return 0;
    }
    if (op_compile(run, op_json, &op, helper) < 0) {
        zs_json_free(op_json);
        return 0;
    }
    struct zs_reqctx *ctx = zs_script_of(run)->ctx;
    struct zs_buf out = {0};
    int all = name->len == 1 && name->str[0] == '*', changed = 0;
    for (size_t i = 0; i < list->n; i++) {
        struct zs_pair *hdr = &list->items[i];
        if (!all && (hdr->name.len != name->len ||
                     strncasecmp(zs_ctx_str(ctx, hdr->name), name->str, name->len) != 0))
            continue;
        if (op_apply(&op, zs_ctx_str(ctx, hdr->value), hdr->value.len, &out) < 0 ||
            zs_ctx_store(ctx, out.p ? out.p : "", out.len, 0, &hdr->value) < 0) {
            zs_helper_fault(run, "%s: out of host memory", helper);
            break;
        }
        changed = 1;
    }
    zs_buf_free(&out);
    op_free(&op);
    zs_json_free(op_json);
    return changed;
}

static uint64_t h_req_replace_header(struct zs_run *run, void *cookie, uint64_t p, uint64_t n,
                                     uint64_t r3, uint64_t r4, uint64_t r5)
{
    struct zs_reqctx *ctx = zs_script_of(run)->ctx;
    if (replace_header(run, &ctx->headers, p, n, "zs_req_replace_header"))
        ctx->changed |= ZS_CHANGED_HEADERS;
    return 0;
}

static uint64_t h_res_replace_header(struct zs_run *run, void *cookie, uint64_t p, uint64_t n,
                                     uint64_t r3, uint64_t r4, uint64_t r5)
{
    struct zs_scriptrun *sr = zs_script_of(run);
    if (!sr->in_hook) {
        zs_helper_fault(run, "zs_res_replace_header: only a response hook may call it (register "
                             "one with zs_res_hook)");
        return 0;
    }
    replace_header(run, &sr->ctx->res_headers, p, n, "zs_res_replace_header");
    return 0;
}

/* ---- zs_req_rewrite_uri ---- */

static uint64_t h_req_rewrite_uri(struct zs_run *run, void *cookie, uint64_t p, uint64_t n,
                                  uint64_t r3, uint64_t r4, uint64_t r5)
{
    static const char helper[] = "zs_req_rewrite_uri";
    struct zs_json *ops = ops_object(run, p, n, helper);
    if (!ops)
        return 0;
    struct zs_reqctx *ctx = zs_script_of(run)->ctx;
    struct zs_buf path = {0}, next = {0}, uri = {0};
    struct zs_span query = ctx->field[ZS_FIELD_QUERY];
    if (zs_buf_append(&path, zs_ctx_str(ctx, ctx->field[ZS_FIELD_PATH]), ctx->field[ZS_FIELD_PATH].len) < 0)
        goto oom;

    const struct zs_json *prefix = str_member(ops, "strip_path_prefix");
    if (prefix && prefix->len) {
        int slash = prefix->str[0] != '/';
        size_t plen = prefix->len + (size_t)slash;
        if (path.len >= plen && (!slash || path.p[0] == '/') &&
            memcmp(path.p + slash, prefix->str, prefix->len) == 0) {
            memmove(path.p, path.p + plen, path.len - plen);
            path.len -= plen;
        }
    }
    const struct zs_json *suffix = str_member(ops, "strip_path_suffix");
    if (suffix && suffix->len && path.len >= suffix->len &&
        memcmp(path.p + path.len - suffix->len, suffix->str, suffix->len) == 0)
        path.len -= suffix->len;

    const struct zs_json *regexps = zs_json_member_get(ops, "path_regexp", 11);
    for (size_t i = 0; regexps && regexps->type == ZS_JT_ARRAY && i < regexps->len; i++) {
        const struct zs_json *item = regexps->items[i];
        const struct zs_json *find = item->type == ZS_JT_OBJECT ? str_member(item, "find") : NULL;
        const struct zs_json *repl = find ? str_member(item, "replace") : NULL;
        regex_t re;
        if (!repl || regcomp(&re, find->str, REG_EXTENDED) != 0) {
            zs_helper_fault(run, "%s: path_regexp entry %zu needs a valid \"find\" regular "
                                 "expression and a \"replace\" string", helper, i);
            goto done;
        }
        next.len = 0;
        int rc = regex_replace(&re, path.p ? path.p : "", path.len, repl->str, repl->len, &next);
        regfree(&re);
        if (rc < 0)
            goto oom;
        struct zs_buf swap = path;
        path = next;
        next = swap;
    }

    if (zs_buf_append(&uri, path.p, path.len) < 0 ||
        (query.len && (zs_buf_append(&uri, "?", 1) < 0 ||
                       zs_buf_append(&uri, zs_ctx_str(ctx, query), query.len) < 0)))
        goto oom;
    const struct zs_json *subs = zs_json_member_get(ops, "uri_substring", 13);
    for (size_t i = 0; subs && subs->type == ZS_JT_ARRAY && i < subs->len; i++) {
        const struct zs_json *item = subs->items[i];
        const struct zs_json *find = item->type == ZS_JT_OBJECT ? str_member(item, "find") : NULL;
        const struct zs_json *repl = find ? str_member(item, "replace") : NULL;
        const struct zs_json *limit = find ? zs_json_member_get(item, "limit", 5) : NULL;
        if (!repl) {
            zs_helper_fault(run, "%s: uri_substring entry %zu needs \"find\" and \"replace\" "
                                 "strings", helper, i);
            goto done;
        }
        size_t max = limit && limit->type == ZS_JT_NUMBER && limit->num_kind == ZS_JN_INT &&
                             limit->num.i > 0 ? (size_t)limit->num.i : 0;
        next.len = 0;
        if (literal_replace(uri.p, uri.len, find->str, find->len, repl->str, repl->len, max, &next) < 0)
            goto oom;
        struct zs_buf swap = uri;
        uri = next;
        next = swap;
    }
    /* The result is a request target: make sure it starts with '/'. */
    if ((uri.len == 0 || uri.p[0] != '/') && zs_buf_reserve(&uri, 1) == 0) {
        memmove(uri.p + 1, uri.p, uri.len);
        uri.p[0] = '/';
        uri.len++;
    }
    zs_ctx_set_uri(run, uri.p, uri.len, helper);
    goto done;
oom:
    zs_helper_fault(run, "%s: out of host memory", helper);
done:
    zs_buf_free(&path);
    zs_buf_free(&next);
    zs_buf_free(&uri);
    zs_json_free(ops);
    return 0;
}

/* ---- zs_req_rewrite_query ---- */

struct qpair {
    char *key, *value;
    size_t key_len, value_len;
};

struct query {
    struct qpair *pairs;
    size_t n, cap;
};

static void query_free(struct query *q)
{
    for (size_t i = 0; i < q->n; i++) {
        free(q->pairs[i].key);
        free(q->pairs[i].value);
    }
    free(q->pairs);
}

static char *dup_bytes(const char *p, size_t n)
{
    char *s = malloc(n + 1);
    if (s) {
        memcpy(s, p, n);
        s[n] = '\0';
    }
    return s;
}

static int query_add(struct query *q, const char *k, size_t kn, const char *v, size_t vn)
{
    if (q->n == q->cap) {
        size_t cap = q->cap ? q->cap * 2 : 8;
        struct qpair *grown = realloc(q->pairs, cap * sizeof(*grown));
        if (!grown)
            return -1;
        q->pairs = grown;
        q->cap = cap;
    }
    struct qpair *pair = &q->pairs[q->n];
    pair->key = dup_bytes(k, kn);
    pair->value = dup_bytes(v, vn);
    if (!pair->key || !pair->value) {
        free(pair->key);
        free(pair->value);
        return -1;
    }
    pair->key_len = kn;
    pair->value_len = vn;
    q->n++;
    return 0;
}

static void query_delete(struct query *q, const char *k, size_t kn)
{
    size_t kept = 0;
    for (size_t i = 0; i < q->n; i++) {
        struct qpair *pair = &q->pairs[i];
        if (pair->key_len == kn && memcmp(pair->key, k, kn) == 0) {
            free(pair->key);
            free(pair->value);
        } else {
            q->pairs[kept++] = *pair;
        }
    }
    q->n = kept;
}

static int visit_add(void *arg, const char *key, size_t key_len, const char *value, size_t value_len)
{
    return query_add(arg, key, key_len, value, value_len) < 0 ? -1 : 0;
}

static int query_escape(struct zs_buf *out, const char *s, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        char esc[3] = {'%', hex[c >> 4], hex[c & 15]};
        int plain = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '-' || c == '_' || c == '.' || c == '~';
        int rc = plain ? zs_buf_append(out, s + i, 1)
                       : c == ' ' ? zs_buf_append(out, "+", 1) : zs_buf_append(out, esc, 3);
        if (rc < 0)
            return -1;
    }
    return 0;
}

static int key_less(const struct qpair *a, const struct qpair *b)
{
    int c = memcmp(a->key, b->key, a->key_len < b->key_len ? a->key_len : b->key_len);
    return c < 0 || (c == 0 && a->key_len < b->key_len);
}

static int query_encode(const struct query *q, struct zs_buf *out)
{
    /* A stable insertion sort by key keeps each key's values in order; queries are short. */
    size_t *order = malloc((q->n ? q->n : 1) * sizeof(*order));
    if (!order)
        return -1;
    for (size_t i = 0; i < q->n; i++) {
        size_t j = i;
        for (; j > 0 && key_less(&q->pairs[i], &q->pairs[order[j - 1]]); j--)
            order[j] = order[j - 1];
        order[j] = i;
    }
    int rc = 0;
    for (size_t i = 0; i < q->n && rc == 0; i++) {
        const struct qpair *pair = &q->pairs[order[i]];
        if ((i && zs_buf_append(out, "&", 1) < 0) || query_escape(out, pair->key, pair->key_len) < 0 ||
            zs_buf_append(out, "=", 1) < 0 || query_escape(out, pair->value, pair->value_len) < 0)
            rc = -1;
    }
    free(order);
    return rc;
}

/* The string members key and val of a {key, val} entry; -1 when missing. */
static int key_val(const struct zs_json *item, const struct zs_json **key, const struct zs_json **val)
{
    *key = item->type == ZS_JT_OBJECT ? str_member(item, "key") : NULL;
    *val = *key ? str_member(item, "val") : NULL;
    return *val ? 0 : -1;
}

static const struct zs_json *op_list(const struct zs_json *ops, const char *name)
{
    const struct zs_json *list = zs_json_member_get(ops, name, strlen(name));
    return list && list->type == ZS_JT_ARRAY ? list : NULL;
}

static int query_apply(struct zs_run *run, const struct zs_json *ops, struct query *q,
                       const char *helper)
{
    const struct zs_json *list, *key, *val;
    if ((list = op_list(ops, "rename")))
        for (size_t i = 0; i < list->len; i++) {
            if (key_val(list->items[i], &key, &val) < 0 || !key->len || !val->len)
                continue;
            /* Go: query[val] = query[key]; delete(query, key) */
            query_delete(q, val->str, val->len);
            for (size_t k = 0; k < q->n; k++) {
                struct qpair *pair = &q->pairs[k];
                if (pair->key_len != key->len || memcmp(pair->key, key->str, key->len) != 0)
                    continue;
                char *renamed = dup_bytes(val->str, val->len);
                if (!renamed)
                    return -1;
                free(pair->key);
                pair->key = renamed;
                pair->key_len = val->len;
            }
        }
    if ((list = op_list(ops, "set")))
        for (size_t i = 0; i < list->len; i++) {
            if (key_val(list->items[i], &key, &val) < 0 || !key->len)
                continue;
            query_delete(q, key->str, key->len);
            if (query_add(q, key->str, key->len, val->str, val->len) < 0)
                return -1;
        }
    if ((list = op_list(ops, "add")))
        for (size_t i = 0; i < list->len; i++)
            if (key_val(list->items[i], &key, &val) == 0 && key->len &&
                query_add(q, key->str, key->len, val->str, val->len) < 0)
                return -1;
    if ((list = op_list(ops, "replace")))
        for (size_t i = 0; i < list->len; i++) {
            const struct zs_json *item = list->items[i];
            struct replace_op op;
            key = item->type == ZS_JT_OBJECT ? str_member(item, "key") : NULL;
            if (!key) {
                zs_helper_fault(run, "%s: replace entry %zu needs a \"key\"", helper, i);
                return -2;
            }
            if (op_compile(run, item, &op, helper) < 0)
                return -2;
            int all = key->len == 1 && key->str[0] == '*', rc = 0;
            struct zs_buf out = {0};
            for (size_t k = 0; k < q->n && rc == 0; k++) {
                struct qpair *pair = &q->pairs[k];
                if (!all && (pair->key_len != key->len || memcmp(pair->key, key->str, key->len) != 0))
                    continue;
                char *value = NULL;
                rc = op_apply(&op, pair->value, pair->value_len, &out);
                if (rc == 0 && !(value = dup_bytes(out.p ? out.p : "", out.len)))
                    rc = -1;
                if (rc == 0) {
                    free(pair->value);
                    pair->value = value;
                    pair->value_len = out.len;
                }
            }
            zs_buf_free(&out);
            op_free(&op);
            if (rc < 0)
                return -1;
        }
    if ((list = op_list(ops, "delete")))
        for (size_t i = 0; i < list->len; i++)
            if (list->items[i]->type == ZS_JT_STRING && list->items[i]->len)
                query_delete(q, list->items[i]->str, list->items[i]->len);
    return 0;
}

static uint64_t h_req_rewrite_query(struct zs_run *run, void *cookie, uint64_t p, uint64_t n,
                                    uint64_t r3, uint64_t r4, uint64_t r5)
{
    static const char helper[] = "zs_req_rewrite_query";
    struct zs_json *ops = ops_object(run, p, n, helper);
    if (!ops)
        return 0;
    struct zs_reqctx *ctx = zs_script_of(run)->ctx;
    struct query q = {0};
    struct zs_buf out = {0};
    struct zs_span query = ctx->field[ZS_FIELD_QUERY];
    int rc = zs_each_query_pair(zs_ctx_str(ctx, query), query.len, visit_add, &q);
    if (rc == 0)
        rc = query_apply(run, ops, &q, helper);
    if (rc == 0)
        rc = query_encode(&q, &out);
    if (rc == 0)
        rc = zs_ctx_store(ctx, out.p ? out.p : "", out.len, 0, &ctx->field[ZS_FIELD_QUERY]);
    if (rc == -1)
        zs_helper_fault(run, "%s: out of host memory", helper);
    if (rc == 0)
        ctx->changed |= ZS_CHANGED_URI;
    zs_buf_free(&out);
    query_free(&q);
    zs_json_free(ops);
    return 0;
}

const struct zs_helper_def zs_rewrite_helpers[] = {
    {"zs_req_replace_header", h_req_replace_header, NULL},
    {"zs_res_replace_header", h_res_replace_header, NULL},
    {"zs_req_rewrite_uri", h_req_rewrite_uri, NULL},
    {"zs_req_rewrite_query", h_req_rewrite_query, NULL},
};
const size_t zs_rewrite_helpers_count = sizeof(zs_rewrite_helpers) / sizeof(zs_rewrite_helpers[0]);
