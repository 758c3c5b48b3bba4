/* SPDX-License-Identifier: Apache-2.0 */
/*
 * jit_x86_64.c: compiles a verified eBPF program to one x86-64 function that
 * runs it with exactly the interpreter's semantics (results, faults, budget).
 *
 * Shape of the generated code (one function for the whole program):
 *
 *   prologue   saves the host callee-saved registers, copies a struct
 *              jit_frame (prepared by zs_jit_run) onto its stack, loads the
 *              guest registers from run->reg and jumps to jit_pc_map[run->pc].
 *   body       the instructions in order; every instruction starts at a
 *              pc-map entry and keeps nothing but the guest registers live, so
 *              a run can resume at any instruction after a stop.
 *   tails      shared exits: store the guest registers back into run->reg,
 *              write run->budget and return run->status.
 *   stubs      one per check site (budget, cage, call depth, exit at depth 0):
 *              load that site's pc (and access size) and jump to a tail.
 *
 * Registers: guest r0..r9 live in host registers for the whole run
 * (guest_reg[] below), r14 counts the budget down and r15 holds the host
 * address of the arena; rax, rcx and rdx are scratch (division and shifts need
 * them). Guest r10, read-only, lives in the native frame as its arena offset,
 * so a stack access is one load plus the access. The native frame also holds
 * the run pointer and the cage limits (struct jit_frame).
 *
 * The cage check of an access at guest address a = reg + off of `size` bytes:
 * rcx = a - ZS_GUEST_BASE; fault unless rcx <= arena_size - size (unsigned)
 * and, for stores and atomics, rcx >= ro_end; the host address is r15 + rcx.
 * Local calls push struct zs_frame onto run->frames; exit at depth > 0 pops it
 * and jumps through the pc map, so no host stack is kept across calls.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "zsvm_int.h"
#include "jit_x86_64_emit.h"

/* Host register of each guest register r0..r9 (FP, r10, is in the frame).
 * The ones in caller-saved host registers are reloaded after a helper. */
#define FP 10
static const int guest_reg[FP] = {RBX, RDI, RSI, R8, R9, R10, R12, R13, R11, RBP};
#define BUDGET R14
#define ARENA R15
static const int host_saved[] = {RBX, RBP, R12, R13, R14, R15};
#define NUM_HOST_SAVED (sizeof(host_saved) / sizeof(host_saved[0]))

static int caller_saved(int host)
{
    return host == RDI || host == RSI || (host >= R8 && host <= R11);
}

/* The native stack frame of a run; zs_jit_run fills it and the prologue
 * copies it to [rsp]. */
struct jit_frame {
    struct zs_run *run;
    int64_t budget;         /* loaded into BUDGET at entry */
    uint64_t guest_base;
    uint64_t ro_end;
    uint64_t load_limit[4]; /* arena_size - size, for sizes 1, 2, 4, 8 */
    const uint32_t *pc_map;
    const uint8_t *code;
    uint64_t fp_offset;     /* guest r10 - ZS_GUEST_BASE */
    uint64_t fault_info;    /* the memory fault tail parks size | store << 8 here */
    uint64_t fault_offset;  /* and the faulting address - ZS_GUEST_BASE here */
};
#define FR(field) ((int32_t)offsetof(struct jit_frame, field))
#define FR_LIMIT(size_log2) (FR(load_limit) + 8 * (size_log2))
/* At entry rsp = 8 (mod 16); six pushes keep that, this realigns to 16 for calls. */
#define FRAME_ALLOC 104
_Static_assert(sizeof(struct jit_frame) <= FRAME_ALLOC, "jit_frame must fit the native frame");
_Static_assert(sizeof(struct jit_frame) % 8 == 0, "jit_frame is copied in quadwords");

#define RUN_OFF(field) ((int32_t)offsetof(struct zs_run, field))
#define RUN_REG(i) (RUN_OFF(reg) + 8 * (i))

typedef int (*jit_entry_fn)(const struct jit_frame *frame);

/* Reached from the depth-fault tail: a local call beyond ZS_MAX_CALL_DEPTH. */
static void jit_depth_fault(struct zs_run *run, uint32_t pc)
{
    zs_run_set_fault(run, pc, 0, "local calls nested deeper than %d at pc %u", ZS_MAX_CALL_DEPTH,
                     pc);
}

/* Shared exits, placed after the body. */
enum tail {
    TAIL_STORE_RET,  /* store guest registers, then TAIL_RET */
    TAIL_RET,        /* write budget back, return run->status */
    TAIL_PREEMPT,    /* edx = pc */
    TAIL_DONE,       /* edx = pc of the exit */
    TAIL_MEM_FAULT,  /* edx = pc, rcx = address - ZS_GUEST_BASE, eax = size | store << 8 */
    TAIL_DEPTH_FAULT, /* edx = pc */
    NUM_TAILS
};

/* An out-of-line check failure: the branch at `jump_pos` goes to a stub that
 * loads pc (and info) and jumps to `tail`. */
struct stub {
    size_t jump_pos;
    uint32_t pc;
    uint32_t info;
    enum tail tail;
};

/* A rel32 field at `pos` to be pointed at a label: a guest pc, or a tail
 * (label num_insts + tail). */
struct fixup {
    size_t pos;
    uint32_t label;
};

struct compiler {
    struct jit_buf buf;
    const struct ebpf_inst *insts;
    uint32_t num_insts;
    uint32_t *pc_map;
    size_t tail_pos[NUM_TAILS];
    struct stub *stubs;
    size_t num_stubs, cap_stubs;
    struct fixup *fixups;
    size_t num_fixups, cap_fixups;
    char *err; /* first error; compilation stops reporting after it */
};

