/* SPDX-License-Identifier: Apache-2.0 */
/*
 * helpers_json.c: the JSON handle table of an execution context and the
 * zs_json_* helpers over it.
 *
 * A handle names a node in a tree; handles are never reused (the counter only
 * grows) and at most ZS_JSON_MAX_HANDLES are live. Every tree carries an
 * epoch: a mutation through one handle bumps it and revalidates only that
 * handle, so any other handle into the tree is stale and using it faults
 * (zs_json_reset rebinds a handle to the root). Trees are charged to the run's
 * memory (32 bytes a value plus string bytes) and uncharged when freed.
 */
#include <stdlib.h>
#include <string.h>

#include "script_int.h"

/* ---- the handle table ---- */

static struct zs_json_slot *find_slot(struct zs_scriptrun *sr, uint64_t id)
{
    if (id == 0)
        return NULL;
    for (unsigned i = 0; i < ZS_JSON_MAX_HANDLES; i++)
        if (sr->slots[i].id == id)
            return &sr->slots[i];
    return NULL;
}

/* A live, current handle's slot, or NULL with the run faulted. */
static struct zs_json_slot *use_handle(struct zs_run *run, uint64_t id, const char *helper)
{
    struct zs_json_slot *slot = find_slot(zs_script_of(run), id);
    if (!slot) {
        zs_helper_fault(run, "%s: %lld is not a live JSON handle", helper, (long long)id);
        return NULL;
    }
    if (slot->epoch != slot->tree->epoch) {
        zs_helper_fault(run,
                        "%s: JSON handle %llu is stale (its tree was changed through another "
                        "handle; zs_json_reset it first)",
                        helper, (unsigned long long)id);
        return NULL;
    }
    return slot;
}

struct zs_json *zs_script_json_node(struct zs_run *run, uint64_t handle, const char *helper)
{
    struct zs_json_slot *slot = use_handle(run, handle, helper);
    return slot ? slot->node : NULL;
}

static int charge(struct zs_run *run, struct zs_json_tree *tree, size_t bytes, const char *helper)
{
    if (zs_run_charge(run, bytes) < 0) {
        zs_helper_fault(run, "%s: script memory is full (%zu more bytes of JSON; raise "
                             "--script-memory-kb)", helper, bytes);
        return -1;
    }
    tree->charged += bytes;
    return 0;
}

static void uncharge(struct zs_run *run, struct zs_json_tree *tree, size_t bytes)
{
    if (bytes > tree->charged)
        bytes = tree->charged;
    tree->charged -= bytes;
    zs_run_uncharge(run, bytes);
}

static struct zs_json_slot *free_slot(struct zs_run *run, const char *helper)
{
    struct zs_scriptrun *sr = zs_script_of(run);
    if (sr->live < ZS_JSON_MAX_HANDLES)
        for (unsigned i = 0; i < ZS_JSON_MAX_HANDLES; i++)
            if (!sr->slots[i].id)
                return &sr->slots[i];
    zs_helper_fault(run, "%s: more than %d live JSON handles (zs_object_free the ones you are done "
                         "with)", helper, ZS_JSON_MAX_HANDLES);
    return NULL;
}

static uint64_t bind_slot(struct zs_scriptrun *sr, struct zs_json_slot *slot,
                          struct zs_json_tree *tree, struct zs_json *node)
{
    slot->id = sr->next_id++;
    slot->tree = tree;
    slot->node = node;
    slot->epoch = tree->epoch;
    tree->refs++;
    sr->live++;
    return slot->id;
}

int64_t zs_json_handle_new(struct zs_run *run, struct zs_json *root, const char *helper)
{
    struct zs_json_slot *slot = free_slot(run, helper);
    struct zs_json_tree *tree = slot ? calloc(1, sizeof(*tree)) : NULL;
    if (!tree) {
        if (slot)
            zs_helper_fault(run, "%s: out of host memory", helper);
        zs_json_free(root);
        return -2;
    }
    tree->root = root;
    if (charge(run, tree, zs_json_cost(root), helper) < 0) {
        zs_json_free(root);
        free(tree);
        return -2;
    }
    return (int64_t)bind_slot(zs_script_of(run), slot, tree, root);
}

