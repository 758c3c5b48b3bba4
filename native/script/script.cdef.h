/* cffi declarations of the request context and core helpers (zsscript.h). */
struct zs_reqctx;
struct zs_scriptrun;

enum zs_req_field {
    ZS_FIELD_METHOD = 0,
    ZS_FIELD_PATH = 1,
    ZS_FIELD_NORMALIZED_PATH = 2,
    ZS_FIELD_QUERY = 3,
    ZS_FIELD_SCHEME = 4,
    ZS_FIELD_PEER = 5,
    ZS_FIELD_RAW_PATH = 6,
    ZS_FIELD_CONNECTION_INFO = 7,
    ZS_FIELD_BODY = 8,
    ZS_NUM_FIELDS = 9
};
enum zs_req_changed {
    ZS_CHANGED_METHOD = 1,
    ZS_CHANGED_URI = 2,
    ZS_CHANGED_HEADERS = 4,
    ZS_URI_INVALID = 8
};
enum zs_outcome {
    ZS_OUTCOME_NONE = 0,
    ZS_OUTCOME_ABORT = 1,
    ZS_OUTCOME_RESPOND = 2,
    ZS_OUTCOME_PROXY = 3
};

struct zs_reqctx *zs_reqctx_new(void);
void zs_reqctx_free(struct zs_reqctx *ctx);
int zs_reqctx_begin(struct zs_reqctx *ctx, const char *request, size_t request_len,
                    const char *normalized_path, size_t normalized_path_len, const char *headers,
                    size_t headers_len, int proto_major, int proto_minor, int is_tls,
                    uint64_t body_limit);
int zs_reqctx_set_field(struct zs_reqctx *ctx, int field, const char *value, size_t len);
int zs_reqctx_get(struct zs_reqctx *ctx, int field, const char **value, size_t *len);
int zs_reqctx_changed(const struct zs_reqctx *ctx);
uint64_t zs_reqctx_body_limit(const struct zs_reqctx *ctx);
int zs_reqctx_headers_export(struct zs_reqctx *ctx, const char **packed, size_t *len);
int zs_reqctx_meta_export(struct zs_reqctx *ctx, const char **packed, size_t *len);
size_t zs_reqctx_meta_count(const struct zs_reqctx *ctx);
size_t zs_reqctx_hook_count(const struct zs_reqctx *ctx);
int zs_reqctx_hooks_export(struct zs_reqctx *ctx, const char **packed, size_t *len);
int zs_reqctx_response_begin(struct zs_reqctx *ctx, unsigned status, const char *packed,
                             size_t len);
unsigned zs_reqctx_response_status(const struct zs_reqctx *ctx);
int zs_reqctx_response_continue(const struct zs_reqctx *ctx);
int zs_reqctx_response_headers_export(struct zs_reqctx *ctx, const char **packed, size_t *len);
int zs_reqctx_meta_set(struct zs_reqctx *ctx, const char *key, size_t key_len, const char *value,
                       size_t value_len);

struct zs_scriptrun *zs_scriptrun_new(void);
void zs_scriptrun_free(struct zs_scriptrun *sr);
int zs_scriptrun_begin(struct zs_scriptrun *sr, struct zs_reqctx *ctx, const char *name,
                       size_t name_len, int in_hook);
int zs_scriptrun_outcome(const struct zs_scriptrun *sr);
unsigned zs_scriptrun_status(const struct zs_scriptrun *sr);
void zs_scriptrun_body(const struct zs_scriptrun *sr, const char **body, size_t *len);
void zs_scriptrun_proxy_url(const struct zs_scriptrun *sr, const char **url, size_t *len);
int zs_scriptrun_respond(struct zs_scriptrun *sr, unsigned status, const char *body, size_t len);
void zs_scriptrun_log_lines(const struct zs_scriptrun *sr, const char **lines, size_t *len);
void zs_scriptrun_log_clear(struct zs_scriptrun *sr);
int64_t zs_script_json_parse(struct zs_run *run, const char *text, size_t len);
int64_t zs_script_json_copy(struct zs_run *dst, struct zs_run *src, uint64_t handle);
int zs_script_json_serialize(struct zs_run *run, uint64_t handle, const char **text, size_t *len);

const struct zs_helper_def *zs_core_helpers(size_t *count);
int zs_core_set_version(const char *version, size_t len);

/* the C chain runner (zschain.h) */
struct zs_chain;
enum zs_chain_status { ZS_CHAIN_FINISHED = 0, ZS_CHAIN_YIELDED = 1, ZS_CHAIN_BUSY = 2 };
enum zs_chain_kind {
    ZS_CHAIN_NONE = 0,
    ZS_CHAIN_ABORT = 1,
    ZS_CHAIN_RESPOND = 2,
    ZS_CHAIN_PROXY = 3,
    ZS_CHAIN_FAULT = 10
};
struct zs_chain_req {
    struct zs_reqctx *ctx;
    int kind;
    unsigned script;
    struct zs_run *run;
    int run_status;
    unsigned status;
    const char *body;
    size_t body_len;
    uint32_t fault_pc;
    const char *fault_message;
    char *log;
    size_t log_len;
    size_t log_cap;
    size_t run_slot;
};
struct zs_chain *zs_chain_new(size_t num_scripts, int64_t slice_budget);
void zs_chain_free(struct zs_chain *chain);
int zs_chain_set_script(struct zs_chain *chain, size_t slot, const char *name, size_t name_len,
                        int request_entry);
struct zs_run *zs_chain_take_run(struct zs_chain *chain, size_t slot);
int zs_chain_put_run(struct zs_chain *chain, size_t slot, struct zs_run *run);
struct zs_reqctx *zs_chain_take_ctx(struct zs_chain *chain);
int zs_chain_put_ctx(struct zs_chain *chain, struct zs_reqctx *ctx);
int zs_chain_begin(struct zs_chain *chain, struct zs_chain_req *req);
int zs_chain_run(struct zs_chain *chain, struct zs_chain_req *req);
void zs_chain_release(struct zs_chain *chain, struct zs_chain_req *req);
void zs_chain_req_done(struct zs_chain_req *req);
size_t zs_chain_meta_headers(const char *meta, size_t meta_len, char *out);