static void fail(struct compiler *c, char *msg)
{
    if (!c->err)
        c->err = msg ? msg : zs_errmsg("out of memory");
    else
        free(msg);
}

static int grow(void **arr, size_t *cap, size_t n, size_t elem)
{
    if (n < *cap)
        return 0;
    size_t ncap = *cap ? *cap * 2 : 256;
    void *p = realloc(*arr, ncap * elem);
    if (!p)
        return -1;
    *arr = p;
    *cap = ncap;
    return 0;
}

static void add_fixup(struct compiler *c, size_t pos, uint32_t label)
{
    if (grow((void **)&c->fixups, &c->cap_fixups, c->num_fixups, sizeof(*c->fixups))) {
        c->buf.oom = 1;
        return;
    }
    c->fixups[c->num_fixups++] = (struct fixup){pos, label};
}

static void jump_to_pc(struct compiler *c, int cc, uint32_t target)
{
    size_t pos = cc < 0 ? emit_jmp_rel32(&c->buf) : emit_jcc_rel32(&c->buf, cc);
    add_fixup(c, pos, target);
}

static void jump_to_tail(struct compiler *c, int cc, enum tail t)
{
    size_t pos = cc < 0 ? emit_jmp_rel32(&c->buf) : emit_jcc_rel32(&c->buf, cc);
    add_fixup(c, pos, c->num_insts + (uint32_t)t);
}

/* Branch (condition cc) to a new stub for this site. */
static void jump_to_stub(struct compiler *c, int cc, uint32_t pc, enum tail t, uint32_t info)
{
    size_t pos = emit_jcc_rel32(&c->buf, cc);
    if (grow((void **)&c->stubs, &c->cap_stubs, c->num_stubs, sizeof(*c->stubs))) {
        c->buf.oom = 1;
        return;
    }
    c->stubs[c->num_stubs++] = (struct stub){pos, pc, info, t};
}

/* ---- guest state transfer ---------------------------------------------- */

static void load_run_ptr(struct compiler *c, int host)
{
    emit_load64(&c->buf, host, RSP, FR(run));
}

/* scratch = guest r10 (its guest address). */
static void load_fp(struct compiler *c, int scratch)
{
    emit_load64(&c->buf, scratch, RSP, FR(fp_offset));
    emit_rm(&c->buf, X_W, 0x03, scratch, RSP, -1, 1, FR(guest_base)); /* add */
}

/* The host register holding guest register `guest`; r10 is first loaded into
 * `scratch`. */
static int operand(struct compiler *c, int guest, int scratch)
{
    if (guest != FP)
        return guest_reg[guest];
    load_fp(c, scratch);
    return scratch;
}

/* Stores every guest register into run->reg (rax = run; clobbers rcx). */
static void store_guest_regs(struct compiler *c)
{
    for (int i = 0; i < FP; i++)
        emit_store64(&c->buf, RAX, RUN_REG(i), guest_reg[i]);
    load_fp(c, RCX);
    emit_store64(&c->buf, RAX, RUN_REG(FP), RCX);
}

/* rcx = jit_pc_map[ecx] + code; jmp rcx. Used at entry and by exit at depth > 0. */
static void jump_through_pc_map(struct compiler *c)
{
    emit_load64(&c->buf, RDX, RSP, FR(pc_map));
    emit_rm(&c->buf, 0, 0x8b, RCX, RDX, RCX, 4, 0); /* mov ecx, [rdx + rcx*4] */
    emit_rm(&c->buf, X_W, 0x03, RCX, RSP, -1, 1, FR(code)); /* add rcx, [rsp+code] */
    emit_rr(&c->buf, 0, 0xff, 4, RCX);                     /* jmp rcx */
}

static void emit_prologue(struct compiler *c)
{
    struct jit_buf *b = &c->buf;
    for (size_t i = 0; i < NUM_HOST_SAVED; i++)
        emit_push(b, host_saved[i]);
    emit_alu_imm(b, X_W, 5, RSP, FRAME_ALLOC);
    for (int32_t off = 0; off < (int32_t)sizeof(struct jit_frame); off += 8) {
        emit_load64(b, RAX, RDI, off);
        emit_store64(b, RSP, off, RAX);
    }
    load_run_ptr(c, RAX);
    emit_load64(b, ARENA, RAX, RUN_OFF(arena));
    emit_load64(b, BUDGET, RSP, FR(budget));
    for (int i = 0; i < FP; i++)
        emit_load64(b, guest_reg[i], RAX, RUN_REG(i));
    emit_load32(b, RCX, RAX, RUN_OFF(pc));
    jump_through_pc_map(c);
}