static uint64_t child_handle(struct zs_run *run, struct zs_json_slot *parent, struct zs_json *node,
                             const char *helper)
{
    struct zs_json_slot *slot = free_slot(run, helper);
    if (!slot)
        return 0;
    return bind_slot(zs_script_of(run), slot, parent->tree, node);
}

static void mutated(struct zs_json_slot *slot)
{
    slot->epoch = ++slot->tree->epoch;
}

/* ---- host-side API ---- */

int64_t zs_script_json_parse(struct zs_run *run, const char *text, size_t len)
{
    struct zs_json *root;
    int rc = zs_json_parse_text(text, len, &root);
    if (rc == -2) {
        zs_helper_fault(run, "out of host memory parsing JSON");
        return -2;
    }
    if (rc < 0)
        return -1;
    return zs_json_handle_new(run, root, "zs_json_parse");
}

int64_t zs_script_json_copy(struct zs_run *dst, struct zs_run *src, uint64_t handle)
{
    struct zs_json *node = zs_script_json_node(src, handle, "zs_call");
    if (!node)
        return -2;
    struct zs_json *copy = zs_json_clone_node(node);
    if (!copy) {
        zs_helper_fault(dst, "out of host memory copying JSON");
        return -3;
    }
    int64_t copied = zs_json_handle_new(dst, copy, "zs_call");
    return copied < 0 ? -3 : copied;
}

int zs_json_handle_text(struct zs_run *run, uint64_t handle, const char *helper, const char **text,
                        size_t *len)
{
    struct zs_json *node = zs_script_json_node(run, handle, helper);
    if (!node)
        return -2;
    struct zs_scriptrun *sr = zs_script_of(run);
    sr->scratch.len = 0;
    if (zs_json_serialize(node, &sr->scratch) < 0) {
        zs_helper_fault(run, "%s: out of host memory serialising JSON", helper);
        return -2;
    }
    *text = sr->scratch.p ? sr->scratch.p : "";
    *len = sr->scratch.len;
    return 0;
}

int zs_script_json_serialize(struct zs_run *run, uint64_t handle, const char **text, size_t *len)
{
    return zs_json_handle_text(run, handle, "zs_json", text, len);
}

/* ---- helpers ---- */

static const char *guest_in(struct zs_run *run, uint64_t addr, uint64_t len)
{
    return zs_guest_ptr(run, addr, len, 0);
}

static uint64_t h_json_parse(struct zs_run *run, void *cookie, uint64_t data, uint64_t len,
                             uint64_t r3, uint64_t r4, uint64_t r5)
{
    const char *text = guest_in(run, data, len);
    if (!text)
        return 0;
    struct zs_json *root;
    int rc = zs_json_parse_text(text, len, &root);
    if (rc == -2) {
        zs_helper_fault(run, "zs_json_parse: out of host memory");
        return 0;
    }
    if (rc < 0)
        return (uint64_t)-1;
    return (uint64_t)zs_json_handle_new(run, root, "zs_json_parse");
}

static uint64_t new_container(struct zs_run *run, int type, const char *helper)
{
    struct zs_json *root = zs_json_new(type);
    if (!root) {
        zs_helper_fault(run, "%s: out of host memory", helper);
        return 0;
    }
    return (uint64_t)zs_json_handle_new(run, root, helper);
}

static uint64_t h_json_new_object(struct zs_run *run, void *cookie, uint64_t r1, uint64_t r2,
                                  uint64_t r3, uint64_t r4, uint64_t r5)
{
    return new_container(run, ZS_JT_OBJECT, "zs_json_new_object");
}

