"""Differential tests: the x86-64 JIT gives the interpreter's results, faults and stops.

Random valid programs (hypothesis) cover every ALU operation at both widths,
loads, stores and atomics inside and just outside the arena, forward jumps,
bounded loops closed by back-edges, local calls and helper calls (plain,
pending, faulting, unknown). Each program runs on both engines without a budget
and with budgets so small that the run is preempted and resumed many times;
every stop (status, registers) and the outcome (r0 and registers, or the
fault's kind, message, pc and address) must be identical. Grids of edge
operands pin every operation, condition and atomic exactly; fixed programs
check a CRC-32 against zlib, the read-only part of the cage, and W^X.
"""
import pathlib
import struct
import zlib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zeroserve.core.compile import ScriptCompiler
from zeroserve.core.errors import ScriptFault
from zeroserve.native._zsvm import ffi, lib
from zeroserve.vm import DONE, PREEMPTED, SUSPENDED, MemoryFault, Program

GUEST_BASE = 1 << 32
MASK64 = (1 << 64) - 1
MEMORY_KB = 64
MAX_STOPS = 5000  # far more than any generated program needs at budget 1

# Instruction encoding (RFC 9669): classes, operand source, operations.
LD, LDX, ST, STX, ALU, JMP, JMP32, ALU64 = range(8)
K, X = 0x00, 0x08
ALU_OPS = (0x00, 0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70, 0x80, 0x90, 0xA0, 0xB0, 0xC0, 0xD0)
NEG, MOV, ADD, DIV, MOD, END = 0x80, 0xB0, 0x00, 0x30, 0x90, 0xD0
SHIFTS = (0x60, 0x70, 0xC0)
CONDITIONS = (0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70, 0xA0, 0xB0, 0xC0, 0xD0)
JA, JEQ, JNE, JGT, JSGT, JGE, CALL, EXIT = 0x00, 0x10, 0x50, 0x20, 0x60, 0x30, 0x80, 0x90
SIZE_W, SIZE_H, SIZE_B, SIZE_DW = 0x00, 0x08, 0x10, 0x18
SIZES = (SIZE_W, SIZE_H, SIZE_B, SIZE_DW)
SIZE_BYTES = {SIZE_W: 4, SIZE_H: 2, SIZE_B: 1, SIZE_DW: 8}
MEM, MEMSX, ATOMIC = 0x60, 0x80, 0xC0
ATOMIC_OPS = (0x00, 0x40, 0x50, 0xA0, 0x01, 0x41, 0x51, 0xA1, 0xE1, 0xF1)
CALL_LOCAL = 1

INTERESTING_64 = (0, 1, 2, 7, 31, 32, 63, 64, 0x7F, 0x80, 0xFF, 0x7FFF, 0x8000, 0xFFFF,
                  0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 1 << 32, (1 << 63) - 1, 1 << 63,
                  MASK64, MASK64 - 1, GUEST_BASE + 8)
INTERESTING_32 = (0, 1, -1, 2, 31, 32, 63, 64, 0x7F, -128, -(1 << 31), (1 << 31) - 1)

values64 = st.one_of(st.sampled_from(INTERESTING_64), st.integers(0, MASK64))
imm32 = st.one_of(st.sampled_from(INTERESTING_32), st.integers(-(1 << 31), (1 << 31) - 1))
shift_counts = st.one_of(st.sampled_from((0, 1, 31, 32, 33, 63, 64, -1)), imm32)
any_reg = st.integers(0, 10)


def insn(opcode, dst=0, src=0, off=0, imm=0):
    """One instruction slot, as a one-element list so code is built by concatenation."""
    if imm >= 1 << 31:
        imm -= 1 << 32
    return [struct.pack("<BBhi", opcode, dst | src << 4, off, imm)]


def lddw(dst, value):
    return insn(LD | SIZE_DW, dst, imm=value & 0xFFFFFFFF) + insn(0, imm=value >> 32)


def mov_imm(dst, imm):
    return insn(ALU64 | K | MOV, dst, imm=imm)


