/* SPDX-License-Identifier: Apache-2.0 */
/*
 * verifier.c: the load-time checks that let both engines run code without
 * re-checking it: valid encodings and registers, r10 read-only, jumps and
 * calls that land on instructions inside their function, no fall-through off
 * a function's end, no recursion and local calls nested at most 8 deep.
 * (Memory safety is not proven here: the cage checks every access at run time.)
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "zsvm_int.h"

struct verifier {
    const struct zs_program *prog;
    uint32_t n;
    uint8_t *flags;     /* per instruction */
    uint32_t *func;     /* per instruction: index of its function */
    uint32_t *fstart;   /* per function: first instruction */
    uint32_t *fend;     /* per function: one past its last instruction */
    int8_t *fdepth;     /* per function: -1 unknown, -2 being visited, else nesting depth */
    uint32_t nfuncs;
    char **errmsg;
};

enum { F_SECOND_SLOT = 1, F_FUNC_START = 2, F_SECTION_START = 4 };

static const char *section_of(const struct zs_program *prog, uint32_t pc, uint32_t *rel)
{
    for (uint32_t i = 0; i < prog->num_entries; i++) {
        if (pc >= prog->entries[i].start && pc < prog->entries[i].end) {
            *rel = pc - prog->entries[i].start;
            return prog->entries[i].name;
        }
    }
    *rel = pc;
    return "?";
}