static uint64_t h_json_new_array(struct zs_run *run, void *cookie, uint64_t r1, uint64_t r2,
                                 uint64_t r3, uint64_t r4, uint64_t r5)
{
    return new_container(run, ZS_JT_ARRAY, "zs_json_new_array");
}

static uint64_t h_json_clone(struct zs_run *run, void *cookie, uint64_t h, uint64_t r2, uint64_t r3,
                             uint64_t r4, uint64_t r5)
{
    struct zs_json *node = zs_script_json_node(run, h, "zs_json_clone");
    if (!node)
        return 0;
    struct zs_json *copy = zs_json_clone_node(node);
    if (!copy) {
        zs_helper_fault(run, "zs_json_clone: out of host memory");
        return 0;
    }
    return (uint64_t)zs_json_handle_new(run, copy, "zs_json_clone");
}

static uint64_t h_object_free(struct zs_run *run, void *cookie, uint64_t h, uint64_t r2,
                              uint64_t r3, uint64_t r4, uint64_t r5)
{
    struct zs_scriptrun *sr = zs_script_of(run);
    struct zs_json_slot *slot = find_slot(sr, h);
    if (!slot) {
        zs_helper_fault(run, "zs_object_free: %lld is not a live JSON handle", (long long)h);
        return 0;
    }
    struct zs_json_tree *tree = slot->tree;
    if (--tree->refs == 0) {
        zs_run_uncharge(run, tree->charged);
        zs_json_free(tree->root);
        free(tree);
    }
    slot->id = 0;
    sr->live--;
    return 0;
}

static uint64_t h_json_reset(struct zs_run *run, void *cookie, uint64_t h, uint64_t r2, uint64_t r3,
                             uint64_t r4, uint64_t r5)
{
    struct zs_json_slot *slot = find_slot(zs_script_of(run), h);
    if (!slot) {
        zs_helper_fault(run, "zs_json_reset: %lld is not a live JSON handle", (long long)h);
        return 0;
    }
    slot->node = slot->tree->root;
    slot->epoch = slot->tree->epoch;
    return 0;
}

static uint64_t h_json_get(struct zs_run *run, void *cookie, uint64_t h, uint64_t key,
                           uint64_t key_len, uint64_t r4, uint64_t r5)
{
    struct zs_json_slot *slot = use_handle(run, h, "zs_json_get");
    const char *k = slot ? guest_in(run, key, key_len) : NULL;
    if (!k)
        return 0;
    struct zs_json *child = zs_json_member_get(slot->node, k, key_len);
    if (!child)
        return (uint64_t)-1;
    return child_handle(run, slot, child, "zs_json_get");
}

static uint64_t h_json_array_get(struct zs_run *run, void *cookie, uint64_t h, uint64_t index,
                                 uint64_t r3, uint64_t r4, uint64_t r5)
{
    struct zs_json_slot *slot = use_handle(run, h, "zs_json_array_get");
    if (!slot)
        return 0;
    if (slot->node->type != ZS_JT_ARRAY || index >= slot->node->len)
        return (uint64_t)-1;
    return child_handle(run, slot, slot->node->items[index], "zs_json_array_get");
}

static uint64_t h_json_read_string(struct zs_run *run, void *cookie, uint64_t h, uint64_t out,
                                   uint64_t out_len, uint64_t r4, uint64_t r5)
{
    struct zs_json *node = zs_script_json_node(run, h, "zs_json_read_string");
    if (!node)
        return 0;
    if (node->type != ZS_JT_STRING)
        return (uint64_t)-1;
    return zs_put_cstr(run, out, out_len, node->str, node->len);
}

