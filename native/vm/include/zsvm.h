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

/* What a fault was (zs_run_fault_kind). */
enum zs_fault {
    ZS_FAULT_KIND_NONE = 0,
    ZS_FAULT_KIND_MEMORY = 1, /* guest access outside its arena: pc and address */
    ZS_FAULT_KIND_HELPER = 2, /* a helper failed or rejected its arguments */
    ZS_FAULT_KIND_TRAP = 3,
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
/* 1 when this build has a JIT for this machine (ZS_ENGINE_JIT can load). */
int zs_jit_available(void);
int zs_program_engine(const struct zs_program *prog);
/* Index of the entry named `section`, or -1. */
int zs_program_find_entry(const struct zs_program *prog, const char *section);
int zs_program_num_entries(const struct zs_program *prog);
const char *zs_program_entry_name(const struct zs_program *prog, int index);
/* How many distinct helper slots the program's code calls; their names go to
 * names[0..max) (pointers into the program, valid while it lives). A program
 * using callx (helper number in a register) counts every bound helper. */
size_t zs_program_called_helpers(const struct zs_program *prog, const char **names, size_t max);

/* Runs. arena_size is the memory cap in bytes: it holds the program's
 * read-only image, a copy of its .data/.bss, the host heap and the stack. */
struct zs_run *zs_run_new(const struct zs_program *prog, size_t arena_size, void *host,
                          char **errmsg);
void zs_run_free(struct zs_run *run);
/* zs_run_alloc returns the guest address of `size` zeroed bytes of heap, 8-byte
 * aligned (0 when they do not fit), for input placed before zs_run_start;
 * zs_run_reset empties the heap and the charges. zs_run_host_ptr gives the
 * host address of an allocation (or of any caged range, NULL when outside). */
uint64_t zs_run_alloc(struct zs_run *run, size_t size);
void zs_run_reset(struct zs_run *run);
void *zs_run_host_ptr(struct zs_run *run, uint64_t addr, uint64_t len);
/* Start re-initialises .data/.bss and the stack pointer, sets r1..r5 = args
 * (NULL: zeros) and runs entry `entry` (an index). budget < 0: no limit; a
 * budget of 0 stops at the first back-edge or call (resume with >= 1 to make
 * progress). Both return the run's status (enum zs_status), or -1 without
 * running when the run is executing (a helper re-entering its own run) or, for
 * resume, is neither PREEMPTED nor SUSPENDED. Resume continues a PREEMPTED or
 * SUSPENDED run; r0 is the pending helper's result (ignored when PREEMPTED). */
int zs_run_start(struct zs_run *run, int entry, const uint64_t args[5], int64_t budget);
int zs_run_resume(struct zs_run *run, uint64_t r0, int64_t budget);
int zs_run_status(const struct zs_run *run);
uint64_t zs_run_result(const struct zs_run *run);
/* The register file r0..r10, valid as long as the run: lets a host read r0
 * without a call. */
const uint64_t *zs_run_regs(const struct zs_run *run);
int zs_run_fault_kind(const struct zs_run *run);
void *zs_run_host(const struct zs_run *run);
const char *zs_run_fault_message(const struct zs_run *run);
uint32_t zs_run_fault_pc(const struct zs_run *run);
uint64_t zs_run_fault_addr(const struct zs_run *run);

/* For helpers. zs_guest_ptr returns the host address of [addr, addr+len) or
 * NULL (and the run faults, when called during the run) when it is not wholly
 * inside the arena, or inside its writable part when `writable`. */
void *zs_guest_ptr(struct zs_run *run, uint64_t addr, uint64_t len, int writable);
void zs_helper_fault(struct zs_run *run, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void zs_helper_pend(struct zs_run *run);
/* Ends the run at once, status ZS_DONE with r0 (the helper's return value is
 * then ignored). */
void zs_helper_exit(struct zs_run *run, uint64_t r0);

/* The bpf_conformance suite's helper 5 ("unwind"): returns r1, and ends the
 * run with r0 = 0 when r1 is 0. */
uint64_t zs_helper_unwind(struct zs_run *run, void *cookie, uint64_t r1, uint64_t r2, uint64_t r3,
                          uint64_t r4, uint64_t r5);
/* Memory accounting against the arena's free heap (host allocations made on a
 * script's behalf); returns 0 or -1 when the cap would be exceeded. */
int zs_run_charge(struct zs_run *run, size_t bytes);
void zs_run_uncharge(struct zs_run *run, size_t bytes);

#endif