static void emit_tails(struct compiler *c)
{
    struct jit_buf *b = &c->buf;

    c->tail_pos[TAIL_STORE_RET] = b->len;
    load_run_ptr(c, RAX);
    store_guest_regs(c);

    c->tail_pos[TAIL_RET] = b->len;
    load_run_ptr(c, RAX);
    emit_store64(b, RAX, RUN_OFF(budget), BUDGET);
    emit_load32(b, RAX, RAX, RUN_OFF(status));
    emit_alu_imm(b, X_W, 0, RSP, FRAME_ALLOC);
    for (size_t i = NUM_HOST_SAVED; i-- > 0;)
        emit_pop(b, host_saved[i]);
    emit_u8(b, 0xc3);

    /* Stops with pc = edx: preempted before the instruction (the budget is
     * left at 0, as the interpreter leaves it), or done. */
    static const struct { enum tail tail; int status; } stops[] = {
        {TAIL_PREEMPT, ZS_PREEMPTED},
        {TAIL_DONE, ZS_DONE},
    };
    for (size_t i = 0; i < sizeof(stops) / sizeof(stops[0]); i++) {
        c->tail_pos[stops[i].tail] = b->len;
        if (stops[i].tail == TAIL_PREEMPT)
            emit_rr(b, 0, 0x31, BUDGET, BUDGET); /* xor: budget 0 */
        load_run_ptr(c, RAX);
        emit_store32(b, RAX, RUN_OFF(pc), RDX);
        emit_rm(b, 0, 0xc7, 0, RAX, -1, 1, RUN_OFF(status)); /* mov dword [rax+status], imm32 */
        emit_u32(b, (uint32_t)stops[i].status);
        jump_to_tail(c, -1, TAIL_STORE_RET);
    }

    /* Faults call C, so the guest registers are stored before the argument
     * registers are overwritten. zs_run_memory_fault(run, pc, rcx +
     * ZS_GUEST_BASE, size, store). */
    c->tail_pos[TAIL_MEM_FAULT] = b->len;
    emit_store64(b, RSP, FR(fault_info), RAX);
    emit_store64(b, RSP, FR(fault_offset), RCX);
    load_run_ptr(c, RAX);
    store_guest_regs(c);
    emit_mov_rr(b, 0, RSI, RDX);                            /* pc */
    emit_load64(b, RDX, RSP, FR(fault_offset));
    emit_rm(b, X_W, 0x03, RDX, RSP, -1, 1, FR(guest_base)); /* address */
    emit_load32(b, R8, RSP, FR(fault_info));
    emit_rr(b, 0, 0x0fb6, RCX, R8);                         /* movzx ecx, r8b: size */
    emit_rr(b, 0, 0xc1, 5, R8);                             /* shr r8d, 8: store */
    emit_u8(b, 8);
    emit_load64(b, RDI, RSP, FR(run));
    emit_call_abs(b, (const void *)zs_run_memory_fault);
    jump_to_tail(c, -1, TAIL_RET);

    c->tail_pos[TAIL_DEPTH_FAULT] = b->len;
    load_run_ptr(c, RAX);
    store_guest_regs(c);
    emit_mov_rr(b, 0, RSI, RDX);
    emit_load64(b, RDI, RSP, FR(run));
    emit_call_abs(b, (const void *)jit_depth_fault);
    jump_to_tail(c, -1, TAIL_RET);
}

/* ---- instructions -------------------------------------------------------- */

static int size_log2_of(uint8_t opcode)
{
    switch (opcode & 0x18) {
    case EBPF_SIZE_B: return 0;
    case EBPF_SIZE_H: return 1;
    case EBPF_SIZE_W: return 2;
    default: return 3;
    }
}

/* Budget check before a back-edge, local call or helper call. */
static void emit_budget_check(struct compiler *c, uint32_t pc)
{
    emit_alu_imm(&c->buf, X_W, 5, BUDGET, 1); /* sub */
    jump_to_stub(c, CC_L, pc, TAIL_PREEMPT, 0);
}

/* An access within the current stack frame: r10 + off with
 * -ZS_FRAME_SIZE <= off <= -size. r10 is read-only for the guest (verifier),
 * so it is always ZS_GUEST_BASE + arena_size - depth * ZS_FRAME_SIZE with
 * depth <= ZS_MAX_CALL_DEPTH, and zs_run_new leaves ZS_STACK_SIZE bytes above
 * all read-only and data bytes: such an access can never leave the cage. */
static int in_own_frame(int base_guest_reg, int16_t off, int size_log2)
{
    return base_guest_reg == FP && off >= -(int32_t)ZS_FRAME_SIZE && off <= -(1 << size_log2);
}

/* Sets rcx so that the access is [ARENA + rcx + returned displacement]:
 * rcx = base + off - ZS_GUEST_BASE checked against the cage, or, in the own
 * stack frame, rcx = r10 - ZS_GUEST_BASE and the displacement is off. */
static int32_t emit_cage_check(struct compiler *c, uint32_t pc, int base_guest_reg, int16_t off,
                               int size_log2, int store)
{
    struct jit_buf *b = &c->buf;
    uint32_t info = (1u << size_log2) | (store ? 0x100u : 0);
    if (base_guest_reg == FP) {
        emit_load64(b, RCX, RSP, FR(fp_offset));
        if (in_own_frame(base_guest_reg, off, size_log2))
            return off;
        emit_rm(b, X_W, 0x8d, RCX, RCX, -1, 1, off);                   /* lea rcx, [rcx+off] */
    } else {
        emit_rm(b, X_W, 0x8d, RCX, guest_reg[base_guest_reg], -1, 1, off);
        emit_rm(b, X_W, 0x2b, RCX, RSP, -1, 1, FR(guest_base));        /* sub rcx, [guest_base] */
    }
    emit_rm(b, X_W, 0x3b, RCX, RSP, -1, 1, FR_LIMIT(size_log2));       /* cmp rcx, [limit] */
    jump_to_stub(c, CC_A, pc, TAIL_MEM_FAULT, info);
    if (store) {
        emit_rm(b, X_W, 0x3b, RCX, RSP, -1, 1, FR(ro_end));
        jump_to_stub(c, CC_B, pc, TAIL_MEM_FAULT, info);
    }
    return 0;
}