static uint64_t h_json_read_i64(struct zs_run *run, void *cookie, uint64_t h, uint64_t out,
                                uint64_t out_len, uint64_t r4, uint64_t r5)
{
    struct zs_json *node = zs_script_json_node(run, h, "zs_json_read_i64");
    if (!node)
        return 0;
    if (out_len != 8) {
        zs_helper_fault(run, "zs_json_read_i64: out_len must be 8, not %llu",
                        (unsigned long long)out_len);
        return 0;
    }
    void *dst = zs_guest_ptr(run, out, 8, 1);
    if (!dst)
        return 0;
    if (node->type != ZS_JT_NUMBER || node->num_kind != ZS_JN_INT)
        return (uint64_t)-1;
    memcpy(dst, &node->num.i, 8);
    return 8;
}

static uint64_t h_json_read_bool(struct zs_run *run, void *cookie, uint64_t h, uint64_t out,
                                 uint64_t out_len, uint64_t r4, uint64_t r5)
{
    struct zs_json *node = zs_script_json_node(run, h, "zs_json_read_bool");
    if (!node)
        return 0;
    if (out_len != 1) {
        zs_helper_fault(run, "zs_json_read_bool: out_len must be 1, not %llu",
                        (unsigned long long)out_len);
        return 0;
    }
    unsigned char *dst = zs_guest_ptr(run, out, 1, 1);
    if (!dst)
        return 0;
    if (node->type != ZS_JT_BOOL)
        return (uint64_t)-1;
    *dst = node->num.b ? 1 : 0;
    return 1;
}

static uint64_t h_json_len(struct zs_run *run, void *cookie, uint64_t h, uint64_t r2, uint64_t r3,
                           uint64_t r4, uint64_t r5)
{
    struct zs_json *node = zs_script_json_node(run, h, "zs_json_len");
    if (!node)
        return 0;
    if (node->type == ZS_JT_STRING || node->type == ZS_JT_ARRAY || node->type == ZS_JT_OBJECT)
        return node->len;
    return (uint64_t)-1;
}

static uint64_t h_json_type(struct zs_run *run, void *cookie, uint64_t h, uint64_t r2, uint64_t r3,
                            uint64_t r4, uint64_t r5)
{
    struct zs_json *node = zs_script_json_node(run, h, "zs_json_type");
    return node ? (uint64_t)node->type : 0;
}

/* A charged copy of the value behind handle vh, to be inserted into `into`. */
static struct zs_json *value_copy(struct zs_run *run, struct zs_json_slot *into, uint64_t vh,
                                  size_t extra, const char *helper)
{
    struct zs_json *value = zs_script_json_node(run, vh, helper);
    if (!value)
        return NULL;
    struct zs_json *copy = zs_json_clone_node(value);
    if (!copy) {
        zs_helper_fault(run, "%s: out of host memory", helper);
        return NULL;
    }
    if (charge(run, into->tree, zs_json_cost(copy) + extra, helper) < 0) {
        zs_json_free(copy);
        return NULL;
    }
    return copy;
}

static uint64_t h_json_set(struct zs_run *run, void *cookie, uint64_t h, uint64_t key,
                           uint64_t key_len, uint64_t vh, uint64_t r5)
{
    static const char helper[] = "zs_json_set";
    struct zs_json_slot *slot = use_handle(run, h, helper);
    const char *k = slot ? guest_in(run, key, key_len) : NULL;
    if (!k)
        return 0;
    if (!zs_is_utf8((const unsigned char *)k, key_len)) {
        zs_helper_fault(run, "%s: the key is not UTF-8", helper);
        return 0;
    }
    if (!zs_script_json_node(run, vh, helper))
        return 0;
    if (slot->node->type != ZS_JT_OBJECT)
        return (uint64_t)-1;
    struct zs_json *copy = value_copy(run, slot, vh, key_len, helper);
    if (!copy)
        return 0;
    struct zs_json *old = zs_json_member_get(slot->node, k, key_len);
    size_t old_cost = old ? zs_json_cost(old) + key_len : 0;
    if (zs_json_member_set(slot->node, k, key_len, copy) < 0) {
        uncharge(run, slot->tree, zs_json_cost(copy) + key_len);
        zs_json_free(copy);
        zs_helper_fault(run, "%s: out of host memory", helper);
        return 0;
    }
    uncharge(run, slot->tree, old_cost);
    mutated(slot);
    return 0;
}

