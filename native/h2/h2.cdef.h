/* cffi declarations of the HTTP/2 glue (zsh2.h). */
#define ZS_H2_EV_FIELDS 5
#define ZS_H2_HEAD_ENDED 256
#define ZS_H2_HEAD_ADOPT 512
enum zs_h2_event_kind { ZS_H2_HEAD = 1, ZS_H2_DATA = 2, ZS_H2_END = 3, ZS_H2_CLOSED = 4, ZS_H2_FAST = 5 };
enum zs_h2_respond_flags { ZS_H2_STREAMED = 1, ZS_H2_RESET_AFTER = 2, ZS_H2_NO_BODY = 4 };
enum zs_h2_close_kind {
    ZS_H2_OPEN = 0, ZS_H2_CLOSED_PEER = 1, ZS_H2_CLOSED_PROTOCOL = 2, ZS_H2_CLOSED_PING = 3,
    ZS_H2_CLOSED_SETTINGS = 4, ZS_H2_CLOSED_RESET = 5
};
struct zs_h2 {
    int64_t *events;
    uint32_t nevents;
    uint8_t *arena;
    size_t arena_len;
    uint8_t *out;
    int closed;
    int io_errno;
    char errmsg[160];
    uint32_t sources;
    ...;
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
const char *nghttp2_strerror(int lib_error_code);
