/* SPDX-License-Identifier: Apache-2.0 */
/* pump.c: the fast path's connection pump: bytes read in, fast answers sent, the rest handed back to Python. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "zschain.h"
#include "zsfast.h"

/* Ciphertext fed to the read BIO at a time, and plaintext per SSL_write: keeps both BIOs small. */
#define TLS_SLICE 16384
#define OUT_LIMIT (256 * 1024)      /* output one call holds before it sends (or stops taking requests) */
#define BUF_KEEP (1024 * 1024)      /* a scratch buffer grown beyond this is given back after the call */

struct buf {
    uint8_t *data;
    size_t len;
    size_t cap;
};

struct zs_fast_worker {
    struct zs_fast_limits limits;
    struct zs_fast_ids *ids;
    int log_format;
    struct buf in;   /* TLS: the plaintext of this call */
    struct buf out;  /* bytes for the socket */
    struct buf answer; /* TLS: one answer's plaintext before SSL_write */
    struct buf head;   /* an answer's head with the scripts' headers */
    struct buf request; /* the chain's request block, headers and metadata headers */
    struct buf headers;
    struct buf meta;
    struct zs_chain_req req; /* the request the chain runs on; handed to Python on adopt */
    struct buf log;  /* access-log lines not yet taken */
    time_t date_second;
    char date[40];   /* "Sun, 06 Nov 1994 08:49:37 GMT" */
    time_t stamp_second;
    char stamp[24];  /* "1994-11-06T08:49:37Z" */
};

