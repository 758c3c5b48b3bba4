/* SPDX-License-Identifier: Apache-2.0 */
/*
 * interp.c: the portable engine: executes verified instructions on the guest
 * state of a struct zs_run, caging every memory access, until the run ends,
 * faults, runs out of budget or waits on a helper.
 *
 * Dispatch is direct-threaded: one label per opcode, reached through a
 * 256-entry table (GCC/Clang labels-as-values); the verifier guarantees only
 * valid opcodes arrive, the rest land on a trap.
 */
#include <string.h>

#include "zsvm_int.h"

/* Signed division and modulo with the RFC's answers where C has none:
 * x / 0 = 0, x % 0 = x, INT_MIN / -1 = INT_MIN, INT_MIN % -1 = 0. */
static inline uint64_t sdiv64(uint64_t a, uint64_t b)
{
    if (b == 0)
        return 0;
    if ((int64_t)b == -1)
        return -a;
    return (uint64_t)((int64_t)a / (int64_t)b);
}

static inline uint64_t smod64(uint64_t a, uint64_t b)
{
    if (b == 0)
        return a;
    if ((int64_t)b == -1)
        return 0;
    return (uint64_t)((int64_t)a % (int64_t)b);
}

static inline uint32_t sdiv32(uint32_t a, uint32_t b)
{
    if (b == 0)
        return 0;
    if ((int32_t)b == -1)
        return -a;
    return (uint32_t)((int32_t)a / (int32_t)b);
}

static inline uint32_t smod32(uint32_t a, uint32_t b)
{
    if (b == 0)
        return a;
    if ((int32_t)b == -1)
        return 0;
    return (uint32_t)((int32_t)a % (int32_t)b);
}

static inline uint64_t load_n(const uint8_t *p, unsigned n)
{
    switch (n) {
    case 1: return *p;
    case 2: { uint16_t v; memcpy(&v, p, 2); return v; }
    case 4: { uint32_t v; memcpy(&v, p, 4); return v; }
    default: { uint64_t v; memcpy(&v, p, 8); return v; }
    }
}

static inline void store_n(uint8_t *p, unsigned n, uint64_t v)
{
    switch (n) {
    case 1: *p = (uint8_t)v; break;
    case 2: { uint16_t x = (uint16_t)v; memcpy(p, &x, 2); break; }
    case 4: { uint32_t x = (uint32_t)v; memcpy(p, &x, 4); break; }
    default: memcpy(p, &v, 8); break;
    }
}

/* Applies atomic operation `op` of width n (4 or 8) at p; returns the old value. */
static inline uint64_t atomic_op(uint8_t *p, unsigned n, int32_t op, uint64_t src, uint64_t r0)
{
    uint64_t mask = n == 4 ? 0xffffffffull : ~0ull;
    uint64_t old = load_n(p, n);
    uint64_t val;
    switch (op & ~EBPF_ATOMIC_FETCH) {
    case EBPF_ATOMIC_ADD: val = old + src; break;
    case EBPF_ATOMIC_OR: val = old | src; break;
    case EBPF_ATOMIC_AND: val = old & src; break;
    case EBPF_ATOMIC_XOR: val = old ^ src; break;
    case EBPF_ATOMIC_XCHG & ~EBPF_ATOMIC_FETCH: val = src; break;
    default: /* cmpxchg */ val = (old == (r0 & mask)) ? src : old; break;
    }
    store_n(p, n, val & mask);
    return old;
}

static inline uint64_t movsx64(int16_t width, uint64_t v)
{
    switch (width) {
    case 8: return (uint64_t)(int64_t)(int8_t)v;
    case 16: return (uint64_t)(int64_t)(int16_t)v;
    case 32: return (uint64_t)(int64_t)(int32_t)v;
    default: return v;
    }
}

static inline uint32_t movsx32(int16_t width, uint32_t v)
{
    switch (width) {
    case 8: return (uint32_t)(int32_t)(int8_t)v;
    case 16: return (uint32_t)(int32_t)(int16_t)v;
    default: return v;
    }
}

