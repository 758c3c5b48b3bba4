/* Server-side HTTP/2 over libnghttp2: bytes in → a compact event array, responses out as frames.
 *
 * One `struct zs_h2` per connection. `zs_h2_receive` feeds peer bytes and
 * `zs_h2_send` serialises frames; both fill `events` (ZS_H2_EV_FIELDS int64
 * per event) and `arena` (header blobs, DATA bytes) which the caller reads in
 * one go before the next call. Response bodies are held here (bytes copied
 * in, file ranges read with pread when flow control lets them go), so Python
 * crosses into C once per response, not once per frame.
 */
#ifndef ZSH2_H
#define ZSH2_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <nghttp2/nghttp2.h>

#include "zsfast.h"

#define ZS_H2_EV_FIELDS 5  /* kind, stream id, arena offset, length, aux */
#define ZS_H2_ERRMSG 160

enum zs_h2_event_kind {
    ZS_H2_HEAD = 1,    /* a request head: arena blob "name\0value\0...method\0path\0authority\0protocol";
                          aux: 0, or the 431/414 refusing the stream; length 0 means the blob is empty */
    ZS_H2_DATA = 2,    /* request body bytes in the arena */
    ZS_H2_END = 3,     /* the request's END_STREAM (after DATA or trailers) */
    ZS_H2_CLOSED = 4,  /* a stream Python knows is closed; aux: response body bytes sent */
    ZS_H2_FAST = 5,    /* a request answered here from the static table, for the access log:
                          arena "method\0target"; aux: status | body bytes << 16 */
};
/* Added to the kind of a HEAD event. */
#define ZS_H2_HEAD_ENDED 0x100   /* the head carried END_STREAM: no body follows */
#define ZS_H2_HEAD_ADOPT 0x200   /* its scripts ran in C: Python goes on with ScriptChain.adopt
                                    (zs_fast_worker_chain_req) before the next zs_h2_receive */

enum zs_h2_respond_flags {
    ZS_H2_STREAMED = 1,     /* more body comes with zs_h2_stream_data; END_STREAM after zs_h2_stream_end */
    ZS_H2_RESET_AFTER = 2,  /* a refusal: RST_STREAM(NO_ERROR) after the response if the peer still sends */
    ZS_H2_NO_BODY = 4,      /* END_STREAM goes with the headers */
};

enum zs_h2_close_kind {
    ZS_H2_OPEN = 0,
    ZS_H2_CLOSED_PEER = 1,      /* the peer sent GOAWAY */
    ZS_H2_CLOSED_PROTOCOL = 2,  /* a connection error: GOAWAY sent with its code; errmsg says why */
    ZS_H2_CLOSED_PING = 3,      /* flood of PING frames */
    ZS_H2_CLOSED_SETTINGS = 4,  /* flood of SETTINGS frames */
    ZS_H2_CLOSED_RESET = 5,     /* rapid reset */
};

struct zs_h2_stream;

struct zs_h2 {
    nghttp2_session *session;
    int64_t *events;
    uint32_t nevents, events_cap;
    uint8_t *arena;
    size_t arena_len, arena_cap;
    uint8_t *out;
    size_t out_len, out_cap;
    int closed;                 /* enum zs_h2_close_kind */
    int draining;               /* our graceful GOAWAY is queued: refusing new streams is expected */
    int io_errno;               /* a file body could not be read (0: none); the caller raises */
    char errmsg[ZS_H2_ERRMSG];
    uint32_t max_header_count, max_uri_bytes, max_head_bytes;
    uint32_t max_pings, max_settings, max_resets;
    double flood_window, flood_start, now;
    uint32_t pings, settings, resets;
    uint32_t sources;           /* streams whose response body is still being sent */
    struct zs_h2_stream *streams;  /* every stream with our state, for freeing */
    /* The request head being decoded (one header block at a time on a connection). */
    uint8_t *head;
    size_t head_len, head_cap;
    uint32_t head_count;
    uint64_t head_bytes;
    int head_refusal;           /* 0, or the 431 the head has earned so far */
    nghttp2_rcbuf *method, *path, *authority, *protocol;
    int nomem;
    unsigned head_flags;        /* ZS_FAST_HAS_* of the head being decoded */
    /* What the current zs_h2_receive may answer itself (zs_h2_receive's arguments). */
    const struct zs_fast_table *table;
    int log_fast;
    struct zs_fast_worker *worker;
    const struct zs_fast_conn *conn;
    int adopt;                  /* the head being answered ran its scripts in C: ZS_H2_HEAD_ADOPT */
    time_t date_second;
    char date[40];
};

struct zs_h2_limits {
    uint32_t max_concurrent_streams;
    uint32_t max_header_count;
    uint32_t max_uri_bytes;
    uint32_t max_head_bytes;
    uint32_t max_pings, max_settings, max_resets;
    double flood_window;
};

int zs_h2_new(struct zs_h2 **out, const struct zs_h2_limits *limits, char *err, size_t errlen);
void zs_h2_free(struct zs_h2 *h);
/* `table`: the World's fast table (NULL: none), whose GET/HEAD streams zs_fast_answer answers here with
 * `worker` for `conn`, reported as ZS_H2_FAST events when `log_fast`; a stream whose scripts C ran but
 * cannot finish goes to Python as a ZS_H2_HEAD_ADOPT head. */
int zs_h2_receive(struct zs_h2 *h, const uint8_t *data, size_t len, double now, const struct zs_fast_table *table,
                  struct zs_fast_worker *worker, const struct zs_fast_conn *conn, int log_fast);
int zs_h2_send(struct zs_h2 *h, size_t budget);
int zs_h2_respond(struct zs_h2 *h, int32_t stream_id, const char *headers, size_t headers_len, uint32_t nheaders,
                  const uint8_t *body, size_t body_len, const int64_t *segments, uint32_t nsegments, int fd,
                  int flags);
int64_t zs_h2_stream_data(struct zs_h2 *h, int32_t stream_id, const uint8_t *data, size_t len);
int64_t zs_h2_stream_buffered(struct zs_h2 *h, int32_t stream_id);
int zs_h2_stream_end(struct zs_h2 *h, int32_t stream_id);
int zs_h2_reset(struct zs_h2 *h, int32_t stream_id, uint32_t error_code);
int zs_h2_consume(struct zs_h2 *h, int32_t stream_id, size_t size);
int64_t zs_h2_window(struct zs_h2 *h, int32_t stream_id);
int64_t zs_h2_sent(struct zs_h2 *h, int32_t stream_id);
int zs_h2_blocked(struct zs_h2 *h);
int zs_h2_goaway(struct zs_h2 *h);

#endif