# ---- random program pieces --------------------------------------------------
# Code is a list of 8-byte slots; ("call", n) marks a local call to function n,
# resolved once every function has its place. `writable` are the registers a
# piece may change: a loop keeps its counter (always one of r6..r9, which local
# calls preserve) out of its body's reach, so every loop ends.


@st.composite
def alu_run(draw, writable):
    return [slot for code in draw(st.lists(alu(writable), min_size=1, max_size=5)) for slot in code]


@st.composite
def alu(draw, writable):
    cls = draw(st.sampled_from((ALU, ALU64)))
    op = draw(st.sampled_from(ALU_OPS))
    dst = draw(st.sampled_from(writable))
    if op == NEG:
        return insn(cls | op, dst)
    if op == END:  # le/be in the 32-bit class, bswap in the 64-bit one
        source = draw(st.sampled_from((K, X))) if cls == ALU else K
        return insn(cls | source | op, dst, imm=draw(st.sampled_from((16, 32, 64))))
    off = draw(st.sampled_from((0, 1))) if op in (DIV, MOD) else 0  # 1: signed
    if op in (DIV, MOD) and draw(st.booleans()):
        # the divisors and dividends with special answers: 0, -1, INT_MIN
        src = draw(st.sampled_from(writable))
        special = (0, -1, 1 << 63, 1 << 31, (1 << 32) - 1)
        return (lddw(src, draw(st.sampled_from(special)) & MASK64)
                + lddw(dst, draw(st.sampled_from(special + (7,))) & MASK64)
                + insn(cls | X | op, dst, src, off))
    if draw(st.booleans()):
        if op == MOV:  # movsx widths
            off = draw(st.sampled_from((0, 8, 16, 32) if cls == ALU64 else (0, 8, 16)))
        return insn(cls | X | op, dst, draw(any_reg), off)
    return insn(cls | K | op, dst, off=off, imm=draw(shift_counts if op in SHIFTS else imm32))


def load(draw, dst, base, off):
    size = draw(st.sampled_from(SIZES))
    mode = MEM if size == SIZE_DW else draw(st.sampled_from((MEM, MEMSX)))
    return insn(LDX | mode | size, dst, base, off)


@st.composite
def stack_store_load(draw, writable):
    """A store into the stack and a load near it (sizes and overlap vary)."""
    size = draw(st.sampled_from(SIZES))
    off = -draw(st.integers(1, 512))
    if draw(st.booleans()):
        code = insn(STX | MEM | size, 10, draw(any_reg), off)
    else:
        code = insn(ST | MEM | size, 10, off=off, imm=draw(imm32))
    return code + load(draw, draw(st.sampled_from(writable)), 10, off + draw(st.integers(-8, 8)))


@st.composite
def stack_atomic(draw, writable):
    off = -8 * draw(st.integers(1, 64))
    return (insn(STX | MEM | SIZE_DW, 10, draw(any_reg), off)
            + insn(STX | ATOMIC | draw(st.sampled_from((SIZE_W, SIZE_DW))), 10,
                   draw(st.sampled_from(writable)), off, draw(st.sampled_from(ATOMIC_OPS))))


# One piece in eight that can fault does: programs mostly run to their end.
faulting = st.integers(0, 7).map(lambda n: n == 0)


@st.composite
def edge_access(draw, writable):
    """An access just inside the top of the arena (r10) or its bottom
    (ZS_GUEST_BASE), or else just outside them or through any register value."""
    base = draw(st.sampled_from(writable))
    size = draw(st.sampled_from(SIZES))
    width = SIZE_BYTES[size]
    where = draw(st.sampled_from(("top", "bottom")))
    if draw(faulting):
        where = draw(st.sampled_from((where, "anywhere")))
        off = {"top": st.integers(1 - width, 16), "bottom": st.integers(-16, -1),
               "anywhere": st.integers(-(1 << 15), (1 << 15) - 1)}[where]
    else:
        off = st.integers(-16, -width) if where == "top" else st.integers(0, 16)
    off = draw(off)
    code = []
    if where == "top":
        code += insn(ALU64 | X | MOV, base, 10)
    elif where == "bottom":
        code += lddw(base, GUEST_BASE)
    kind = draw(st.sampled_from(("load", "store reg", "store imm", "atomic")))
    if kind == "atomic":
        size = draw(st.sampled_from((SIZE_W, SIZE_DW)))
    if kind == "load":
        return code + load(draw, draw(st.sampled_from(writable)), base, off)
    if kind == "store reg":
        return code + insn(STX | MEM | size, base, draw(any_reg), off)
    if kind == "store imm":
        return code + insn(ST | MEM | size, base, off=off, imm=draw(imm32))
    return code + insn(STX | ATOMIC | size, base, draw(st.sampled_from(writable)), off,
                       draw(st.sampled_from(ATOMIC_OPS)))