static void emit_load(struct compiler *c, uint32_t pc, const struct ebpf_inst *in)
{
    int lg = size_log2_of(in->opcode);
    int dst = guest_reg[in->dst];
    int sx = (in->opcode & 0xe0) == EBPF_MODE_MEMSX;
    int32_t disp = emit_cage_check(c, pc, in->src, in->off, lg, 0);
    static const unsigned zx_ops[4] = {0x0fb6, 0x0fb7, 0x8b, 0x8b};
    static const unsigned sx_ops[4] = {0x0fbe, 0x0fbf, 0x63, 0x8b};
    unsigned flags = sx || lg == 3 ? X_W : 0;
    emit_rm(&c->buf, flags, sx ? sx_ops[lg] : zx_ops[lg], dst, ARENA, RCX, 1, disp);
}

static void emit_store(struct compiler *c, uint32_t pc, const struct ebpf_inst *in)
{
    struct jit_buf *b = &c->buf;
    int lg = size_log2_of(in->opcode);
    static const unsigned size_flags[4] = {X_BYTE, X_16, 0, X_W};
    int32_t disp = emit_cage_check(c, pc, in->dst, in->off, lg, 1);
    if ((in->opcode & EBPF_CLS_MASK) == EBPF_CLS_STX) {
        int src = operand(c, in->src, RAX);
        emit_rm(b, size_flags[lg], lg == 0 ? 0x88 : 0x89, src, ARENA, RCX, 1, disp);
    } else {
        emit_rm(b, size_flags[lg] & ~X_BYTE, lg == 0 ? 0xc6 : 0xc7, 0, ARENA, RCX, 1, disp);
        if (lg == 0)
            emit_u8(b, (uint8_t)in->imm);
        else if (lg == 1)
            emit_u16(b, (uint16_t)in->imm);
        else
            emit_u32(b, (uint32_t)in->imm);
    }
}

/* Atomic read-modify-write on [ARENA + rcx]; rax and rdx are free. An arena
 * belongs to one run on one thread, so no bus lock is needed, and none is
 * taken: a locked access that splits a cache line can be trapped by the
 * kernel's split-lock detection, and guest addresses need not be aligned. */
static int emit_atomic(struct compiler *c, uint32_t pc, const struct ebpf_inst *in)
{
    struct jit_buf *b = &c->buf;
    int lg = size_log2_of(in->opcode);
    unsigned w = lg == 3 ? X_W : 0;
    /* the x86 opcode of `op r/m, reg` for the arithmetic operations */
    unsigned rmw_op = 0;
    switch (in->imm & ~EBPF_ATOMIC_FETCH) {
    case EBPF_ATOMIC_ADD: rmw_op = 0x01; break;
    case EBPF_ATOMIC_OR: rmw_op = 0x09; break;
    case EBPF_ATOMIC_AND: rmw_op = 0x21; break;
    case EBPF_ATOMIC_XOR: rmw_op = 0x31; break;
    }
    int exchange = in->imm == EBPF_ATOMIC_XCHG || in->imm == EBPF_ATOMIC_CMPXCHG;
    if (lg < 2 || (!rmw_op && !exchange))
        return -1;
    int32_t disp = emit_cage_check(c, pc, in->dst, in->off, lg, 1);

    if (in->imm == EBPF_ATOMIC_CMPXCHG) {
        int r0 = guest_reg[0];
        int src = operand(c, in->src, RDX);
        emit_mov_rr(b, 1, RAX, r0);
        emit_rm(b, w, 0x0fb1, src, ARENA, RCX, 1, disp); /* cmpxchg [mem], src */
        emit_mov_rr(b, w, r0, RAX); /* old value; the 32-bit form zero-extends */
        return 0;
    }
    if (!(in->imm & EBPF_ATOMIC_FETCH)) {
        emit_rm(b, w, rmw_op, operand(c, in->src, RAX), ARENA, RCX, 1, disp); /* op [mem], src */
        return 0;
    }
    /* fetch forms (src is never r10): rax = old, rdx = new, src = old
     * (zero-extended when 32-bit) */
    int src = guest_reg[in->src];
    emit_rm(b, w, 0x8b, RAX, ARENA, RCX, 1, disp);
    emit_mov_rr(b, 1, RDX, src);
    if (rmw_op)
        emit_rr(b, w, rmw_op, RAX, RDX); /* rdx = old op src */
    emit_rm(b, w, 0x89, RDX, ARENA, RCX, 1, disp);
    emit_mov_rr(b, w, src, RAX);
    return 0;
}

/* DIV and MOD, unsigned (off 0) or signed (off 1), by a register or an
 * immediate. RFC 9669: x / 0 = 0, x % 0 = x, signed INT_MIN / -1 = INT_MIN and
 * INT_MIN % -1 = 0; none of these may reach the host's trapping idiv. */
