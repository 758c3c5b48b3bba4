/* SPDX-License-Identifier: Apache-2.0 */
/*
 * zschain.h: a world's request script chain, run on one request by one C call.
 *
 * A struct zs_chain is built once per World by core/chain.py (ScriptChain):
 * one slot per loaded script, in name order (the order of ScriptChain.scripts),
 * each with its request entry (-1: no `zeroserve.request` section) and a pool
 * of idle runs; plus one pool of idle request contexts. The pools ARE the
 * Python pools: Python creates every run (a ChainRun: zs_run whose host is a
 * zs_scriptrun) and every context (RequestContext), registers its pointer with
 * zs_chain_put_*, and takes it back with zs_chain_take_*, so a run the C side
 * leaves half-done maps back to its Python object (core/chain.py `adopt`).
 *
 * One request from C (the fast path, native/fast):
 *
 *     struct zs_chain_req req = {0};        (the caller's storage, zeroed once and reused:
 *                                            it keeps its log buffer; zs_chain_req_done frees it)
 *     if (zs_chain_begin(chain, &req) == ZS_CHAIN_BUSY) -> serve it from Python
 *     zs_reqctx_begin(req.ctx, ...);         (+ zs_reqctx_set_field: connection info, body)
 *     switch (zs_chain_run(chain, &req)) {
 *     case ZS_CHAIN_BUSY:     nothing ran; zs_chain_release, then serve from Python
 *     case ZS_CHAIN_YIELDED:  hand req to Python: ScriptChain.adopt(world, request_id, req)
 *                             (req.run_status != 0 tells adopt it yielded)
 *     case ZS_CHAIN_FINISHED: req.kind says what the scripts decided; the C side may
 *                             serve NONE and RESPOND itself when req.log_len == 0 and
 *                             zs_reqctx_hook_count(req.ctx) == 0 (and, for NONE, when
 *                             zs_reqctx_changed(req.ctx) == 0); anything else goes to
 *                             Python through adopt, which logs and builds the ChainResult.
 *     }
 *     zs_chain_release(chain, &req);         (unless adopted: adopt empties req)
 *
 * Only chains whose scripts call C helpers alone are run here (a Python helper
 * needs the Python objects of the request): ScriptChain.c_chain is NULL
 * (None) otherwise. Everything is single-threaded: one worker, one loop.
 * Functions return 0 (or a value >= 0) on success and -1 when memory runs out.
 */
#ifndef ZSCHAIN_H
#define ZSCHAIN_H

#include <stddef.h>
#include <stdint.h>

#include "include/zsvm.h"
#include "zsscript.h"

struct zs_chain;

/* What zs_chain_begin / zs_chain_run answer. */
enum zs_chain_status {
    ZS_CHAIN_FINISHED = 0, /* every script ran to its end, or one decided an outcome */
    ZS_CHAIN_YIELDED = 1,  /* req.run stopped PREEMPTED or SUSPENDED (req.run_status) */
    ZS_CHAIN_BUSY = 2      /* a pool is empty: nothing ran; serve the request from Python */
};

/* req.kind once FINISHED: the values of core/chain.py's ChainResult.kind. */
enum zs_chain_kind {
    ZS_CHAIN_NONE = 0,    /* no outcome: static serving, with what the scripts changed */
    ZS_CHAIN_ABORT = 1,   /* zs_abort: close the connection */
    ZS_CHAIN_RESPOND = 2, /* zs_respond: status + body */
    ZS_CHAIN_PROXY = 3,   /* zs_reverse_proxy: body holds the URL */
    ZS_CHAIN_FAULT = 10   /* a script faulted: 500 (fault_pc, fault_message) */
};

/* One request going through the chain. The caller owns the storage; the chain
 * fills it. Pointers stay valid until zs_chain_release (or adopt). */