@st.composite
def helper_call(draw, writable):
    """call imm or callx of each helper with arguments it accepts, or else
    arguments it faults on or a callx index with no helper."""
    index = draw(st.sampled_from(sorted(HELPERS)))
    fault = draw(faulting)
    if index == BYTE_SUM:  # r1 = a stack address, r2 = a length within the arena or past it
        below_top = draw(st.integers(0, 255))
        length = draw(st.integers(below_top + 1, 255) if fault and below_top < 255
                      else st.integers(0, below_top))
        code = (insn(ALU64 | X | MOV, 1, 10) + insn(ALU64 | K | ADD, 1, imm=-below_top)
                + mov_imm(2, length))
    elif index == FAILS_ON_ODD:
        code = mov_imm(1, 2 * draw(st.integers(-1000, 1000)) + fault)
    elif draw(st.booleans()):
        code = mov_imm(1, draw(imm32))
    else:
        code = []
    if draw(st.integers(0, 3)) == 0:
        reg = draw(st.sampled_from(writable))
        if fault:
            index = draw(st.sampled_from((len(HELPERS) + 1, -1)))
        return code + mov_imm(reg, index) + insn(JMP | X | CALL, reg)
    return code + insn(JMP | CALL, imm=index)


def conditional_jump(draw, off, cls=None, dst=None):
    cls = draw(st.sampled_from((JMP, JMP32))) if cls is None else cls
    op = draw(st.sampled_from(CONDITIONS))
    dst = draw(any_reg) if dst is None else dst
    if draw(st.booleans()):
        return insn(cls | X | op, dst, draw(any_reg), off)
    return insn(cls | K | op, dst, off=off, imm=draw(shift_counts if op in SHIFTS else imm32))


def loop(draw, writable, depth, functions):
    """1..6 trips; closed by a conditional back-edge, or tested at the top and
    closed by ja / gotol."""
    counter, inner = writable[-1], writable[:-1]
    body = draw(pieces(inner, depth + 1, functions)) + insn(ALU64 | K | ADD, counter, imm=-1)
    code = mov_imm(counter, draw(st.integers(1, 6)))
    if draw(st.booleans()):
        cls = draw(st.sampled_from((JMP, JMP32)))
        op = draw(st.sampled_from((JNE, JSGT, JGT)))  # counter != 0 / > 0
        return code + body + insn(cls | K | op, counter, off=-(len(body) + 1))
    back = -(len(body) + 2)
    close = insn(JMP32 | JA, imm=back) if draw(st.booleans()) else insn(JMP | JA, off=back)
    return code + insn(JMP | K | JEQ, counter, off=len(body) + 1) + body + close


@st.composite
def piece(draw, writable, depth, functions):
    # listed more than once: drawn more often
    leaves = [alu_run(writable)] * 4 + [stack_store_load(writable)] * 2 + [
        stack_atomic(writable), edge_access(writable), helper_call(writable)]
    structured = [st.just("if"), st.just("loop"), st.just("call")] if depth < 2 else []
    choice = draw(st.one_of(*leaves, *structured))
    if choice == "if":
        body = draw(pieces(writable, depth + 1, functions))
        return conditional_jump(draw, len(body)) + body
    if choice == "loop":
        return loop(draw, writable, depth, functions)
    if choice == "call":
        body = draw(pieces(list(range(10)), depth + 1, functions))
        functions.append(body + insn(JMP | EXIT))
        return [("call", len(functions) - 1)]
    return choice


@st.composite
def pieces(draw, writable, depth, functions):
    chosen = draw(st.lists(piece(writable, depth, functions), min_size=1 if depth else 3, max_size=10))
    return [slot for p in chosen for slot in p]