static void emit_divmod(struct compiler *c, const struct ebpf_inst *in, int w)
{
    struct jit_buf *b = &c->buf;
    int dst = guest_reg[in->dst];
    int is_mod = (in->opcode & 0xf0) == EBPF_ALU_MOD;
    int is_signed = in->off == 1;
    unsigned wf = w ? X_W : 0;
    int by_reg = in->opcode & EBPF_SRC_X;
    int divisor;

    if (!by_reg) {
        if (in->imm == 0) {
            if (is_mod)
                emit_mov_rr(b, w, dst, dst); /* unchanged (32-bit: zero-extended) */
            else
                emit_rr(b, 0, 0x31, dst, dst); /* xor dst32, dst32 */
            return;
        }
        if (is_signed && in->imm == -1) {
            if (is_mod)
                emit_rr(b, 0, 0x31, dst, dst);
            else
                emit_rr(b, wf, 0xf7, 3, dst); /* neg: wraps for INT_MIN like the RFC */
            return;
        }
        /* 64-bit forms take the sign-extended immediate, 32-bit ones its low bits */
        emit_mov_imm64(b, RCX, w ? (uint64_t)(int64_t)in->imm : (uint32_t)in->imm);
        divisor = RCX;
    } else {
        divisor = operand(c, in->src, RCX); /* rcx is free with a register divisor */
    }

    /* a register divisor may be 0 or -1 at run time; an immediate was settled above */
    size_t to_zero = 0, to_minus_one = 0, to_end[2] = {0, 0};
    if (by_reg) {
        emit_rr(b, wf, 0x85, divisor, divisor); /* test */
        to_zero = emit_jcc_rel32(b, CC_E);
        if (is_signed) {
            emit_alu_imm(b, wf, 7, divisor, -1); /* cmp divisor, -1 */
            to_minus_one = emit_jcc_rel32(b, CC_E);
        }
    }
    emit_mov_rr(b, 1, RAX, dst);
    if (is_signed) {
        if (w)
            emit_u8(b, 0x48);
        emit_u8(b, 0x99); /* cqo / cdq */
    } else {
        emit_rr(b, 0, 0x31, RDX, RDX);
    }
    emit_rr(b, wf, 0xf7, is_signed ? 7 : 6, divisor); /* idiv / div */
    emit_mov_rr(b, w, dst, is_mod ? RDX : RAX);
    if (!by_reg)
        return;
    to_end[0] = emit_jmp_rel32(b);

    link_rel32(b, to_zero, b->len);
    if (is_mod)
        emit_mov_rr(b, w, dst, dst);
    else
        emit_rr(b, 0, 0x31, dst, dst);
    if (is_signed) {
        to_end[1] = emit_jmp_rel32(b);
        link_rel32(b, to_minus_one, b->len);
        if (is_mod)
            emit_rr(b, 0, 0x31, dst, dst);
        else
            emit_rr(b, wf, 0xf7, 3, dst);
    }
    for (int i = 0; i < 2; i++)
        if (to_end[i])
            link_rel32(b, to_end[i], b->len);
}

/* Byte swaps: END in the ALU class converts to little (source 0) or big
 * (source 1) endian; in the ALU64 class it swaps unconditionally. The result
 * is zero-extended from the width. */
static int emit_end(struct compiler *c, const struct ebpf_inst *in, int alu64)
{
    struct jit_buf *b = &c->buf;
    int dst = guest_reg[in->dst];
    int swap = alu64 || (in->opcode & EBPF_SRC_X);
    switch (in->imm) {
    case 16:
        if (swap) {
            emit_rr(b, X_16, 0xc1, 1, dst); /* rol dst16, 8 */
            emit_u8(b, 8);
        }
        emit_rr(b, 0, 0x0fb7, dst, dst); /* movzx dst32, dst16 */
        return 0;
    case 32:
        if (swap) {
            emit_prefixes(b, 0, 0, 0, dst, 0);
            emit_u8(b, 0x0f);
            emit_u8(b, (uint8_t)(0xc8 | (dst & 7))); /* bswap dst32 */
        } else {
            emit_mov_rr(b, 0, dst, dst);
        }
        return 0;
    case 64:
        if (swap) {
            emit_prefixes(b, X_W, 0, 0, dst, 0);
            emit_u8(b, 0x0f);
            emit_u8(b, (uint8_t)(0xc8 | (dst & 7)));
        }
        return 0;
    default:
        return -1;
    }
}

static int emit_alu(struct compiler *c, const struct ebpf_inst *in)
{
    struct jit_buf *b = &c->buf;
    int w = (in->opcode & EBPF_CLS_MASK) == EBPF_CLS_ALU64;
    unsigned wf = w ? X_W : 0;
    int dst = guest_reg[in->dst];
    int use_reg = in->opcode & EBPF_SRC_X;
    int op = in->opcode & 0xf0;
    int is_shift = op == EBPF_ALU_LSH || op == EBPF_ALU_RSH || op == EBPF_ALU_ARSH;
    /* a register source (division reads its own; END has none): r10 is
     * loaded into rcx for shifts (the count register), into rax otherwise */
    int src = -1;
    if (use_reg && op != EBPF_ALU_DIV && op != EBPF_ALU_MOD && op != EBPF_ALU_END)
        src = operand(c, in->src, is_shift ? RCX : RAX);

    /* add, sub, or, and, xor: x86 opcode (reg form) and /digit (imm form) */
    static const struct { int op; unsigned x86; int digit; } arith[] = {
        {EBPF_ALU_ADD, 0x01, 0}, {EBPF_ALU_SUB, 0x29, 5}, {EBPF_ALU_OR, 0x09, 1},
        {EBPF_ALU_AND, 0x21, 4}, {EBPF_ALU_XOR, 0x31, 6},
    };
    for (size_t i = 0; i < sizeof(arith) / sizeof(arith[0]); i++) {
        if (arith[i].op != op)
            continue;
        if (use_reg)
            emit_rr(b, wf, arith[i].x86, src, dst);
        else
            emit_alu_imm(b, wf, arith[i].digit, dst, in->imm);
        return 0;
    }

    switch (op) {
    case EBPF_ALU_MUL:
        if (use_reg) {
            emit_rr(b, wf, 0x0faf, dst, src);
        } else {
            emit_rr(b, wf, 0x69, dst, dst);
            emit_u32(b, (uint32_t)in->imm);
        }
        return 0;
    case EBPF_ALU_DIV:
    case EBPF_ALU_MOD:
        if (in->off != 0 && in->off != 1)
            return -1;
        emit_divmod(c, in, w);
        return 0;
    case EBPF_ALU_NEG:
        emit_rr(b, wf, 0xf7, 3, dst);
        return 0;
    case EBPF_ALU_LSH:
    case EBPF_ALU_RSH:
    case EBPF_ALU_ARSH: {
        /* x86 masks the count to 31 / 63 exactly as RFC 9669 does */
        int digit = op == EBPF_ALU_LSH ? 4 : op == EBPF_ALU_RSH ? 5 : 7;
        if (use_reg) {
            if (src != RCX)
                emit_mov_rr(b, 0, RCX, src);
            emit_rr(b, wf, 0xd3, digit, dst); /* 32-bit form zero-extends, even by 0 */
        } else {
            int count = in->imm & (w ? 63 : 31);
            if (count) {
                emit_rr(b, wf, 0xc1, digit, dst);
                emit_u8(b, (uint8_t)count);
            } else if (!w) {
                emit_mov_rr(b, 0, dst, dst);
            }
        }
        return 0;
    }
    case EBPF_ALU_MOV:
        if (!use_reg) {
            emit_mov_imm64(b, dst, w ? (uint64_t)(int64_t)in->imm : (uint32_t)in->imm);
            return 0;
        }
        switch (in->off) {
        case 0: emit_mov_rr(b, w, dst, src); return 0;
        case 8: emit_rr(b, wf | X_BYTE, 0x0fbe, dst, src); return 0;
        case 16: emit_rr(b, wf, 0x0fbf, dst, src); return 0;
        case 32: /* movsx from 32 bits; in the 32-bit class a plain mov */
            if (w)
                emit_rr(b, X_W, 0x63, dst, src);
            else
                emit_mov_rr(b, 0, dst, src);
            return 0;
        default: return -1;
        }
    case EBPF_ALU_END:
        return emit_end(c, in, w);
    default:
        return -1;
    }
}

