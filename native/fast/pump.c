/* SPDX-License-Identifier: Apache-2.0 */
/* pump.c: the fast path's connection pump: bytes read in, fast answers sent, the rest handed back to Python. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "fast_int.h"
#include "zschain.h"
#include "zsfast.h"

/* Ciphertext fed to the read BIO at a time, and plaintext per SSL_write: keeps both BIOs small. */
#define TLS_SLICE 16384
#define OUT_LIMIT (256 * 1024)      /* output one call holds before it sends (or stops taking requests) */
#define BUF_KEEP (1024 * 1024)      /* a scratch buffer grown beyond this is given back after the call */

static const char *const WEEKDAYS[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
static const char *const MONTHS[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                     "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

int zs_fast_buf_reserve(struct zs_fast_buf *b, size_t more)
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

int zs_fast_buf_append(struct zs_fast_buf *b, const void *data, size_t len)
{
    if (zs_fast_buf_reserve(b, len) != 0)
        return -1;
    memcpy(b->data + b->len, data, len);
    b->len += len;
    return 0;
}

static void shrink(struct zs_fast_buf *b)
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
static int append_json_string(struct zs_fast_buf *b, const uint8_t *s, size_t len)
{
    if (zs_fast_buf_append(b, "\"", 1) != 0)
        return -1;
    for (size_t i = 0; i < len; i++) {
        if ((s[i] == '"' || s[i] == '\\') && zs_fast_buf_append(b, "\\", 1) != 0)
            return -1;
        if (zs_fast_buf_append(b, s + i, 1) != 0)
            return -1;
    }
    return zs_fast_buf_append(b, "\"", 1);
}

/* One access-log line, in core/accesslog.py's text or JSON format. */
static int log_request(struct zs_fast_worker *worker, const struct zs_fast_conn *conn, const struct zs_fast_head *head,
                       const char *id, unsigned status, uint64_t sent, double duration, time_t now)
{
    struct zs_fast_buf *b = &worker->log;
    char ms[48];
    format_ms(ms, sizeof ms, duration * 1000);
    const char *method = head->method == ZS_FAST_GET ? "GET" : "HEAD";
    char line[256];
    if (worker->log_format == ZS_FAST_LOG_TEXT) {
        int n = snprintf(line, sizeof line, "[request] %s %s %.*s %s ", stamp_now(worker, now), id,
                         (int)conn->client_len, conn->client, method);
        if (zs_fast_buf_append(b, line, (size_t)n) != 0 || zs_fast_buf_append(b, head->target, head->target_len) != 0)
            return -1;
        n = snprintf(line, sizeof line, " %u %llu %sms HTTP/1.%d", status, (unsigned long long)sent, ms, head->minor);
        if (zs_fast_buf_append(b, line, (size_t)n) != 0)
            return -1;
        if (conn->ja4 != NULL
            && (zs_fast_buf_append(b, " ja4=", 5) != 0 || zs_fast_buf_append(b, conn->ja4, conn->ja4_len) != 0))
            return -1;
        return zs_fast_buf_append(b, "\n", 1);
    }
    int n = snprintf(line, sizeof line, "{\"time\":\"%s\",\"id\":\"%s\",\"client\":", stamp_now(worker, now), id);
    if (zs_fast_buf_append(b, line, (size_t)n) != 0
        || append_json_string(b, (const uint8_t *)conn->client, conn->client_len) != 0)
        return -1;
    n = snprintf(line, sizeof line, ",\"method\":\"%s\",\"path\":", method);
    if (zs_fast_buf_append(b, line, (size_t)n) != 0 || append_json_string(b, head->target, head->target_len) != 0)
        return -1;
    n = snprintf(line, sizeof line, ",\"status\":%u,\"bytes\":%llu,\"duration_ms\":%s,\"protocol\":\"HTTP/1.%d\"",
                 status, (unsigned long long)sent, ms, head->minor);
    if (zs_fast_buf_append(b, line, (size_t)n) != 0)
        return -1;
    if (conn->ja4 != NULL && (zs_fast_buf_append(b, ",\"ja4\":", 7) != 0
                              || append_json_string(b, (const uint8_t *)conn->ja4, conn->ja4_len) != 0))
        return -1;
    return zs_fast_buf_append(b, "}\n", 2);
}

/* `length` bytes at `offset` of the tar appended to `b` (room reserved by the caller). */
static int append_file(struct zs_fast_buf *b, int fd, uint64_t offset, uint64_t length, char *err, size_t errlen)
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
static int build_answer(struct zs_fast_worker *worker, int fd, const struct zs_fast_answer *answer,
                        const struct zs_fast_head *head, time_t now, int head_only, struct zs_fast_buf *b, char *err,
                        size_t errlen)
{
    static const char keep_alive_10[] = "connection: keep-alive\r\n\r\n", close[] = "connection: close\r\n\r\n";
    uint64_t body = head->method == ZS_FAST_GET && !head_only ? answer->length : 0;
    if (zs_fast_buf_reserve(b, answer->head_len + 80 + body) != 0) {
        snprintf(err, errlen, "fast path: out of memory for a %llu-byte answer", (unsigned long long)body);
        return -1;
    }
    memcpy(b->data + b->len, answer->head, answer->head_len);
    b->len += answer->head_len;
    b->len += (size_t)sprintf((char *)b->data + b->len, "date: %s\r\n", date_now(worker, now));
    if (!head->keep_alive)
        zs_fast_buf_append(b, close, sizeof close - 1);
    else if (head->minor == 0)
        zs_fast_buf_append(b, keep_alive_10, sizeof keep_alive_10 - 1);
    else
        zs_fast_buf_append(b, "\r\n", 2);
    if (body && answer->body != NULL) {
        memcpy(b->data + b->len, answer->body, body);
        b->len += body;
    } else if (body) {
        return append_file(b, fd, answer->offset, body, err, errlen);
    }
    return 0;
}

/* TLS: the records the write BIO holds (ours, or tickets and key updates the session queued) to worker->out. */
static int drain_wbio(struct zs_fast_worker *worker, SSL *ssl, char *err, size_t errlen)
{
    BIO *wbio = SSL_get_wbio(ssl);
    size_t pending = BIO_pending(wbio);
    if (!pending)
        return 0;
    if (zs_fast_buf_reserve(&worker->out, pending) != 0) {
        snprintf(err, errlen, "fast path: out of memory for %zu bytes of TLS records", pending);
        return -1;
    }
    int got = BIO_read(wbio, worker->out.data + worker->out.len, (int)pending);
    if (got > 0)
        worker->out.len += (size_t)got;
    return 0;
}

/* TLS: plaintext `data` into records appended to worker->out, in slices that keep the write BIO small. */
static int encrypt(struct zs_fast_worker *worker, SSL *ssl, const uint8_t *data, size_t len, char *err, size_t errlen)
{
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
        if (drain_wbio(worker, ssl, err, errlen) != 0)
            return -1;
    }
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
            if (zs_fast_buf_reserve(&worker->in, TLS_SLICE) != 0) {
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

/* What a send(2) or sendmsg(2) result means: 1 go on (bytes taken, or EINTR), 0 the socket is full,
 * -2 the peer has gone (message in err). */
static int send_verdict(ssize_t n, char *err, size_t errlen)
{
    if (n > 0 || (n < 0 && errno == EINTR))
        return 1;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        return 0;
    snprintf(err, errlen, "sending failed: %s", n < 0 ? strerror(errno) : "the socket took nothing");
    return -2;
}

/* send(2) what worker->out holds; 0 (the rest stays in out), or -2 when the peer has gone. */
static int send_out(struct zs_fast_worker *worker, int fd, size_t *sent_total, char *err, size_t errlen)
{
    struct zs_fast_buf *out = &worker->out;
    while (*sent_total < out->len) {
        ssize_t n = send(fd, out->data + *sent_total, out->len - *sent_total, MSG_NOSIGNAL | MSG_DONTWAIT);
        int verdict = send_verdict(n, err, errlen);
        if (verdict != 1)
            return verdict;
        if (n > 0)
            *sent_total += (size_t)n;
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
        if (zs_fast_buf_reserve(&worker->out, length - done) != 0) {
            snprintf(err, errlen, "fast path: out of memory for a %llu-byte body", (unsigned long long)(length - done));
            return -1;
        }
        return append_file(&worker->out, fd, offset + done, length - done, err, errlen);
    }
    return 0;
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
        struct zs_fast_request request = {head.method, 1, head.minor, head.flags, head.target, head.target_len,
                                          head.path_len, head.host, head.host_len, plain + pos, (size_t)used,
                                          NULL, 0};
        double started = worker->log_format != ZS_FAST_LOG_NONE ? monotonic() : 0.0;
        struct zs_fast_answer answer;
        int verdict = zs_fast_answer(worker, table, conn, &request, &answer, err, errlen);
        if (verdict == ZS_FAST_TO_ADOPT) {
            result->adopt = 1;
            result->adopt_len = (size_t)used;
            break;
        }
        if (verdict != ZS_FAST_ANSWERED) {
            status = verdict < 0 ? -1 : 0;
            break;
        }
        uint64_t body = head.method == ZS_FAST_GET ? answer.length : 0;
        int fd = zs_fast_table_fd(table);
        int file_body = body && answer.body == NULL;
        struct zs_fast_buf *target = &worker->out;
        if (ssl != NULL) {
            target = &worker->answer;
            target->len = 0;
        }
        int use_sendfile = ssl == NULL && can_send && file_body;
        int failed = build_answer(worker, fd, &answer, &head, now, use_sendfile, target, err, errlen) != 0
                     || (ssl != NULL && encrypt(worker, ssl, target->data, target->len, err, errlen) != 0);
        if (!failed && use_sendfile)
            failed = send_file_body(worker, conn->fd, fd, answer.offset, body, &sent, err, errlen);
        zs_fast_answer_done(worker);
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
    if (status != 0)
        return status;
    return (result->served && worker->log_format != ZS_FAST_LOG_NONE ? ZS_FAST_DID_LOG : 0)
           | (result->unsent_len ? ZS_FAST_DID_UNSENT : 0)
           | (result->rest_len || result->close || result->tls_event ? ZS_FAST_DID_REST : 0);
}

/* Plaintext: head and body with one sendmsg while the socket takes them; what it does not take goes to out. */
static int send_plain(struct zs_fast_worker *worker, int fd, const uint8_t *head, size_t head_len,
                      const uint8_t *body, size_t body_len, int can_send, char *err, size_t errlen)
{
    size_t done = 0, total = head_len + body_len;
    while (can_send && done < total) {
        struct iovec iov[2];
        int count = 0;
        if (done < head_len)
            iov[count++] = (struct iovec){(void *)(head + done), head_len - done};
        size_t body_done = done > head_len ? done - head_len : 0;
        if (body_done < body_len)
            iov[count++] = (struct iovec){(void *)(body + body_done), body_len - body_done};
        struct msghdr message = {.msg_iov = iov, .msg_iovlen = (size_t)count};
        ssize_t n = sendmsg(fd, &message, MSG_NOSIGNAL | MSG_DONTWAIT);
        int verdict = send_verdict(n, err, errlen);
        if (verdict < 0)
            return verdict;
        if (verdict == 0)
            break;
        if (n > 0)
            done += (size_t)n;
    }
    int failed = 0;
    if (done < head_len)
        failed = zs_fast_buf_append(&worker->out, head + done, head_len - done);
    size_t body_done = done > head_len ? done - head_len : 0;
    if (!failed && body_done < body_len)
        failed = zs_fast_buf_append(&worker->out, body + body_done, body_len - body_done);
    if (failed) {
        snprintf(err, errlen, "fast path: out of memory for %zu unsent bytes", total - done);
        return -1;
    }
    return 0;
}

int zs_fast_send(struct zs_fast_worker *worker, const struct zs_fast_conn *conn, const uint8_t *head,
                 size_t head_len, const uint8_t *body, size_t body_len, int can_send,
                 struct zs_fast_result *result, char *err, size_t errlen)
{
    SSL *ssl = conn->ssl;
    memset(result, 0, sizeof *result);
    worker->out.len = 0;
    worker->answer.len = 0;
    shrink(&worker->out);
    shrink(&worker->answer);
    size_t sent = 0;
    int status;
    if (ssl == NULL) {
        status = send_plain(worker, conn->fd, head, head_len, body, body_len, can_send, err, errlen);
    } else {
        /* The head shares its record with the body's first bytes, as when the two were one buffer. */
        size_t joined = head_len && head_len < TLS_SLICE ? TLS_SLICE - head_len : 0;
        if (joined > body_len)
            joined = body_len;
        status = 0;
        if (joined) {
            if (zs_fast_buf_append(&worker->answer, head, head_len) != 0
                || zs_fast_buf_append(&worker->answer, body, joined) != 0) {
                snprintf(err, errlen, "fast path: out of memory for a %zu-byte head", head_len);
                return -1;
            }
            status = encrypt(worker, ssl, worker->answer.data, worker->answer.len, err, errlen);
        } else {
            status = encrypt(worker, ssl, head, head_len, err, errlen);
        }
        if (status == 0)
            status = encrypt(worker, ssl, body + joined, body_len - joined, err, errlen);
        if (status == 0 && can_send)
            status = send_out(worker, conn->fd, &sent, err, errlen);
    }
    if (status != 0)
        return status;
    result->unsent = worker->out.data + sent;
    result->unsent_len = worker->out.len - sent;
    return result->unsent_len ? ZS_FAST_DID_UNSENT : 0;
}
