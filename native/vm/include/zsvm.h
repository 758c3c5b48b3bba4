/* SPDX-License-Identifier: Apache-2.0 */
/*
 * zsvm.h: the public API of zeroserve's eBPF virtual machine.
 *
 * A program is loaded once (from a BPF ELF object or raw instructions) against
 * a helper table, verified, and optionally JIT-compiled. Each run has its own
 * arena (the memory cap) and register state; a run ends DONE, FAULT, or stops
 * PREEMPTED (budget used up) or SUSPENDED (an async helper is pending) and is
 * continued with zs_run_resume. Functions return 0 / a pointer on success and
 * -1 / NULL on failure with a malloc'd message in *errmsg (free() it); nothing
 * here prints or aborts.
 */
#ifndef ZSVM_H
#define ZSVM_H

#include <stddef.h>
#include <stdint.h>

struct zs_program;
struct zs_run;

enum zs_status {
    ZS_DONE = 0,
    ZS_FAULT = 1,
    ZS_PREEMPTED = 2,
    ZS_SUSPENDED = 3,
};

enum zs_engine {
    ZS_ENGINE_INTERP = 0,
    ZS_ENGINE_JIT = 1,
};

/* A helper: r1..r5 in, r0 out. It reaches guest memory only through
 * zs_guest_ptr and reports traps with zs_helper_fault, or an async wait with
 * zs_helper_pend (its return value is then ignored). */
typedef uint64_t (*zs_helper_fn)(struct zs_run *run, void *cookie, uint64_t r1, uint64_t r2,
                                 uint64_t r3, uint64_t r4, uint64_t r5);

struct zs_helper_def {
    const char *name;
    zs_helper_fn fn;
    void *cookie;
};

/* Loading. Helpers are resolved by symbol name (ELF) or by table index (raw
 * programs, where `call imm` indexes `helpers`). */
struct zs_program *zs_program_load_elf(const void *elf, size_t len,
                                       const struct zs_helper_def *helpers, size_t num_helpers,
                                       int engine, char **errmsg);
struct zs_program *zs_program_load_raw(const void *code, size_t len,
                                       const struct zs_helper_def *helpers, size_t num_helpers,
                                       int engine, char **errmsg);
void zs_program_free(struct zs_program *prog);
int zs_program_engine(const struct zs_program *prog);
/* Index of the entry named `section`, or -1. */
int zs_program_find_entry(const struct zs_program *prog, const char *section);
int zs_program_num_entries(const struct zs_program *prog);
const char *zs_program_entry_name(const struct zs_program *prog, int index);

/* Runs. arena_size is the memory cap in bytes. */
struct zs_run *zs_run_new(const struct zs_program *prog, size_t arena_size, void *host,
                          char **errmsg);
void zs_run_free(struct zs_run *run);
/* Resets data/bss, heap and stack; returns the guest address of `size` bytes
 * of heap (0 when it does not fit) for input memory placed before zs_run_start. */
uint64_t zs_run_alloc(struct zs_run *run, size_t size);
void zs_run_reset(struct zs_run *run);
int zs_run_start(struct zs_run *run, int entry, const uint64_t args[5], int64_t budget);
int zs_run_resume(struct zs_run *run, uint64_t r0, int64_t budget);
uint64_t zs_run_result(const struct zs_run *run);
void *zs_run_host(const struct zs_run *run);
const char *zs_run_fault_message(const struct zs_run *run);
uint32_t zs_run_fault_pc(const struct zs_run *run);
uint64_t zs_run_fault_addr(const struct zs_run *run);

/* For helpers. zs_guest_ptr returns the host address of [addr, addr+len) or
 * NULL (and the run faults) when it is not wholly inside the arena, or inside
 * its writable part when `writable`. */
void *zs_guest_ptr(struct zs_run *run, uint64_t addr, uint64_t len, int writable);
void zs_helper_fault(struct zs_run *run, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void zs_helper_pend(struct zs_run *run);
/* Memory accounting against the arena's free heap (host allocations made on a
 * script's behalf); returns 0 or -1 when the cap would be exceeded. */
int zs_run_charge(struct zs_run *run, size_t bytes);
void zs_run_uncharge(struct zs_run *run, size_t bytes);

#endif