static int is_back_edge(uint32_t pc, int64_t target) { return target <= (int64_t)pc; }

static int emit_jump(struct compiler *c, uint32_t pc, const struct ebpf_inst *in)
{
    struct jit_buf *b = &c->buf;
    int w = (in->opcode & EBPF_CLS_MASK) == EBPF_CLS_JMP;
    unsigned wf = w ? X_W : 0;
    int op = in->opcode & 0xf0;
    int64_t target = (int64_t)pc + 1 + (op == EBPF_JMP_JA && !w ? in->imm : in->off);
    if (target < 0 || target >= c->num_insts) {
        fail(c, zs_errmsg("jump at pc %u leaves the program (target %lld)", pc, (long long)target));
        return 0;
    }
    if (is_back_edge(pc, target))
        emit_budget_check(c, pc);
    if (op == EBPF_JMP_JA) {
        jump_to_pc(c, -1, (uint32_t)target);
        return 0;
    }
    static const struct { int op; int cc; } conds[] = {
        {EBPF_JMP_JEQ, CC_E}, {EBPF_JMP_JGT, CC_A}, {EBPF_JMP_JGE, CC_AE},
        {EBPF_JMP_JSET, CC_NE}, {EBPF_JMP_JNE, CC_NE}, {EBPF_JMP_JSGT, CC_G},
        {EBPF_JMP_JSGE, CC_GE}, {EBPF_JMP_JLT, CC_B}, {EBPF_JMP_JLE, CC_BE},
        {EBPF_JMP_JSLT, CC_L}, {EBPF_JMP_JSLE, CC_LE},
    };
    int cc = -1;
    for (size_t i = 0; i < sizeof(conds) / sizeof(conds[0]); i++)
        if (conds[i].op == op)
            cc = conds[i].cc;
    if (cc < 0)
        return -1;
    int dst = operand(c, in->dst, RAX);
    int src = in->opcode & EBPF_SRC_X ? operand(c, in->src, RDX) : -1;
    if (op == EBPF_JMP_JSET) {
        if (src >= 0) {
            emit_rr(b, wf, 0x85, src, dst);
        } else {
            emit_rr(b, wf, 0xf7, 0, dst); /* test dst, imm32 (sign-extended) */
            emit_u32(b, (uint32_t)in->imm);
        }
    } else if (src >= 0) {
        emit_rr(b, wf, 0x39, src, dst);
    } else {
        emit_alu_imm(b, wf, 7, dst, in->imm);
    }
    jump_to_pc(c, cc, (uint32_t)target);
    return 0;
}

/* Helper call (imm index, or callx with the index in a register): save the
 * whole guest state, call zs_call_helper and leave unless it returned OK. */
static void emit_helper_call(struct compiler *c, uint32_t pc, const struct ebpf_inst *in)
{
    struct jit_buf *b = &c->buf;
    emit_budget_check(c, pc);
    load_run_ptr(c, RAX);
    store_guest_regs(c);
    if (in->opcode == EBPF_OP_CALLX)
        emit_load64(b, RSI, RAX, RUN_REG(in->dst));
    else
        emit_mov_imm64(b, RSI, (uint32_t)in->imm);
    emit_mov_rr(b, 1, RDI, RAX);
    emit_mov_imm64(b, RDX, pc);
    emit_call_abs(b, (const void *)zs_call_helper);
    emit_rr(b, 0, 0x85, RAX, RAX);
    jump_to_tail(c, CC_NE, TAIL_RET); /* status, pc and registers are already in run */
    load_run_ptr(c, RAX);
    for (int i = 0; i < FP; i++)
        if (i == 0 || caller_saved(guest_reg[i]))
            emit_load64(b, guest_reg[i], RAX, RUN_REG(i));
}

#define FRAME_OFF(field) ((int32_t)offsetof(struct zs_frame, field))

/* Local call: push a struct zs_frame onto run->frames, give the callee the
 * next stack frame and continue at the target. */
