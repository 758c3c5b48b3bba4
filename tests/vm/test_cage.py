"""The cage: every guest access stays inside the run's arena, whatever the address; the arena is the memory cap."""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vm_support import COMPILERS, ENGINES, GUEST_BASE, MASK64, STACK_SIZE, asm, compile_script, insn
from zeroserve.core.errors import ScriptFault, ScriptLoadError
from zeroserve.native._zsvm import ffi
from zeroserve.vm import DONE, MemoryFault, Program, Run

MEMORY_KB = 64
ARENA = MEMORY_KB * 1024


def host_read(run, ptr, length, *_):
    return len(run.read(ptr, length))


def host_write(run, ptr, length, *_):
    run.write(ptr, b"\xab" * length)
    return length


@pytest.fixture(params=[(c, e) for c in COMPILERS for e in ENGINES], ids=lambda p: f"{p[0]}-{p[1]}")
def cage_run(request):
    compiler, engine = request.param
    program = Program.load_elf(compile_script("cage", compiler),
                               {"host_read": host_read, "host_write": host_write}, engine=engine)
    return Run(program, memory_kb=MEMORY_KB)


def fault_of(run, entry, *args):
    with pytest.raises(ScriptFault) as info:
        run.start(entry, args)
    return info.value


ESCAPES = {
    "null": 0,
    "below the arena": GUEST_BASE - 8,
    "one past the arena": GUEST_BASE + ARENA,
    "straddling the top": GUEST_BASE + ARENA - 4,
    "far above": GUEST_BASE + (1 << 40),
    "top of the address space": MASK64 - 3,
    "low host address": 0x400000,
}


@pytest.mark.parametrize("where", ESCAPES)
@pytest.mark.parametrize("entry", ["zeroserve.call.peek", "zeroserve.call.poke", "zeroserve.call.xadd"])
def test_cage_access_outside_arena_is_memory_fault(cage_run, entry, where):
    """Loads, stores and atomics outside the arena stop the run with MemoryFault(pc, address)."""
    fault = fault_of(cage_run, entry, ESCAPES[where], 1)
    assert isinstance(fault, MemoryFault)
    assert fault.address == ESCAPES[where]
    assert fault.pc is not None and "memory fault" in str(fault)


def test_cage_host_pointer_is_not_reachable(cage_run):
    """A real host address of live host memory handed to the guest faults instead of being read."""
    secret = ffi.new("uint64_t *", 0x5EC12E7)
    host_addr = int(ffi.cast("uintptr_t", secret))
    fault = fault_of(cage_run, "zeroserve.call.peek", host_addr)
    assert isinstance(fault, MemoryFault) and fault.address == host_addr
    assert secret[0] == 0x5EC12E7


def test_cage_rodata_is_readable_not_writable(cage_run):
    """Read-only data can be loaded; a store or atomic into it is a MemoryFault."""
    cage_run.start("zeroserve.call.rodata_addr")
    addr = cage_run.result
    cage_run.start("zeroserve.call.peek", (addr,))
    assert cage_run.result.to_bytes(8, "little") == b"read-onl"
    for entry in ("zeroserve.call.poke", "zeroserve.call.xadd"):
        fault = fault_of(cage_run, entry, addr, 1)
        assert isinstance(fault, MemoryFault) and "read-only" in str(fault)


def test_cage_whole_arena_is_usable(cage_run):
    """The lowest writable heap byte and the top stack word are both inside the cage."""
    low = cage_run.alloc(8)
    top = GUEST_BASE + ARENA - 8
    for addr in (low, top):
        assert cage_run.start("zeroserve.call.poke", (addr, 0x1122334455667788)) == DONE
        assert cage_run.start("zeroserve.call.peek", (addr,)) == DONE
        assert cage_run.result == 0x1122334455667788


def test_cage_helper_pointer_outside_arena_faults(cage_run):
    """A helper given a (pointer, length) reaching outside the arena faults the run, naming the helper."""
    top = GUEST_BASE + ARENA
    for entry, addr, length in [("zeroserve.call.read", top - 8, 9), ("zeroserve.call.read", 0, 1),
                                ("zeroserve.call.write", top - 16, 1 << 62),
                                ("zeroserve.call.read", top - 8, MASK64)]:
        fault = fault_of(cage_run, entry, addr, length)
        assert not isinstance(fault, MemoryFault)
        assert "host_read" in str(fault) or "host_write" in str(fault)
    assert cage_run.start("zeroserve.call.read", (top - 8, 8)) == DONE and cage_run.result == 8


def test_cage_helper_cannot_write_rodata(cage_run):
    """A helper asked to write into read-only data faults the run instead."""
    cage_run.start("zeroserve.call.rodata_addr")
    fault = fault_of(cage_run, "zeroserve.call.write", cage_run.result, 4)
    assert "host_write" in str(fault) and "read-only" in str(fault)


