/* SPDX-License-Identifier: Apache-2.0 */
/*
 * chain.c: a world's request script chain run on one request in one call, with
 * the run and context pools Python and C share (API and contract: zschain.h).
 */
#include <stdlib.h>
#include <string.h>

#include "ebpf.h"
#include "script_int.h"
#include "zschain.h"
#include "zsvm_int.h"

/* A stack of idle pointers. */
struct zs_pool {
    void **items;
    size_t n, cap;
};

struct zs_chain_script {
    struct zs_buf name;
    int request_entry; /* -1: no request section */
    struct zs_pool runs;
};

struct zs_chain {
    struct zs_chain_script *scripts;
    size_t num_scripts;
    size_t *request_slots; /* slots of the request scripts, in order */
    size_t num_request;
    int64_t slice_budget;
    struct zs_pool contexts;
};

static int pool_put(struct zs_pool *pool, void *item)
{
    if (pool->n == pool->cap) {
        size_t cap = pool->cap ? pool->cap * 2 : 8;
        void **items = realloc(pool->items, cap * sizeof(*items));
        if (!items)
            return -1;
        pool->items = items;
        pool->cap = cap;
    }
    pool->items[pool->n++] = item;
    return 0;
}

static void *pool_take(struct zs_pool *pool)
{
    return pool->n ? pool->items[--pool->n] : NULL;
}

struct zs_chain *zs_chain_new(size_t num_scripts, int64_t slice_budget)
{
    struct zs_chain *chain = calloc(1, sizeof(*chain));
    if (!chain)
        return NULL;
    chain->scripts = calloc(num_scripts ? num_scripts : 1, sizeof(*chain->scripts));
    chain->request_slots = calloc(num_scripts ? num_scripts : 1, sizeof(*chain->request_slots));
    if (!chain->scripts || !chain->request_slots) {
        free(chain->scripts);
        free(chain->request_slots);
        free(chain);
        return NULL;
    }
    for (size_t i = 0; i < num_scripts; i++)
        chain->scripts[i].request_entry = -1;
    chain->num_scripts = num_scripts;
    chain->slice_budget = slice_budget;
    return chain;
}

void zs_chain_free(struct zs_chain *chain)
{
    if (!chain)
        return;
    for (size_t i = 0; i < chain->num_scripts; i++) {
        zs_buf_free(&chain->scripts[i].name);
        free(chain->scripts[i].runs.items);
    }
    free(chain->scripts);
    free(chain->request_slots);
    free(chain->contexts.items);
    free(chain);
}

int zs_chain_set_script(struct zs_chain *chain, size_t slot, const char *name, size_t name_len,
                        int request_entry)
{
    if (slot >= chain->num_scripts)
        return -2;
    struct zs_chain_script *script = &chain->scripts[slot];
    script->name.len = 0;
    if (zs_buf_append(&script->name, name, name_len) < 0)
        return -1;
    script->request_entry = request_entry;
    /* The request order is slot order: rebuild it from the slots set so far. */
    chain->num_request = 0;
    for (size_t i = 0; i < chain->num_scripts; i++)
        if (chain->scripts[i].request_entry >= 0)
            chain->request_slots[chain->num_request++] = i;
    return 0;
}

struct zs_run *zs_chain_take_run(struct zs_chain *chain, size_t slot)
{
    return slot < chain->num_scripts ? pool_take(&chain->scripts[slot].runs) : NULL;
}

int zs_chain_put_run(struct zs_chain *chain, size_t slot, struct zs_run *run)
{
    if (slot >= chain->num_scripts)
        return -2;
    return pool_put(&chain->scripts[slot].runs, run);
}

struct zs_reqctx *zs_chain_take_ctx(struct zs_chain *chain)
{
    return pool_take(&chain->contexts);
}

int zs_chain_put_ctx(struct zs_chain *chain, struct zs_reqctx *ctx)
{
    return pool_put(&chain->contexts, ctx);
}

/* ---- one request ---- */

int zs_chain_begin(struct zs_chain *chain, struct zs_chain_req *req)
{
    char *log = req->log;
    size_t log_cap = req->log_cap;
    memset(req, 0, sizeof(*req));
    req->log = log;
    req->log_cap = log_cap;
    req->ctx = pool_take(&chain->contexts);
    return req->ctx ? ZS_CHAIN_FINISHED : ZS_CHAIN_BUSY;
}

static int log_append(struct zs_chain_req *req, const char *p, size_t n)
{
    if (req->log_cap - req->log_len < n) {
        size_t cap = req->log_cap ? req->log_cap : 256;
        while (cap - req->log_len < n)
            cap *= 2;
        char *log = realloc(req->log, cap);
        if (!log)
            return -1;
        req->log = log;
        req->log_cap = cap;
    }
    memcpy(req->log + req->log_len, p, n);
    req->log_len += n;
    return 0;
}

/* Moves the finished zs_log lines of a run into req->log as "script NUL line NUL" each. */
static int take_log(struct zs_chain_req *req, const struct zs_buf *name, struct zs_scriptrun *sr)
{
    const char *lines;
    size_t len;
    zs_scriptrun_log_lines(sr, &lines, &len);
    const char *end = lines + len;
    while (lines < end) {
        const char *nl = memchr(lines, '\n', (size_t)(end - lines));
        size_t line_len = nl ? (size_t)(nl - lines) : (size_t)(end - lines);
        if (log_append(req, name->p, name->len) < 0 || log_append(req, "", 1) < 0 ||
            log_append(req, lines, line_len) < 0 || log_append(req, "", 1) < 0)
            return -1;
        lines += line_len + 1;
    }
    zs_scriptrun_log_clear(sr);
    return 0;
}

