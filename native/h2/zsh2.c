/* Server-side HTTP/2 glue over libnghttp2: frames in → compact events, responses and bodies out.
 *
 * nghttp2 does the protocol (HPACK, stream states, flow control, frame
 * validation); this file adds what the server needs around it: request heads
 * flattened into one blob per head, the request limits turned into a 4xx for
 * the one stream, flood counting, connection-level flow control reopened at
 * once (stream level too, except for request bodies and CONNECT tunnels, whose consumer
 * reports what it took), and response bodies kept here as bytes and file
 * ranges so flow control can release them without calling back into Python.
 */
#include "zsh2.h"
#include "zschain.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* A piece of a response body: file bytes at `offset`, or (offset < 0) the next `length` bytes of the buffer. */
struct zs_h2_seg {
    int64_t offset;
    uint64_t length;
};

struct zs_h2_stream {
    int32_t id;
    uint8_t python;       /* Python knows this stream: report its close */
    uint8_t refused;      /* answered with a 4xx: its DATA is dropped */
    uint8_t manual;       /* stream window reopened by zs_h2_consume (request bodies, tunnels) */
    uint8_t source;       /* a response body is being sent */
    uint8_t streamed;     /* body bytes keep coming until `ended` */
    uint8_t ended;
    uint8_t deferred;     /* nghttp2 waits for zs_h2_stream_data / zs_h2_stream_end */
    uint8_t reset_after;
    uint8_t answered;     /* a response has been submitted */
    int fd;
    struct zs_h2_seg *segs;
    uint32_t nsegs, seg, segs_cap;
    uint64_t seg_done;    /* bytes of segs[seg] already sent */
    uint8_t *buf;
    size_t buf_start, buf_end, buf_cap;
    uint64_t sent;
    struct zs_h2_stream *next, *prev;
};

static int grow(void **ptr, size_t *cap, size_t need, size_t item)
{
    if (need <= *cap)
        return 0;
    size_t cap2 = *cap ? *cap : 64;
    while (cap2 < need)
        cap2 *= 2;
    void *p = realloc(*ptr, cap2 * item);
    if (!p)
        return -1;
    *ptr = p;
    *cap = cap2;
    return 0;
}

static int append(uint8_t **buf, size_t *len, size_t *cap, const void *data, size_t n)
{
    if (n == 0)
        return 0;
    if (grow((void **)buf, cap, *len + n, 1))
        return -1;
    memcpy(*buf + *len, data, n);
    *len += n;
    return 0;
}

