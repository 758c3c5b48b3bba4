/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ebpf.h: the eBPF instruction encoding of RFC 9669 (ISA v4): the instruction
 * layout and the opcode field values the loader, verifier and engines decode.
 */
#ifndef ZSVM_EBPF_H
#define ZSVM_EBPF_H

#include <stdint.h>

struct ebpf_inst {
    uint8_t opcode;
    uint8_t dst : 4;
    uint8_t src : 4;
    int16_t off;
    int32_t imm;
};

/* Instruction classes (opcode & 0x07). */
#define EBPF_CLS_MASK 0x07
#define EBPF_CLS_LD 0x00
#define EBPF_CLS_LDX 0x01
#define EBPF_CLS_ST 0x02
#define EBPF_CLS_STX 0x03
#define EBPF_CLS_ALU 0x04
#define EBPF_CLS_JMP 0x05
#define EBPF_CLS_JMP32 0x06
#define EBPF_CLS_ALU64 0x07

/* Arithmetic and jump instructions: source (opcode & 0x08), operation (opcode & 0xf0). */
#define EBPF_SRC_K 0x00
#define EBPF_SRC_X 0x08

#define EBPF_ALU_ADD 0x00
#define EBPF_ALU_SUB 0x10
#define EBPF_ALU_MUL 0x20
#define EBPF_ALU_DIV 0x30
#define EBPF_ALU_OR 0x40
#define EBPF_ALU_AND 0x50
#define EBPF_ALU_LSH 0x60
#define EBPF_ALU_RSH 0x70
#define EBPF_ALU_NEG 0x80
#define EBPF_ALU_MOD 0x90
#define EBPF_ALU_XOR 0xa0
#define EBPF_ALU_MOV 0xb0
#define EBPF_ALU_ARSH 0xc0
#define EBPF_ALU_END 0xd0

#define EBPF_JMP_JA 0x00
#define EBPF_JMP_JEQ 0x10
#define EBPF_JMP_JGT 0x20
#define EBPF_JMP_JGE 0x30
#define EBPF_JMP_JSET 0x40
#define EBPF_JMP_JNE 0x50
#define EBPF_JMP_JSGT 0x60
#define EBPF_JMP_JSGE 0x70
#define EBPF_JMP_CALL 0x80
#define EBPF_JMP_EXIT 0x90
#define EBPF_JMP_JLT 0xa0
#define EBPF_JMP_JLE 0xb0
#define EBPF_JMP_JSLT 0xc0
#define EBPF_JMP_JSLE 0xd0

/* Load and store instructions: size (opcode & 0x18), mode (opcode & 0xe0). */
#define EBPF_SIZE_W 0x00
#define EBPF_SIZE_H 0x08
#define EBPF_SIZE_B 0x10
#define EBPF_SIZE_DW 0x18

#define EBPF_MODE_IMM 0x00
#define EBPF_MODE_MEM 0x60
#define EBPF_MODE_MEMSX 0x80
#define EBPF_MODE_ATOMIC 0xc0

/* Atomic operations (imm of an atomic instruction). */
#define EBPF_ATOMIC_FETCH 0x01
#define EBPF_ATOMIC_ADD 0x00
#define EBPF_ATOMIC_OR 0x40
#define EBPF_ATOMIC_AND 0x50
#define EBPF_ATOMIC_XOR 0xa0
#define EBPF_ATOMIC_XCHG (0xe0 | EBPF_ATOMIC_FETCH)
#define EBPF_ATOMIC_CMPXCHG (0xf0 | EBPF_ATOMIC_FETCH)

/* src of a call: helper by number, local function (pc-relative imm). */
#define EBPF_CALL_HELPER 0
#define EBPF_CALL_LOCAL 1

/* Full opcodes the engines switch on. */
#define EBPF_OP_LDDW (EBPF_CLS_LD | EBPF_MODE_IMM | EBPF_SIZE_DW)         /* 0x18 */
#define EBPF_OP_JA (EBPF_CLS_JMP | EBPF_JMP_JA)                           /* 0x05 */
#define EBPF_OP_GOTOL (EBPF_CLS_JMP32 | EBPF_JMP_JA)                      /* 0x06 */
#define EBPF_OP_CALL (EBPF_CLS_JMP | EBPF_JMP_CALL)                       /* 0x85 */
#define EBPF_OP_CALLX (EBPF_CLS_JMP | EBPF_JMP_CALL | EBPF_SRC_X)         /* 0x8d */
#define EBPF_OP_EXIT (EBPF_CLS_JMP | EBPF_JMP_EXIT)                       /* 0x95 */

/* ELF constants for BPF objects. */
#define EM_BPF_MACHINE 247
#define R_BPF_NONE 0
#define R_BPF_64_64 1
#define R_BPF_64_ABS64 2
#define R_BPF_64_ABS32 3
#define R_BPF_64_NODYLD32 4
#define R_BPF_64_32 10

#endif