/* What a finished run decided: 1 with req filled (the run is kept in req when
 * it holds the body), 0 to go on (the run is back in its pool), -1 out of memory. */
static int after_script(struct zs_chain *chain, struct zs_chain_req *req, size_t slot,
                        struct zs_run *run)
{
    struct zs_chain_script *script = &chain->scripts[slot];
    struct zs_scriptrun *sr = zs_script_of(run);
    if (take_log(req, &script->name, sr) < 0) {
        pool_put(&script->runs, run);
        return -1;
    }
    int outcome = zs_scriptrun_outcome(sr);
    if (outcome == ZS_OUTCOME_NONE)
        return pool_put(&script->runs, run) < 0 ? -1 : 0;
    req->kind = outcome;
    if (outcome == ZS_OUTCOME_RESPOND) {
        req->status = zs_scriptrun_status(sr);
        zs_scriptrun_body(sr, &req->body, &req->body_len);
    } else if (outcome == ZS_OUTCOME_PROXY) {
        zs_scriptrun_proxy_url(sr, &req->body, &req->body_len);
    } else {
        return pool_put(&script->runs, run) < 0 ? -1 : 1;
    }
    req->run = run;
    req->run_slot = slot;
    return 1;
}

int zs_chain_run(struct zs_chain *chain, struct zs_chain_req *req)
{
    const size_t *slots = chain->request_slots;
    size_t n = chain->num_request;
    /* One request runs at a time and a script appears once in the order, so a
     * pool holding a run now still holds one when its turn comes. */
    for (size_t i = 0; i < n; i++)
        if (!chain->scripts[slots[i]].runs.n)
            return ZS_CHAIN_BUSY;
    for (size_t i = 0; i < n; i++) {
        size_t slot = slots[i];
        struct zs_chain_script *script = &chain->scripts[slot];
        struct zs_run *run = pool_take(&script->runs);
        req->script = (unsigned)i;
        if (zs_scriptrun_begin(zs_script_of(run), req->ctx, script->name.p, script->name.len, 0) < 0) {
            pool_put(&script->runs, run);
            return -1;
        }
        zs_run_reset(run);
        int status = zs_run_start(run, script->request_entry, NULL, chain->slice_budget);
        if (status == ZS_FAULT) {
            req->kind = ZS_CHAIN_FAULT;
            req->status = 500;
            req->fault_pc = zs_run_fault_pc(run);
            req->fault_message = zs_run_fault_message(run);
            /* The run keeps its fault message until release. */
            req->run = run;
            req->run_slot = slot;
            return take_log(req, &script->name, zs_script_of(run)) < 0 ? -1 : ZS_CHAIN_FINISHED;
        }
        if (status != ZS_DONE) {
            req->run = run;
            req->run_slot = slot;
            req->run_status = status;
            return ZS_CHAIN_YIELDED;
        }
        int decided = after_script(chain, req, slot, run);
        if (decided)
            return decided < 0 ? -1 : ZS_CHAIN_FINISHED;
    }
    req->script = (unsigned)n;
    req->kind = ZS_CHAIN_NONE;
    return ZS_CHAIN_FINISHED;
}

void zs_chain_release(struct zs_chain *chain, struct zs_chain_req *req)
{
    /* The pools only grow past the number of runs Python registered by
     * reallocating; a failure here would lose an idle run, never corrupt one. */
    if (req->run) {
        pool_put(&chain->scripts[req->run_slot].runs, req->run);
        req->run = NULL;
    }
    if (req->ctx) {
        pool_put(&chain->contexts, req->ctx);
        req->ctx = NULL;
    }
}

void zs_chain_req_done(struct zs_chain_req *req)
{
    free(req->log);
    req->log = NULL;
    req->log_len = req->log_cap = 0;
}

/* ---- metadata response headers ---- */

#define HEADER_PREFIX "zs.response.header."

static int bad_value_byte(unsigned char c)
{
    return (c < 0x20 && c != '\t') || c == 0x7f;
}

size_t zs_chain_meta_headers(const char *meta, size_t meta_len, char *out)
{
    const size_t prefix_len = sizeof(HEADER_PREFIX) - 1;
    const char *p = meta, *end = meta + meta_len;
    size_t written = 0;
    while (p < end) {
        const char *key = p;
        size_t key_len = strnlen(key, (size_t)(end - key));
        const char *value = key + key_len + 1;
        if (value > end)
            break;
        size_t value_len = strnlen(value, (size_t)(end - value));
        p = value + value_len + 1;
        if (key_len <= prefix_len || memcmp(key, HEADER_PREFIX, prefix_len) != 0)
            continue;
        const char *name = key + prefix_len;
        size_t name_len = key_len - prefix_len;
        zs_trim(&name, &name_len);
        if (!zs_is_token(name, name_len))
            continue;
        size_t i = 0;
        while (i < value_len && !bad_value_byte((unsigned char)value[i]))
            i++;
        if (i < value_len)
            continue;
        for (i = 0; i < name_len; i++) {
            char c = name[i];
            out[written++] = (c >= 'A' && c <= 'Z') ? (char)(c + ('a' - 'A')) : c;
        }
        out[written++] = '\0';
        memcpy(out + written, value, value_len);
        written += value_len;
        out[written++] = '\0';
    }
    return written;
}
