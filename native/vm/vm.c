/* SPDX-License-Identifier: Apache-2.0 */
/*
 * vm.c: the VM's host API: program lifetime (load, verify, engine choice),
 * runs and their caged arena, helper dispatch and fault recording.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "zsvm_int.h"

/* The JIT lives in jit_x86_64.c where the machine has one; without it these
 * resolve to NULL and ZS_ENGINE_JIT fails to load with a message. */
extern int zs_jit_compile(struct zs_program *prog, char **errmsg) __attribute__((weak));
extern int zs_jit_run(struct zs_run *run) __attribute__((weak));
extern void zs_jit_free(struct zs_program *prog) __attribute__((weak));

char *zs_errmsg(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return NULL;
    char *msg = malloc((size_t)n + 1);
    if (!msg)
        return NULL;
    va_start(ap, fmt);
    vsnprintf(msg, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return msg;
}

static void set_err(char **errmsg, char *msg)
{
    if (errmsg)
        *errmsg = msg;
    else
        free(msg);
}

/* ---- programs ---------------------------------------------------------- */

int zs_jit_available(void)
{
    return zs_jit_compile != NULL && zs_jit_run != NULL;
}

void zs_program_free(struct zs_program *prog)
{
    if (!prog)
        return;
    if (prog->jit_code && zs_jit_free)
        zs_jit_free(prog);
    for (uint32_t i = 0; i < prog->num_entries; i++)
        free(prog->entries[i].name);
    for (uint32_t i = 0; i < prog->num_helpers; i++)
        free(prog->helpers[i].name);
    free(prog->entries);
    free(prog->helpers);
    free(prog->insts);
    free(prog->image);
    free(prog);
}

static struct zs_program *program_new(const struct zs_helper_def *helpers, size_t num_helpers,
                                      int engine, char **errmsg)
{
    if (engine != ZS_ENGINE_INTERP && engine != ZS_ENGINE_JIT) {
        set_err(errmsg, zs_errmsg("unknown engine %d (0 = interpreter, 1 = JIT)", engine));
        return NULL;
    }
    if (engine == ZS_ENGINE_JIT && !zs_jit_available()) {
        set_err(errmsg, zs_errmsg("JIT not available in this build; use the interpreter"));
        return NULL;
    }
    if (num_helpers > UINT32_MAX || (num_helpers && !helpers)) {
        set_err(errmsg, zs_errmsg("invalid helper table (%zu entries)", num_helpers));
        return NULL;
    }
    struct zs_program *prog = calloc(1, sizeof(*prog));
    if (!prog)
        goto oom;
    prog->engine = ZS_ENGINE_INTERP;
    if (num_helpers) {
        prog->helpers = calloc(num_helpers, sizeof(*prog->helpers));
        if (!prog->helpers)
            goto oom;
        prog->num_helpers = (uint32_t)num_helpers;
        for (size_t i = 0; i < num_helpers; i++) {
            prog->helpers[i].fn = helpers[i].fn;
            prog->helpers[i].cookie = helpers[i].cookie;
            if (helpers[i].name && !(prog->helpers[i].name = strdup(helpers[i].name)))
                goto oom;
        }
    }
    return prog;
oom:
    zs_program_free(prog);
    set_err(errmsg, zs_errmsg("out of memory loading a program"));
    return NULL;
}

/* Verification and engine preparation, common to both load paths. */
static struct zs_program *program_finish(struct zs_program *prog, int engine, char **errmsg)
{
    if (zs_verify(prog, errmsg) != 0) {
        zs_program_free(prog);
        return NULL;
    }
    if (engine == ZS_ENGINE_JIT) {
        if (zs_jit_compile(prog, errmsg) != 0) {
            zs_program_free(prog);
            return NULL;
        }
        prog->engine = ZS_ENGINE_JIT;
    }
    return prog;
}

struct zs_program *zs_program_load_elf(const void *elf, size_t len,
                                       const struct zs_helper_def *helpers, size_t num_helpers,
                                       int engine, char **errmsg)
{
    struct zs_program *prog = program_new(helpers, num_helpers, engine, errmsg);
    if (!prog)
        return NULL;
    if (zs_load_elf(prog, elf, len, errmsg) != 0) {
        zs_program_free(prog);
        return NULL;
    }
    return program_finish(prog, engine, errmsg);
}

struct zs_program *zs_program_load_raw(const void *code, size_t len,
                                       const struct zs_helper_def *helpers, size_t num_helpers,
                                       int engine, char **errmsg)
{
    if (!code || len == 0 || len % sizeof(struct ebpf_inst) != 0) {
        set_err(errmsg, zs_errmsg("raw program of %zu bytes: must be a non-empty multiple of 8", len));
        return NULL;
    }
    if (len / sizeof(struct ebpf_inst) > ZS_MAX_INSTS) {
        set_err(errmsg, zs_errmsg("program has %zu instructions, more than the limit of %u",
                                  len / sizeof(struct ebpf_inst), ZS_MAX_INSTS));
        return NULL;
    }
    struct zs_program *prog = program_new(helpers, num_helpers, engine, errmsg);
    if (!prog)
        return NULL;
    prog->num_insts = (uint32_t)(len / sizeof(struct ebpf_inst));
    prog->insts = malloc(len);
    prog->entries = calloc(1, sizeof(*prog->entries));
    if (!prog->insts || !prog->entries || !(prog->entries[0].name = strdup(".text"))) {
        zs_program_free(prog);
        set_err(errmsg, zs_errmsg("out of memory loading a program"));
        return NULL;
    }
    memcpy(prog->insts, code, len);
    prog->num_entries = 1;
    prog->entries[0].start = 0;
    prog->entries[0].end = prog->num_insts;
    return program_finish(prog, engine, errmsg);
}

int zs_program_engine(const struct zs_program *prog)
{
    return prog->engine;
}

int zs_program_find_entry(const struct zs_program *prog, const char *section)
{
    for (uint32_t i = 0; i < prog->num_entries; i++)
        if (strcmp(prog->entries[i].name, section) == 0)
            return (int)i;
    return -1;
}

int zs_program_num_entries(const struct zs_program *prog)
{
    return (int)prog->num_entries;
}

const char *zs_program_entry_name(const struct zs_program *prog, int index)
{
    if (index < 0 || (uint32_t)index >= prog->num_entries)
        return NULL;
    return prog->entries[index].name;
}

size_t zs_program_called_helpers(const struct zs_program *prog, const char **names, size_t max)
{
    /* callx calls the helper a register names: then any bound helper may be called. */
    int any = 0;
    for (uint32_t pc = 0; pc < prog->num_insts && !any; pc++)
        any = prog->insts[pc].opcode == EBPF_OP_CALLX;
    size_t found = 0;
    for (uint32_t slot = 0; slot < prog->num_helpers; slot++) {
        int called = any && prog->helpers[slot].fn;
        for (uint32_t pc = 0; pc < prog->num_insts && !called; pc++) {
            const struct ebpf_inst *inst = &prog->insts[pc];
            called = inst->opcode == EBPF_OP_CALL && inst->src == EBPF_CALL_HELPER &&
                     (uint32_t)inst->imm == slot;
        }
        if (!called)
            continue;
        if (found < max)
            names[found] = prog->helpers[slot].name;
        found++;
    }
    return found;
}

/* ---- runs ---------------------------------------------------------------- */

static uint64_t align8(uint64_t x)
{
    return (x + 7) & ~(uint64_t)7;
}

struct zs_run *zs_run_new(const struct zs_program *prog, size_t arena_size, void *host,
                          char **errmsg)
{
    arena_size &= ~(size_t)7;
    uint64_t need = align8(prog->ro_size + prog->data_size) + ZS_STACK_SIZE;
    if (arena_size < need) {
        set_err(errmsg, zs_errmsg("script memory of %zu KiB is too small: this script needs "
                                  "at least %llu KiB (%llu bytes of globals + %u of stack)",
                                  arena_size / 1024, (unsigned long long)((need + 1023) / 1024),
                                  (unsigned long long)(prog->ro_size + prog->data_size),
                                  ZS_STACK_SIZE));
        return NULL;
    }
    if (arena_size > (1ull << 31)) {
        set_err(errmsg, zs_errmsg("script memory of %zu KiB is more than the 2 GiB possible",
                                  arena_size / 1024));
        return NULL;
    }
    struct zs_run *run = calloc(1, sizeof(*run));
    if (!run) {
        set_err(errmsg, zs_errmsg("out of memory creating a run"));
        return NULL;
    }
    /* Anonymous pages: zeroed, and only what the script touches is resident. */
    void *arena = mmap(NULL, arena_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (arena == MAP_FAILED) {
        free(run);
        set_err(errmsg, zs_errmsg("cannot map %zu bytes of script memory: %s", arena_size,
                                  strerror(errno)));
        return NULL;
    }
    run->arena = arena;
    run->arena_size = arena_size;
    run->ro_end = prog->ro_size;
    run->data_end = prog->ro_size + prog->data_size;
    run->heap_top = align8(run->data_end);
    run->stack_lo = arena_size - ZS_STACK_SIZE;
    run->prog = prog;
    run->host = host;
    run->status = ZS_DONE;
    if (prog->ro_size)
        memcpy(run->arena, prog->image, prog->ro_size);
    return run;
}

void zs_run_free(struct zs_run *run)
{
    if (!run)
        return;
    munmap(run->arena, run->arena_size);
    free(run);
}

uint64_t zs_run_alloc(struct zs_run *run, size_t size)
{
    uint64_t top = run->heap_top;
    if (size > run->stack_lo || top + run->charged > run->stack_lo - size)
        return 0;
    run->heap_top = align8(top + size);
    memset(run->arena + top, 0, size);
    return ZS_GUEST_BASE + top;
}

void zs_run_reset(struct zs_run *run)
{
    run->heap_top = align8(run->data_end);
    run->charged = 0;
}

void *zs_run_host_ptr(struct zs_run *run, uint64_t addr, uint64_t len)
{
    uint64_t off = addr - ZS_GUEST_BASE;
    if (len > run->arena_size || off > run->arena_size - len)
        return NULL;
    return run->arena + off;
}

int zs_run_charge(struct zs_run *run, size_t bytes)
{
    uint64_t free_heap = run->stack_lo - run->heap_top - run->charged;
    if (bytes > free_heap)
        return -1;
    run->charged += bytes;
    return 0;
}

void zs_run_uncharge(struct zs_run *run, size_t bytes)
{
    run->charged = bytes > run->charged ? 0 : run->charged - bytes;
}

static int engine_run(struct zs_run *run, int64_t budget)
{
    run->budget = budget < 0 ? INT64_MAX : budget;
    run->fault_kind = ZS_FAULT_KIND_NONE;
    run->fault_msg[0] = '\0';
    run->active = 1;
    run->status = run->prog->engine == ZS_ENGINE_JIT ? zs_jit_run(run) : zs_interp_run(run);
    run->active = 0;
    return run->status;
}

int zs_run_start(struct zs_run *run, int entry, const uint64_t args[5], int64_t budget)
{
    const struct zs_program *prog = run->prog;
    if (run->active)
        return -1;
    if (entry < 0 || (uint32_t)entry >= prog->num_entries) {
        zs_run_set_fault(run, 0, 0, "no entry point #%d (the program has %u)", entry,
                         prog->num_entries);
        return run->status;
    }
    if (prog->data_size)
        memcpy(run->arena + run->ro_end, prog->image + prog->ro_size, prog->data_size);
    memset(run->reg, 0, sizeof(run->reg));
    if (args)
        memcpy(&run->reg[1], args, 5 * sizeof(uint64_t));
    run->reg[10] = ZS_GUEST_BASE + run->arena_size;
    run->pc = prog->entries[entry].start;
    run->depth = 0;
    return engine_run(run, budget);
}

int zs_run_resume(struct zs_run *run, uint64_t r0, int64_t budget)
{
    if (run->active)
        return -1;
    if (run->status == ZS_SUSPENDED)
        run->reg[0] = r0;
    else if (run->status != ZS_PREEMPTED)
        return -1;
    return engine_run(run, budget);
}

int zs_run_status(const struct zs_run *run)
{
    return run->status;
}

uint64_t zs_run_result(const struct zs_run *run)
{
    return run->reg[0];
}

const uint64_t *zs_run_regs(const struct zs_run *run)
{
    return run->reg;
}

void *zs_run_host(const struct zs_run *run)
{
    return run->host;
}

const char *zs_run_fault_message(const struct zs_run *run)
{
    return run->fault_msg;
}

uint32_t zs_run_fault_pc(const struct zs_run *run)
{
    return run->fault_pc;
}

uint64_t zs_run_fault_addr(const struct zs_run *run)
{
    return run->fault_addr;
}

int zs_run_fault_kind(const struct zs_run *run)
{
    return run->fault_kind;
}

/* ---- faults ---------------------------------------------------------------- */

void zs_run_set_fault(struct zs_run *run, uint32_t pc, uint64_t addr, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(run->fault_msg, sizeof(run->fault_msg), fmt, ap);
    va_end(ap);
    run->status = ZS_FAULT;
    run->fault_kind = ZS_FAULT_KIND_TRAP;
    run->pc = pc;
    run->fault_pc = pc;
    run->fault_addr = addr;
}

void zs_run_memory_fault(struct zs_run *run, uint32_t pc, uint64_t addr, unsigned size, int store)
{
    uint64_t off = addr - ZS_GUEST_BASE;
    int read_only = store && off < run->ro_end;
    zs_run_set_fault(run, pc, addr, "memory fault at pc %u: %u-byte %s at 0x%llx %s", pc, size,
                     store ? "store" : "load", (unsigned long long)addr,
                     read_only ? "into read-only data" : "outside the script's memory");
    run->fault_kind = ZS_FAULT_KIND_MEMORY;
}

/* ---- helpers ------------------------------------------------------------------ */

int zs_call_helper(struct zs_run *run, uint64_t index, uint32_t pc)
{
    const struct zs_program *prog = run->prog;
    if (index >= prog->num_helpers || !prog->helpers[index].fn) {
        zs_run_set_fault(run, pc, 0, "call to unknown helper #%llu at pc %u",
                         (unsigned long long)index, pc);
        run->fault_kind = ZS_FAULT_KIND_HELPER;
        return ZS_HELPER_FAULT;
    }
    const struct zs_helper_slot *h = &prog->helpers[index];
    uint64_t *r = run->reg;
    run->helper_status = ZS_HELPER_OK;
    uint64_t r0 = h->fn(run, h->cookie, r[1], r[2], r[3], r[4], r[5]);
    switch (run->helper_status) {
    case ZS_HELPER_OK:
        r[0] = r0;
        return ZS_HELPER_OK;
    case ZS_HELPER_PENDING:
        run->status = ZS_SUSPENDED;
        run->pc = pc + 1;
        return ZS_HELPER_PENDING;
    case ZS_HELPER_EXIT:
        run->status = ZS_DONE;
        run->pc = pc + 1;
        return ZS_HELPER_EXIT;
    default: {
        char detail[ZS_ERRMSG_MAX];
        uint64_t addr = run->fault_addr;
        memcpy(detail, run->fault_msg, sizeof(detail));
        zs_run_set_fault(run, pc, addr, "helper %s failed at pc %u: %s",
                         h->name ? h->name : "(unnamed)", pc, detail);
        run->fault_kind = ZS_FAULT_KIND_HELPER;
        return ZS_HELPER_FAULT;
    }
    }
}

void *zs_guest_ptr(struct zs_run *run, uint64_t addr, uint64_t len, int writable)
{
    if (len == 0)
        return run->arena; /* nothing will be accessed; any address is fine */
    uint64_t off = addr - ZS_GUEST_BASE;
    if (len <= run->arena_size && off <= run->arena_size - len && !(writable && off < run->ro_end))
        return run->arena + off;
    if (!run->active)
        return NULL; /* the host between runs: nothing to fault */
    run->helper_status = ZS_HELPER_FAULT;
    run->fault_addr = addr;
    snprintf(run->fault_msg, sizeof(run->fault_msg), "%s range 0x%llx (+%llu bytes) is %s",
             writable ? "output" : "input", (unsigned long long)addr, (unsigned long long)len,
             writable && off < run->ro_end && off <= run->arena_size ? "read-only"
                                                                    : "outside the script's memory");
    return NULL;
}

void zs_helper_fault(struct zs_run *run, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(run->fault_msg, sizeof(run->fault_msg), fmt, ap);
    va_end(ap);
    run->fault_addr = 0;
    run->helper_status = ZS_HELPER_FAULT;
}

void zs_helper_pend(struct zs_run *run)
{
    if (run->helper_status == ZS_HELPER_OK)
        run->helper_status = ZS_HELPER_PENDING;
}

void zs_helper_exit(struct zs_run *run, uint64_t r0)
{
    if (run->helper_status == ZS_HELPER_OK) {
        run->helper_status = ZS_HELPER_EXIT;
        run->reg[0] = r0;
    }
}

uint64_t zs_helper_unwind(struct zs_run *run, void *cookie, uint64_t r1, uint64_t r2, uint64_t r3,
                          uint64_t r4, uint64_t r5)
{
    if (r1 == 0)
        zs_helper_exit(run, 0);
    return r1;
}