static void emit_local_call(struct compiler *c, uint32_t pc, const struct ebpf_inst *in)
{
    struct jit_buf *b = &c->buf;
    int64_t target = (int64_t)pc + 1 + in->imm;
    if (target < 0 || target >= c->num_insts) {
        fail(c, zs_errmsg("local call at pc %u leaves the program (target %lld)", pc,
                          (long long)target));
        return;
    }
    emit_budget_check(c, pc);
    load_run_ptr(c, RAX);
    emit_load32(b, RCX, RAX, RUN_OFF(depth));
    emit_alu_imm(b, 0, 7, RCX, ZS_MAX_CALL_DEPTH);
    jump_to_stub(c, CC_AE, pc, TAIL_DEPTH_FAULT, 0);
    emit_rr(b, 0, 0x69, RCX, RCX); /* imul ecx, ecx, sizeof(struct zs_frame) */
    emit_u32(b, (uint32_t)sizeof(struct zs_frame));
    emit_rm(b, X_W, 0x8d, RDX, RAX, RCX, 1, RUN_OFF(frames)); /* lea rdx, [rax+rcx+frames] */
    emit_rm(b, 0, 0xc7, 0, RDX, -1, 1, FRAME_OFF(return_pc));
    emit_u32(b, pc + 1);
    for (int i = 0; i < 4; i++)
        emit_store64(b, RDX, FRAME_OFF(saved) + 8 * i, guest_reg[6 + i]);
    load_fp(c, RCX);
    emit_store64(b, RDX, FRAME_OFF(saved_r10), RCX);
    emit_alu_imm_mem(b, 0, 0, RAX, RUN_OFF(depth), 1); /* add dword [rax+depth], 1 */
    emit_alu_imm_mem(b, X_W, 5, RSP, FR(fp_offset), (int32_t)ZS_FRAME_SIZE); /* sub */
    jump_to_pc(c, -1, (uint32_t)target);
}

/* exit: at depth 0 the run is done; otherwise pop a frame and return through
 * the pc map. */
static void emit_exit(struct compiler *c, uint32_t pc)
{
    struct jit_buf *b = &c->buf;
    load_run_ptr(c, RAX);
    emit_load32(b, RCX, RAX, RUN_OFF(depth));
    emit_rr(b, 0, 0x85, RCX, RCX);
    jump_to_stub(c, CC_E, pc, TAIL_DONE, 0);
    emit_alu_imm(b, 0, 5, RCX, 1);
    emit_store32(b, RAX, RUN_OFF(depth), RCX);
    emit_rr(b, 0, 0x69, RCX, RCX);
    emit_u32(b, (uint32_t)sizeof(struct zs_frame));
    emit_rm(b, X_W, 0x8d, RDX, RAX, RCX, 1, RUN_OFF(frames));
    for (int i = 0; i < 4; i++)
        emit_load64(b, guest_reg[6 + i], RDX, FRAME_OFF(saved) + 8 * i);
    emit_load64(b, RCX, RDX, FRAME_OFF(saved_r10));
    emit_rm(b, X_W, 0x2b, RCX, RSP, -1, 1, FR(guest_base)); /* sub */
    emit_store64(b, RSP, FR(fp_offset), RCX);
    emit_load32(b, RCX, RDX, FRAME_OFF(return_pc));
    jump_through_pc_map(c);
}

static int writes_fp(const struct ebpf_inst *in)
{
    switch (in->opcode & EBPF_CLS_MASK) {
    case EBPF_CLS_ALU:
    case EBPF_CLS_ALU64:
    case EBPF_CLS_LD:
    case EBPF_CLS_LDX:
        return in->dst == FP;
    case EBPF_CLS_STX:
        return (in->opcode & 0xe0) == EBPF_MODE_ATOMIC && (in->imm & EBPF_ATOMIC_FETCH) &&
               in->imm != EBPF_ATOMIC_CMPXCHG && in->src == FP;
    default:
        return 0;
    }
}

/* Compiles instruction `pc`; returns how many slots it used (lddw: 2), or 0
 * after recording an error. */
static uint32_t emit_insn(struct compiler *c, uint32_t pc)
{
    const struct ebpf_inst *in = &c->insts[pc];
    int rc = 0;
    if (in->dst >= ZS_NREGS || in->src >= ZS_NREGS) {
        fail(c, zs_errmsg("instruction at pc %u uses a register above r10", pc));
        return 0;
    }
    if (writes_fp(in)) { /* the verifier rejects these; the stack access scheme needs it */
        fail(c, zs_errmsg("instruction at pc %u writes r10, the read-only frame pointer", pc));
        return 0;
    }
    switch (in->opcode & EBPF_CLS_MASK) {
    case EBPF_CLS_ALU:
    case EBPF_CLS_ALU64:
        rc = emit_alu(c, in);
        break;
    case EBPF_CLS_LD:
        if (in->opcode != EBPF_OP_LDDW || in->src != 0 || pc + 1 >= c->num_insts) {
            rc = -1;
            break;
        }
        emit_mov_imm64(&c->buf, guest_reg[in->dst],
                       (uint32_t)in->imm | ((uint64_t)(uint32_t)in[1].imm << 32));
        return 2;
    case EBPF_CLS_LDX:
        if ((in->opcode & 0xe0) != EBPF_MODE_MEM && (in->opcode & 0xe0) != EBPF_MODE_MEMSX)
            rc = -1;
        else if ((in->opcode & 0xe0) == EBPF_MODE_MEMSX && (in->opcode & 0x18) == EBPF_SIZE_DW)
            rc = -1;
        else
            emit_load(c, pc, in);
        break;
    case EBPF_CLS_ST:
    case EBPF_CLS_STX:
        if ((in->opcode & 0xe0) == EBPF_MODE_MEM)
            emit_store(c, pc, in);
        else if ((in->opcode & 0xe7) == (EBPF_MODE_ATOMIC | EBPF_CLS_STX))
            rc = emit_atomic(c, pc, in);
        else
            rc = -1;
        break;
    case EBPF_CLS_JMP:
    case EBPF_CLS_JMP32:
        if (in->opcode == EBPF_OP_EXIT)
            emit_exit(c, pc);
        else if (in->opcode == EBPF_OP_CALL && in->src == EBPF_CALL_LOCAL)
            emit_local_call(c, pc, in);
        else if ((in->opcode == EBPF_OP_CALL && in->src == EBPF_CALL_HELPER) ||
                 in->opcode == EBPF_OP_CALLX)
            emit_helper_call(c, pc, in);
        else if ((in->opcode & 0xf0) == EBPF_JMP_CALL || (in->opcode & 0xf0) == EBPF_JMP_EXIT)
            rc = -1;
        else
            rc = emit_jump(c, pc, in);
        break;
    }
    if (rc) {
        fail(c, zs_errmsg("the JIT cannot compile opcode 0x%02x at pc %u", in->opcode, pc));
        return 0;
    }
    return 1;
}