struct zs_chain_req {
    struct zs_reqctx *ctx;      /* taken by zs_chain_begin from the context pool */
    int kind;                   /* FINISHED: enum zs_chain_kind */
    unsigned script;            /* position among the REQUEST scripts of the script that decided
                                 * the outcome, faulted or yielded (FINISHED NONE: their count) */
    struct zs_run *run;         /* YIELDED: the stopped run; RESPOND / PROXY: the run holding
                                 * body; else NULL. Held out of its pool until release. */
    int run_status;             /* YIELDED: ZS_PREEMPTED or ZS_SUSPENDED */
    unsigned status;            /* RESPOND: the HTTP status (100..999); FAULT: 500 */
    const char *body;           /* RESPOND: the response body; PROXY: the URL */
    size_t body_len;
    uint32_t fault_pc;          /* FAULT: pc of the faulting instruction */
    const char *fault_message;  /* FAULT: what the VM said (NUL-terminated) */
    /* zs_log lines of the scripts that finished, each "script NUL line NUL", in order */
    char *log;
    size_t log_len;
    size_t log_cap;             /* private: the log buffer, kept across requests */
    size_t run_slot;            /* private: the script slot req.run belongs to */
};

/* ---- building (core/chain.py, at World load) ---- */

/* A chain of num_scripts slots; each run's first slice gets slice_budget units. */
struct zs_chain *zs_chain_new(size_t num_scripts, int64_t slice_budget);
/* Frees the chain and its pool arrays (not the runs or contexts: Python owns them). */
void zs_chain_free(struct zs_chain *chain);
/* Slot `slot`: the script's name (for zs_scriptrun_begin) and its request entry (-1: none). */
int zs_chain_set_script(struct zs_chain *chain, size_t slot, const char *name, size_t name_len,
                        int request_entry);

/* ---- the pools (Python and C alike) ---- */

/* An idle run of slot `slot`, or NULL when its pool is empty (or slot is out of range). */
struct zs_run *zs_chain_take_run(struct zs_chain *chain, size_t slot);
/* Gives an idle run of slot `slot` to its pool (-2: slot out of range). */
int zs_chain_put_run(struct zs_chain *chain, size_t slot, struct zs_run *run);
struct zs_reqctx *zs_chain_take_ctx(struct zs_chain *chain);
int zs_chain_put_ctx(struct zs_chain *chain, struct zs_reqctx *ctx);

/* ---- one request ---- */

/* Empties req and takes a context into req->ctx: ZS_CHAIN_FINISHED (0), or
 * ZS_CHAIN_BUSY when the context pool is empty. Fill req->ctx with
 * zs_reqctx_begin before zs_chain_run. */
int zs_chain_begin(struct zs_chain *chain, struct zs_chain_req *req);
/* Runs the request scripts in order on req->ctx, each with the slice budget,
 * and stops at the first outcome, fault or stopped run (see the status enum).
 * BUSY when a request script's run pool is empty (checked before anything runs);
 * -1 when memory ran out (release req; the request cannot be served). */
int zs_chain_run(struct zs_chain *chain, struct zs_chain_req *req);
/* Gives req's run and context back to their pools; req is then empty. */
void zs_chain_release(struct zs_chain *chain, struct zs_chain_req *req);
/* Frees req's log buffer, when the caller's storage for req goes away. */
void zs_chain_req_done(struct zs_chain_req *req);

/* The response headers the metadata `meta` (packed key NUL value NUL ..., as
 * zs_reqctx_meta_export gives it) sets through `zs.response.header.<name>`
 * keys, packed name NUL value NUL ... into out (room for meta_len bytes is
 * always enough), in metadata order: name = the rest of the key, ASCII
 * whitespace trimmed, ASCII-lowercased; skipped unless the name is a non-empty
 * HTTP token and the value holds no control byte but TAB. Returns the bytes
 * written. The same filter serves the Python path (chain.metadata_headers). */
size_t zs_chain_meta_headers(const char *meta, size_t meta_len, char *out);

#endif
