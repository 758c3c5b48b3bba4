/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fuzz_vm.c: libFuzzer target for the eBPF VM: random programs run on the
 * interpreter and the JIT under the cage must stop, fault and finish alike.
 *
 * Input byte 0 picks the mode. Even: the rest is raw instruction bytes (the
 * verifier sees anything). Odd: each 8 bytes become one instruction whose
 * opcode comes from the table of opcodes the verifier accepts, with registers
 * and jump offsets folded into range, so most programs load and run. Each
 * program that loads runs on both engines with a small budget, resumed many
 * times, with helpers that read guest memory, pend and fault; every stop
 * (status, registers, pc), the fault and the whole arena must be identical.
 * The interpreter runs under ASan, so any access it makes outside the cage is
 * caught; the JIT is held to the interpreter's results byte for byte.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "zsvm_int.h"

#define ARENA_SIZE (64 * 1024)
#define SLICE_BUDGET 16
#define MAX_STOPS 256
#define MAX_INSTS 256

static uint64_t helper_sum(struct zs_run *run, void *cookie, uint64_t r1, uint64_t r2, uint64_t r3,
                           uint64_t r4, uint64_t r5)
{
    uint64_t len = r2 & 0xff;
    const uint8_t *p = zs_guest_ptr(run, r1, len, (int)(r3 & 1));
    if (!p)
        return 0;
    uint64_t sum = 0;
    for (uint64_t i = 0; i < len; i++)
        sum = sum * 31 + p[i];
    return sum;
}

static uint64_t helper_pend(struct zs_run *run, void *cookie, uint64_t r1, uint64_t r2, uint64_t r3,
                            uint64_t r4, uint64_t r5)
{
    if (r1 & 1)
        zs_helper_pend(run);
    return r1 + 1;
}

static uint64_t helper_fault(struct zs_run *run, void *cookie, uint64_t r1, uint64_t r2, uint64_t r3,
                             uint64_t r4, uint64_t r5)
{
    if ((r1 & 7) == 7)
        zs_helper_fault(run, "fuzz helper rejected %llu", (unsigned long long)r1);
    return r1 ^ r2;
}

static const struct zs_helper_def HELPERS[] = {
    {"unwind", zs_helper_unwind, NULL},
    {"sum", helper_sum, NULL},
    {"pend", helper_pend, NULL},
    {"fault", helper_fault, NULL},
};
#define NUM_HELPERS (sizeof(HELPERS) / sizeof(HELPERS[0]))

static uint8_t valid_opcodes[256];
static size_t num_valid_opcodes;

/* Whether the verifier accepts `opcode` in a minimal program (tried with the
 * immediates an END or a call needs). */
static int opcode_loads(uint8_t opcode)
{
    static const int32_t imms[] = {1, 16};
    for (size_t i = 0; i < sizeof(imms) / sizeof(imms[0]); i++) {
        struct ebpf_inst code[4] = {
            {.opcode = opcode, .dst = 1, .src = 2, .off = 0, .imm = imms[i]},
            {.opcode = 0}, /* second slot of a wide load; otherwise skipped by the jump below */
            {.opcode = EBPF_CLS_ALU64 | EBPF_ALU_MOV, .dst = 0},
            {.opcode = EBPF_CLS_JMP | EBPF_JMP_EXIT},
        };
        if (opcode != (EBPF_CLS_LD | EBPF_SIZE_DW))
            code[1] = (struct ebpf_inst){.opcode = EBPF_CLS_JMP | EBPF_JMP_JA, .off = 0};
        struct zs_program *prog =
            zs_program_load_raw(code, sizeof(code), HELPERS, NUM_HELPERS, ZS_ENGINE_INTERP, NULL);
        if (prog) {
            zs_program_free(prog);
            return 1;
        }
    }
    return 0;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    for (int op = 0; op < 256; op++)
        if (opcode_loads((uint8_t)op))
            valid_opcodes[num_valid_opcodes++] = (uint8_t)op;
    if (!zs_jit_available()) {
        fprintf(stderr, "fuzz_vm: this build has no JIT for this machine\n");
        exit(1);
    }
    return 0;
}