static uint64_t h_json_remove(struct zs_run *run, void *cookie, uint64_t h, uint64_t key,
                              uint64_t key_len, uint64_t r4, uint64_t r5)
{
    struct zs_json_slot *slot = use_handle(run, h, "zs_json_remove");
    const char *k = slot ? guest_in(run, key, key_len) : NULL;
    if (!k)
        return 0;
    if (slot->node->type != ZS_JT_OBJECT)
        return (uint64_t)-1;
    int64_t cost = zs_json_member_remove(slot->node, k, key_len);
    if (cost < 0)
        return (uint64_t)-1;
    uncharge(run, slot->tree, (size_t)cost);
    mutated(slot);
    return 0;
}

static uint64_t h_json_array_push(struct zs_run *run, void *cookie, uint64_t h, uint64_t vh,
                                  uint64_t r3, uint64_t r4, uint64_t r5)
{
    static const char helper[] = "zs_json_array_push";
    struct zs_json_slot *slot = use_handle(run, h, helper);
    if (!slot || !zs_script_json_node(run, vh, helper))
        return 0;
    if (slot->node->type != ZS_JT_ARRAY)
        return (uint64_t)-1;
    struct zs_json *copy = value_copy(run, slot, vh, 0, helper);
    if (!copy)
        return 0;
    if (zs_json_push(slot->node, copy) < 0) {
        uncharge(run, slot->tree, zs_json_cost(copy));
        zs_json_free(copy);
        zs_helper_fault(run, "%s: out of host memory", helper);
        return 0;
    }
    mutated(slot);
    return slot->node->len;
}

static uint64_t h_json_array_set(struct zs_run *run, void *cookie, uint64_t h, uint64_t index,
                                 uint64_t vh, uint64_t r4, uint64_t r5)
{
    static const char helper[] = "zs_json_array_set";
    struct zs_json_slot *slot = use_handle(run, h, helper);
    if (!slot || !zs_script_json_node(run, vh, helper))
        return 0;
    if (slot->node->type != ZS_JT_ARRAY || index >= slot->node->len)
        return (uint64_t)-1;
    struct zs_json *copy = value_copy(run, slot, vh, 0, helper);
    if (!copy)
        return 0;
    uncharge(run, slot->tree, zs_json_cost(slot->node->items[index]));
    zs_json_free(slot->node->items[index]);
    slot->node->items[index] = copy;
    mutated(slot);
    return 0;
}

/* Replaces the node behind h with `value` (a fresh node whose contents move in). */
static uint64_t replace_node(struct zs_run *run, uint64_t h, struct zs_json *value,
                             const char *helper)
{
    struct zs_json_slot *slot = use_handle(run, h, helper);
    if (!slot || !value) {
        if (slot)
            zs_helper_fault(run, "%s: out of host memory", helper);
        zs_json_free(value);
        return 0;
    }
    size_t old_cost = zs_json_cost(slot->node);
    if (charge(run, slot->tree, zs_json_cost(value), helper) < 0) {
        zs_json_free(value);
        return 0;
    }
    uncharge(run, slot->tree, old_cost);
    zs_json_clear(slot->node);
    *slot->node = *value;
    free(value);
    mutated(slot);
    return 0;
}

static uint64_t h_json_set_string(struct zs_run *run, void *cookie, uint64_t h, uint64_t p,
                                  uint64_t n, uint64_t r4, uint64_t r5)
{
    const char *s = guest_in(run, p, n);
    if (!s)
        return 0;
    if (!zs_is_utf8((const unsigned char *)s, n)) {
        zs_helper_fault(run, "zs_json_set_string: the value is not UTF-8");
        return 0;
    }
    return replace_node(run, h, zs_json_new_string(s, n), "zs_json_set_string");
}

