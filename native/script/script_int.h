/* SPDX-License-Identifier: Apache-2.0 */
/*
 * script_int.h: structures and functions shared by the request context, the
 * JSON tree and the helper files. Not part of the API (zsscript.h).
 */
#ifndef SCRIPT_INT_H
#define SCRIPT_INT_H

#include <stddef.h>
#include <stdint.h>

#include "zsscript.h"

/* ---- growable byte buffers (buf.c is reqctx.c) ---- */

int zs_buf_reserve(struct zs_buf *b, size_t extra);
int zs_buf_append(struct zs_buf *b, const void *p, size_t n);
void zs_buf_free(struct zs_buf *b);

/* ---- the request context ---- */

/* A string in the context's arena (offsets survive the arena moving). */
struct zs_span {
    uint32_t off, len;
};

struct zs_pair {
    struct zs_span name, value;
};

struct zs_pairs {
    struct zs_pair *items;
    size_t n, cap;
};


/* A response hook registered with zs_res_hook: strings in the arena. */
struct zs_hook {
    struct zs_span script, func, input;
};

struct zs_reqctx {
    struct zs_buf arena;
    struct zs_span field[ZS_NUM_FIELDS];
    int proto_major, proto_minor, is_tls;
    int changed;
    uint64_t body_limit;
    struct zs_pairs headers; /* wire order; names lowercased */
    struct zs_pairs meta;    /* insertion order; keys trimmed */
    /* the response as hooks see it (zs_reqctx_response_begin) */
    struct zs_pairs res_headers;
    unsigned res_status;
    int res_continue;
    struct zs_hook *hooks; /* zs_res_hook registrations, in order */
    size_t num_hooks, cap_hooks;
    struct zs_buf export;
};

static inline const char *zs_ctx_str(const struct zs_reqctx *ctx, struct zs_span s)
{
    return ctx->arena.p + s.off;
}
/* Copies bytes into the arena (lowercased when `lower`); -1 out of memory. */
int zs_ctx_store(struct zs_reqctx *ctx, const char *p, size_t n, int lower, struct zs_span *out);
int zs_ctx_add_header(struct zs_reqctx *ctx, const char *name, size_t name_len, const char *value,
                      size_t value_len);
/* Removes every header whose name (lowercase) matches; returns how many. */
size_t zs_ctx_remove_header(struct zs_reqctx *ctx, const char *lower_name, size_t len);
/* The metadata entry for a trimmed key, or NULL. */
struct zs_pair *zs_ctx_meta_find(struct zs_reqctx *ctx, const char *key, size_t key_len);
int zs_ctx_meta_put(struct zs_reqctx *ctx, const char *key, size_t key_len, const char *value,
                    size_t value_len);

/* ---- small string tools ---- */

/* Trims ASCII whitespace from both ends (in place on the pointer and length). */
void zs_trim(const char **p, size_t *n);
int zs_is_utf8(const unsigned char *p, size_t n);
int zs_is_token(const char *p, size_t n);
/* The value of a hex digit, or -1. */
int zs_hexval(char c);
/* Calls visit for each form-decoded (key, value) pair of a raw query until it
 * returns nonzero; returns that value (0: none), or -1 out of memory. */
typedef int (*zs_pair_visit)(void *arg, const char *key, size_t key_len, const char *value,
                             size_t value_len);
int zs_each_query_pair(const char *query, size_t n, zs_pair_visit visit, void *arg);

/* ---- the JSON tree (json.c) ---- */

/* A tree shared by the handles into it; any mutation bumps the epoch. */
struct zs_json_tree {
    struct zs_json *root;
    uint64_t epoch;
    unsigned refs;
    size_t charged; /* bytes charged to the run for this tree */
};

#define ZS_JSON_MAX_DEPTH 128

/* 0, -1 (not JSON: bad syntax, bad UTF-8, too deep) or -2 (out of memory). */
int zs_json_parse_text(const char *text, size_t len, struct zs_json **out);
struct zs_json *zs_json_new(int type);
struct zs_json *zs_json_new_string(const char *p, size_t n);
struct zs_json *zs_json_clone_node(const struct zs_json *node);
void zs_json_free(struct zs_json *node);
/* Frees what a node holds and makes it null (its address stays valid). */
void zs_json_clear(struct zs_json *node);
/* The memory estimate charged for a value: 32 bytes a value plus string and key bytes. */
size_t zs_json_cost(const struct zs_json *node);
/* Takes ownership of value, replacing (and freeing) an existing member. 0 or -2. */
int zs_json_member_set(struct zs_json *obj, const char *key, size_t key_len, struct zs_json *value);
/* Detaches and frees a member; returns its cost, or -1 when missing. */
int64_t zs_json_member_remove(struct zs_json *obj, const char *key, size_t key_len);
int zs_json_push(struct zs_json *arr, struct zs_json *value);
/* Compact serialisation appended to out. 0 or -2. */
int zs_json_serialize(const struct zs_json *node, struct zs_buf *out);

/* ---- helper plumbing shared by the helper files ---- */

/* Writes s (n bytes) to guest (out, out_len) by the C-string rule; returns
 * min(n, out_len), or 0 with the run faulted when out is not writable. */
uint64_t zs_put_cstr(struct zs_run *run, uint64_t out, uint64_t out_len, const char *s, size_t n);
/* Faults the run (naming helper) when guest ranges a and b overlap. */
int zs_check_overlap(struct zs_run *run, const char *helper, uint64_t a, uint64_t alen, uint64_t b,
                     uint64_t blen);
/* A new handle for a tree root (the tree is freed on failure): the handle, or
 * -2 with the run faulted (handle or memory limit). */
int64_t zs_json_handle_new(struct zs_run *run, struct zs_json *root, const char *helper);
/* Serialises a handle's value into the run's scratch buffer. */
int zs_json_handle_text(struct zs_run *run, uint64_t handle, const char *helper, const char **text,
                        size_t *len);
/* Sets path and query from a request target or absolute URI and renormalises
 * (zs_req_set_uri); -1 with the run faulted (naming helper) when unparseable. */
int zs_ctx_set_uri(struct zs_run *run, const char *uri, size_t n, const char *helper);
/* Records a response (status already validated); 0 or -1 out of memory. */
int zs_set_response(struct zs_scriptrun *sr, unsigned status, const char *body, size_t len);
/* A status as sent: outside 100..999 becomes 500. */
unsigned zs_response_status(uint64_t status);

/* Helper tables of each helper file, joined by helpers_table.c. */
extern const struct zs_helper_def zs_util_helpers[];
extern const size_t zs_util_helpers_count;
extern const struct zs_helper_def zs_json_helpers[];
extern const size_t zs_json_helpers_count;
extern const struct zs_helper_def zs_request_helpers[];
extern const size_t zs_request_helpers_count;
extern const struct zs_helper_def zs_hook_helpers[];
extern const size_t zs_hook_helpers_count;
extern const struct zs_helper_def zs_rewrite_helpers[];
extern const size_t zs_rewrite_helpers_count;

#endif