static void emit_stubs(struct compiler *c)
{
    struct jit_buf *b = &c->buf;
    for (size_t i = 0; i < c->num_stubs; i++) {
        const struct stub *s = &c->stubs[i];
        link_rel32(b, s->jump_pos, b->len);
        emit_mov_imm64(b, RDX, s->pc);
        if (s->tail == TAIL_MEM_FAULT)
            emit_mov_imm64(b, RAX, s->info);
        jump_to_tail(c, -1, s->tail);
    }
}

static void free_compiler(struct compiler *c)
{
    free(c->buf.p);
    free(c->stubs);
    free(c->fixups);
    free(c->pc_map);
}

int zs_jit_compile(struct zs_program *prog, char **errmsg)
{
    struct compiler c = {.insts = prog->insts, .num_insts = prog->num_insts};
    if (prog->num_insts == 0) {
        *errmsg = zs_errmsg("cannot compile an empty program");
        return -1;
    }
    c.pc_map = calloc(prog->num_insts, sizeof(*c.pc_map));
    if (!c.pc_map) {
        *errmsg = zs_errmsg("out of memory");
        return -1;
    }

    emit_prologue(&c);
    for (uint32_t pc = 0; pc < c.num_insts && !c.err;) {
        c.pc_map[pc] = (uint32_t)c.buf.len;
        uint32_t used = emit_insn(&c, pc);
        if (used == 2 && pc + 1 < c.num_insts) /* lddw's second slot is never a target */
            c.pc_map[pc + 1] = (uint32_t)c.buf.len;
        pc += used;
    }
    const struct ebpf_inst *last = &c.insts[c.num_insts - 1];
    if (!c.err && last->opcode != EBPF_OP_EXIT && last->opcode != EBPF_OP_JA &&
        last->opcode != EBPF_OP_GOTOL)
        fail(&c, zs_errmsg("the program does not end with exit or a jump (pc %u)",
                           c.num_insts - 1));
    emit_tails(&c);
    emit_stubs(&c);

    if (!c.err && c.buf.oom)
        fail(&c, NULL);
    if (c.err) {
        *errmsg = c.err;
        free_compiler(&c);
        return -1;
    }
    for (size_t i = 0; i < c.num_fixups; i++) {
        uint32_t label = c.fixups[i].label;
        size_t target = label < c.num_insts ? c.pc_map[label] : c.tail_pos[label - c.num_insts];
        link_rel32(&c.buf, c.fixups[i].pos, target);
    }

    /* W^X: written while read-write, then executable and never writable again */
    size_t size = c.buf.len;
    void *code = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (code == MAP_FAILED) {
        *errmsg = zs_errmsg("cannot map %zu bytes for JIT code", size);
        free_compiler(&c);
        return -1;
    }
    memcpy(code, c.buf.p, size);
    if (mprotect(code, size, PROT_READ | PROT_EXEC) != 0) {
        munmap(code, size);
        *errmsg = zs_errmsg("cannot make JIT code executable");
        free_compiler(&c);
        return -1;
    }
    prog->jit_code = code;
    prog->jit_size = size;
    prog->jit_pc_map = c.pc_map;
    c.pc_map = NULL;
    free_compiler(&c);
    return 0;
}

int zs_jit_run(struct zs_run *run)
{
    const struct zs_program *prog = run->prog;
    if (!prog->jit_code) {
        zs_run_set_fault(run, run->pc, 0, "the program has no JIT code");
        return run->status;
    }
    if (run->pc >= prog->num_insts) {
        zs_run_set_fault(run, run->pc, 0, "pc %u is outside the program", run->pc);
        return run->status;
    }
    /* arena_size always exceeds 8: the stack alone is ZS_STACK_SIZE bytes */
    struct jit_frame frame = {
        .run = run,
        .budget = run->budget,
        .guest_base = ZS_GUEST_BASE,
        .ro_end = run->ro_end,
        .load_limit = {run->arena_size - 1, run->arena_size - 2, run->arena_size - 4,
                       run->arena_size - 8},
        .pc_map = prog->jit_pc_map,
        .code = prog->jit_code,
        .fp_offset = run->reg[FP] - ZS_GUEST_BASE,
    };
    return ((jit_entry_fn)prog->jit_code)(&frame);
}

void zs_jit_free(struct zs_program *prog)
{
    if (prog->jit_code)
        munmap(prog->jit_code, prog->jit_size);
    free(prog->jit_pc_map);
    prog->jit_code = NULL;
    prog->jit_size = 0;
    prog->jit_pc_map = NULL;
}