static uint64_t h_json_set_i64(struct zs_run *run, void *cookie, uint64_t h, uint64_t v,
                               uint64_t r3, uint64_t r4, uint64_t r5)
{
    struct zs_json *value = zs_json_new(ZS_JT_NUMBER);
    if (value) {
        value->num_kind = ZS_JN_INT;
        value->num.i = (int64_t)v;
    }
    return replace_node(run, h, value, "zs_json_set_i64");
}

static uint64_t h_json_set_bool(struct zs_run *run, void *cookie, uint64_t h, uint64_t v,
                                uint64_t r3, uint64_t r4, uint64_t r5)
{
    struct zs_json *value = zs_json_new(ZS_JT_BOOL);
    if (value)
        value->num.b = v != 0;
    return replace_node(run, h, value, "zs_json_set_bool");
}

static uint64_t h_json_set_null(struct zs_run *run, void *cookie, uint64_t h, uint64_t r2,
                                uint64_t r3, uint64_t r4, uint64_t r5)
{
    return replace_node(run, h, zs_json_new(ZS_JT_NULL), "zs_json_set_null");
}

static uint64_t h_json_respond(struct zs_run *run, void *cookie, uint64_t status, uint64_t h,
                               uint64_t r3, uint64_t r4, uint64_t r5)
{
    static const char helper[] = "zs_json_respond";
    static const char ctype_key[] = "zs.response.header.content-type";
    static const char ctype[] = "application/json";
    struct zs_scriptrun *sr = zs_script_of(run);
    if (status > 65535) {
        zs_helper_fault(run, "%s: status %llu does not fit in 16 bits", helper,
                        (unsigned long long)status);
        return 0;
    }
    const char *text;
    size_t len;
    if (zs_json_handle_text(run, h, helper, &text, &len) < 0)
        return 0;
    if (zs_run_charge(run, len) < 0) {
        zs_helper_fault(run, "%s: script memory is full (a %zu-byte body; raise "
                             "--script-memory-kb)", helper, len);
        return 0;
    }
    if (zs_set_response(sr, zs_response_status(status), text, len) < 0 ||
        zs_ctx_meta_put(sr->ctx, ctype_key, sizeof(ctype_key) - 1, ctype, sizeof(ctype) - 1) < 0) {
        zs_helper_fault(run, "%s: out of host memory", helper);
        return 0;
    }
    return 0;
}

const struct zs_helper_def zs_json_helpers[] = {
    {"zs_json_parse", h_json_parse, NULL},
    {"zs_json_new_object", h_json_new_object, NULL},
    {"zs_json_new_array", h_json_new_array, NULL},
    {"zs_json_clone", h_json_clone, NULL},
    {"zs_object_free", h_object_free, NULL},
    {"zs_json_reset", h_json_reset, NULL},
    {"zs_json_get", h_json_get, NULL},
    {"zs_json_array_get", h_json_array_get, NULL},
    {"zs_json_read_string", h_json_read_string, NULL},
    {"zs_json_read_i64", h_json_read_i64, NULL},
    {"zs_json_read_bool", h_json_read_bool, NULL},
    {"zs_json_len", h_json_len, NULL},
    {"zs_json_type", h_json_type, NULL},
    {"zs_json_set", h_json_set, NULL},
    {"zs_json_remove", h_json_remove, NULL},
    {"zs_json_array_push", h_json_array_push, NULL},
    {"zs_json_array_set", h_json_array_set, NULL},
    {"zs_json_set_string", h_json_set_string, NULL},
    {"zs_json_set_i64", h_json_set_i64, NULL},
    {"zs_json_set_bool", h_json_set_bool, NULL},
    {"zs_json_set_null", h_json_set_null, NULL},
    {"zs_json_respond", h_json_respond, NULL},
};
const size_t zs_json_helpers_count = sizeof(zs_json_helpers) / sizeof(zs_json_helpers[0]);
