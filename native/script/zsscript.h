/* SPDX-License-Identifier: Apache-2.0 */
/*
 * zsscript.h: the request context scripts see and the core helpers they call.
 *
 * Two objects, both pooled and reused by the Python side:
 *
 *   struct zs_reqctx      one per request, shared by every script of the chain
 *                         (and by zs_call callees): the request view, its
 *                         headers, the metadata map and the mutation flags.
 *                         All its strings live in one owned, growable arena
 *                         that zs_reqctx_begin empties.
 *   struct zs_scriptrun   one per script execution context (a chain step, a
 *                         callee, a hook): the JSON handle table, the outcome
 *                         slot (respond / proxy / abort) and the log line
 *                         buffer. It is the `host` of its zs_run; its first
 *                         member is left for the VM's Python wrapper.
 *
 * Functions return 0 (or a value >= 0) on success and -1 when memory runs out;
 * nothing here prints or aborts. Helpers report script errors with
 * zs_helper_fault, naming the helper.
 */
#ifndef ZSSCRIPT_H
#define ZSSCRIPT_H

#include <stddef.h>
#include <stdint.h>

#include "include/zsvm.h"

struct zs_reqctx;
struct zs_json;

/* String fields of the request, read with zs_reqctx_get. */
enum zs_req_field {
    ZS_FIELD_METHOD = 0,
    ZS_FIELD_PATH = 1,            /* normalised, still percent-encoded, trailing '/' kept */
    ZS_FIELD_NORMALIZED_PATH = 2, /* "/" + decoded relative path */
    ZS_FIELD_QUERY = 3,           /* raw, without '?' */
    ZS_FIELD_SCHEME = 4,
    ZS_FIELD_PEER = 5,            /* "ip:port", "[v6]:port" */
    ZS_FIELD_RAW_PATH = 6,        /* the path as zs_req_set_uri gave it (before normalising) */
    ZS_FIELD_CONNECTION_INFO = 7, /* JSON text for zs_connection_info ("" = plaintext default) */
    ZS_FIELD_BODY = 8,            /* the buffered request body for zs_req_body_json */
    ZS_NUM_FIELDS = 9
};

/* Bits of zs_reqctx_changed: what the scripts changed. */
enum zs_req_changed {
    ZS_CHANGED_METHOD = 1,
    ZS_CHANGED_URI = 2,
    ZS_CHANGED_HEADERS = 4,
    ZS_URI_INVALID = 8 /* zs_req_set_uri gave a path that escapes the root or does not decode: 400 */
};

/* What a script run asked for (zs_scriptrun_outcome), in priority order. */
enum zs_outcome {
    ZS_OUTCOME_NONE = 0,
    ZS_OUTCOME_ABORT = 1,
    ZS_OUTCOME_RESPOND = 2,
    ZS_OUTCOME_PROXY = 3
};

#define ZS_JSON_MAX_HANDLES 32
#define ZS_LOG_LINE_MAX 512

struct zs_json_slot {
    uint64_t id;        /* 0: free */
    struct zs_json_tree *tree;
    struct zs_json *node;
    uint64_t epoch;
};

struct zs_buf {
    char *p;
    size_t len, cap;
};

struct zs_scriptrun {
    void *py_handle; /* owned by the VM's Python wrapper; never touched here */
    struct zs_reqctx *ctx;
    struct zs_buf name; /* the script's name, for zs_res_hook's "" */
    int in_hook;        /* running as a response hook: zs_res_* allowed, zs_abort not */
    struct zs_json_slot slots[ZS_JSON_MAX_HANDLES];
    unsigned live;
    uint64_t next_id;
    /* outcome */
    int respond_set;
    int proxy_set;
    int abort_set;
    unsigned status;
    struct zs_buf body;
    struct zs_buf proxy_url;
    /* zs_log: the unfinished line, and finished lines ('\n'-terminated) */
    struct zs_buf log_partial;
    struct zs_buf log_lines;
    struct zs_buf scratch; /* serialisation for the Python side */
};

/* ---- the request context (Python side) ---- */

struct zs_reqctx *zs_reqctx_new(void);
void zs_reqctx_free(struct zs_reqctx *ctx);
/* Empties the context and fills it: request holds method, path (normalised,
 * still encoded), query, scheme and peer, each followed by a NUL; the
 * normalized path (decoded: it may hold NUL) comes on its own; headers is a
 * packed block (name NUL value NUL ...). is_tls also
 * answers zs_req_tls_handshake_complete; the body limit starts at body_limit.
 * -2 when a block is malformed. */
int zs_reqctx_begin(struct zs_reqctx *ctx, const char *request, size_t request_len,
                    const char *normalized_path, size_t normalized_path_len, const char *headers,
                    size_t headers_len, int proto_major, int proto_minor, int is_tls,
                    uint64_t body_limit);
int zs_reqctx_set_field(struct zs_reqctx *ctx, int field, const char *value, size_t len);
/* A string field (enum zs_req_field); -2 for an unknown field. The pointer is
 * valid until the context changes. */
int zs_reqctx_get(struct zs_reqctx *ctx, int field, const char **value, size_t *len);
int zs_reqctx_changed(const struct zs_reqctx *ctx);
uint64_t zs_reqctx_body_limit(const struct zs_reqctx *ctx);
/* The current headers (or metadata) packed name NUL value NUL ...; the
 * pointer is valid until the next export or change. */
int zs_reqctx_headers_export(struct zs_reqctx *ctx, const char **packed, size_t *len);
int zs_reqctx_meta_export(struct zs_reqctx *ctx, const char **packed, size_t *len);
size_t zs_reqctx_meta_count(const struct zs_reqctx *ctx);
/* Response hooks registered by zs_res_hook, packed script NUL func NUL
 * input-JSON NUL per hook, in registration order (script "" already resolved
 * to the registering script's name). */
