/* SPDX-License-Identifier: Apache-2.0 */
/*
 * jit_x86_64_emit.h: x86-64 instruction encoders for the JIT (a growable code
 * buffer, prefixes, REX, ModRM/SIB addressing, immediates, rel32 branches).
 *
 * Every encoder appends to a struct jit_buf; an allocation failure sets
 * `oom` and later appends are dropped, so the compiler checks once at the end.
 */
#ifndef ZSVM_JIT_X86_64_EMIT_H
#define ZSVM_JIT_X86_64_EMIT_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum x86_reg {
    RAX = 0, RCX, RDX, RBX, RSP, RBP, RSI, RDI,
    R8, R9, R10, R11, R12, R13, R14, R15,
};

/* Condition codes (the low nibble of Jcc / SETcc). */
enum x86_cond {
    CC_B = 0x2, CC_AE = 0x3, CC_E = 0x4, CC_NE = 0x5, CC_BE = 0x6, CC_A = 0x7,
    CC_L = 0xc, CC_GE = 0xd, CC_LE = 0xe, CC_G = 0xf,
};

struct jit_buf {
    uint8_t *p;
    size_t len;
    size_t cap;
    int oom;
};

static inline void emit_bytes(struct jit_buf *b, const void *src, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 4096;
        while (cap < b->len + n)
            cap *= 2;
        uint8_t *p = realloc(b->p, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, src, n);
    b->len += n;
}

static inline void emit_u8(struct jit_buf *b, uint8_t v) { emit_bytes(b, &v, 1); }
static inline void emit_u16(struct jit_buf *b, uint16_t v) { emit_bytes(b, &v, 2); }
static inline void emit_u32(struct jit_buf *b, uint32_t v) { emit_bytes(b, &v, 4); }
static inline void emit_u64(struct jit_buf *b, uint64_t v) { emit_bytes(b, &v, 8); }

/* Rewrites a 32-bit field already emitted at `pos` (branch displacements). */
static inline void patch_u32(struct jit_buf *b, size_t pos, uint32_t v)
{
    if (!b->oom)
        memcpy(b->p + pos, &v, 4);
}

/* Operand flags of one instruction. */
#define X_W 0x1      /* REX.W: 64-bit operand size */
#define X_16 0x2     /* 0x66 prefix: 16-bit operand size */
#define X_BYTE 0x4   /* byte registers: spl/bpl/sil/dil need a REX prefix */

/* Opcodes up to two bytes: 0x0fXX is the two-byte escape form. */
static inline void emit_opcode(struct jit_buf *b, unsigned op)
{
    if (op > 0xff)
        emit_u8(b, (uint8_t)(op >> 8));
    emit_u8(b, (uint8_t)op);
}

static inline void emit_prefixes(struct jit_buf *b, unsigned flags, int reg, int index, int base,
                                 int byte_regs_need_rex)
{
    if (flags & X_16)
        emit_u8(b, 0x66);
    uint8_t rex = 0x40 | ((flags & X_W) ? 8 : 0) | ((reg & 8) ? 4 : 0) | ((index & 8) ? 2 : 0) |
                  ((base & 8) ? 1 : 0);
    if (rex != 0x40 || byte_regs_need_rex)
        emit_u8(b, rex);
}

static inline int is_high_byte_alias(int reg) { return reg >= RSP && reg <= RDI; }

/* op reg, rm (both registers): [prefixes] opcode ModRM(11, reg, rm). */
static inline void emit_rr(struct jit_buf *b, unsigned flags, unsigned op, int reg, int rm)
{
    int need = (flags & X_BYTE) && (is_high_byte_alias(reg) || is_high_byte_alias(rm));
    emit_prefixes(b, flags, reg, 0, rm, need);
    emit_opcode(b, op);
    emit_u8(b, (uint8_t)(0xc0 | ((reg & 7) << 3) | (rm & 7)));
}

/* op reg, [base + index*scale + disp]; index < 0 means none. `reg` may be an
 * opcode extension (/digit). rsp/r12 as base need a SIB byte; rbp/r13 as base
 * cannot use the no-displacement form. */
static inline void emit_rm(struct jit_buf *b, unsigned flags, unsigned op, int reg, int base,
                           int index, int scale, int32_t disp)
{
    int need = (flags & X_BYTE) && is_high_byte_alias(reg);
    emit_prefixes(b, flags, reg, index < 0 ? 0 : index, base, need);
    emit_opcode(b, op);
    int mod = (disp == 0 && (base & 7) != RBP) ? 0 : (disp >= -128 && disp <= 127) ? 1 : 2;
    if (index < 0 && (base & 7) != RSP) {
        emit_u8(b, (uint8_t)((mod << 6) | ((reg & 7) << 3) | (base & 7)));
    } else {
        int ss = scale == 8 ? 3 : scale == 4 ? 2 : scale == 2 ? 1 : 0;
        int idx = index < 0 ? RSP : index; /* index 100b = none */
        emit_u8(b, (uint8_t)((mod << 6) | ((reg & 7) << 3) | RSP));
        emit_u8(b, (uint8_t)((ss << 6) | ((idx & 7) << 3) | (base & 7)));
    }
    if (mod == 1)
        emit_u8(b, (uint8_t)(int8_t)disp);
    else if (mod == 2)
        emit_u32(b, (uint32_t)disp);
}