@st.composite
def programs(draw):
    """Registers r0..r9 set, a body, exit, then the local functions it calls."""
    functions = []
    main = [slot for r in range(10) for slot in lddw(r, draw(values64))]
    main += draw(pieces(list(range(10)), 0, functions)) + insn(JMP | EXIT)
    starts, at = [], len(main)
    for f in functions:
        starts.append(at)
        at += len(f)
    slots = main + [slot for f in functions for slot in f]
    return b"".join(
        struct.pack("<BBhi", JMP | CALL, CALL_LOCAL << 4, 0, starts[s[1]] - (pc + 1))
        if isinstance(s, tuple) else s
        for pc, s in enumerate(slots)
    )


# ---- helpers the programs call --------------------------------------------------


def mix(run, r1, r2, r3, r4, r5):
    return r1 * 3 + (r2 ^ r3) + (r4 << 7) - r5


def pending(run, r1, r2, r3, r4, r5):
    run.pend()
    return 0


def fails_on_odd(run, r1, r2, r3, r4, r5):
    if r1 & 1:
        raise ValueError(f"odd argument {r1}")
    return r1 >> 1


def byte_sum(run, r1, r2, r3, r4, r5):
    return sum(run.read(r1, r2 & 0xFF))


FAILS_ON_ODD, BYTE_SUM = 2, 3
HELPERS = {
    0: mix,
    1: pending,
    FAILS_ON_ODD: fails_on_odd,
    BYTE_SUM: byte_sum,
    4: ffi.addressof(lib, "zs_helper_unwind"),  # C helper: ends the run when r1 == 0
}


def registers(run):
    return tuple(run.register(n) for n in range(11))


def outcome(code, engine, budget):
    """Every stop of one run of `code` and how it ended, resumed until it ends."""
    run = Program.load_raw(code, HELPERS, engine=engine).run(MEMORY_KB)
    stops = []
    try:
        status = run.start(0, budget=budget)
        while status in (PREEMPTED, SUSPENDED):
            assert len(stops) < MAX_STOPS, f"{engine}: the run makes no progress"
            stops.append((status, registers(run)))
            status = run.resume(r0=len(stops) * 0x9E3779B97F4A7C15, budget=budget)
    except ScriptFault as fault:
        return stops, (type(fault).__name__, str(fault), fault.pc, fault.address, registers(run))
    assert status == DONE
    return stops, ("done", registers(run))


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(programs())
def test_jit_random_programs_match_interpreter(code):
    """A random valid program ends, faults and stops at the same points with the same state on both engines."""
    for budget in (-1, 1, 3):
        assert outcome(code, "jit", budget) == outcome(code, "interp", budget), budget


# ---- every operation on a grid of operands ---------------------------------------------
# One program per operation variant applies it to every pair of GRID values
# and folds each result into r9 (r9 = r9 * FOLD + result), so a single wrong
# bit anywhere changes the outcome.

GRID = (0, 1, 2, 7, 31, 32, 63, 64, MASK64, MASK64 - 1, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF,
        1 << 32, (1 << 63) - 1, 1 << 63, 0x123456789ABCDEF0)
FOLD = 0x01000193
ACC, A, B = 9, 1, 2


def fold(reg):
    return insn(ALU64 | K | 0x20, ACC, imm=FOLD) + insn(ALU64 | X | 0xA0, ACC, reg)


def grid_program(operation):
    """`operation(a, b)` gives the slots that act on r1 (= a) with r2 or an immediate (= b)."""
    code = mov_imm(ACC, 0)
    for a in GRID:
        for b in GRID:
            code += lddw(A, a) + lddw(B, b) + operation(a, b) + fold(A)
    return b"".join(code + insn(ALU64 | X | MOV, 0, ACC) + insn(JMP | EXIT))


def signed_imm(value):
    """The low 32 bits of `value` as the signed immediate field."""
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


CLASS_NAMES = {ALU: "alu32", ALU64: "alu64", JMP: "jmp", JMP32: "jmp32"}
OP_NAMES = dict(zip(ALU_OPS, "add sub mul div or and lsh rsh neg mod xor mov arsh end".split()))
CONDITION_NAMES = dict(zip(CONDITIONS, "jeq jgt jge jset jne jsgt jsge jlt jle jslt jsle".split()))
SOURCE_NAMES = {K: "imm", X: "reg"}