size_t zs_reqctx_hook_count(const struct zs_reqctx *ctx);
int zs_reqctx_hooks_export(struct zs_reqctx *ctx, const char **packed, size_t *len);
/* The response hooks see: status and headers (packed pairs) set before the
 * hooks run, read back after them; continue: a hook asked to rerun the
 * request scripts (zs_res_continue_request). */
int zs_reqctx_response_begin(struct zs_reqctx *ctx, unsigned status, const char *packed,
                             size_t len);
unsigned zs_reqctx_response_status(const struct zs_reqctx *ctx);
int zs_reqctx_response_continue(const struct zs_reqctx *ctx);
int zs_reqctx_response_headers_export(struct zs_reqctx *ctx, const char **packed, size_t *len);
/* Sets metadata from the host side (key trimmed); -2 for an empty key. */
int zs_reqctx_meta_set(struct zs_reqctx *ctx, const char *key, size_t key_len, const char *value,
                       size_t value_len);

/* ---- a script execution context (Python side) ---- */

struct zs_scriptrun *zs_scriptrun_new(void);
void zs_scriptrun_free(struct zs_scriptrun *sr);
/* Starts a new execution context of script `name` on ctx (in_hook: as a
 * response hook): frees every JSON handle, clears the outcome and the log
 * buffers; handles restart at 1 (a callee's input, copied in first with
 * zs_script_json_copy, is therefore handle 1). Reset the zs_run too
 * (zs_run_reset): JSON memory is charged to it. */
int zs_scriptrun_begin(struct zs_scriptrun *sr, struct zs_reqctx *ctx, const char *name,
                       size_t name_len, int in_hook);
int zs_scriptrun_outcome(const struct zs_scriptrun *sr);
/* respond: status and body; proxy: the URL (trimmed). */
unsigned zs_scriptrun_status(const struct zs_scriptrun *sr);
void zs_scriptrun_body(const struct zs_scriptrun *sr, const char **body, size_t *len);
void zs_scriptrun_proxy_url(const struct zs_scriptrun *sr, const char **url, size_t *len);
/* Sets the run's outcome to respond, as zs_respond does, for a host helper: status (outside
 * 100..999 becomes 500) and a copy of body; 0, or -1 out of memory. */
int zs_scriptrun_respond(struct zs_scriptrun *sr, unsigned status, const char *body, size_t len);
/* Finished log lines, each ending in '\n', control and non-ASCII bytes
 * replaced by '?'; zs_scriptrun_log_clear drops them. */
void zs_scriptrun_log_lines(const struct zs_scriptrun *sr, const char **lines, size_t *len);
void zs_scriptrun_log_clear(struct zs_scriptrun *sr);
/* JSON for helpers written on the host side. The run's host must be a
 * zs_scriptrun. parse: a new handle, -1 for invalid JSON, -2 when the handle
 * or memory limit is hit (the run then has a helper fault set). copy: a deep
 * copy of src's handle into dst (-2: bad handle in src, src faulted; -3:
 * handle or memory limit of dst, dst faulted).
 * serialize: compact text of a handle, valid until the next call (-2: bad
 * handle). */
int64_t zs_script_json_parse(struct zs_run *run, const char *text, size_t len);
int64_t zs_script_json_copy(struct zs_run *dst, struct zs_run *src, uint64_t handle);
int zs_script_json_serialize(struct zs_run *run, uint64_t handle, const char **text, size_t *len);

/* ---- the core helper table ---- */

/* The helpers of this module, for the loader (with the plugins' helpers). */
const struct zs_helper_def *zs_core_helpers(size_t *count);
/* The string zs_version answers (set once at import). -1 if too long. */
int zs_core_set_version(const char *version, size_t len);

/* ---- for helpers in C (this module and plugins) ---- */

/* The execution context of a run, and its request. */
static inline struct zs_scriptrun *zs_script_of(struct zs_run *run)
{
    return (struct zs_scriptrun *)zs_run_host(run);
}
/* JSON values, read-only for plugin helpers: a node's type, its number kind
 * and value, a string's bytes, an array's items or an object's members
 * (sorted by key bytes). */
enum zs_json_type {
    ZS_JT_NULL = 0,
    ZS_JT_BOOL = 1,
    ZS_JT_NUMBER = 2,
    ZS_JT_STRING = 3,
    ZS_JT_ARRAY = 4,
    ZS_JT_OBJECT = 5
};

enum zs_json_num {
    ZS_JN_INT = 0,   /* fits int64 */
    ZS_JN_UINT = 1,  /* above INT64_MAX */
    ZS_JN_FLOAT = 2
};

struct zs_json_member;

struct zs_json {
    int type;
    int num_kind;
    union {
        int b;
        int64_t i;
        uint64_t u;
        double d;
    } num;
    char *str;   /* string bytes (NUL-terminated copy) */
    size_t len;  /* string length, or element / member count */
    size_t cap;
    struct zs_json **items;          /* array */
    struct zs_json_member *members;  /* object, sorted by key bytes */
};

struct zs_json_member {
    char *key;
    size_t key_len;
    struct zs_json *value;
};

/* The node behind a live handle, or NULL (the run faults: unknown or stale). */
struct zs_json *zs_script_json_node(struct zs_run *run, uint64_t handle, const char *helper);
/* The value of member key of an object, or NULL (missing, or not an object). */
struct zs_json *zs_json_member_get(const struct zs_json *obj, const char *key, size_t key_len);

#endif