static inline uint64_t byteswap(uint64_t v, int32_t width)
{
    switch (width) {
    case 16: return __builtin_bswap16((uint16_t)v);
    case 32: return __builtin_bswap32((uint32_t)v);
    default: return __builtin_bswap64(v);
    }
}

static inline uint64_t truncate(uint64_t v, int32_t width)
{
    switch (width) {
    case 16: return (uint16_t)v;
    case 32: return (uint32_t)v;
    default: return v;
    }
}

/* Operand spellings inside handlers: a = dst, b = the source (register or
 * immediate), at the handler's width. */
#define DST reg[in.dst]
#define NEXT(step)                                                                                 \
    do {                                                                                           \
        pc += (step);                                                                              \
        in = insts[pc];                                                                            \
        goto *table[in.opcode];                                                                    \
    } while (0)

/* An ALU operation in its four forms: 64/32-bit, immediate/register. */
#define ALU(name, e64, e32)                                                                        \
    name##64k : { uint64_t a = DST, b = (uint64_t)(int64_t)in.imm; DST = (e64); NEXT(1); }       \
    name##64x : { uint64_t a = DST, b = reg[in.src]; DST = (e64); NEXT(1); }                     \
    name##32k : { uint32_t a = (uint32_t)DST, b = (uint32_t)in.imm; DST = (uint32_t)(e32); NEXT(1); } \
    name##32x : { uint32_t a = (uint32_t)DST, b = (uint32_t)reg[in.src]; DST = (uint32_t)(e32); NEXT(1); }
#define ALU_SLOTS(name, op)                                                                        \
    [EBPF_CLS_ALU64 | EBPF_SRC_K | (op)] = &&name##64k, [EBPF_CLS_ALU64 | EBPF_SRC_X | (op)] = &&name##64x, \
    [EBPF_CLS_ALU | EBPF_SRC_K | (op)] = &&name##32k, [EBPF_CLS_ALU | EBPF_SRC_X | (op)] = &&name##32x

/* A conditional jump in its four forms: JMP/JMP32, immediate/register. The
 * budget is charged at every backward one, taken or not. */
#define JCC(name, e64, e32)                                                                        \
    name##64k : { if (in.off < 0 && --budget < 0) goto preempted;                                  \
                  uint64_t a = DST, b = (uint64_t)(int64_t)in.imm; NEXT((e64) ? 1 + in.off : 1); } \
    name##64x : { if (in.off < 0 && --budget < 0) goto preempted;                                  \
                  uint64_t a = DST, b = reg[in.src]; NEXT((e64) ? 1 + in.off : 1); }              \
    name##32k : { if (in.off < 0 && --budget < 0) goto preempted;                                  \
                  uint32_t a = (uint32_t)DST, b = (uint32_t)in.imm; NEXT((e32) ? 1 + in.off : 1); } \
    name##32x : { if (in.off < 0 && --budget < 0) goto preempted;                                  \
                  uint32_t a = (uint32_t)DST, b = (uint32_t)reg[in.src]; NEXT((e32) ? 1 + in.off : 1); }
#define JCC_SLOTS(name, op)                                                                        \
    [EBPF_CLS_JMP | EBPF_SRC_K | (op)] = &&name##64k, [EBPF_CLS_JMP | EBPF_SRC_X | (op)] = &&name##64x, \
    [EBPF_CLS_JMP32 | EBPF_SRC_K | (op)] = &&name##32k, [EBPF_CLS_JMP32 | EBPF_SRC_X | (op)] = &&name##32x

/* Caged memory access of n bytes at reg[base] + off: `host` is its address in the arena. */
#define CAGE(base, n, store)                                                                       \
    addr = reg[base] + (uint64_t)(int64_t)in.off;                                                  \
    width = (n);                                                                                   \
    is_store = (store);                                                                            \
    if (addr - ZS_GUEST_BASE > arena_size - (n) || ((store) && addr - ZS_GUEST_BASE < ro_end))    \
        goto memfault;                                                                             \
    uint8_t *host = arena + (addr - ZS_GUEST_BASE);

