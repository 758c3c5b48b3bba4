/* SPDX-License-Identifier: Apache-2.0 */
/*
 * helpers_hooks.c: response hooks: registering them (zs_res_hook,
 * zs_res_hooks_clear) and the helpers only a running hook may call, over the
 * response view the host sets in the request context.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "script_int.h"

/* The request of a run that is a response hook, or NULL with the run faulted. */
static struct zs_reqctx *hook_ctx(struct zs_run *run, const char *helper)
{
    struct zs_scriptrun *sr = zs_script_of(run);
    if (!sr->in_hook) {
        zs_helper_fault(run, "%s: only a response hook may call it (register one with "
                             "zs_res_hook)", helper);
        return NULL;
    }
    return sr->ctx;
}

static uint64_t h_res_hook(struct zs_run *run, void *cookie, uint64_t script, uint64_t script_len,
                           uint64_t func, uint64_t func_len, uint64_t json)
{
    static const char helper[] = "zs_res_hook";
    const char *s = zs_guest_ptr(run, script, script_len, 0);
    const char *f = s ? zs_guest_ptr(run, func, func_len, 0) : NULL;
    if (!f)
        return 0;
    if (func_len == 0) {
        zs_helper_fault(run, "%s: the function name is empty", helper);
        return 0;
    }
    const char *input;
    size_t input_len;
    if (zs_json_handle_text(run, json, helper, &input, &input_len) < 0)
        return 0;
    struct zs_scriptrun *sr = zs_script_of(run);
    struct zs_reqctx *ctx = sr->ctx;
    if (ctx->num_hooks == ctx->cap_hooks) {
        size_t cap = ctx->cap_hooks ? ctx->cap_hooks * 2 : 4;
        struct zs_hook *grown = realloc(ctx->hooks, cap * sizeof(*grown));
        if (!grown)
            goto oom;
        ctx->hooks = grown;
        ctx->cap_hooks = cap;
    }
    struct zs_hook *hook = &ctx->hooks[ctx->num_hooks];
    if (script_len == 0) {
        s = sr->name.p ? sr->name.p : "";
        script_len = sr->name.len;
    }
    if (zs_ctx_store(ctx, s, script_len, 0, &hook->script) < 0 ||
        zs_ctx_store(ctx, f, func_len, 0, &hook->func) < 0 ||
        zs_ctx_store(ctx, input, input_len, 0, &hook->input) < 0)
        goto oom;
    ctx->num_hooks++;
    return 0;
oom:
    zs_helper_fault(run, "%s: out of host memory", helper);
    return 0;
}

static uint64_t h_res_hooks_clear(struct zs_run *run, void *cookie, uint64_t r1, uint64_t r2,
                                  uint64_t r3, uint64_t r4, uint64_t r5)
{
    zs_script_of(run)->ctx->num_hooks = 0;
    return 0;
}

static uint64_t h_res_status(struct zs_run *run, void *cookie, uint64_t r1, uint64_t r2,
                             uint64_t r3, uint64_t r4, uint64_t r5)
{
    struct zs_reqctx *ctx = hook_ctx(run, "zs_res_status");
    return ctx ? ctx->res_status : 0;
}

static uint64_t h_res_set_status(struct zs_run *run, void *cookie, uint64_t status, uint64_t r2,
                                 uint64_t r3, uint64_t r4, uint64_t r5)
{
    struct zs_reqctx *ctx = hook_ctx(run, "zs_res_set_status");
    if (!ctx)
        return 0;
    if (status < 100 || status > 999) {
        zs_helper_fault(run, "zs_res_set_status: status %llu is outside 100..999",
                        (unsigned long long)status);
        return 0;
    }
    ctx->res_status = (unsigned)status;
    return 0;
}

static uint64_t h_res_header(struct zs_run *run, void *cookie, uint64_t name, uint64_t name_len,
                             uint64_t out, uint64_t out_len, uint64_t r5)
{
    static const char helper[] = "zs_res_header";
    struct zs_reqctx *ctx = hook_ctx(run, helper);
    const char *n = ctx ? zs_guest_ptr(run, name, name_len, 0) : NULL;
    if (!n || zs_check_overlap(run, helper, out, out_len, name, name_len) < 0)
        return 0;
    size_t len = name_len;
    zs_trim(&n, &len);
    if (len == 0) {
        zs_helper_fault(run, "%s: the header name is empty", helper);
        return 0;
    }
    for (size_t i = ctx->res_headers.n; i-- > 0;) {
        const struct zs_pair *h = &ctx->res_headers.items[i];
        if (h->name.len == len && strncasecmp(zs_ctx_str(ctx, h->name), n, len) == 0)
            return zs_put_cstr(run, out, out_len, zs_ctx_str(ctx, h->value), h->value.len);
    }
    return zs_put_cstr(run, out, out_len, "", 0);
}

static uint64_t h_res_continue_request(struct zs_run *run, void *cookie, uint64_t r1, uint64_t r2,
                                       uint64_t r3, uint64_t r4, uint64_t r5)
{
    struct zs_reqctx *ctx = hook_ctx(run, "zs_res_continue_request");
    if (ctx)
        ctx->res_continue = 1;
    return 0;
}

const struct zs_helper_def zs_hook_helpers[] = {
    {"zs_res_hook", h_res_hook, NULL},
    {"zs_res_hooks_clear", h_res_hooks_clear, NULL},
    {"zs_res_status", h_res_status, NULL},
    {"zs_res_set_status", h_res_set_status, NULL},
    {"zs_res_header", h_res_header, NULL},
    {"zs_res_continue_request", h_res_continue_request, NULL},
};
const size_t zs_hook_helpers_count = sizeof(zs_hook_helpers) / sizeof(zs_hook_helpers[0]);
