/* cffi declarations of the HTTP/1.1 fast path (zsfast.h). */
#define ZS_FAST_GET 0
#define ZS_FAST_HEAD 1
#define ZS_FAST_HAS_ACCEPT_ENCODING 1
#define ZS_FAST_HAS_CONDITIONAL 2
#define ZS_FAST_VARIES 1
#define ZS_FAST_PYTHON 2
#define ZS_FAST_TEMPLATE 4
#define ZS_FAST_TEMPLATE_PYTHON 8
#define ZS_FAST_LOG_NONE 0
#define ZS_FAST_LOG_TEXT 1
#define ZS_FAST_LOG_JSON 2
#define ZS_FAST_DID_LOG 1
#define ZS_FAST_DID_UNSENT 2
#define ZS_FAST_DID_REST 4
struct zs_fast_limits {
    size_t max_head_bytes;
    size_t max_headers;
    size_t max_uri_bytes;
};
struct zs_fast_head {
    int method;
    int minor;
    int keep_alive;
    unsigned flags;
    const uint8_t *target;
    size_t target_len;
    size_t path_len;
    const uint8_t *host;
    size_t host_len;
};
long zs_fast_parse_head(const uint8_t *buf, size_t len, const struct zs_fast_limits *limits,
                        struct zs_fast_head *head);
struct zs_fast_table;
struct zs_fast_table *zs_fast_table_new(int fd);
void zs_fast_table_free(struct zs_fast_table *table);
int zs_fast_table_add(struct zs_fast_table *table, const uint8_t *path, size_t path_len, const uint8_t *head,
                      size_t head_len, const uint8_t *body, uint64_t offset, uint64_t length, unsigned flags,
                      const uint8_t *tmpl_head, size_t tmpl_head_len, char *err, size_t errlen);
int zs_fast_table_set_not_found(struct zs_fast_table *table, const uint8_t *head, size_t head_len,
                                const uint8_t *body, uint64_t offset, uint64_t length, unsigned flags,
                                char *err, size_t errlen);
int zs_fast_table_allow_host(struct zs_fast_table *table, const uint8_t *name, size_t len, char *err,
                             size_t errlen);
void zs_fast_table_set_chain(struct zs_fast_table *table, struct zs_chain *chain, uint64_t body_limit);
int zs_fast_table_set_status_line(struct zs_fast_table *table, unsigned status, const uint8_t *line, size_t len,
                                  char *err, size_t errlen);
struct zs_fast_ids {
    char prefix[16];
    uint64_t counter;
};
struct zs_fast_worker;
struct zs_fast_worker *zs_fast_worker_new(const struct zs_fast_limits *limits, struct zs_fast_ids *ids,
                                          int log_format);
void zs_fast_worker_free(struct zs_fast_worker *worker);
const char *zs_fast_worker_take_log(struct zs_fast_worker *worker, size_t *len);
struct zs_fast_conn {
    void *ssl;
    int fd;
    const char *sni;
    size_t sni_len;
    const char *client;
    size_t client_len;
    const char *ja4;
    size_t ja4_len;
    const char *peer;
    size_t peer_len;
    const char *info_json;
    size_t info_json_len;
};
struct zs_fast_result {
    size_t rest_offset;
    size_t rest_len;
    const uint8_t *rest;
    const uint8_t *unsent;
    size_t unsent_len;
    int close;
    int tls_event;
    unsigned served;
    int adopt;
    size_t adopt_len;
};
struct zs_chain_req *zs_fast_worker_chain_req(struct zs_fast_worker *worker);
void zs_fast_answer_done(struct zs_fast_worker *worker);
int zs_fast_pump(struct zs_fast_worker *worker, const struct zs_fast_table *table, const struct zs_fast_conn *conn,
                 const uint8_t *data, size_t len, int can_send, struct zs_fast_result *result, char *err,
                 size_t errlen);
int zs_fast_send(struct zs_fast_worker *worker, const struct zs_fast_conn *conn, const uint8_t *head,
                 size_t head_len, const uint8_t *body, size_t body_len, int can_send,
                 struct zs_fast_result *result, char *err, size_t errlen);