static const char *const WEEKDAYS[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
static const char *const MONTHS[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                     "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

static int reserve(struct buf *b, size_t more)
{
    if (b->len + more <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + more)
        cap *= 2;
    uint8_t *data = realloc(b->data, cap);
    if (data == NULL)
        return -1;
    b->data = data;
    b->cap = cap;
    return 0;
}

static int append(struct buf *b, const void *data, size_t len)
{
    if (reserve(b, len) != 0)
        return -1;
    memcpy(b->data + b->len, data, len);
    b->len += len;
    return 0;
}

static void shrink(struct buf *b)
{
    if (b->cap > BUF_KEEP && b->len == 0) {
        free(b->data);
        b->data = NULL;
        b->cap = 0;
    }
}

struct zs_fast_worker *zs_fast_worker_new(const struct zs_fast_limits *limits, struct zs_fast_ids *ids,
                                          int log_format)
{
    struct zs_fast_worker *worker = calloc(1, sizeof *worker);
    if (worker == NULL)
        return NULL;
    worker->limits = *limits;
    worker->ids = ids;
    worker->log_format = log_format;
    worker->date_second = -1;
    worker->stamp_second = -1;
    return worker;
}

void zs_fast_worker_free(struct zs_fast_worker *worker)
{
    if (worker == NULL)
        return;
    free(worker->in.data);
    free(worker->out.data);
    free(worker->log.data);
    free(worker->answer.data);
    free(worker->head.data);
    free(worker->request.data);
    free(worker->headers.data);
    free(worker->meta.data);
    zs_chain_req_done(&worker->req);
    free(worker);
}

const char *zs_fast_worker_take_log(struct zs_fast_worker *worker, size_t *len)
{
    *len = worker->log.len;
    worker->log.len = 0;
    return (const char *)worker->log.data;
}

/* The Date value of this second (RFC 9110 IMF-fixdate), formatted once per second. */
static const char *date_now(struct zs_fast_worker *worker, time_t now)
{
    if (now != worker->date_second) {
        struct tm tm;
        gmtime_r(&now, &tm);
        snprintf(worker->date, sizeof worker->date, "%s, %02d %s %04d %02d:%02d:%02d GMT", WEEKDAYS[tm.tm_wday],
                 tm.tm_mday, MONTHS[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
        worker->date_second = now;
    }
    return worker->date;
}

static const char *stamp_now(struct zs_fast_worker *worker, time_t now)
{
    if (now != worker->stamp_second) {
        struct tm tm;
        gmtime_r(&now, &tm);
        snprintf(worker->stamp, sizeof worker->stamp, "%04d-%02d-%02dT%02d:%02d:%02dZ", tm.tm_year + 1900,
                 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
        worker->stamp_second = now;
    }
    return worker->stamp;
}

static double monotonic(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Milliseconds as Python writes round(ms, 3): at most three decimals, at least one. */
static void format_ms(char *out, size_t size, double ms)
{
    int n = snprintf(out, size, "%.3f", ms);
    while (n > 0 && out[n - 1] == '0' && out[n - 2] != '.')
        out[--n] = '\0';
}

/* JSON string bytes of a value the parser let through (no control byte; '"' and '\\' escaped). */
static int append_json_string(struct buf *b, const uint8_t *s, size_t len)
{
    if (append(b, "\"", 1) != 0)
        return -1;
    for (size_t i = 0; i < len; i++) {
        if ((s[i] == '"' || s[i] == '\\') && append(b, "\\", 1) != 0)
            return -1;
        if (append(b, s + i, 1) != 0)
            return -1;
    }
    return append(b, "\"", 1);
}

/* One access-log line, in core/accesslog.py's text or JSON format. */
static int log_request(struct zs_fast_worker *worker, const struct zs_fast_conn *conn, const struct zs_fast_head *head,
                       const char *id, unsigned status, uint64_t sent, double duration, time_t now)
{
    struct buf *b = &worker->log;
    char ms[48];
    format_ms(ms, sizeof ms, duration * 1000);
    const char *method = head->method == ZS_FAST_GET ? "GET" : "HEAD";
    char line[256];
    if (worker->log_format == ZS_FAST_LOG_TEXT) {
        int n = snprintf(line, sizeof line, "[request] %s %s %.*s %s ", stamp_now(worker, now), id,
                         (int)conn->client_len, conn->client, method);
        if (append(b, line, (size_t)n) != 0 || append(b, head->target, head->target_len) != 0)
            return -1;
        n = snprintf(line, sizeof line, " %u %llu %sms HTTP/1.%d", status, (unsigned long long)sent, ms, head->minor);
        if (append(b, line, (size_t)n) != 0)
            return -1;
        if (conn->ja4 != NULL && (append(b, " ja4=", 5) != 0 || append(b, conn->ja4, conn->ja4_len) != 0))
            return -1;
        return append(b, "\n", 1);
    }
    int n = snprintf(line, sizeof line, "{\"time\":\"%s\",\"id\":\"%s\",\"client\":", stamp_now(worker, now), id);
    if (append(b, line, (size_t)n) != 0 || append_json_string(b, (const uint8_t *)conn->client, conn->client_len) != 0)
        return -1;
    n = snprintf(line, sizeof line, ",\"method\":\"%s\",\"path\":", method);
    if (append(b, line, (size_t)n) != 0 || append_json_string(b, head->target, head->target_len) != 0)
        return -1;
    n = snprintf(line, sizeof line, ",\"status\":%u,\"bytes\":%llu,\"duration_ms\":%s,\"protocol\":\"HTTP/1.%d\"",
                 status, (unsigned long long)sent, ms, head->minor);
    if (append(b, line, (size_t)n) != 0)
        return -1;
    if (conn->ja4 != NULL && (append(b, ",\"ja4\":", 7) != 0
                              || append_json_string(b, (const uint8_t *)conn->ja4, conn->ja4_len) != 0))
        return -1;
    return append(b, "}\n", 2);
}

/* What one answer is made of: its head up to the date line, and its body. */
struct answer {
    const uint8_t *head;
    size_t head_len;
    const uint8_t *body; /* in memory, or NULL: `length` bytes at `offset` of the tar */
    uint64_t offset;
    uint64_t length;     /* of a GET; HEAD sends none */
    unsigned status;
};

/* `length` bytes at `offset` of the tar appended to `b` (room reserved by the caller). */
static int append_file(struct buf *b, int fd, uint64_t offset, uint64_t length, char *err, size_t errlen)
{
    uint64_t done = 0;
    while (done < length) {
        ssize_t n = pread(fd, b->data + b->len + done, length - done, (off_t)(offset + done));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            snprintf(err, errlen, "reading the site failed: %s", n < 0 ? strerror(errno) : "site file ended early");
            return -1;
        }
        done += (uint64_t)n;
    }
    b->len += length;
    return 0;
}

/* The answer's bytes (head, date, connection and, unless `head_only`, the body) appended to `b`. */
static int build_answer(struct zs_fast_worker *worker, int fd, const struct answer *answer,
                        const struct zs_fast_head *head, time_t now, int head_only, struct buf *b, char *err,
                        size_t errlen)
{
    static const char keep_alive_10[] = "connection: keep-alive\r\n\r\n", close[] = "connection: close\r\n\r\n";
    uint64_t body = head->method == ZS_FAST_GET && !head_only ? answer->length : 0;
    if (reserve(b, answer->head_len + 80 + body) != 0) {
        snprintf(err, errlen, "fast path: out of memory for a %llu-byte answer", (unsigned long long)body);
        return -1;
    }
    memcpy(b->data + b->len, answer->head, answer->head_len);
    b->len += answer->head_len;
    b->len += (size_t)sprintf((char *)b->data + b->len, "date: %s\r\n", date_now(worker, now));
    if (!head->keep_alive)
        append(b, close, sizeof close - 1);
    else if (head->minor == 0)
        append(b, keep_alive_10, sizeof keep_alive_10 - 1);
    else
        append(b, "\r\n", 2);
    if (body && answer->body != NULL) {
        memcpy(b->data + b->len, answer->body, body);
        b->len += body;
    } else if (body) {
        return append_file(b, fd, answer->offset, body, err, errlen);
    }
    return 0;
}

/* ---- the request chain ---- */

enum chain_outcome {
    CHAIN_STATIC,  /* no outcome: the table's answer, with the scripts' headers */
    CHAIN_RESPOND, /* zs_respond: the scripts' status and body */
    CHAIN_PYTHON,  /* nothing ran (a pool was empty): Python runs the whole request */
    CHAIN_ADOPT,   /* anything else: Python takes the request over where C left it */
    CHAIN_ERROR
};

static int append_pair(struct buf *b, const uint8_t *name, size_t name_len, const uint8_t *value, size_t value_len)
{
    if (reserve(b, name_len + value_len + 2) != 0)
        return -1;
    memcpy(b->data + b->len, name, name_len);
    b->data[b->len + name_len] = 0;
    memcpy(b->data + b->len + name_len + 1, value, value_len);
    b->data[b->len + name_len + 1 + value_len] = 0;
    b->len += name_len + value_len + 2;
    return 0;
}

/* The request context as core/handler.py gives it to the chain: method, path, query,
 * scheme, peer; "/" + the relative path; the headers with lowercase names. */
static int begin_request(struct zs_fast_worker *worker, struct zs_reqctx *ctx, uint64_t body_limit,
                         const struct zs_fast_conn *conn, const struct zs_fast_head *head, const uint8_t *raw,
                         size_t raw_len)
{
    struct buf *r = &worker->request, *h = &worker->headers;
    r->len = 0;
    h->len = 0;
    const char *method = head->method == ZS_FAST_GET ? "GET" : "HEAD";
    const uint8_t *query = head->target + head->path_len + (head->path_len < head->target_len);
    size_t query_len = head->target_len - head->path_len - (head->path_len < head->target_len);
    const char *scheme = conn->ssl != NULL ? "https" : "http";
    if (append(r, method, strlen(method) + 1) != 0 || append(r, head->target, head->path_len) != 0
        || append(r, "", 1) != 0 || append(r, query, query_len) != 0 || append(r, "", 1) != 0
        || append(r, scheme, strlen(scheme) + 1) != 0 || append(r, conn->peer, conn->peer_len) != 0
        || append(r, "", 1) != 0)
        return -1;
    size_t request_len = r->len;
    /* "/" + the path without its outer slashes (clean: nothing else to normalise). */
    const uint8_t *path = head->target;
    size_t start = 1, end = head->path_len;
    while (end > start && path[end - 1] == '/')
        end--;
    if (append(r, "/", 1) != 0 || append(r, path + start, end - start) != 0)
        return -1;
    /* The header lines the parser checked: "name: value\r\n" up to the blank line. */
    const uint8_t *line = memchr(raw, '\n', raw_len) + 1, *stop = raw + raw_len - 2;
    while (line < stop) {
        const uint8_t *colon = memchr(line, ':', (size_t)(stop - line));
        const uint8_t *value = colon + 1, *eol = memchr(value, '\r', (size_t)(stop - value) + 1);
        while (*value == ' ' || *value == '\t')
            value++;
        size_t name_len = (size_t)(colon - line);
        if (reserve(h, name_len) != 0)
            return -1;
        for (size_t i = 0; i < name_len; i++)
            h->data[h->len + i] = line[i] >= 'A' && line[i] <= 'Z' ? line[i] + 32 : line[i];
        if (append_pair(h, h->data + h->len, name_len, value, (size_t)(eol - value)) != 0)
            return -1;
        line = eol + 2;
    }
    if (zs_reqctx_begin(ctx, (const char *)r->data, request_len, (const char *)r->data + request_len,
                        r->len - request_len, (const char *)h->data, h->len, 1, head->minor, conn->ssl != NULL,
                        body_limit) != 0)
        return -1;
    if (conn->info_json != NULL
        && zs_reqctx_set_field(ctx, ZS_FIELD_CONNECTION_INFO, conn->info_json, conn->info_json_len) != 0)
        return -1;
    return 0;
}

static enum chain_outcome run_chain(struct zs_fast_worker *worker, struct zs_chain *chain, uint64_t body_limit,
                                    const struct zs_fast_conn *conn, const struct zs_fast_head *head,
                                    const uint8_t *raw, size_t raw_len, char *err, size_t errlen)
{
    struct zs_chain_req *req = &worker->req;
    if (zs_chain_begin(chain, req) == ZS_CHAIN_BUSY)
        return CHAIN_PYTHON;
    if (begin_request(worker, req->ctx, body_limit, conn, head, raw, raw_len) != 0) {
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
    struct buf *m = &worker->meta;
    m->len = 0;
    const char *packed;
    size_t len;
    if (zs_reqctx_meta_export(ctx, &packed, &len) != 0 || reserve(m, len + 1) != 0)
        return -1;
    m->len = zs_chain_meta_headers(packed, len, (char *)m->data);
    for (size_t i = 0; i < m->len; i++)
        if (m->data[i] >= 0x80)
            return -1;
    return 0;
}

static int is_replaced(const struct buf *repl, const uint8_t *name, size_t name_len)
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
static int compose_head(struct buf *out, const uint8_t *base, size_t base_len, const struct buf *repl)
{
    out->len = 0;
    const uint8_t *line = memchr(base, '\n', base_len) + 1, *end = base + base_len;
    if (append(out, base, (size_t)(line - base)) != 0)
        return -1;
    while (line < end) {
        const uint8_t *eol = memchr(line, '\n', (size_t)(end - line)) + 1;
        const uint8_t *colon = memchr(line, ':', (size_t)(eol - line));
        if (!is_replaced(repl, line, (size_t)(colon - line)) && append(out, line, (size_t)(eol - line)) != 0)
            return -1;
        line = eol;
    }
    for (size_t i = 0; i < repl->len;) {
        const char *n = (const char *)repl->data + i;
        const char *v = n + strlen(n) + 1;
        if (append(out, n, strlen(n)) != 0 || append(out, ": ", 2) != 0 || append(out, v, strlen(v)) != 0
            || append(out, "\r\n", 2) != 0)
            return -1;
        i += strlen(n) + 1 + strlen(v) + 1;
    }
    return 0;
}

/* The answer of a finished chain, as core/handler.py's _act and _static build it; CHAIN_ADOPT when
 * only Python can (a page to template, a header value it would encode otherwise). */
static enum chain_outcome chain_answer(struct zs_fast_worker *worker, const struct zs_fast_table *table,
                                       const struct zs_fast_entry *entry, enum chain_outcome outcome,
                                       struct answer *answer)
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

struct zs_chain_req *zs_fast_worker_chain_req(struct zs_fast_worker *worker)
{
    return &worker->req;
}

/* TLS: plaintext `data` into records appended to worker->out, in slices that keep the write BIO small. */
static int encrypt(struct zs_fast_worker *worker, SSL *ssl, const uint8_t *data, size_t len, char *err, size_t errlen)
{
    BIO *wbio = SSL_get_wbio(ssl);
    size_t done = 0;
    while (done < len) {
        size_t slice = len - done < TLS_SLICE ? len - done : TLS_SLICE;
        int n = SSL_write(ssl, data + done, (int)slice);
        if (n <= 0) {
            ERR_clear_error();
            snprintf(err, errlen, "TLS write failed (SSL_write error %d)", SSL_get_error(ssl, n));
            return -1;
        }
        done += (size_t)n;
        size_t pending = BIO_pending(wbio);
        if (reserve(&worker->out, pending) != 0) {
            snprintf(err, errlen, "fast path: out of memory for %zu bytes of TLS records", pending);
            return -1;
        }
        int got = BIO_read(wbio, worker->out.data + worker->out.len, (int)pending);
        if (got > 0)
            worker->out.len += (size_t)got;
    }
    return 0;
}

/* TLS: records the session queued itself (tickets, key updates) go out first. */
static int drain_wbio(struct zs_fast_worker *worker, SSL *ssl, char *err, size_t errlen)
{
    BIO *wbio = SSL_get_wbio(ssl);
    size_t pending = BIO_pending(wbio);
    if (!pending)
        return 0;
    if (reserve(&worker->out, pending) != 0) {
        snprintf(err, errlen, "fast path: out of memory for %zu bytes of TLS records", pending);
        return -1;
    }
    int got = BIO_read(wbio, worker->out.data + worker->out.len, (int)pending);
    if (got > 0)
        worker->out.len += (size_t)got;
    return 0;
}

/* TLS: ciphertext in, every whole record's plaintext into worker->in. */
static int decrypt(struct zs_fast_worker *worker, SSL *ssl, const uint8_t *data, size_t len,
                   struct zs_fast_result *result, char *err, size_t errlen)
{
    BIO *rbio = SSL_get_rbio(ssl);
    size_t fed = 0;
    do {
        size_t slice = len - fed < TLS_SLICE ? len - fed : TLS_SLICE;
        if (slice && BIO_write(rbio, data + fed, (int)slice) != (int)slice) {
            snprintf(err, errlen, "TLS: BIO_write failed");
            return -1;
        }
        fed += slice;
        for (;;) {
            if (reserve(&worker->in, TLS_SLICE) != 0) {
                snprintf(err, errlen, "fast path: out of memory for TLS plaintext");
                return -1;
            }
            int n = SSL_read(ssl, worker->in.data + worker->in.len, TLS_SLICE);
            if (n > 0) {
                worker->in.len += (size_t)n;
                if (BIO_pending(rbio))
                    continue;
                break;
            }
            if (SSL_get_error(ssl, n) != SSL_ERROR_WANT_READ) {
                /* An alert, close_notify or bad record: the rest stays for the TLS session, which
                 * reads the same (sticky) condition again and reports it. */
                ERR_clear_error();
                if (fed < len && BIO_write(rbio, data + fed, (int)(len - fed)) != (int)(len - fed)) {
                    snprintf(err, errlen, "TLS: BIO_write failed");
                    return -1;
                }
                result->tls_event = 1;
                return 0;
            }
            break;
        }
    } while (fed < len);
    return 0;
}

/* send(2) what worker->out holds; 0 (the rest stays in out), or -2 when the peer has gone. */
static int send_out(struct zs_fast_worker *worker, int fd, size_t *sent_total, char *err, size_t errlen)
{
    struct buf *out = &worker->out;
    while (*sent_total < out->len) {
        ssize_t n = send(fd, out->data + *sent_total, out->len - *sent_total, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
            *sent_total += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return 0;
        snprintf(err, errlen, "sending failed: %s", n < 0 ? strerror(errno) : "the socket took nothing");
        return -2;
    }
    return 0;
}

/* Plaintext: a file body straight from the tar to the socket once everything before it is sent
 * (as the Python path does with sendfile); what the socket does not take is read into worker->out. */
static int send_file_body(struct zs_fast_worker *worker, int sock, int fd, uint64_t offset, uint64_t length,
                          size_t *sent_total, char *err, size_t errlen)
{
    int status = send_out(worker, sock, sent_total, err, errlen);
    if (status != 0)
        return status;
    uint64_t done = 0;
    while (*sent_total == worker->out.len && done < length) {
        off_t position = (off_t)(offset + done);
        ssize_t n = sendfile(sock, fd, &position, length - done);
        if (n > 0) {
            done += (uint64_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        if (n < 0 && (errno == EPIPE || errno == ECONNRESET)) {
            snprintf(err, errlen, "sending failed: %s", strerror(errno));
            return -2;
        }
        snprintf(err, errlen, "reading the site failed: %s", n < 0 ? strerror(errno) : "site file ended early");
        return -1;
    }
    if (done < length) {
        if (reserve(&worker->out, length - done) != 0) {
            snprintf(err, errlen, "fast path: out of memory for a %llu-byte body", (unsigned long long)(length - done));
            return -1;
        }
        return append_file(&worker->out, fd, offset + done, length - done, err, errlen);
    }
    return 0;
}

static unsigned entry_status(const struct zs_fast_entry *entry)
{
    const uint8_t *h = entry->head;
    return entry->head_len > 12 ? (unsigned)((h[9] - '0') * 100 + (h[10] - '0') * 10 + (h[11] - '0')) : 0;
}

static int equal_lowercase(const char *lower, const uint8_t *any, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        uint8_t c = any[i];
        if (c >= 'A' && c <= 'Z')
            c += 32;
        if (c != (uint8_t)lower[i])
            return 0;
    }
    return 1;
}

/* The table's answer for this head, or NULL when Python must answer it. */
static const struct zs_fast_entry *answer_for(const struct zs_fast_table *table, const struct zs_fast_conn *conn,
                                              const struct zs_fast_head *head)
{
    if (head->flags & ZS_FAST_HAS_CONDITIONAL)
        return NULL;
    if (conn->sni != NULL
        && (conn->sni_len != head->host_len || !equal_lowercase(conn->sni, head->host, head->host_len)))
        return NULL;
    if (!zs_fast_table_host_allowed(table, head->host, head->host_len))
        return NULL;
    const struct zs_fast_entry *entry = zs_fast_table_find(table, head->target, head->path_len);
    if (entry == NULL || (entry->flags & ZS_FAST_PYTHON))
        return NULL;
    if ((entry->flags & ZS_FAST_VARIES) && (head->flags & ZS_FAST_HAS_ACCEPT_ENCODING))
        return NULL;
    return entry;
}

int zs_fast_pump(struct zs_fast_worker *worker, const struct zs_fast_table *table, const struct zs_fast_conn *conn,
                 const uint8_t *data, size_t len, int can_send, struct zs_fast_result *result, char *err,
                 size_t errlen)
{
    SSL *ssl = conn->ssl;
    memset(result, 0, sizeof *result);
    /* What the previous call returned has been copied by now. */
    worker->in.len = 0;
    worker->out.len = 0;
    worker->answer.len = 0;
    shrink(&worker->in);
    shrink(&worker->out);
    shrink(&worker->answer);
    const uint8_t *plain = data;
    size_t plain_len = len;
    int status = 0;
    if (ssl != NULL) {
        if (decrypt(worker, ssl, data, len, result, err, errlen) != 0 || drain_wbio(worker, ssl, err, errlen) != 0)
            return -1;
        plain = worker->in.data;
        plain_len = worker->in.len;
    }
    struct timespec wall;
    clock_gettime(CLOCK_REALTIME, &wall);
    time_t now = wall.tv_sec;
    size_t pos = 0, sent = 0;
    uint64_t body_limit;
    struct zs_chain *chain = zs_fast_table_chain(table, &body_limit);
    while (pos < plain_len) {
        if (worker->out.len - sent >= OUT_LIMIT) {
            if (!can_send)
                break;
            status = send_out(worker, conn->fd, &sent, err, errlen);
            if (status != 0 || worker->out.len > sent)
                break; /* the socket is full: the rest waits in Python's queue, with its back-pressure */
        }
        struct zs_fast_head head;
        long used = zs_fast_parse_head(plain + pos, plain_len - pos, &worker->limits, &head);
        if (used <= 0)
            break;
        const struct zs_fast_entry *entry = answer_for(table, conn, &head);
        if (entry == NULL)
            break;
        double started = worker->log_format != ZS_FAST_LOG_NONE ? monotonic() : 0.0;
        struct answer answer = {entry->head, entry->head_len, entry->body, entry->offset, entry->length,
                                entry_status(entry)};
        int held = 0; /* worker->req holds a chain run to release */
        if (chain != NULL) {
            enum chain_outcome outcome = run_chain(worker, chain, body_limit, conn, &head, plain + pos,
                                                   (size_t)used, err, errlen);
            held = outcome != CHAIN_PYTHON && outcome != CHAIN_ERROR;
            if (held)
                outcome = chain_answer(worker, table, entry, outcome, &answer);
            if (outcome == CHAIN_ADOPT) {
                result->adopt = 1;
                result->adopt_len = (size_t)used;
                break;
            }
            if (outcome == CHAIN_PYTHON)
                break;
            if (outcome == CHAIN_ERROR) {
                if (held)
                    zs_chain_release(chain, &worker->req);
                status = -1;
                break;
            }
        }
        uint64_t body = head.method == ZS_FAST_GET ? answer.length : 0;
        int fd = zs_fast_table_fd(table);
        int file_body = body && answer.body == NULL;
        struct buf *target = &worker->out;
        if (ssl != NULL) {
            target = &worker->answer;
            target->len = 0;
        }
        int use_sendfile = ssl == NULL && can_send && file_body;
        int failed = build_answer(worker, fd, &answer, &head, now, use_sendfile, target, err, errlen) != 0
                     || (ssl != NULL && encrypt(worker, ssl, target->data, target->len, err, errlen) != 0);
        if (!failed && use_sendfile)
            failed = send_file_body(worker, conn->fd, fd, answer.offset, body, &sent, err, errlen);
        if (held)
            zs_chain_release(chain, &worker->req);
        if (failed) {
            status = failed == -2 ? -2 : -1;
            break;
        }
        pos += (size_t)used;
        result->served++;
        struct zs_fast_ids *ids = worker->ids;
        ids->counter++;
        if (worker->log_format != ZS_FAST_LOG_NONE) {
            char id[48];
            snprintf(id, sizeof id, "%s-%llx", ids->prefix, (unsigned long long)ids->counter);
            if (log_request(worker, conn, &head, id, answer.status, body, monotonic() - started, now) != 0) {
                snprintf(err, errlen, "fast path: out of memory for the access log");
                status = -1;
                break;
            }
        }
        if (!head.keep_alive) {
            result->close = 1;
            pos = plain_len; /* Python ignores what follows a last request */
            break;
        }
    }
    if (status == 0 && can_send)
        status = send_out(worker, conn->fd, &sent, err, errlen);
    result->rest_offset = pos;
    result->rest_len = plain_len - pos;
    result->rest = ssl != NULL ? worker->in.data + pos : data + pos;
    result->unsent = worker->out.data + sent;
    result->unsent_len = worker->out.len - sent;
    return status;
}