__attribute__((format(printf, 3, 4))) static int reject(struct verifier *v, uint32_t pc, const char *fmt, ...)
{
    char what[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    uint32_t rel;
    const char *sec = section_of(v->prog, pc, &rel);
    char *msg = zs_errmsg("verifier: %s instruction %u (pc %u): %s", sec, rel, pc, what);
    if (v->errmsg)
        *v->errmsg = msg;
    else
        free(msg);
    return -1;
}

static int is_size_ok_for_atomic(uint8_t opcode)
{
    return (opcode & 0x18) == EBPF_SIZE_W || (opcode & 0x18) == EBPF_SIZE_DW;
}

/* Encoding checks of one instruction (fields that must be zero, valid
 * operations, registers). */
static int check_encoding(struct verifier *v, uint32_t pc)
{
    const struct ebpf_inst *in = &v->prog->insts[pc];
    uint8_t cls = in->opcode & EBPF_CLS_MASK;
    uint8_t op = in->opcode & 0xf0;
    int x = (in->opcode & EBPF_SRC_X) != 0;
    if (in->dst > 10 || in->src > 10)
        return reject(v, pc, "register r%u does not exist", in->dst > 10 ? in->dst : in->src);
    switch (cls) {
    case EBPF_CLS_ALU:
    case EBPF_CLS_ALU64:
        if (in->dst == 10)
            return reject(v, pc, "r10 (the frame pointer) is read-only");
        switch (op) {
        case EBPF_ALU_DIV:
        case EBPF_ALU_MOD:
            if (in->off != 0 && in->off != 1)
                return reject(v, pc, "division offset %d is neither 0 (unsigned) nor 1 (signed)", in->off);
            break;
        case EBPF_ALU_MOV:
            if (x && !(in->off == 0 || in->off == 8 || in->off == 16 || (in->off == 32 && cls == EBPF_CLS_ALU64)))
                return reject(v, pc, "invalid movsx width %d", in->off);
            if (!x && in->off != 0)
                return reject(v, pc, "mov of an immediate has a non-zero offset");
            break;
        case EBPF_ALU_NEG:
            if (x || in->imm != 0 || in->off != 0 || in->src != 0)
                return reject(v, pc, "invalid neg encoding");
            return 0;
        case EBPF_ALU_END:
            if (cls == EBPF_CLS_ALU64 && x)
                return reject(v, pc, "invalid opcode 0x%02x", in->opcode);
            if (in->imm != 16 && in->imm != 32 && in->imm != 64)
                return reject(v, pc, "byte swap width %d is not 16, 32 or 64", in->imm);
            if (in->src != 0 || in->off != 0)
                return reject(v, pc, "byte swap has non-zero unused fields");
            return 0;
        case 0xe0:
        case 0xf0:
            return reject(v, pc, "invalid opcode 0x%02x", in->opcode);
        default:
            if (in->off != 0)
                return reject(v, pc, "arithmetic instruction has a non-zero offset");
        }
        if (x ? in->imm != 0 : in->src != 0)
            return reject(v, pc, "arithmetic instruction has a non-zero unused %s field", x ? "imm" : "src");
        return 0;
    case EBPF_CLS_JMP:
    case EBPF_CLS_JMP32:
        if (op == EBPF_JMP_JA) {
            if (x || in->src != 0 || in->dst != 0 || (cls == EBPF_CLS_JMP ? in->imm != 0 : in->off != 0))
                return reject(v, pc, "invalid %s encoding", cls == EBPF_CLS_JMP ? "ja" : "gotol");
            return 0;
        }
        if (op == EBPF_JMP_CALL || op == EBPF_JMP_EXIT) {
            if (cls == EBPF_CLS_JMP32)
                return reject(v, pc, "invalid opcode 0x%02x", in->opcode);
            if (in->opcode == EBPF_OP_EXIT) {
                if (in->src || in->dst || in->off || in->imm)
                    return reject(v, pc, "exit has non-zero unused fields");
                return 0;
            }
            if (in->opcode == EBPF_OP_CALLX) {
                if (in->src || in->off || in->imm)
                    return reject(v, pc, "callx has non-zero unused fields");
                return 0;
            }
            if (in->opcode != EBPF_OP_CALL)
                return reject(v, pc, "invalid opcode 0x%02x", in->opcode);
            if (in->dst || in->off)
                return reject(v, pc, "call has non-zero unused fields");
            if (in->src == EBPF_CALL_HELPER) {
                uint32_t h = (uint32_t)in->imm;
                if (h >= v->prog->num_helpers || !v->prog->helpers[h].fn)
                    return reject(v, pc, "call to unknown helper #%u", h);
                return 0;
            }
            if (in->src != EBPF_CALL_LOCAL)
                return reject(v, pc, "call kind %u is not supported (0 = helper, 1 = local)", in->src);
            return 0;
        }
        if (op == 0xe0 || op == 0xf0)
            return reject(v, pc, "invalid opcode 0x%02x", in->opcode);
        if (!x && in->src != 0)
            return reject(v, pc, "conditional jump on an immediate has a non-zero src field");
        if (x && in->imm != 0)
            return reject(v, pc, "conditional jump on a register has a non-zero imm field");
        return 0;
    case EBPF_CLS_LD:
        if (in->opcode != EBPF_OP_LDDW)
            return reject(v, pc, "opcode 0x%02x (legacy packet access or invalid) is not supported", in->opcode);
        if (in->dst == 10)
            return reject(v, pc, "r10 (the frame pointer) is read-only");
        if (in->src != 0)
            return reject(v, pc, "lddw with src %u (a map or BTF reference) is not supported", in->src);
        if (in->off != 0)
            return reject(v, pc, "lddw has a non-zero offset");
        return 0;
    case EBPF_CLS_LDX: {
        uint8_t mode = in->opcode & 0xe0;
        if (in->dst == 10)
            return reject(v, pc, "r10 (the frame pointer) is read-only");
        if (mode != EBPF_MODE_MEM && !(mode == EBPF_MODE_MEMSX && (in->opcode & 0x18) != EBPF_SIZE_DW))
            return reject(v, pc, "invalid load opcode 0x%02x", in->opcode);
        if (in->imm != 0)
            return reject(v, pc, "load has a non-zero imm field");
        return 0;
    }
    case EBPF_CLS_ST:
        if ((in->opcode & 0xe0) != EBPF_MODE_MEM)
            return reject(v, pc, "invalid store opcode 0x%02x", in->opcode);
        if (in->src != 0)
            return reject(v, pc, "store of an immediate has a non-zero src field");
        return 0;
    default: { /* STX */
        uint8_t mode = in->opcode & 0xe0;
        if (mode == EBPF_MODE_MEM) {
            if (in->imm != 0)
                return reject(v, pc, "store has a non-zero imm field");
            return 0;
        }
        if (mode != EBPF_MODE_ATOMIC || !is_size_ok_for_atomic(in->opcode))
            return reject(v, pc, "invalid store opcode 0x%02x", in->opcode);
        switch (in->imm) {
        case EBPF_ATOMIC_ADD:
        case EBPF_ATOMIC_OR:
        case EBPF_ATOMIC_AND:
        case EBPF_ATOMIC_XOR:
        case EBPF_ATOMIC_CMPXCHG:
            return 0;
        case EBPF_ATOMIC_ADD | EBPF_ATOMIC_FETCH:
        case EBPF_ATOMIC_OR | EBPF_ATOMIC_FETCH:
        case EBPF_ATOMIC_AND | EBPF_ATOMIC_FETCH:
        case EBPF_ATOMIC_XOR | EBPF_ATOMIC_FETCH:
        case EBPF_ATOMIC_XCHG:
            if (in->src == 10)
                return reject(v, pc, "atomic fetch into r10 (the frame pointer, read-only)");
            return 0;
        default:
            return reject(v, pc, "invalid atomic operation 0x%x", (unsigned)in->imm);
        }
    }
    }
}

static int is_local_call(const struct ebpf_inst *in)
{
    return in->opcode == EBPF_OP_CALL && in->src == EBPF_CALL_LOCAL;
}

/* Pass 1: encodings, lddw pairs, and where functions start. */
static int scan(struct verifier *v)
{
    const struct zs_program *prog = v->prog;
    for (uint32_t i = 0; i < prog->num_entries; i++) {
        const struct zs_entry *en = &prog->entries[i];
        if (en->start >= en->end || en->end > v->n)
            return reject(v, en->start, "entry %s has an invalid range", en->name);
        v->flags[en->start] |= F_SECTION_START | F_FUNC_START;
    }
    for (uint32_t pc = 0; pc < v->n; pc++) {
        if (check_encoding(v, pc) != 0)
            return -1;
        const struct ebpf_inst *in = &prog->insts[pc];
        if (in->opcode == EBPF_OP_LDDW) {
            const struct ebpf_inst *hi = in + 1;
            if (pc + 1 >= v->n || (v->flags[pc + 1] & F_SECTION_START))
                return reject(v, pc, "lddw is missing its second half");
            if (hi->opcode || hi->dst || hi->src || hi->off)
                return reject(v, pc, "second half of lddw has non-zero fields other than imm");
            v->flags[++pc] |= F_SECOND_SLOT;
        } else if (is_local_call(in)) {
            int64_t target = (int64_t)pc + 1 + in->imm;
            if (target < 0 || target >= v->n)
                return reject(v, pc, "local call target %lld is outside the program", (long long)target);
            v->flags[target] |= F_FUNC_START;
        }
    }
    return 0;
}

/* Functions run from each start to the next start. */
static int split_functions(struct verifier *v)
{
    v->nfuncs = 0;
    for (uint32_t pc = 0; pc < v->n; pc++) {
        if (v->flags[pc] & F_FUNC_START) {
            if (v->flags[pc] & F_SECOND_SLOT)
                return reject(v, pc, "call target is the second half of an lddw");
            if (v->nfuncs)
                v->fend[v->nfuncs - 1] = pc;
            v->fstart[v->nfuncs++] = pc;
        }
        v->func[pc] = v->nfuncs - 1;
    }
    v->fend[v->nfuncs - 1] = v->n;
    for (uint32_t f = 0; f < v->nfuncs; f++) {
        uint32_t last = v->fend[f] - 1;
        const struct ebpf_inst *in = &v->prog->insts[last];
        int ends = !(v->flags[last] & F_SECOND_SLOT) &&
                   (in->opcode == EBPF_OP_EXIT || in->opcode == EBPF_OP_JA || in->opcode == EBPF_OP_GOTOL);
        if (!ends)
            return reject(v, last, "execution can fall off the end of the function");
    }
    return 0;
}

/* Pass 2: every jump lands on an instruction of its own function. */
static int check_jumps(struct verifier *v)
{
    for (uint32_t pc = 0; pc < v->n; pc++) {
        if (v->flags[pc] & F_SECOND_SLOT)
            continue;
        const struct ebpf_inst *in = &v->prog->insts[pc];
        uint8_t cls = in->opcode & EBPF_CLS_MASK;
        uint8_t op = in->opcode & 0xf0;
        if ((cls != EBPF_CLS_JMP && cls != EBPF_CLS_JMP32) || op == EBPF_JMP_CALL || op == EBPF_JMP_EXIT)
            continue;
        int64_t delta = in->opcode == EBPF_OP_GOTOL ? in->imm : in->off;
        int64_t target = (int64_t)pc + 1 + delta;
        uint32_t f = v->func[pc];
        if (target < v->fstart[f] || target >= v->fend[f])
            return reject(v, pc, "jump target %lld is outside the function", (long long)target);
        if (v->flags[target] & F_SECOND_SLOT)
            return reject(v, pc, "jump target is the second half of an lddw");
    }
    return 0;
}

/* Depth of local calls below function f; rejects recursion and nesting > 8. */
static int call_depth(struct verifier *v, uint32_t f, int level)
{
    if (v->fdepth[f] >= 0)
        return v->fdepth[f];
    if (v->fdepth[f] == -2)
        return reject(v, v->fstart[f], "recursive local call (the function calls itself, directly or not)"), -1;
    if (level > ZS_MAX_CALL_DEPTH)
        return reject(v, v->fstart[f], "local calls nest deeper than %d", ZS_MAX_CALL_DEPTH), -1;
    v->fdepth[f] = -2;
    int depth = 0;
    for (uint32_t pc = v->fstart[f]; pc < v->fend[f]; pc++) {
        const struct ebpf_inst *in = &v->prog->insts[pc];
        if (!is_local_call(in) || (v->flags[pc] & F_SECOND_SLOT))
            continue;
        int d = call_depth(v, v->func[pc + 1 + in->imm], level + 1);
        if (d < 0)
            return -1;
        if (d + 1 > depth)
            depth = d + 1;
    }
    if (depth > ZS_MAX_CALL_DEPTH)
        return reject(v, v->fstart[f], "local calls nest deeper than %d", ZS_MAX_CALL_DEPTH), -1;
    v->fdepth[f] = (int8_t)depth;
    return depth;
}

int zs_verify(const struct zs_program *prog, char **errmsg)
{
    struct verifier v = {.prog = prog, .n = prog->num_insts, .errmsg = errmsg};
    int rc = -1;
    if (v.n == 0 || v.n > ZS_MAX_INSTS || prog->num_entries == 0) {
        char *msg = zs_errmsg("verifier: program has %u instructions (limit %u) and %u entries",
                              v.n, ZS_MAX_INSTS, prog->num_entries);
        if (errmsg)
            *errmsg = msg;
        else
            free(msg);
        return -1;
    }
    v.flags = calloc(v.n, 1);
    v.func = malloc(v.n * sizeof(*v.func));
    v.fstart = malloc(v.n * sizeof(*v.fstart));
    v.fend = malloc(v.n * sizeof(*v.fend));
    v.fdepth = malloc(v.n);
    if (!v.flags || !v.func || !v.fstart || !v.fend || !v.fdepth) {
        char *msg = zs_errmsg("verifier: out of memory");
        if (errmsg)
            *errmsg = msg;
        else
            free(msg);
        goto out;
    }
    memset(v.fdepth, -1, v.n);
    if (scan(&v) != 0 || split_functions(&v) != 0 || check_jumps(&v) != 0)
        goto out;
    for (uint32_t f = 0; f < v.nfuncs; f++)
        if (call_depth(&v, f, 0) < 0)
            goto out;
    rc = 0;
out:
    free(v.flags);
    free(v.func);
    free(v.fstart);
    free(v.fend);
    free(v.fdepth);
    return rc;
}
