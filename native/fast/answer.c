/* SPDX-License-Identifier: Apache-2.0 */
/* answer.c: one request's answer from the static table and the C chain, for HTTP/1.1 and HTTP/2 alike. */
#include <stdio.h>
#include <string.h>

#include "fast_int.h"

enum chain_outcome {
    CHAIN_STATIC,  /* no outcome: the table's answer, with the scripts' headers */
    CHAIN_RESPOND, /* zs_respond: the scripts' status and body */
    CHAIN_PYTHON,  /* nothing ran (a pool was empty): Python runs the whole request */
    CHAIN_ADOPT,   /* anything else: Python takes the request over where C left it */
    CHAIN_ERROR
};

static unsigned entry_status(const struct zs_fast_entry *entry)
{
    const uint8_t *h = entry->head;
    return entry->head_len > 12 ? (unsigned)((h[9] - '0') * 100 + (h[10] - '0') * 10 + (h[11] - '0')) : 0;
}

/* The table's entry for this request, or NULL when Python must answer it. */
static const struct zs_fast_entry *entry_for(const struct zs_fast_table *table, const struct zs_fast_conn *conn,
                                             const struct zs_fast_request *request)
{
    if (request->flags & ZS_FAST_HAS_CONDITIONAL)
        return NULL;
    if (conn->sni != NULL && (conn->sni_len != request->host_len
                              || !zs_fast_lower_equal(request->host, (const uint8_t *)conn->sni, request->host_len)))
        return NULL;
    if (!zs_fast_table_host_allowed(table, request->host, request->host_len))
        return NULL;
    const struct zs_fast_entry *entry = zs_fast_table_find(table, request->target, request->path_len);
    if (entry == NULL || (entry->flags & ZS_FAST_PYTHON))
        return NULL;
    if ((entry->flags & ZS_FAST_VARIES) && (request->flags & ZS_FAST_HAS_ACCEPT_ENCODING))
        return NULL;
    return entry;
}

/* An HTTP/1 head's header lines (checked by the parser: "name: value\r\n" up to the blank line) packed
 * into worker->headers with lowercase names, as core/http1.py hands them on. */
static int pack_raw_headers(struct zs_fast_worker *worker, const uint8_t *raw, size_t raw_len)
{
    struct zs_fast_buf *h = &worker->headers;
    h->len = 0;
    const uint8_t *line = memchr(raw, '\n', raw_len) + 1, *stop = raw + raw_len - 2;
    while (line < stop) {
        const uint8_t *colon = memchr(line, ':', (size_t)(stop - line));
        const uint8_t *value = colon + 1, *eol = memchr(value, '\r', (size_t)(stop - value) + 1);
        while (*value == ' ' || *value == '\t')
            value++;
        size_t name_len = (size_t)(colon - line), value_len = (size_t)(eol - value);
        if (zs_fast_buf_reserve(h, name_len + value_len + 2) != 0)
            return -1;
        uint8_t *pair = h->data + h->len;
        for (size_t i = 0; i < name_len; i++)
            pair[i] = line[i] >= 'A' && line[i] <= 'Z' ? line[i] + 32 : line[i];
        pair[name_len] = 0;
        memcpy(pair + name_len + 1, value, value_len);
        pair[name_len + 1 + value_len] = 0;
        h->len += name_len + value_len + 2;
        line = eol + 2;
    }
    return 0;
}

/* The request context as core/handler.py gives it to the chain: method, path, query,
 * scheme, peer; "/" + the relative path; the headers with lowercase names. */
static int begin_request(struct zs_fast_worker *worker, struct zs_reqctx *ctx, uint64_t body_limit,
                         const struct zs_fast_conn *conn, const struct zs_fast_request *request)
{
    struct zs_fast_buf *r = &worker->request;
    r->len = 0;
    const char *method = request->method == ZS_FAST_GET ? "GET" : "HEAD";
    int has_query = request->path_len < request->target_len;
    const uint8_t *query = request->target + request->path_len + has_query;
    size_t query_len = request->target_len - request->path_len - has_query;
    const char *scheme = conn->ssl != NULL ? "https" : "http";
    if (zs_fast_buf_append(r, method, strlen(method) + 1) != 0
        || zs_fast_buf_append(r, request->target, request->path_len) != 0 || zs_fast_buf_append(r, "", 1) != 0
        || zs_fast_buf_append(r, query, query_len) != 0 || zs_fast_buf_append(r, "", 1) != 0
        || zs_fast_buf_append(r, scheme, strlen(scheme) + 1) != 0
        || zs_fast_buf_append(r, conn->peer, conn->peer_len) != 0 || zs_fast_buf_append(r, "", 1) != 0)
        return -1;
    size_t request_len = r->len;
    /* "/" + the path without its outer slashes (clean: nothing else to normalise). */
    size_t start = 1, end = request->path_len;
    while (end > start && request->target[end - 1] == '/')
        end--;
    if (zs_fast_buf_append(r, "/", 1) != 0 || zs_fast_buf_append(r, request->target + start, end - start) != 0)
        return -1;
    const char *headers = request->headers;
    size_t headers_len = request->headers_len;
    if (request->raw != NULL) {
        if (pack_raw_headers(worker, request->raw, request->raw_len) != 0)
            return -1;
        headers = (const char *)worker->headers.data;
        headers_len = worker->headers.len;
    }
    if (zs_reqctx_begin(ctx, (const char *)r->data, request_len, (const char *)r->data + request_len,
                        r->len - request_len, headers, headers_len, request->major, request->minor,
                        conn->ssl != NULL, body_limit) != 0)
        return -1;
    if (conn->info_json != NULL
        && zs_reqctx_set_field(ctx, ZS_FIELD_CONNECTION_INFO, conn->info_json, conn->info_json_len) != 0)
        return -1;
    return 0;
}