#define LOAD(name, T, n, ST)                                                                       \
    name : { CAGE(in.src, n, 0) T v; memcpy(&v, host, n); DST = (uint64_t)(ST)v; NEXT(1); }
#define STORE_IMM(name, T, n)                                                                      \
    name : { CAGE(in.dst, n, 1) T v = (T)(int64_t)in.imm; memcpy(host, &v, n); NEXT(1); }
#define STORE_REG(name, T, n)                                                                      \
    name : { CAGE(in.dst, n, 1) T v = (T)reg[in.src]; memcpy(host, &v, n); NEXT(1); }
#define ATOMIC(name, n)                                                                            \
    name : { CAGE(in.dst, n, 1)                                                                    \
             uint64_t old = atomic_op(host, n, in.imm, reg[in.src], reg[0]);                       \
             if (in.imm == EBPF_ATOMIC_CMPXCHG) reg[0] = old;                                      \
             else if (in.imm & EBPF_ATOMIC_FETCH) reg[in.src] = old;                               \
             NEXT(1); }

/* The table starts all-invalid, then names each opcode: overriding is the point. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Woverride-init"
int zs_interp_run(struct zs_run *run)
{
    static const void *const table[256] = {
        [0 ... 255] = &&invalid,
        ALU_SLOTS(add, EBPF_ALU_ADD), ALU_SLOTS(sub, EBPF_ALU_SUB), ALU_SLOTS(mul, EBPF_ALU_MUL),
        ALU_SLOTS(div, EBPF_ALU_DIV), ALU_SLOTS(or, EBPF_ALU_OR), ALU_SLOTS(and, EBPF_ALU_AND),
        ALU_SLOTS(lsh, EBPF_ALU_LSH), ALU_SLOTS(rsh, EBPF_ALU_RSH), ALU_SLOTS(mod, EBPF_ALU_MOD),
        ALU_SLOTS(xor, EBPF_ALU_XOR), ALU_SLOTS(mov, EBPF_ALU_MOV), ALU_SLOTS(arsh, EBPF_ALU_ARSH),
        [EBPF_CLS_ALU64 | EBPF_ALU_NEG] = &&neg64, [EBPF_CLS_ALU | EBPF_ALU_NEG] = &&neg32,
        [EBPF_CLS_ALU | EBPF_SRC_K | EBPF_ALU_END] = &&le, [EBPF_CLS_ALU | EBPF_SRC_X | EBPF_ALU_END] = &&be,
        [EBPF_CLS_ALU64 | EBPF_ALU_END] = &&bswap,
        JCC_SLOTS(jeq, EBPF_JMP_JEQ), JCC_SLOTS(jgt, EBPF_JMP_JGT), JCC_SLOTS(jge, EBPF_JMP_JGE),
        JCC_SLOTS(jset, EBPF_JMP_JSET), JCC_SLOTS(jne, EBPF_JMP_JNE), JCC_SLOTS(jsgt, EBPF_JMP_JSGT),
        JCC_SLOTS(jsge, EBPF_JMP_JSGE), JCC_SLOTS(jlt, EBPF_JMP_JLT), JCC_SLOTS(jle, EBPF_JMP_JLE),
        JCC_SLOTS(jslt, EBPF_JMP_JSLT), JCC_SLOTS(jsle, EBPF_JMP_JSLE),
        [EBPF_OP_JA] = &&ja, [EBPF_OP_GOTOL] = &&gotol, [EBPF_OP_CALL] = &&call,
        [EBPF_OP_CALLX] = &&callx, [EBPF_OP_EXIT] = &&exit, [EBPF_OP_LDDW] = &&lddw,
        [EBPF_CLS_LDX | EBPF_MODE_MEM | EBPF_SIZE_B] = &&ldxb, [EBPF_CLS_LDX | EBPF_MODE_MEM | EBPF_SIZE_H] = &&ldxh,
        [EBPF_CLS_LDX | EBPF_MODE_MEM | EBPF_SIZE_W] = &&ldxw, [EBPF_CLS_LDX | EBPF_MODE_MEM | EBPF_SIZE_DW] = &&ldxdw,
        [EBPF_CLS_LDX | EBPF_MODE_MEMSX | EBPF_SIZE_B] = &&ldxsb, [EBPF_CLS_LDX | EBPF_MODE_MEMSX | EBPF_SIZE_H] = &&ldxsh,
        [EBPF_CLS_LDX | EBPF_MODE_MEMSX | EBPF_SIZE_W] = &&ldxsw,
        [EBPF_CLS_ST | EBPF_MODE_MEM | EBPF_SIZE_B] = &&stb, [EBPF_CLS_ST | EBPF_MODE_MEM | EBPF_SIZE_H] = &&sth,
        [EBPF_CLS_ST | EBPF_MODE_MEM | EBPF_SIZE_W] = &&stw, [EBPF_CLS_ST | EBPF_MODE_MEM | EBPF_SIZE_DW] = &&stdw,
        [EBPF_CLS_STX | EBPF_MODE_MEM | EBPF_SIZE_B] = &&stxb, [EBPF_CLS_STX | EBPF_MODE_MEM | EBPF_SIZE_H] = &&stxh,
        [EBPF_CLS_STX | EBPF_MODE_MEM | EBPF_SIZE_W] = &&stxw, [EBPF_CLS_STX | EBPF_MODE_MEM | EBPF_SIZE_DW] = &&stxdw,
        [EBPF_CLS_STX | EBPF_MODE_ATOMIC | EBPF_SIZE_W] = &&atomic32,
        [EBPF_CLS_STX | EBPF_MODE_ATOMIC | EBPF_SIZE_DW] = &&atomic64,
    };
#pragma GCC diagnostic pop
    const struct ebpf_inst *const insts = run->prog->insts;
    uint8_t *const arena = run->arena;
    const uint64_t arena_size = run->arena_size;
    const uint64_t ro_end = run->ro_end;
    uint64_t reg[ZS_NREGS];
    memcpy(reg, run->reg, sizeof(reg));
    uint32_t pc = run->pc;
    int64_t budget = run->budget;
    uint64_t addr = 0;
    unsigned width = 0;
    int is_store = 0;
    struct ebpf_inst in;

    NEXT(0);

    ALU(add, a + b, a + b)
    ALU(sub, a - b, a - b)
    ALU(mul, a * b, a * b)
    ALU(div, in.off ? sdiv64(a, b) : (b ? a / b : 0), in.off ? sdiv32(a, b) : (b ? a / b : 0))
    ALU(or, a | b, a | b)
    ALU(and, a & b, a & b)
    ALU(lsh, a << (b & 63), a << (b & 31))
    ALU(rsh, a >> (b & 63), a >> (b & 31))
    ALU(mod, in.off ? smod64(a, b) : (b ? a % b : a), in.off ? smod32(a, b) : (b ? a % b : a))
    ALU(xor, a ^ b, a ^ b)
    ALU(mov, ((void)a, movsx64(in.off, b)), ((void)a, movsx32(in.off, b)))
    ALU(arsh, (uint64_t)((int64_t)a >> (b & 63)), (uint32_t)((int32_t)a >> (b & 31)))
neg64:
    DST = -DST;
    NEXT(1);
neg32:
    DST = (uint32_t)-(uint32_t)DST;
    NEXT(1);
le:
    DST = truncate(DST, in.imm);
    NEXT(1);
be:
bswap:
    DST = byteswap(DST, in.imm);
    NEXT(1);

    JCC(jeq, a == b, a == b)
    JCC(jgt, a > b, a > b)
    JCC(jge, a >= b, a >= b)
    JCC(jset, (a & b) != 0, (a & b) != 0)
    JCC(jne, a != b, a != b)
    JCC(jsgt, (int64_t)a > (int64_t)b, (int32_t)a > (int32_t)b)
    JCC(jsge, (int64_t)a >= (int64_t)b, (int32_t)a >= (int32_t)b)
    JCC(jlt, a < b, a < b)
    JCC(jle, a <= b, a <= b)
    JCC(jslt, (int64_t)a < (int64_t)b, (int32_t)a < (int32_t)b)
    JCC(jsle, (int64_t)a <= (int64_t)b, (int32_t)a <= (int32_t)b)
ja:
    if (in.off < 0 && --budget < 0)
        goto preempted;
    NEXT(1 + in.off);
gotol:
    if (in.imm < 0 && --budget < 0)
        goto preempted;
    NEXT(1 + in.imm);

call:
    if (--budget < 0)
        goto preempted;
    if (in.src == EBPF_CALL_LOCAL) {
        if (run->depth >= ZS_MAX_CALL_DEPTH) {
            zs_run_set_fault(run, pc, 0, "local calls nested deeper than %d at pc %u", ZS_MAX_CALL_DEPTH, pc);
            goto stopped;
        }
        struct zs_frame *f = &run->frames[run->depth++];
        f->return_pc = pc + 1;
        memcpy(f->saved, &reg[6], sizeof(f->saved));
        f->saved_r10 = reg[10];
        reg[10] -= ZS_FRAME_SIZE;
        NEXT(1 + in.imm);
    }
    addr = (uint32_t)in.imm; /* the helper index */
    goto helper;
