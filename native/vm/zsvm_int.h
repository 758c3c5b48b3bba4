/* SPDX-License-Identifier: Apache-2.0 */
/*
 * zsvm_int.h: the private structures shared by the loader, verifier,
 * interpreter, JIT and helper table. Not part of the public API (include/zsvm.h).
 *
 * The design that makes preemption and async helpers possible without signals,
 * threads or a kept native stack:
 *
 *   - The complete guest state lives in struct zs_run: the eleven registers, the
 *     next pc and the local-call frames. Both engines read it on entry and write
 *     it back on every exit, so a run can stop after any budget check or helper
 *     call and be resumed later, by either engine, from that struct alone.
 *   - bpf-to-bpf calls never use the host stack: a call pushes a struct zs_frame
 *     (return pc, callee-saved r6-r9, r10) onto run->frames and continues at the
 *     target; `exit` at depth > 0 pops it. The JIT returns through a pc -> native
 *     address table.
 *   - The budget is checked (decrement by one, stop when it goes below zero) at
 *     exactly these instructions, before they take effect: every jump whose
 *     target is at or before itself (back-edge), every local call, every helper
 *     call. On exhaustion the run stops with pc = that instruction and status
 *     ZS_PREEMPTED; resume re-executes it with a fresh budget. Both engines do
 *     this identically, so results, faults and preemption points match.
 *     "Back-edge" is decided by the encoding alone (off < 0 for jumps, imm < 0
 *     for gotol), whether or not a conditional jump is then taken. callx is a
 *     helper call (the register holds the helper index).
 *   - A negative budget given to zs_run_start/zs_run_resume means "no limit"
 *     (vm.c stores INT64_MAX in run->budget); engines only ever see >= 0.
 *
 * The cage: guest addresses are ZS_GUEST_BASE + offset into one host arena of
 * run->arena_size bytes (the memory cap). Every load checks
 * offset <= arena_size - size; every store and atomic also checks
 * offset >= ro_end (the read-only image sits at the bottom of the arena).
 * Anything else is a MemoryFault with the guest pc and address. Host addresses
 * never reach the guest; helpers translate (guest pointer, length) pairs with
 * zs_guest_ptr().
 *
 * Arena layout, low to high:
 *   [0, ro_end)              .rodata and other read-only sections (loaded once)
 *   [ro_end, data_end)       .data and .bss, re-initialised from the program's
 *                            template at every zs_run_start
 *   [data_end, heap_top)     bump heap for the host (zs_run_alloc): input
 *                            memory, request context, calldata
 *   [stack_lo, arena_size)   the stack: ZS_FRAME_SIZE per frame, depth + 1 frames;
 *                            r10 at entry = ZS_GUEST_BASE + arena_size
 */
#ifndef ZSVM_INT_H
#define ZSVM_INT_H

#include <stddef.h>
#include <stdint.h>

#include "include/zsvm.h"
#include "ebpf.h"

#define ZS_NREGS 11
#define ZS_MAX_CALL_DEPTH 8
#define ZS_FRAME_SIZE 4096u
#define ZS_STACK_SIZE (ZS_FRAME_SIZE * (ZS_MAX_CALL_DEPTH + 1))
#define ZS_GUEST_BASE 0x100000000ull
#define ZS_MAX_INSTS (1u << 20)
#define ZS_ERRMSG_MAX 256

struct zs_frame {
    uint32_t return_pc;
    uint64_t saved[4]; /* r6..r9 of the caller */
    uint64_t saved_r10;
};

/* One entry point: an executable ELF section (or the whole raw program). */
struct zs_entry {
    char *name;
    uint32_t start; /* first instruction, index into prog->insts */
    uint32_t end;   /* one past the last instruction of this section */
};

struct zs_helper_slot {
    char *name;
    zs_helper_fn fn;
    void *cookie;
};