def alu_variants():
    for cls in (ALU, ALU64):
        for op in ALU_OPS:
            name = f"{CLASS_NAMES[cls]} {OP_NAMES[op]}"
            if op == NEG:
                yield name, lambda a, b, cls=cls: insn(cls | NEG, A)
                continue
            if op == END:
                for source in ((K, X) if cls == ALU else (K,)):
                    for width in (16, 32, 64):
                        yield (f"{name} {SOURCE_NAMES[source]} {width}",
                               lambda a, b, c=cls | source | END, w=width: insn(c, A, imm=w))
                continue
            offsets = (0, 1) if op in (DIV, MOD) else (0, 8, 16, 32) if op == MOV and cls == ALU64 \
                else (0, 8, 16) if op == MOV else (0,)
            for off in offsets:
                yield (f"{name} reg off {off}",
                       lambda a, b, c=cls | X | op, off=off: insn(c, A, B, off))
                if op != MOV or off == 0:
                    yield (f"{name} imm off {off}",
                           lambda a, b, c=cls | K | op, off=off: insn(c, A, off=off, imm=signed_imm(b)))


def jump_variants():
    """Each condition: r1 = r1 * 2 + taken."""
    for cls in (JMP, JMP32):
        for op in CONDITIONS:
            for source in (K, X):
                name = f"{CLASS_NAMES[cls]} {CONDITION_NAMES[op]} {SOURCE_NAMES[source]}"
                def taken(a, b, c=cls | source | op, source=source):
                    jump = insn(c, A, B, 1) if source == X else insn(c, A, off=1, imm=signed_imm(b))
                    return (insn(ALU64 | K | MOV, 3, imm=0) + jump + insn(JMP | JA, off=1)
                            + insn(ALU64 | K | MOV, 3, imm=1) + insn(ALU64 | X | ADD, A, A)
                            + insn(ALU64 | X | ADD, A, 3))
                yield name, taken


def atomic_variants():
    """Each atomic on a stack slot holding a, with r2 = b and r0 = a or b:
    r1 becomes a fold of the slot, r2 and r0."""
    for size in (SIZE_W, SIZE_DW):
        for op in ATOMIC_OPS:
            def apply(a, b, opcode=STX | ATOMIC | size, op=op):
                return (lddw(0, a if b & 1 else b) + insn(STX | MEM | SIZE_DW, 10, A, -8)
                        + insn(opcode, 10, B, -8, op) + insn(LDX | MEM | SIZE_DW, A, 10, -8)
                        + fold(0) + fold(B) + insn(ALU64 | X | ADD, A, ACC))
            yield f"{'atomic64' if size == SIZE_DW else 'atomic32'} {op:#x}", apply


def run_result(code, engine):
    run = Program.load_raw(code, engine=engine).run(MEMORY_KB)
    assert run.start(0) == DONE
    return run.result


def test_jit_alu_operations_match_interpreter_on_operand_grid():
    """Every ALU and ALU64 operation, width and operand source gives the interpreter's result on edge operands."""
    for name, operation in alu_variants():
        code = grid_program(operation)
        assert run_result(code, "jit") == run_result(code, "interp"), name


def test_jit_conditional_jumps_match_interpreter_on_operand_grid():
    """Every JMP and JMP32 condition with a register or an immediate is taken exactly when the interpreter takes it."""
    for name, operation in jump_variants():
        code = grid_program(operation)
        assert run_result(code, "jit") == run_result(code, "interp"), name


def test_jit_atomics_match_interpreter_on_operand_grid():
    """Every atomic operation at both widths leaves the interpreter's memory, source register and r0."""
    for name, operation in atomic_variants():
        code = grid_program(operation)
        assert run_result(code, "jit") == run_result(code, "interp"), name


# ---- fixed programs ------------------------------------------------------------------