static int event(struct zs_h2 *h, int64_t kind, int32_t stream_id, size_t offset, size_t length, int64_t aux)
{
    size_t cap = h->events_cap;
    if (grow((void **)&h->events, &cap, (size_t)(h->nevents + 1) * ZS_H2_EV_FIELDS, sizeof(int64_t))) {
        h->nomem = 1;
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    h->events_cap = (uint32_t)cap;
    int64_t *e = h->events + (size_t)h->nevents * ZS_H2_EV_FIELDS;
    e[0] = kind;
    e[1] = stream_id;
    e[2] = (int64_t)offset;
    e[3] = (int64_t)length;
    e[4] = aux;
    h->nevents++;
    return 0;
}

static void release_pseudo(struct zs_h2 *h)
{
    nghttp2_rcbuf **slots[] = {&h->method, &h->path, &h->authority, &h->protocol};
    for (size_t i = 0; i < sizeof slots / sizeof *slots; i++) {
        if (*slots[i]) {
            nghttp2_rcbuf_decref(*slots[i]);
            *slots[i] = NULL;
        }
    }
}

static void free_stream(struct zs_h2 *h, struct zs_h2_stream *st)
{
    if (st->prev)
        st->prev->next = st->next;
    else
        h->streams = st->next;
    if (st->next)
        st->next->prev = st->prev;
    if (st->source)
        h->sources--;
    free(st->segs);
    free(st->buf);
    free(st);
}

static struct zs_h2_stream *stream_of(struct zs_h2 *h, int32_t stream_id)
{
    return nghttp2_session_get_stream_user_data(h->session, stream_id);
}

/* Counts one PING, SETTINGS or RST_STREAM; past its limit within the window, the connection ends. */
static void count_flood(struct zs_h2 *h, uint32_t *counter, uint32_t limit, int kind)
{
    if (h->now - h->flood_start > h->flood_window) {
        h->flood_start = h->now;
        h->pings = h->settings = h->resets = 0;
    }
    if (++*counter > limit && h->closed == ZS_H2_OPEN) {
        h->closed = kind;
        nghttp2_session_terminate_session(h->session, NGHTTP2_ENHANCE_YOUR_CALM);
    }
}

/* -- nghttp2 callbacks ------------------------------------------------------ */

static int on_begin_headers(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
    struct zs_h2 *h = user_data;
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    struct zs_h2_stream *st = calloc(1, sizeof *st);
    if (!st) {
        h->nomem = 1;
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    st->id = frame->hd.stream_id;
    st->fd = -1;
    st->next = h->streams;
    if (h->streams)
        h->streams->prev = st;
    h->streams = st;
    nghttp2_session_set_stream_user_data(session, st->id, st);
    h->head_len = 0;
    h->head_count = 0;
    h->head_bytes = 0;
    h->head_refusal = 0;
    h->head_flags = 0;
    release_pseudo(h);
    return 0;
}

static int name_is(nghttp2_vec name, const char *literal)
{
    size_t n = strlen(literal);
    return name.len == n && memcmp(name.base, literal, n) == 0;
}

static int on_header(nghttp2_session *session, const nghttp2_frame *frame, nghttp2_rcbuf *name_buf,
                     nghttp2_rcbuf *value_buf, uint8_t flags, void *user_data)
{
    struct zs_h2 *h = user_data;
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;  /* trailers: only their END_STREAM matters */
    nghttp2_vec name = nghttp2_rcbuf_get_buf(name_buf), value = nghttp2_rcbuf_get_buf(value_buf);
    h->head_bytes += name.len + value.len + 32;  /* RFC 9113 §6.5.2 accounting */
    if (h->head_bytes > h->max_head_bytes && !h->head_refusal)
        h->head_refusal = 431;
    if (name.len && name.base[0] == ':') {
        nghttp2_rcbuf **slot = name_is(name, ":method") ? &h->method
                             : name_is(name, ":path") ? &h->path
                             : name_is(name, ":authority") ? &h->authority
                             : name_is(name, ":protocol") ? &h->protocol : NULL;
        if (slot && !*slot) {
            nghttp2_rcbuf_incref(value_buf);
            *slot = value_buf;
        }
        return 0;
    }
    if (++h->head_count > h->max_header_count && !h->head_refusal)
        h->head_refusal = 431;
    if (name_is(name, "accept-encoding"))
        h->head_flags |= ZS_FAST_HAS_ACCEPT_ENCODING;
    else if (name_is(name, "if-none-match") || name_is(name, "if-modified-since") || name_is(name, "range"))
        h->head_flags |= ZS_FAST_HAS_CONDITIONAL;
    if (h->head_refusal)
        return 0;  /* nothing more is kept of a refused head */
    if (append(&h->head, &h->head_len, &h->head_cap, name.base, name.len)
        || append(&h->head, &h->head_len, &h->head_cap, "", 1)
        || append(&h->head, &h->head_len, &h->head_cap, value.base, value.len)
        || append(&h->head, &h->head_len, &h->head_cap, "", 1)) {
        h->nomem = 1;
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    return 0;
}

static int append_pseudo(struct zs_h2 *h, nghttp2_rcbuf *value, int last)
{
    if (value) {
        nghttp2_vec v = nghttp2_rcbuf_get_buf(value);
        if (append(&h->arena, &h->arena_len, &h->arena_cap, v.base, v.len))
            return -1;
    }
    return last ? 0 : append(&h->arena, &h->arena_len, &h->arena_cap, "", 1);
}

static ssize_t read_body(nghttp2_session *session, int32_t stream_id, uint8_t *out, size_t length,
                         uint32_t *data_flags, nghttp2_data_source *source, void *user_data);

/* A path byte that needs no percent-decoding: unreserved, sub-delims, ':' '@' '/'. */
static int is_path_char(uint8_t c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return 1;
    return c != 0 && strchr("-._~!$&'()*+,;=:@/", c) != NULL;
}

/* The length of the path part (before '?') when Python would take it as it is (no '%', no empty, "." or
 * ".." segment), else 0. */
static size_t clean_path_len(const uint8_t *path, size_t len)
{
    if (len == 0 || path[0] != '/')
        return 0;
    size_t end = 1;
    while (end < len && path[end] != '?') {
        if (!is_path_char(path[end]))
            return 0;
        end++;
    }
    size_t start = 1;
    for (size_t i = 1; i <= end; i++) {
        if (i < end && path[i] != '/')
            continue;
        size_t seg = i - start;
        if (seg == 0 && i < end)
            return 0;
        if ((seg == 1 && path[start] == '.') || (seg == 2 && path[start] == '.' && path[start + 1] == '.'))
            return 0;
        start = i + 1;
    }
    return end;
}

/* The host part of :authority (letters, digits, '.', '-', then an optional ":port"), or 0 when Python must look. */
static size_t host_len(const uint8_t *authority, size_t len)
{
    size_t i = 0;
    while (i < len && ((authority[i] >= 'a' && authority[i] <= 'z') || (authority[i] >= 'A' && authority[i] <= 'Z')
                       || (authority[i] >= '0' && authority[i] <= '9') || authority[i] == '.' || authority[i] == '-'))
        i++;
    if (i == 0)
        return 0;
    if (i < len) {
        if (authority[i] != ':' || i + 1 == len)
            return 0;
        for (size_t j = i + 1; j < len; j++)
            if (authority[j] < '0' || authority[j] > '9')
                return 0;
    }
    return i;
}

static const char *http_date(struct zs_h2 *h)
{
    time_t now = time(NULL);
    if (now != h->date_second) {
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(h->date, sizeof h->date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
        h->date_second = now;
    }
    return h->date;
}

/* Submits `answer` (its HTTP/1.1 head turned into an HTTP/2 header block, plus date) on the stream; 1 when
 * submitted, 0 when Python must answer after all (a head too big for the block, an unreadable tar), <0 on an
 * nghttp2 error. */
static int respond_fast(struct zs_h2 *h, struct zs_h2_stream *st, const struct zs_fast_answer *answer, int head_only)
{
    const uint8_t *p = answer->head, *end = answer->head + answer->head_len;
    if (answer->head_len < 12 || memcmp(p, "HTTP/1.1 ", 9) != 0)
        return 0;
    uint8_t names[1024];
    size_t names_len = 0;
    nghttp2_nv nva[32];
    size_t n = 0;
    nva[n++] = (nghttp2_nv){(uint8_t *)":status", (uint8_t *)p + 9, 7, 3, NGHTTP2_NV_FLAG_NONE};
    p = memchr(p, '\n', (size_t)(end - p));
    if (!p)
        return 0;
    for (p++; p < end; ) {
        const uint8_t *eol = memchr(p, '\r', (size_t)(end - p));
        const uint8_t *colon = memchr(p, ':', (size_t)(end - p));
        if (!eol || !colon || colon > eol || eol + 1 >= end || n + 2 > sizeof nva / sizeof *nva
            || names_len + (size_t)(colon - p) > sizeof names)
            return 0;
        size_t name_len = (size_t)(colon - p);
        for (size_t i = 0; i < name_len; i++)
            names[names_len + i] = p[i] >= 'A' && p[i] <= 'Z' ? p[i] + 32 : p[i];
        const uint8_t *value = colon + 1;
        while (value < eol && *value == ' ')
            value++;
        nva[n++] = (nghttp2_nv){names + names_len, (uint8_t *)value, name_len, (size_t)(eol - value),
                                NGHTTP2_NV_FLAG_NONE};
        names_len += name_len;
        p = eol + 2;
    }
    const char *date = http_date(h);
    nva[n++] = (nghttp2_nv){(uint8_t *)"date", (uint8_t *)date, 4, strlen(date), NGHTTP2_NV_FLAG_NONE};
    uint64_t length = head_only ? 0 : answer->length;
    int rv;
    if (length == 0) {
        rv = nghttp2_submit_response(h->session, st->id, nva, n, NULL);
    } else {
        size_t segs_cap = st->segs_cap;
        if (grow((void **)&st->segs, &segs_cap, 1, sizeof *st->segs) || grow((void **)&st->buf, &st->buf_cap, length, 1))
            return NGHTTP2_ERR_NOMEM;
        st->segs_cap = (uint32_t)segs_cap;
        if (answer->body) {
            memcpy(st->buf, answer->body, length);
        } else if (pread(zs_fast_table_fd(h->table), st->buf, length, (off_t)answer->offset) != (ssize_t)length) {
            return 0;  /* Python reports the unreadable tar */
        }
        st->segs[0] = (struct zs_h2_seg){-1, length};
        st->nsegs = 1;
        st->buf_end = length;
        st->source = 1;
        h->sources++;
        nghttp2_data_provider provider = {.source.ptr = st, .read_callback = read_body};
        rv = nghttp2_submit_response(h->session, st->id, nva, n, &provider);
        if (rv != 0) {
            st->source = 0;
            h->sources--;
        }
    }
    if (rv != 0)
        return rv;
    st->answered = 1;
    return 1;
}

/* Answers a GET/HEAD stream as the Python path would (zs_fast_answer: the static table, through the C chain
 * when the World has one); 1 when answered, 0 when Python must (h->adopt set when it takes over a chain C
 * ran), <0 on an nghttp2 error. */
static int answer_fast(struct zs_h2 *h, struct zs_h2_stream *st, const nghttp2_frame *frame)
{
    const struct zs_fast_table *table = h->table;
    if (!table || !(frame->hd.flags & NGHTTP2_FLAG_END_STREAM) || h->protocol || !h->method || !h->path
        || !h->authority)
        return 0;
    nghttp2_vec method = nghttp2_rcbuf_get_buf(h->method), path = nghttp2_rcbuf_get_buf(h->path);
    nghttp2_vec authority = nghttp2_rcbuf_get_buf(h->authority);
    int head_only = name_is(method, "HEAD");
    if (!head_only && !name_is(method, "GET"))
        return 0;
    size_t path_len = clean_path_len(path.base, path.len), host = host_len(authority.base, authority.len);
    if (!path_len || !host)
        return 0;
    struct zs_fast_request request = {head_only ? ZS_FAST_HEAD : ZS_FAST_GET, 2, 0, h->head_flags, path.base,
                                      path.len, path_len, authority.base, host, NULL, 0, (const char *)h->head,
                                      h->head_len};
    struct zs_fast_answer answer;
    char err[ZS_H2_ERRMSG];
    int verdict = zs_fast_answer(h->worker, table, h->conn, &request, &answer, err, sizeof err);
    if (verdict < 0) {
        snprintf(h->errmsg, sizeof h->errmsg, "%s", err);
        h->nomem = 1;
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    if (verdict != ZS_FAST_ANSWERED) {
        h->adopt = verdict == ZS_FAST_TO_ADOPT;
        return 0;
    }
    int rv = respond_fast(h, st, &answer, head_only);
    if (rv == 0 && zs_fast_worker_chain_req(h->worker)->ctx != NULL) {
        h->adopt = 1; /* the scripts ran: Python answers from their result */
        return 0;
    }
    zs_fast_answer_done(h->worker);
    if (rv <= 0)
        return rv;
    if (h->log_fast) {
        size_t offset = h->arena_len;
        if (append(&h->arena, &h->arena_len, &h->arena_cap, method.base, method.len)
            || append(&h->arena, &h->arena_len, &h->arena_cap, "", 1)
            || append(&h->arena, &h->arena_len, &h->arena_cap, path.base, path.len)) {
            h->nomem = 1;
            return NGHTTP2_ERR_CALLBACK_FAILURE;
        }
        uint64_t length = head_only ? 0 : answer.length;
        rv = event(h, ZS_H2_FAST, st->id, offset, h->arena_len - offset, (int64_t)(answer.status | (length << 16)));
        if (rv != 0)
            return rv;
    }
    return 1;
}

static int on_request_head(struct zs_h2 *h, const nghttp2_frame *frame)
{
    struct zs_h2_stream *st = stream_of(h, frame->hd.stream_id);
    if (!st)
        return 0;
    int refusal = h->head_refusal;
    if (!refusal && h->path) {
        if (nghttp2_rcbuf_get_buf(h->path).len > h->max_uri_bytes)
            refusal = 414;
    }
    h->adopt = 0;
    if (!refusal) {
        int answered = answer_fast(h, st, frame);
        if (answered) {
            release_pseudo(h);
            return answered < 0 ? NGHTTP2_ERR_CALLBACK_FAILURE : 0;
        }
    }
    size_t offset = h->arena_len;
    if (!refusal) {
        if (append(&h->arena, &h->arena_len, &h->arena_cap, h->head, h->head_len)
            || append_pseudo(h, h->method, 0) || append_pseudo(h, h->path, 0)
            || append_pseudo(h, h->authority, 0) || append_pseudo(h, h->protocol, 1)) {
            h->nomem = 1;
            return NGHTTP2_ERR_CALLBACK_FAILURE;
        }
    }
    st->python = 1;
    st->refused = refusal != 0;
    /* A body (or tunnel) stream's window reopens as its consumer takes the bytes (zs_h2_consume). */
    st->manual = h->protocol != NULL || !(frame->hd.flags & NGHTTP2_FLAG_END_STREAM);
    release_pseudo(h);
    int64_t kind = ZS_H2_HEAD | ((frame->hd.flags & NGHTTP2_FLAG_END_STREAM) ? ZS_H2_HEAD_ENDED : 0)
                   | (h->adopt ? ZS_H2_HEAD_ADOPT : 0);
    return event(h, kind, st->id, offset, h->arena_len - offset, refusal);
}

static int on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
    struct zs_h2 *h = user_data;
    if (h->closed)
        return 0;
    struct zs_h2_stream *st;
    switch (frame->hd.type) {
    case NGHTTP2_HEADERS:
        if (frame->headers.cat == NGHTTP2_HCAT_REQUEST)
            return on_request_head(h, frame);
        /* trailers end the stream like a last DATA frame */
        __attribute__((fallthrough));
    case NGHTTP2_DATA:
        st = stream_of(h, frame->hd.stream_id);
        if (st && st->python && !st->refused && (frame->hd.flags & NGHTTP2_FLAG_END_STREAM))
            return event(h, ZS_H2_END, st->id, 0, 0, 0);
        return 0;
    case NGHTTP2_RST_STREAM:
        count_flood(h, &h->resets, h->max_resets, ZS_H2_CLOSED_RESET);
        return 0;
    case NGHTTP2_PING:
        if (!(frame->hd.flags & NGHTTP2_FLAG_ACK))
            count_flood(h, &h->pings, h->max_pings, ZS_H2_CLOSED_PING);
        return 0;
    case NGHTTP2_SETTINGS:
        if (!(frame->hd.flags & NGHTTP2_FLAG_ACK))
            count_flood(h, &h->settings, h->max_settings, ZS_H2_CLOSED_SETTINGS);
        return 0;
    case NGHTTP2_GOAWAY:
        h->closed = ZS_H2_CLOSED_PEER;
        return 0;
    default:
        return 0;
    }
}

static int on_data_chunk(nghttp2_session *session, uint8_t flags, int32_t stream_id, const uint8_t *data,
                         size_t len, void *user_data)
{
    struct zs_h2 *h = user_data;
    /* The connection window reopens at once: what each stream may buffer is bounded elsewhere. */
    nghttp2_session_consume_connection(session, len);
    struct zs_h2_stream *st = stream_of(h, stream_id);
    if (!st || !st->manual || st->refused || h->closed)
        nghttp2_session_consume_stream(session, stream_id, len);
    if (!st || !st->python || st->refused || h->closed)
        return 0;
    size_t offset = h->arena_len;
    if (append(&h->arena, &h->arena_len, &h->arena_cap, data, len)) {
        h->nomem = 1;
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    return event(h, ZS_H2_DATA, stream_id, offset, len, 0);
}

static int on_stream_close(nghttp2_session *session, int32_t stream_id, uint32_t error_code, void *user_data)
{
    struct zs_h2 *h = user_data;
    struct zs_h2_stream *st = stream_of(h, stream_id);
    if (!st)
        return 0;
    int rv = st->python ? event(h, ZS_H2_CLOSED, stream_id, 0, 0, (int64_t)st->sent) : 0;
    nghttp2_session_set_stream_user_data(session, stream_id, NULL);
    free_stream(h, st);
    return rv;
}

static int on_frame_send(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
    struct zs_h2 *h = user_data;
    if (frame->hd.type == NGHTTP2_GOAWAY) {
        if (frame->goaway.error_code != NGHTTP2_NO_ERROR && h->closed == ZS_H2_OPEN) {
            h->closed = ZS_H2_CLOSED_PROTOCOL;
            if (!h->errmsg[0])
                snprintf(h->errmsg, sizeof h->errmsg, "%s", nghttp2_http2_strerror(frame->goaway.error_code));
        }
        return 0;
    }
    if (frame->hd.type == NGHTTP2_RST_STREAM && frame->rst_stream.error_code == NGHTTP2_REFUSED_STREAM
        && h->closed == ZS_H2_OPEN && !h->draining) {
        /* nghttp2 refuses a stream over the cap our SETTINGS announced but the peer may not have applied
           yet; a peer that opens more streams than allowed loses the connection either way. */
        snprintf(h->errmsg, sizeof h->errmsg, "more concurrent streams than SETTINGS_MAX_CONCURRENT_STREAMS");
        return nghttp2_session_terminate_session(session, NGHTTP2_PROTOCOL_ERROR);
    }
    if ((frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA)
        || !(frame->hd.flags & NGHTTP2_FLAG_END_STREAM))
        return 0;
    struct zs_h2_stream *st = stream_of(h, frame->hd.stream_id);
    /* RFC 9113 §8.1: a refused request's remaining body is not wanted. */
    if (st && st->reset_after && !nghttp2_session_get_stream_remote_close(session, st->id))
        return nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_NO_ERROR);
    return 0;
}

static int on_error(nghttp2_session *session, int lib_error_code, const char *msg, size_t len, void *user_data)
{
    struct zs_h2 *h = user_data;
    snprintf(h->errmsg, sizeof h->errmsg, "%.*s", (int)len, msg);
    return 0;
}

/* nghttp2 asks for up to `length` body bytes of a stream. */
static ssize_t read_body(nghttp2_session *session, int32_t stream_id, uint8_t *out, size_t length,
                         uint32_t *data_flags, nghttp2_data_source *source, void *user_data)
{
    struct zs_h2 *h = user_data;
    struct zs_h2_stream *st = source->ptr;
    size_t n = 0;
    while (n < length && st->seg < st->nsegs) {
        struct zs_h2_seg *seg = &st->segs[st->seg];
        size_t take = length - n;
        if (take > seg->length - st->seg_done)
            take = seg->length - st->seg_done;
        if (seg->offset < 0) {
            memcpy(out + n, st->buf + st->buf_start, take);
            st->buf_start += take;
        } else {
            ssize_t got = pread(st->fd, out + n, take, seg->offset + (int64_t)st->seg_done);
            if (got <= 0) {
                h->io_errno = got < 0 ? errno : EIO;
                snprintf(h->errmsg, sizeof h->errmsg, "site file ended early at offset %lld",
                         (long long)(seg->offset + (int64_t)st->seg_done));
                return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
            }
            take = (size_t)got;
        }
        n += take;
        st->seg_done += take;
        if (st->seg_done == seg->length) {
            st->seg++;
            st->seg_done = 0;
        }
    }
    st->sent += n;
    if (st->seg == st->nsegs) {
        st->seg = st->nsegs = 0;
        st->buf_start = st->buf_end = 0;
        if (!st->streamed || st->ended) {
            *data_flags |= NGHTTP2_DATA_FLAG_EOF;
            st->source = 0;
            h->sources--;
        } else if (n == 0) {
            st->deferred = 1;
            return NGHTTP2_ERR_DEFERRED;
        }
    }
    return (ssize_t)n;
}

/* -- API -------------------------------------------------------------------- */

int zs_h2_new(struct zs_h2 **out, const struct zs_h2_limits *limits, char *err, size_t errlen)
{
    struct zs_h2 *h = calloc(1, sizeof *h);
    if (!h) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    h->max_header_count = limits->max_header_count;
    h->max_uri_bytes = limits->max_uri_bytes;
    h->max_head_bytes = limits->max_head_bytes;
    h->max_pings = limits->max_pings;
    h->max_settings = limits->max_settings;
    h->max_resets = limits->max_resets;
    h->flood_window = limits->flood_window;
    h->flood_start = -1e18;

    nghttp2_session_callbacks *callbacks;
    nghttp2_option *option;
    int rv = nghttp2_session_callbacks_new(&callbacks);
    if (rv == 0) {
        rv = nghttp2_option_new(&option);
        if (rv != 0)
            nghttp2_session_callbacks_del(callbacks);
    }
    if (rv != 0) {
        free(h);
        snprintf(err, errlen, "%s", nghttp2_strerror(rv));
        return -1;
    }
    nghttp2_session_callbacks_set_on_begin_headers_callback(callbacks, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback2(callbacks, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(callbacks, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(callbacks, on_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(callbacks, on_stream_close);
    nghttp2_session_callbacks_set_on_frame_send_callback(callbacks, on_frame_send);
    nghttp2_session_callbacks_set_error_callback2(callbacks, on_error);
    nghttp2_option_set_no_auto_window_update(option, 1);
    rv = nghttp2_session_server_new2(&h->session, callbacks, h, option);
    nghttp2_session_callbacks_del(callbacks);
    nghttp2_option_del(option);
    if (rv == 0) {
        nghttp2_settings_entry settings[] = {
            {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, limits->max_concurrent_streams},
            {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, limits->max_head_bytes},
            {NGHTTP2_SETTINGS_ENABLE_CONNECT_PROTOCOL, 1},
        };
        rv = nghttp2_submit_settings(h->session, NGHTTP2_FLAG_NONE, settings, sizeof settings / sizeof *settings);
    }
    if (rv != 0) {
        snprintf(err, errlen, "%s", nghttp2_strerror(rv));
        zs_h2_free(h);
        return -1;
    }
    *out = h;
    return 0;
}

void zs_h2_free(struct zs_h2 *h)
{
    if (!h)
        return;
    if (h->session)
        nghttp2_session_del(h->session);
    while (h->streams)
        free_stream(h, h->streams);
    release_pseudo(h);
    free(h->events);
    free(h->arena);
    free(h->out);
    free(h->head);
    free(h);
}

static void reset_output(struct zs_h2 *h)
{
    h->nevents = 0;
    h->arena_len = 0;
}

int zs_h2_receive(struct zs_h2 *h, const uint8_t *data, size_t len, double now, const struct zs_fast_table *table,
                  struct zs_fast_worker *worker, const struct zs_fast_conn *conn, int log_fast)
{
    reset_output(h);
    if (h->closed)
        return 0;
    h->now = now;
    h->table = table;
    h->worker = worker;
    h->conn = conn;
    h->log_fast = log_fast;
    ssize_t rv = nghttp2_session_mem_recv(h->session, data, len);
    h->table = NULL;  /* borrowed for this call only: a reload may free it */
    h->worker = NULL;
    h->conn = NULL;
    if (rv < 0) {
        if (h->closed == ZS_H2_OPEN || h->nomem) {
            h->closed = ZS_H2_CLOSED_PROTOCOL;
            snprintf(h->errmsg, sizeof h->errmsg, "%s", h->nomem ? "out of memory" : nghttp2_strerror((int)rv));
        }
        nghttp2_session_terminate_session(h->session, NGHTTP2_PROTOCOL_ERROR);
    }
    return (int)h->nevents;
}

int zs_h2_send(struct zs_h2 *h, size_t budget)
{
    reset_output(h);
    h->out_len = 0;
    while (h->out_len < budget) {
        const uint8_t *data;
        ssize_t n = nghttp2_session_mem_send(h->session, &data);
        if (n < 0) {
            if (h->closed == ZS_H2_OPEN) {
                h->closed = ZS_H2_CLOSED_PROTOCOL;
                snprintf(h->errmsg, sizeof h->errmsg, "%s", nghttp2_strerror((int)n));
            }
            return -1;
        }
        if (n == 0)
            break;
        if (append(&h->out, &h->out_len, &h->out_cap, data, (size_t)n))
            return -1;
        if (h->io_errno)
            return -1;
    }
    return h->io_errno ? -1 : (int)h->out_len;
}

int zs_h2_respond(struct zs_h2 *h, int32_t stream_id, const char *headers, size_t headers_len, uint32_t nheaders,
                  const uint8_t *body, size_t body_len, const int64_t *segments, uint32_t nsegments, int fd,
                  int flags)
{
    struct zs_h2_stream *st = stream_of(h, stream_id);
    if (!st || st->answered || h->closed)
        return 1;  /* the stream is gone (reset by the peer, connection closing) or was refused already */
    nghttp2_nv stack_nv[32];
    nghttp2_nv *nva = nheaders <= 32 ? stack_nv : malloc(nheaders * sizeof *nva);
    if (!nva)
        return NGHTTP2_ERR_NOMEM;
    const char *p = headers, *end = headers + headers_len;
    for (uint32_t i = 0; i < nheaders; i++) {
        const char *name = p;
        size_t namelen = strnlen(name, (size_t)(end - p));
        const char *value = name + namelen + 1;
        if (value > end) {
            if (nva != stack_nv)
                free(nva);
            return NGHTTP2_ERR_INVALID_ARGUMENT;
        }
        size_t valuelen = strnlen(value, (size_t)(end - value));
        nva[i] = (nghttp2_nv){(uint8_t *)name, (uint8_t *)value, namelen, valuelen, NGHTTP2_NV_FLAG_NONE};
        p = value + valuelen + 1;
    }
    if (p != end + 1) {  /* a NUL inside a name or value shifted the pairs */
        if (nva != stack_nv)
            free(nva);
        return NGHTTP2_ERR_INVALID_ARGUMENT;
    }
    if (flags & ZS_H2_RESET_AFTER) {
        st->reset_after = 1;
        st->refused = 1;
    }
    int rv;
    if (flags & ZS_H2_NO_BODY) {
        rv = nghttp2_submit_response(h->session, stream_id, nva, nheaders, NULL);
    } else {
        size_t segs_cap = st->segs_cap;
        if (grow((void **)&st->segs, &segs_cap, nsegments ? nsegments : 1, sizeof *st->segs)
            || grow((void **)&st->buf, &st->buf_cap, body_len ? body_len : 1, 1)) {
            if (nva != stack_nv)
                free(nva);
            return NGHTTP2_ERR_NOMEM;
        }
        st->segs_cap = (uint32_t)segs_cap;
        for (uint32_t i = 0; i < nsegments; i++) {
            st->segs[i].offset = segments[2 * i];
            st->segs[i].length = (uint64_t)segments[2 * i + 1];
        }
        st->nsegs = nsegments;
        memcpy(st->buf, body, body_len);
        st->buf_end = body_len;
        st->fd = fd;
        st->streamed = (flags & ZS_H2_STREAMED) != 0;
        st->source = 1;
        h->sources++;
        nghttp2_data_provider provider = {.source.ptr = st, .read_callback = read_body};
        rv = nghttp2_submit_response(h->session, stream_id, nva, nheaders, &provider);
        if (rv != 0) {
            st->source = 0;
            h->sources--;
        }
    }
    if (nva != stack_nv)
        free(nva);
    st->python = 1;
    st->answered = rv == 0;
    return rv;
}

int64_t zs_h2_stream_data(struct zs_h2 *h, int32_t stream_id, const uint8_t *data, size_t len)
{
    struct zs_h2_stream *st = stream_of(h, stream_id);
    if (!st || !st->source || !st->streamed || st->ended)
        return -1;
    if (st->buf_start) {  /* keep the unsent bytes at the front */
        memmove(st->buf, st->buf + st->buf_start, st->buf_end - st->buf_start);
        st->buf_end -= st->buf_start;
        st->buf_start = 0;
    }
    if (st->seg) {
        memmove(st->segs, st->segs + st->seg, (st->nsegs - st->seg) * sizeof *st->segs);
        st->nsegs -= st->seg;
        st->seg = 0;
    }
    size_t segs_cap = st->segs_cap;
    if (append(&st->buf, &st->buf_end, &st->buf_cap, data, len)
        || grow((void **)&st->segs, &segs_cap, st->nsegs + 1, sizeof *st->segs))
        return NGHTTP2_ERR_NOMEM;
    st->segs_cap = (uint32_t)segs_cap;
    if (st->nsegs && st->segs[st->nsegs - 1].offset < 0 && !(st->nsegs == 1 && st->seg_done))
        st->segs[st->nsegs - 1].length += len;
    else
        st->segs[st->nsegs++] = (struct zs_h2_seg){-1, len};
    if (st->deferred) {
        st->deferred = 0;
        nghttp2_session_resume_data(h->session, stream_id);
    }
    return (int64_t)(st->buf_end - st->buf_start);
}

int64_t zs_h2_stream_buffered(struct zs_h2 *h, int32_t stream_id)
{
    struct zs_h2_stream *st = stream_of(h, stream_id);
    return st && st->source ? (int64_t)(st->buf_end - st->buf_start) : -1;
}

int zs_h2_stream_end(struct zs_h2 *h, int32_t stream_id)
{
    struct zs_h2_stream *st = stream_of(h, stream_id);
    if (!st || !st->source)
        return 1;
    st->ended = 1;
    if (st->deferred) {
        st->deferred = 0;
        return nghttp2_session_resume_data(h->session, stream_id);
    }
    return 0;
}

int zs_h2_reset(struct zs_h2 *h, int32_t stream_id, uint32_t error_code)
{
    struct zs_h2_stream *st = stream_of(h, stream_id);
    if (st) {
        if (st->source) {
            st->source = 0;
            h->sources--;
        }
        st->python = 0;  /* the caller has accounted for it */
    }
    if (h->closed || !nghttp2_session_find_stream(h->session, stream_id))
        return 1;
    return nghttp2_submit_rst_stream(h->session, NGHTTP2_FLAG_NONE, stream_id, error_code);
}

int zs_h2_consume(struct zs_h2 *h, int32_t stream_id, size_t size)
{
    if (!nghttp2_session_find_stream(h->session, stream_id))
        return 1;
    return nghttp2_session_consume_stream(h->session, stream_id, size);
}

int64_t zs_h2_window(struct zs_h2 *h, int32_t stream_id)
{
    int32_t stream = nghttp2_session_get_stream_remote_window_size(h->session, stream_id);
    int32_t connection = nghttp2_session_get_remote_window_size(h->session);
    if (stream < 0)
        return -1;
    return stream < connection ? stream : connection;
}

int64_t zs_h2_sent(struct zs_h2 *h, int32_t stream_id)
{
    struct zs_h2_stream *st = stream_of(h, stream_id);
    return st ? (int64_t)st->sent : 0;
}

int zs_h2_blocked(struct zs_h2 *h)
{
    for (struct zs_h2_stream *st = h->streams; st; st = st->next) {
        if (st->source && !st->deferred && (st->seg < st->nsegs || (st->streamed && st->ended)))
            return 1;
    }
    return 0;
}

int zs_h2_goaway(struct zs_h2 *h)
{
    h->draining = 1;
    return nghttp2_submit_goaway(h->session, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(h->session),
                                 NGHTTP2_NO_ERROR, NULL, 0);
}