/* Shorthands for the forms the JIT uses most. */
static inline void emit_mov_rr(struct jit_buf *b, int w, int dst, int src)
{
    emit_rr(b, w ? X_W : 0, 0x89, src, dst);
}

static inline void emit_load64(struct jit_buf *b, int dst, int base, int32_t disp)
{
    emit_rm(b, X_W, 0x8b, dst, base, -1, 1, disp);
}

static inline void emit_store64(struct jit_buf *b, int base, int32_t disp, int src)
{
    emit_rm(b, X_W, 0x89, src, base, -1, 1, disp);
}

static inline void emit_load32(struct jit_buf *b, int dst, int base, int32_t disp)
{
    emit_rm(b, 0, 0x8b, dst, base, -1, 1, disp);
}

static inline void emit_store32(struct jit_buf *b, int base, int32_t disp, int src)
{
    emit_rm(b, 0, 0x89, src, base, -1, 1, disp);
}

/* mov dst, imm: the shortest form that yields the 64-bit value. */
static inline void emit_mov_imm64(struct jit_buf *b, int dst, uint64_t v)
{
    if (v <= 0xffffffffull) { /* mov r32, imm32 zero-extends */
        emit_prefixes(b, 0, 0, 0, dst, 0);
        emit_u8(b, (uint8_t)(0xb8 | (dst & 7)));
        emit_u32(b, (uint32_t)v);
    } else if ((int64_t)v >= INT32_MIN && (int64_t)v <= INT32_MAX) { /* sign-extended imm32 */
        emit_rr(b, X_W, 0xc7, 0, dst);
        emit_u32(b, (uint32_t)v);
    } else {
        emit_prefixes(b, X_W, 0, 0, dst, 0);
        emit_u8(b, (uint8_t)(0xb8 | (dst & 7)));
        emit_u64(b, v);
    }
}

/* Group-1 arithmetic with an immediate: /digit is add 0, or 1, and 4, sub 5,
 * xor 6, cmp 7. */
static inline void emit_alu_imm(struct jit_buf *b, unsigned flags, int digit, int rm, int32_t imm)
{
    if (imm >= -128 && imm <= 127) {
        emit_rr(b, flags, 0x83, digit, rm);
        emit_u8(b, (uint8_t)(int8_t)imm);
    } else {
        emit_rr(b, flags, 0x81, digit, rm);
        emit_u32(b, (uint32_t)imm);
    }
}

/* Same on a memory operand [base + disp] (budget counter, depth). */
static inline void emit_alu_imm_mem(struct jit_buf *b, unsigned flags, int digit, int base,
                                    int32_t disp, int32_t imm)
{
    if (imm >= -128 && imm <= 127) {
        emit_rm(b, flags, 0x83, digit, base, -1, 1, disp);
        emit_u8(b, (uint8_t)(int8_t)imm);
    } else {
        emit_rm(b, flags, 0x81, digit, base, -1, 1, disp);
        emit_u32(b, (uint32_t)imm);
    }
}

/* Branches with a rel32 displacement; return the position of the field so the
 * caller can patch it once the target is known. */
static inline size_t emit_jmp_rel32(struct jit_buf *b)
{
    emit_u8(b, 0xe9);
    size_t pos = b->len;
    emit_u32(b, 0);
    return pos;
}

static inline size_t emit_jcc_rel32(struct jit_buf *b, int cc)
{
    emit_u8(b, 0x0f);
    emit_u8(b, (uint8_t)(0x80 | cc));
    size_t pos = b->len;
    emit_u32(b, 0);
    return pos;
}

/* Points the rel32 field at `pos` to `target` (both offsets in the buffer). */
static inline void link_rel32(struct jit_buf *b, size_t pos, size_t target)
{
    patch_u32(b, pos, (uint32_t)(int32_t)((int64_t)target - (int64_t)(pos + 4)));
}

static inline void emit_push(struct jit_buf *b, int reg)
{
    emit_prefixes(b, 0, 0, 0, reg, 0);
    emit_u8(b, (uint8_t)(0x50 | (reg & 7)));
}

static inline void emit_pop(struct jit_buf *b, int reg)
{
    emit_prefixes(b, 0, 0, 0, reg, 0);
    emit_u8(b, (uint8_t)(0x58 | (reg & 7)));
}

/* call through a register holding an absolute address: ff /2. */
static inline void emit_call_abs(struct jit_buf *b, const void *fn)
{
    emit_mov_imm64(b, RAX, (uint64_t)(uintptr_t)fn);
    emit_rr(b, 0, 0xff, 2, RAX);
}

#endif
