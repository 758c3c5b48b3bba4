/* SPDX-License-Identifier: Apache-2.0 */
/*
 * interp.c: the portable engine: executes verified instructions on the guest
 * state of a struct zs_run, caging every memory access, until the run ends,
 * faults, runs out of budget or waits on a helper.
 */
#include <string.h>

#include "zsvm_int.h"

#define U32(x) ((uint64_t)(uint32_t)(x))

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

static inline uint64_t alu64(uint8_t op, int16_t off, uint64_t dst, uint64_t src)
{
    switch (op) {
    case EBPF_ALU_ADD: return dst + src;
    case EBPF_ALU_SUB: return dst - src;
    case EBPF_ALU_MUL: return dst * src;
    case EBPF_ALU_DIV:
        if (off)
            return sdiv64(dst, src);
        return src ? dst / src : 0;
    case EBPF_ALU_OR: return dst | src;
    case EBPF_ALU_AND: return dst & src;
    case EBPF_ALU_LSH: return dst << (src & 63);
    case EBPF_ALU_RSH: return dst >> (src & 63);
    case EBPF_ALU_NEG: return -dst;
    case EBPF_ALU_MOD:
        if (off)
            return smod64(dst, src);
        return src ? dst % src : dst;
    case EBPF_ALU_XOR: return dst ^ src;
    case EBPF_ALU_MOV:
        switch (off) {
        case 8: return (uint64_t)(int64_t)(int8_t)src;
        case 16: return (uint64_t)(int64_t)(int16_t)src;
        case 32: return (uint64_t)(int64_t)(int32_t)src;
        default: return src;
        }
    case EBPF_ALU_ARSH: return (uint64_t)((int64_t)dst >> (src & 63));
    default: return dst; /* END is handled by the caller */
    }
}