callx:
    if (--budget < 0)
        goto preempted;
    addr = DST;
helper:
    memcpy(run->reg, reg, sizeof(reg));
    if (zs_call_helper(run, addr, pc) != ZS_HELPER_OK) {
        run->budget = budget;
        return run->status;
    }
    reg[0] = run->reg[0];
    NEXT(1);
exit:
    if (run->depth == 0) {
        memcpy(run->reg, reg, sizeof(reg));
        run->pc = pc;
        run->budget = budget;
        run->status = ZS_DONE;
        return ZS_DONE;
    }
    {
        const struct zs_frame *f = &run->frames[--run->depth];
        memcpy(&reg[6], f->saved, sizeof(f->saved));
        reg[10] = f->saved_r10;
        pc = f->return_pc;
    }
    NEXT(0);

lddw:
    DST = (uint32_t)in.imm | ((uint64_t)(uint32_t)insts[pc + 1].imm << 32);
    NEXT(2);

    LOAD(ldxb, uint8_t, 1, uint8_t)
    LOAD(ldxh, uint16_t, 2, uint16_t)
    LOAD(ldxw, uint32_t, 4, uint32_t)
    LOAD(ldxdw, uint64_t, 8, uint64_t)
    LOAD(ldxsb, uint8_t, 1, int8_t)
    LOAD(ldxsh, uint16_t, 2, int16_t)
    LOAD(ldxsw, uint32_t, 4, int32_t)
    STORE_IMM(stb, uint8_t, 1)
    STORE_IMM(sth, uint16_t, 2)
    STORE_IMM(stw, uint32_t, 4)
    STORE_IMM(stdw, uint64_t, 8)
    STORE_REG(stxb, uint8_t, 1)
    STORE_REG(stxh, uint16_t, 2)
    STORE_REG(stxw, uint32_t, 4)
    STORE_REG(stxdw, uint64_t, 8)
    ATOMIC(atomic32, 4)
    ATOMIC(atomic64, 8)

invalid:
    zs_run_set_fault(run, pc, 0, "invalid opcode 0x%02x at pc %u", in.opcode, pc);
    goto stopped;

preempted:
    memcpy(run->reg, reg, sizeof(reg));
    run->pc = pc;
    run->budget = 0;
    run->status = ZS_PREEMPTED;
    return ZS_PREEMPTED;

memfault:
    zs_run_memory_fault(run, pc, addr, width, is_store);
stopped:
    memcpy(run->reg, reg, sizeof(reg));
    run->budget = budget;
    return run->status;
}