struct zs_program {
    struct ebpf_inst *insts; /* all code sections, concatenated, relocated */
    uint32_t num_insts;
    struct zs_entry *entries;
    uint32_t num_entries;
    /* read-only image and writable data template, laid at arena offset 0 */
    uint8_t *image;      /* ro bytes then data bytes (bss zero) */
    uint64_t ro_size;    /* bytes of [0, ro_end) */
    uint64_t data_size;  /* bytes of [ro_end, data_end) */
    /* helpers: call imm (src=0) indexes this table after relocation */
    struct zs_helper_slot *helpers;
    uint32_t num_helpers;
    /* JIT output (NULL when interpreted) */
    void *jit_code;         /* mmap'd, R-X after compilation */
    size_t jit_size;
    uint32_t *jit_pc_map;   /* guest pc -> offset of its native code */
    int engine;             /* ZS_ENGINE_INTERP or ZS_ENGINE_JIT */
};

struct zs_run {
    /* guest state, complete at every exit of either engine */
    uint64_t reg[ZS_NREGS];
    uint32_t pc;
    uint32_t depth;
    struct zs_frame frames[ZS_MAX_CALL_DEPTH];
    int64_t budget;

    /* cage */
    uint8_t *arena;
    uint64_t arena_size;
    uint64_t ro_end;
    uint64_t data_end;
    uint64_t heap_top;
    uint64_t stack_lo;

    const struct zs_program *prog;
    void *host;               /* opaque pointer handed to helpers (zs_run_host) */

    /* status of the last exit */
    int status;
    uint32_t fault_pc;
    uint64_t fault_addr;
    char fault_msg[ZS_ERRMSG_MAX];
    int fault_kind;           /* enum zs_fault (include/zsvm.h) */

    /* set by a helper through zs_helper_fault / zs_helper_pend / zs_helper_exit
     * (an enum zs_helper_result value; OK before every helper call) */
    int helper_status;
    uint64_t charged;         /* host bytes charged against the free heap */
    int active;               /* an engine is executing this run (refuses re-entry) */
};

/* Results of zs_call_helper, the one way both engines call a helper (call
 * imm with src 0, and callx). For every result other than OK, zs_call_helper
 * has already set run->status and run->pc: the engine saves the registers
 * (r1..r10 as they were at the call; r0 is already in run->reg[0]) and
 * returns run->status. */
enum zs_helper_result {
    ZS_HELPER_OK = 0,      /* r0 written to run->reg[0], continue at pc + 1 */
    ZS_HELPER_FAULT = 1,   /* run->status = ZS_FAULT, run->pc = pc, message set */
    ZS_HELPER_PENDING = 2, /* run->pc = pc + 1, status ZS_SUSPENDED: resume(r0) */
    ZS_HELPER_EXIT = 3     /* run->pc = pc + 1, status ZS_DONE, r0 set: the run
                              ends at once (zs_helper_exit: the conformance
                              suite's "unwind" helper) */
};

/* Calls helper `index` with r1..r5 from run->reg; writes r0. `pc` is the
 * call instruction, used for fault reports and the resume point. An index
 * outside the table (possible only through callx) is a helper fault. The
 * engine has already charged the budget for this call. */
int zs_call_helper(struct zs_run *run, uint64_t index, uint32_t pc);

/* Every cage violation of either engine is reported with this, so both give
 * the same message: status ZS_FAULT, kind MEMORY, run->pc = fault_pc = pc,
 * fault_addr = the guest address of the access (base register + offset).
 * `size` is the access width in bytes; `store` is 1 for stores and atomics. */
void zs_run_memory_fault(struct zs_run *run, uint32_t pc, uint64_t addr, unsigned size, int store);

/* Records a fault of kind TRAP: status ZS_FAULT, pc, address, formatted message. */
void zs_run_set_fault(struct zs_run *run, uint32_t pc, uint64_t addr, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Engines: run from run->pc until DONE, FAULT, PREEMPTED or SUSPENDED. */
int zs_interp_run(struct zs_run *run);
int zs_jit_compile(struct zs_program *prog, char **errmsg);
int zs_jit_run(struct zs_run *run);
void zs_jit_free(struct zs_program *prog);

/* Loader and verifier. zs_load_elf fills insts, entries and the image of a
 * program whose helper table is already set, resolving helper calls by name. */
int zs_load_elf(struct zs_program *prog, const void *elf, size_t len, char **errmsg);
int zs_verify(const struct zs_program *prog, char **errmsg);

/* Error strings returned to callers are malloc'd; NULL on allocation failure. */
char *zs_errmsg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