static inline uint32_t alu32(uint8_t op, int16_t off, uint32_t dst, uint32_t src)
{
    switch (op) {
    case EBPF_ALU_ADD: return dst + src;
    case EBPF_ALU_SUB: return dst - src;
    case EBPF_ALU_MUL: return dst * src;
    case EBPF_ALU_DIV:
        if (off)
            return sdiv32(dst, src);
        return src ? dst / src : 0;
    case EBPF_ALU_OR: return dst | src;
    case EBPF_ALU_AND: return dst & src;
    case EBPF_ALU_LSH: return dst << (src & 31);
    case EBPF_ALU_RSH: return dst >> (src & 31);
    case EBPF_ALU_NEG: return -dst;
    case EBPF_ALU_MOD:
        if (off)
            return smod32(dst, src);
        return src ? dst % src : dst;
    case EBPF_ALU_XOR: return dst ^ src;
    case EBPF_ALU_MOV:
        switch (off) {
        case 8: return (uint32_t)(int32_t)(int8_t)src;
        case 16: return (uint32_t)(int32_t)(int16_t)src;
        default: return src;
        }
    case EBPF_ALU_ARSH: return (uint32_t)((int32_t)dst >> (src & 31));
    default: return dst;
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

static inline int cond64(uint8_t op, uint64_t a, uint64_t b)
{
    switch (op) {
    case EBPF_JMP_JEQ: return a == b;
    case EBPF_JMP_JGT: return a > b;
    case EBPF_JMP_JGE: return a >= b;
    case EBPF_JMP_JSET: return (a & b) != 0;
    case EBPF_JMP_JNE: return a != b;
    case EBPF_JMP_JSGT: return (int64_t)a > (int64_t)b;
    case EBPF_JMP_JSGE: return (int64_t)a >= (int64_t)b;
    case EBPF_JMP_JLT: return a < b;
    case EBPF_JMP_JLE: return a <= b;
    case EBPF_JMP_JSLT: return (int64_t)a < (int64_t)b;
    case EBPF_JMP_JSLE: return (int64_t)a <= (int64_t)b;
    default: return 0;
    }
}

static inline int cond32(uint8_t op, uint32_t a, uint32_t b)
{
    switch (op) {
    case EBPF_JMP_JEQ: return a == b;
    case EBPF_JMP_JGT: return a > b;
    case EBPF_JMP_JGE: return a >= b;
    case EBPF_JMP_JSET: return (a & b) != 0;
    case EBPF_JMP_JNE: return a != b;
    case EBPF_JMP_JSGT: return (int32_t)a > (int32_t)b;
    case EBPF_JMP_JSGE: return (int32_t)a >= (int32_t)b;
    case EBPF_JMP_JLT: return a < b;
    case EBPF_JMP_JLE: return a <= b;
    case EBPF_JMP_JSLT: return (int32_t)a < (int32_t)b;
    case EBPF_JMP_JSLE: return (int32_t)a <= (int32_t)b;
    default: return 0;
    }
}

static inline unsigned size_bytes(uint8_t opcode)
{
    switch (opcode & 0x18) {
    case EBPF_SIZE_B: return 1;
    case EBPF_SIZE_H: return 2;
    case EBPF_SIZE_W: return 4;
    default: return 8;
    }
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

static inline uint64_t sign_extend(uint64_t v, unsigned n)
{
    switch (n) {
    case 1: return (uint64_t)(int64_t)(int8_t)v;
    case 2: return (uint64_t)(int64_t)(int16_t)v;
    case 4: return (uint64_t)(int64_t)(int32_t)v;
    default: return v;
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

int zs_interp_run(struct zs_run *run)
{
    const struct ebpf_inst *insts = run->prog->insts;
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

    for (;;) {
        const struct ebpf_inst in = insts[pc];
        const uint8_t cls = in.opcode & EBPF_CLS_MASK;
        switch (cls) {
        case EBPF_CLS_ALU64: {
            uint8_t op = in.opcode & 0xf0;
            uint64_t src = (in.opcode & EBPF_SRC_X) ? reg[in.src] : (uint64_t)(int64_t)in.imm;
            if (op == EBPF_ALU_END)
                reg[in.dst] = byteswap(reg[in.dst], in.imm);
            else
                reg[in.dst] = alu64(op, in.off, reg[in.dst], src);
            pc++;
            break;
        }
        case EBPF_CLS_ALU: {
            uint8_t op = in.opcode & 0xf0;
            if (op == EBPF_ALU_END) {
                reg[in.dst] = (in.opcode & EBPF_SRC_X) ? byteswap(reg[in.dst], in.imm)
                                                       : truncate(reg[in.dst], in.imm);
            } else {
                uint32_t src = (in.opcode & EBPF_SRC_X) ? (uint32_t)reg[in.src] : (uint32_t)in.imm;
                reg[in.dst] = U32(alu32(op, in.off, (uint32_t)reg[in.dst], src));
            }
            pc++;
            break;
        }
        case EBPF_CLS_JMP:
        case EBPF_CLS_JMP32: {
            uint8_t op = in.opcode & 0xf0;
            if (op == EBPF_JMP_JA) {
                int32_t delta = cls == EBPF_CLS_JMP ? in.off : in.imm;
                if (delta < 0 && --budget < 0)
                    goto preempted;
                pc += 1 + delta;
                break;
            }
            if (cls == EBPF_CLS_JMP && op == EBPF_JMP_CALL) {
                if (--budget < 0)
                    goto preempted;
                if (in.opcode == EBPF_OP_CALL && in.src == EBPF_CALL_LOCAL) {
                    if (run->depth >= ZS_MAX_CALL_DEPTH) {
                        zs_run_set_fault(run, pc, 0, "local calls nested deeper than %d at pc %u",
                                         ZS_MAX_CALL_DEPTH, pc);
                        goto stopped;
                    }
                    struct zs_frame *f = &run->frames[run->depth++];
                    f->return_pc = pc + 1;
                    memcpy(f->saved, &reg[6], sizeof(f->saved));
                    f->saved_r10 = reg[10];
                    reg[10] -= ZS_FRAME_SIZE;
                    pc += 1 + in.imm;
                    break;
                }
                uint64_t index = in.opcode == EBPF_OP_CALLX ? reg[in.dst] : (uint64_t)(uint32_t)in.imm;
                memcpy(run->reg, reg, sizeof(reg));
                if (zs_call_helper(run, index, pc) != ZS_HELPER_OK) {
                    run->budget = budget;
                    return run->status;
                }
                reg[0] = run->reg[0];
                pc++;
                break;
            }
            if (cls == EBPF_CLS_JMP && op == EBPF_JMP_EXIT) {
                if (run->depth == 0) {
                    memcpy(run->reg, reg, sizeof(reg));
                    run->pc = pc;
                    run->budget = budget;
                    run->status = ZS_DONE;
                    return ZS_DONE;
                }
                struct zs_frame *f = &run->frames[--run->depth];
                memcpy(&reg[6], f->saved, sizeof(f->saved));
                reg[10] = f->saved_r10;
                pc = f->return_pc;
                break;
            }
            if (in.off < 0 && --budget < 0)
                goto preempted;
            int taken;
            if (cls == EBPF_CLS_JMP) {
                uint64_t b = (in.opcode & EBPF_SRC_X) ? reg[in.src] : (uint64_t)(int64_t)in.imm;
                taken = cond64(op, reg[in.dst], b);
            } else {
                uint32_t b = (in.opcode & EBPF_SRC_X) ? (uint32_t)reg[in.src] : (uint32_t)in.imm;
                taken = cond32(op, (uint32_t)reg[in.dst], b);
            }
            pc += taken ? 1 + in.off : 1;
            break;
        }
        case EBPF_CLS_LD: /* lddw, the only LD the verifier admits */
            reg[in.dst] = U32(in.imm) | ((uint64_t)(uint32_t)insts[pc + 1].imm << 32);
            pc += 2;
            break;
        case EBPF_CLS_LDX: {
            width = size_bytes(in.opcode);
            addr = reg[in.src] + (uint64_t)(int64_t)in.off;
            uint64_t off = addr - ZS_GUEST_BASE;
            if (off > arena_size - width) {
                is_store = 0;
                goto memfault;
            }
            uint64_t v = load_n(arena + off, width);
            reg[in.dst] = (in.opcode & 0xe0) == EBPF_MODE_MEMSX ? sign_extend(v, width) : v;
            pc++;
            break;
        }
        case EBPF_CLS_ST:
        case EBPF_CLS_STX: {
            width = size_bytes(in.opcode);
            addr = reg[in.dst] + (uint64_t)(int64_t)in.off;
            uint64_t off = addr - ZS_GUEST_BASE;
            if (off > arena_size - width || off < ro_end) {
                is_store = 1;
                goto memfault;
            }
            if (cls == EBPF_CLS_ST) {
                store_n(arena + off, width, (uint64_t)(int64_t)in.imm);
            } else if ((in.opcode & 0xe0) == EBPF_MODE_ATOMIC) {
                uint64_t old = atomic_op(arena + off, width, in.imm, reg[in.src], reg[0]);
                if (in.imm == EBPF_ATOMIC_CMPXCHG)
                    reg[0] = old;
                else if (in.imm & EBPF_ATOMIC_FETCH)
                    reg[in.src] = old;
            } else {
                store_n(arena + off, width, reg[in.src]);
            }
            pc++;
            break;
        }
        }
    }

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