/* Odd mode: fold each 8-byte group into an instruction the verifier likely accepts. */
static size_t shape(const uint8_t *data, size_t size, struct ebpf_inst *out)
{
    size_t n = size / 8;
    if (n > MAX_INSTS - 2)
        n = MAX_INSTS - 2;
    for (size_t i = 0; i < n; i++) {
        struct ebpf_inst inst;
        memcpy(&inst, data + 8 * i, 8);
        inst.opcode = valid_opcodes[inst.opcode % num_valid_opcodes];
        inst.dst = inst.dst % 10;
        inst.src = inst.src % 11;
        uint8_t cls = inst.opcode & EBPF_CLS_MASK;
        if (cls == EBPF_CLS_JMP || cls == EBPF_CLS_JMP32) {
            /* land inside the program (the two closing instructions included):
             * targets i + 1 + off in [0, n + 1] */
            inst.off = (int16_t)((int)((uint16_t)inst.off % (n + 2)) - (int)i - 1);
            if ((inst.opcode & 0xf0) == EBPF_JMP_CALL && inst.src == 0)
                inst.imm = (int32_t)((uint32_t)inst.imm % NUM_HELPERS);
        }
        if (cls == EBPF_CLS_ST || cls == EBPF_CLS_STX || cls == EBPF_CLS_LDX)
            inst.src = cls == EBPF_CLS_ST ? 0 : inst.src;
        out[i] = inst;
    }
    out[n] = (struct ebpf_inst){.opcode = EBPF_CLS_ALU64 | EBPF_ALU_MOV, .dst = 0, .imm = 0};
    out[n + 1] = (struct ebpf_inst){.opcode = EBPF_CLS_JMP | EBPF_JMP_EXIT};
    return n + 2;
}

static void mismatch(const char *what, int stop)
{
    fprintf(stderr, "fuzz_vm: interpreter and JIT differ in %s at stop %d\n", what, stop);
    abort();
}

static void compare(struct zs_run *a, struct zs_run *b, int stop)
{
    if (a->status != b->status)
        mismatch("status", stop);
    if (memcmp(a->reg, b->reg, sizeof(a->reg)) != 0)
        mismatch("registers", stop);
    if (a->status == ZS_FAULT) {
        if (a->fault_kind != b->fault_kind || a->fault_pc != b->fault_pc || a->fault_addr != b->fault_addr ||
            strcmp(a->fault_msg, b->fault_msg) != 0)
            mismatch("fault", stop);
    } else if (a->pc != b->pc || a->depth != b->depth) {
        mismatch("pc or call depth", stop);
    }
    if (memcmp(a->arena, b->arena, a->arena_size) != 0)
        mismatch("arena", stop);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    static struct ebpf_inst shaped[MAX_INSTS];
    const void *code = data + 1;
    size_t len = size - 1;
    if (data[0] & 1) {
        len = shape(data + 1, size - 1, shaped) * 8;
        code = shaped;
    } else if (len > MAX_INSTS * 8) {
        len = MAX_INSTS * 8;
    }
    struct zs_program *interp = zs_program_load_raw(code, len, HELPERS, NUM_HELPERS, ZS_ENGINE_INTERP, NULL);
    struct zs_program *jit = zs_program_load_raw(code, len, HELPERS, NUM_HELPERS, ZS_ENGINE_JIT, NULL);
    if (!interp != !jit) {
        fprintf(stderr, "fuzz_vm: the program loads on one engine only\n");
        abort();
    }
    if (!interp)
        return 0;
    struct zs_run *a = zs_run_new(interp, ARENA_SIZE, NULL, NULL);
    struct zs_run *b = zs_run_new(jit, ARENA_SIZE, NULL, NULL);
    if (!a || !b)
        abort();
    /* input bytes the program can read at r1 */
    uint64_t input_a = zs_run_alloc(a, 64), input_b = zs_run_alloc(b, 64);
    if (input_a != input_b)
        mismatch("heap allocation", -1);
    memcpy(zs_run_host_ptr(a, input_a, 64), data, size < 64 ? size : 64);
    memcpy(zs_run_host_ptr(b, input_b, 64), data, size < 64 ? size : 64);
    uint64_t args[5] = {input_a, 64, 0, 0, 0};
    int sa = zs_run_start(a, 0, args, SLICE_BUDGET);
    int sb = zs_run_start(b, 0, args, SLICE_BUDGET);
    compare(a, b, 0);
    for (int stop = 1; stop < MAX_STOPS && (sa == ZS_PREEMPTED || sa == ZS_SUSPENDED); stop++) {
        uint64_t r0 = (uint64_t)stop * 0x9e3779b97f4a7c15ull;
        sa = zs_run_resume(a, r0, SLICE_BUDGET);
        sb = zs_run_resume(b, r0, SLICE_BUDGET);
        if (sa != sb)
            mismatch("resume status", stop);
        compare(a, b, stop);
    }
    zs_run_free(a);
    zs_run_free(b);
    zs_program_free(interp);
    zs_program_free(jit);
    return 0;
}