@pytest.mark.parametrize("engine", ENGINES)
def test_cage_memory_cap_bounds_the_arena(engine):
    """The memory cap is the arena: with 48 KiB the script reaches exactly 48 KiB below r10 and no further."""
    code = asm("mov %r0, %r10\nsub %r0, %r1\nstxb [%r0], %r2\nexit")
    for kb in (48, 256):
        run = Run(Program.load_raw(code, engine=engine), memory_kb=kb)
        assert run.start(0, (kb * 1024, 7)) == DONE
        with pytest.raises(MemoryFault) as info:
            run.start(0, (kb * 1024 + 1, 7))
        assert info.value.address == GUEST_BASE - 1


def test_cage_memory_cap_below_stack_is_refused():
    """A cap too small for the stack and globals fails with how much is needed."""
    program = Program.load_raw(asm("exit"), engine="interp")
    with pytest.raises(ScriptLoadError, match="at least"):
        Run(program, memory_kb=STACK_SIZE // 1024 - 1)


def test_cage_host_allocations_stop_at_the_cap():
    """Input placed in the heap cannot grow into the stack: alloc fails once the cap is used."""
    run = Run(Program.load_raw(asm("exit"), engine="interp"), memory_kb=64)
    run.alloc(64 * 1024 - STACK_SIZE - 8)
    with pytest.raises(ScriptFault, match="memory is full"):
        run.alloc(16)


SIZES = {1: 0x10, 2: 0x08, 4: 0x00, 8: 0x18}


def access_program(kind, size, off):
    """r1 = address base; one access of `kind` at [r1 + off]; r0 = 0."""
    if kind == "load":
        op = insn(0x61 | SIZES[size], 2, 1, off)
    elif kind == "load signed":
        op = insn(0x81 | SIZES[size], 2, 1, off)
    elif kind == "store imm":
        op = insn(0x62 | SIZES[size], 1, 0, off, 5)
    elif kind == "store reg":
        op = insn(0x63 | SIZES[size], 1, 2, off)
    else:
        op = insn(0xC3 | SIZES[size], 1, 2, off, {"atomic add": 0x00, "atomic fetch": 0x01,
                                                    "xchg": 0xE1, "cmpxchg": 0xF1}[kind])
    return op + insn(0xB7) + insn(0x95)


KINDS = ["load", "load signed", "store imm", "store reg", "atomic add", "atomic fetch", "xchg", "cmpxchg"]
near_edges = st.one_of(
    st.integers(GUEST_BASE - 64, GUEST_BASE + 64),
    st.integers(GUEST_BASE + ARENA - 64, GUEST_BASE + ARENA + 64),
    st.sampled_from([0, 1, MASK64, MASK64 - 7, 1 << 63, GUEST_BASE * 2, GUEST_BASE - ARENA]),
    st.integers(0, MASK64),
)


@settings(max_examples=300, deadline=None)
@given(kind=st.sampled_from(KINDS), size=st.sampled_from([1, 2, 4, 8]), base=near_edges,
       off=st.integers(-(1 << 15), (1 << 15) - 1), engine=st.sampled_from(ENGINES))
def test_cage_access_faults_exactly_outside(kind, size, base, off, engine):
    """Any access at any address succeeds iff all its bytes lie in the arena; otherwise MemoryFault names it."""
    if kind == "load signed" and size == 8 or kind.startswith(("atomic", "xchg", "cmpxchg")) and size < 4:
        size = 4
    run = Run(Program.load_raw(access_program(kind, size, off), engine=engine), memory_kb=MEMORY_KB)
    addr = (base + off) & MASK64
    inside = GUEST_BASE <= addr and addr + size <= GUEST_BASE + ARENA
    if inside:
        assert run.start(0, (base,)) == DONE
    else:
        with pytest.raises(MemoryFault) as info:
            run.start(0, (base,))
        assert info.value.address == addr and info.value.pc == 0


def test_cage_host_access_between_runs_is_checked_too():
    """Run.read/write from the host between runs refuse ranges outside the arena, and the run stays usable."""
    run = Run(Program.load_raw(asm("ldxdw %r0, [%r1]\nexit"), engine="interp"), memory_kb=MEMORY_KB)
    with pytest.raises(MemoryFault):
        run.start(0, (0,))
    with pytest.raises(MemoryFault, match="outside the script memory"):
        run.read(GUEST_BASE + ARENA - 4, 8)
    with pytest.raises(MemoryFault, match="not writable"):
        run.write(0, b"x")
    addr = run.alloc(b"\x01" * 8)
    assert run.read(addr, 8) == b"\x01" * 8
    assert run.start(0, (addr,)) == DONE and run.result == 0x0101010101010101


@pytest.mark.parametrize("compiler", COMPILERS)
@pytest.mark.parametrize("engine", ENGINES)
def test_cage_memory_cap_counts_globals(compiler, engine):
    """512 KiB of .bss does not fit the default 256 KiB cap (the error says how much is needed); 1 MiB does."""
    program = Program.load_elf(compile_script("bigdata", compiler), engine=engine)
    with pytest.raises(ScriptLoadError, match=r"at least 548 KiB"):
        Run(program)
    run = Run(program, memory_kb=1024)
    assert run.start("zeroserve.request", (65535, 7)) == DONE and run.result == 7