/* Runs the chain on worker->req (held on every outcome but CHAIN_PYTHON and CHAIN_ERROR). */
static enum chain_outcome run_chain(struct zs_fast_worker *worker, struct zs_chain *chain, uint64_t body_limit,
                                    const struct zs_fast_conn *conn, const struct zs_fast_request *request,
                                    char *err, size_t errlen)
{
    struct zs_chain_req *req = &worker->req;
    if (zs_chain_begin(chain, req) == ZS_CHAIN_BUSY)
        return CHAIN_PYTHON;
    if (begin_request(worker, req->ctx, body_limit, conn, request) != 0) {
        zs_chain_release(chain, req);
        snprintf(err, errlen, "fast path: the request context refused the request (out of memory?)");
        return CHAIN_ERROR;
    }
    int status = zs_chain_run(chain, req);
    if (status == ZS_CHAIN_BUSY) {
        zs_chain_release(chain, req);
        return CHAIN_PYTHON;
    }
    if (status < 0) {
        zs_chain_release(chain, req);
        snprintf(err, errlen, "fast path: the script chain ran out of memory");
        return CHAIN_ERROR;
    }
    worker->held = chain;
    if (status == ZS_CHAIN_YIELDED || req->log_len || zs_reqctx_hook_count(req->ctx))
        return CHAIN_ADOPT;
    if (req->kind == ZS_CHAIN_NONE)
        return zs_reqctx_changed(req->ctx) ? CHAIN_ADOPT : CHAIN_STATIC;
    if (req->kind == ZS_CHAIN_RESPOND)
        return req->status < 200 ? CHAIN_ADOPT : CHAIN_RESPOND;
    return CHAIN_ADOPT;
}

/* The response headers the scripts' metadata sets (packed name NUL value NUL) into worker->meta;
 * -1 when one is not Latin-1 text the Python path would write as it is. */
static int metadata_headers(struct zs_fast_worker *worker, struct zs_reqctx *ctx)
{
    struct zs_fast_buf *m = &worker->meta;
    m->len = 0;
    const char *packed;
    size_t len;
    if (zs_reqctx_meta_export(ctx, &packed, &len) != 0 || zs_fast_buf_reserve(m, len + 1) != 0)
        return -1;
    m->len = zs_chain_meta_headers(packed, len, (char *)m->data);
    for (size_t i = 0; i < m->len; i++)
        if (m->data[i] >= 0x80)
            return -1;
    return 0;
}

static int is_replaced(const struct zs_fast_buf *repl, const uint8_t *name, size_t name_len)
{
    for (size_t i = 0; i < repl->len;) {
        const uint8_t *n = repl->data + i;
        size_t nl = strlen((const char *)n);
        const uint8_t *v = n + nl + 1;
        if (nl == name_len && memcmp(n, name, nl) == 0)
            return 1;
        i += nl + 1 + strlen((const char *)v) + 1;
    }
    return 0;
}

/* `base` (status line and header lines) with each of `repl`'s headers set as chain.set_headers does:
 * lines of the same name dropped, the new ones appended in order. */