def crc32_program():
    """CRC-32 (reflected, polynomial 0xEDB88320) of r2 bytes at r1, bit by bit
    without branches on the data: crc = crc >> 1 ^ (poly & -(crc & 1))."""
    body = (
        insn(ALU | K | MOV, 0, imm=-1)
        + mov_imm(3, 0)
        + insn(JMP | X | JGE, 3, 2, 15)             # 2: i >= len: done
        + insn(ALU64 | X | MOV, 4, 1)
        + insn(ALU64 | X | ADD, 4, 3)
        + insn(LDX | MEM | SIZE_B, 5, 4)
        + insn(ALU64 | X | 0xA0, 0, 5)              # crc ^= byte
        + mov_imm(6, 8)
        + insn(ALU64 | X | MOV, 7, 0)               # 8: for each bit
        + insn(ALU | K | 0x50, 7, imm=1)
        + insn(ALU | NEG, 7)
        + insn(ALU | K | 0x50, 7, imm=0xEDB88320)
        + insn(ALU | K | 0x70, 0, imm=1)
        + insn(ALU | X | 0xA0, 0, 7)
        + insn(ALU64 | K | ADD, 6, imm=-1)
        + insn(JMP | K | JNE, 6, off=-8)
        + insn(ALU64 | K | ADD, 3, imm=1)
        + insn(JMP | JA, off=-16)
        + insn(ALU | K | 0xA0, 0, imm=-1)           # 18: done
        + insn(JMP | EXIT)
    )
    return b"".join(body)


def test_jit_crc32_matches_zlib():
    """A CRC-32 loop over 4 KiB of input gives zlib's value on both engines, with and without preemption."""
    data = bytes(range(256)) * 16
    code = crc32_program()
    for engine in ("jit", "interp"):
        for budget in (-1, 1000):
            run = Program.load_raw(code, engine=engine).run(MEMORY_KB)
            addr = run.alloc(data)
            status = run.start(0, (addr, len(data)), budget=budget)
            while status == PREEMPTED:
                status = run.resume(budget=budget)
            assert run.result == zlib.crc32(data), (engine, budget)


RODATA_SCRIPT = r"""
static const unsigned long long table[4] = {11, 22, 33, 44};

__attribute__((section("read"), used)) unsigned long long read_table(unsigned long long i)
{
    return table[i & 3];
}

/* The store goes through an address the compiler cannot see is constant. */
__attribute__((section("write"), used)) unsigned long long write_table(unsigned long long i)
{
    volatile unsigned long long *slot = (volatile unsigned long long *)&table[i & 3];
    *slot = 99;
    return *slot;
}
"""


def test_jit_store_into_read_only_data_faults_like_interpreter(tmp_path):
    """A load from .rodata works and a store into it is the same MemoryFault on both engines."""
    source = pathlib.Path(tmp_path, "rodata.c")
    source.write_text(RODATA_SCRIPT)
    elf = ScriptCompiler.find().compile(source, "rodata.c")
    faults = []
    for engine in ("jit", "interp"):
        program = Program.load_elf(elf, engine=engine)
        run = program.run(MEMORY_KB)
        assert run.start("read", (2,)) == DONE
        assert run.result == 33
        try:
            run.start("write", (1,))
        except MemoryFault as fault:
            faults.append((str(fault), fault.pc, fault.address))
        else:
            raise AssertionError(f"{engine}: a store into .rodata succeeded")
    assert faults[0] == faults[1]
    assert "read-only" in faults[0][0]
    assert faults[0][2] == GUEST_BASE + 8  # table[1]: the image starts at arena offset 0


def mappings():
    """(address range, permissions, path) of every mapping of this process."""
    with open("/proc/self/maps") as maps:
        return {tuple(line.split()[:2]) + (line.split()[5] if len(line.split()) > 5 else "",)
                for line in maps}


def test_jit_code_pages_are_never_writable_and_executable():
    """Compiled code lives in new read-execute pages; compiling leaves no page writable and executable."""
    before = mappings()
    compiled = [Program.load_raw(crc32_program(), engine="jit") for _ in range(3)]
    added = mappings() - before
    assert any(perms == "r-xp" and path == "" for _, perms, path in added)
    assert not [m for m in added if "w" in m[1] and "x" in m[1]]
    assert all(program.engine == "jit" for program in compiled)