static int compose_head(struct zs_fast_buf *out, const uint8_t *base, size_t base_len, const struct zs_fast_buf *repl)
{
    out->len = 0;
    const uint8_t *line = memchr(base, '\n', base_len) + 1, *end = base + base_len;
    if (zs_fast_buf_append(out, base, (size_t)(line - base)) != 0)
        return -1;
    while (line < end) {
        const uint8_t *eol = memchr(line, '\n', (size_t)(end - line)) + 1;
        const uint8_t *colon = memchr(line, ':', (size_t)(eol - line));
        if (!is_replaced(repl, line, (size_t)(colon - line))
            && zs_fast_buf_append(out, line, (size_t)(eol - line)) != 0)
            return -1;
        line = eol;
    }
    for (size_t i = 0; i < repl->len;) {
        const char *n = (const char *)repl->data + i;
        const char *v = n + strlen(n) + 1;
        if (zs_fast_buf_append(out, n, strlen(n)) != 0 || zs_fast_buf_append(out, ": ", 2) != 0
            || zs_fast_buf_append(out, v, strlen(v)) != 0 || zs_fast_buf_append(out, "\r\n", 2) != 0)
            return -1;
        i += strlen(n) + 1 + strlen(v) + 1;
    }
    return 0;
}

/* The answer of a finished chain, as core/handler.py's _act and _static build it; CHAIN_ADOPT when
 * only Python can (a page to template, a header value it would encode otherwise). */
static enum chain_outcome chain_answer(struct zs_fast_worker *worker, const struct zs_fast_table *table,
                                       const struct zs_fast_entry *entry, enum chain_outcome outcome,
                                       struct zs_fast_answer *answer)
{
    struct zs_chain_req *req = &worker->req;
    int has_meta = zs_reqctx_meta_count(req->ctx) > 0;
    if (has_meta && metadata_headers(worker, req->ctx) != 0)
        return CHAIN_ADOPT;
    if (!has_meta)
        worker->meta.len = 0;
    if (outcome == CHAIN_RESPOND) {
        char base[128];
        size_t n = zs_fast_table_status_line(table, req->status, base);
        n += (size_t)sprintf(base + n, "content-length: %zu\r\n", req->body_len);
        if (compose_head(&worker->head, (const uint8_t *)base, n, &worker->meta) != 0)
            return CHAIN_ERROR;
        answer->body = (const uint8_t *)req->body;
        answer->offset = 0;
        answer->length = req->body_len;
        answer->status = req->status;
    } else {
        if (!has_meta)
            return CHAIN_STATIC; /* the table's answer as it is */
        if (entry->flags & ZS_FAST_TEMPLATE_PYTHON)
            return CHAIN_ADOPT;
        const uint8_t *base = entry->head;
        size_t base_len = entry->head_len;
        if (entry->flags & ZS_FAST_TEMPLATE) {
            base = entry->tmpl_head;
            base_len = entry->tmpl_head_len;
        }
        if (compose_head(&worker->head, base, base_len, &worker->meta) != 0)
            return CHAIN_ERROR;
    }
    answer->head = worker->head.data;
    answer->head_len = worker->head.len;
    return outcome;
}

int zs_fast_answer(struct zs_fast_worker *worker, const struct zs_fast_table *table, const struct zs_fast_conn *conn,
                   const struct zs_fast_request *request, struct zs_fast_answer *answer, char *err, size_t errlen)
{
    const struct zs_fast_entry *entry = entry_for(table, conn, request);
    if (entry == NULL)
        return ZS_FAST_TO_PYTHON;
    *answer = (struct zs_fast_answer){entry->head, entry->head_len, entry->body, entry->offset, entry->length,
                                      entry_status(entry)};
    uint64_t body_limit;
    struct zs_chain *chain = zs_fast_table_chain(table, &body_limit);
    if (chain == NULL)
        return ZS_FAST_ANSWERED;
    if (worker->req.ctx != NULL)
        return ZS_FAST_TO_PYTHON; /* an earlier request's run waits for Python to adopt it */
    enum chain_outcome outcome = run_chain(worker, chain, body_limit, conn, request, err, errlen);
    if (outcome == CHAIN_STATIC || outcome == CHAIN_RESPOND) {
        outcome = chain_answer(worker, table, entry, outcome, answer);
        if (outcome == CHAIN_ERROR) {
            zs_fast_answer_done(worker);
            snprintf(err, errlen, "fast path: out of memory for an answer's head");
        }
    }
    switch (outcome) {
    case CHAIN_STATIC:
    case CHAIN_RESPOND:
        return ZS_FAST_ANSWERED;
    case CHAIN_ADOPT:
        return ZS_FAST_TO_ADOPT;
    case CHAIN_PYTHON:
        return ZS_FAST_TO_PYTHON;
    default:
        return -1;
    }
}

void zs_fast_answer_done(struct zs_fast_worker *worker)
{
    if (worker->held != NULL && worker->req.ctx != NULL)
        zs_chain_release(worker->held, &worker->req);
    worker->held = NULL;
}

struct zs_chain_req *zs_fast_worker_chain_req(struct zs_fast_worker *worker)
{
    return &worker->req;
}
