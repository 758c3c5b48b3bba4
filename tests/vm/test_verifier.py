"""Load-time verification: what the verifier rejects, with which message, and what it accepts."""
import pytest

from vm_support import ENGINES, asm, insn
from zeroserve.core.errors import ScriptLoadError
from zeroserve.vm import DONE, Program, Run

EXIT = insn(0x95)
MOV0 = insn(0xB7, 0, imm=0)


def call_local(delta):
    return insn(0x85, src=1, imm=delta)


def chain(depth):
    """main calls f1 calls f2 ... calls f<depth>; each returns."""
    code = b""
    for _ in range(depth):
        code += call_local(1) + EXIT  # call the next function (two slots on), then return
    return code + MOV0 + EXIT


REJECTED = {
    "invalid opcode": (insn(0xFF) + EXIT, "invalid"),
    "register r11": (insn(0xB7, 11, imm=1) + EXIT, "register r11 does not exist"),
    "write r10": (insn(0xB7, 10, imm=1) + EXIT, "r10 .* is read-only"),
    "load into r10": (insn(0x79, 10, 1) + EXIT, "r10 .* is read-only"),
    "fetch into r10": (insn(0xDB, 1, 10, imm=0x01) + EXIT, "r10"),
    "fall off the end": (MOV0, "fall off the end"),
    "fall off after lddw": (asm("lddw %r0, 1"), "fall off"),
    "jump past the end": (insn(0x05, off=5) + EXIT, "outside the function"),
    "jump before the start": (insn(0x05, off=-3) + EXIT, "outside the function"),
    "gotol out of range": (insn(0x06, imm=100) + EXIT, "outside the function"),
    "jump into lddw": (insn(0x05, off=1) + asm("lddw %r0, 1") + EXIT, "second half of an lddw"),
    "lddw missing half": (EXIT + insn(0x18, imm=1), "missing its second half"),
    "lddw map reference": (insn(0x18, src=1, imm=1) + insn(0) + EXIT, "map or BTF"),
    "legacy packet load": (insn(0x20, imm=1) + EXIT, "legacy packet"),
    "unknown helper": (insn(0x85, imm=7) + EXIT, "unknown helper #7"),
    "call outside program": (call_local(10) + EXIT, "outside the program"),
    "jump across functions": (call_local(2) + insn(0x05, off=1) + EXIT + MOV0 + EXIT, "outside the function"),
    "recursion": (call_local(-1) + EXIT, "recursive"),
    "mutual recursion": (call_local(1) + EXIT + call_local(1) + EXIT + call_local(-5) + EXIT, "recursive"),
    "calls nested 9 deep": (chain(9), "deeper than 8"),
    "bad byte swap width": (insn(0xD4, 1, imm=8) + EXIT, "byte swap width"),
    "bad movsx width": (insn(0xBC, 1, 2, off=32) + EXIT, "movsx"),
    "bad atomic op": (insn(0xDB, 1, 2, imm=0x02) + EXIT, "atomic operation"),
    "atomic byte size": (insn(0xD3, 1, 2, imm=0) + EXIT, "invalid store opcode"),
    "jmp32 call": (insn(0x86) + EXIT, "invalid opcode"),
}


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("name", REJECTED)
def test_verifier_rejects_invalid_program(name, engine):
    """The verifier refuses each invalid program with a message naming the problem and its place."""
    code, message = REJECTED[name]
    with pytest.raises(ScriptLoadError, match=message) as info:
        Program.load_raw(code, {2: lambda run, *_: 0}, engine=engine)
    assert "pc " in str(info.value)


def test_verifier_rejects_oversized_program():
    """More instructions than the limit (2^20) fail the load."""
    with pytest.raises(ScriptLoadError, match="limit"):
        Program.load_raw(MOV0 * (1 << 20) + EXIT, engine="interp")


@pytest.mark.parametrize("engine", ENGINES)
def test_verifier_accepts_calls_nested_8_deep(engine):
    """Local calls nested exactly 8 deep load and return through every frame."""
    run = Run(Program.load_raw(chain(8), engine=engine))
    assert run.start(0) == DONE and run.result == 0


@pytest.mark.parametrize("engine", ENGINES)
def test_verifier_accepts_empty_raw_tables_and_runs(engine):
    """A minimal valid program loads without helpers and returns its r0."""
    run = Run(Program.load_raw(asm("mov %r0, 7\nexit"), engine=engine))
    assert run.start(0) == DONE and run.result == 7


@pytest.mark.parametrize("engine", ENGINES)
def test_verifier_local_call_restores_callee_saved_registers(engine):
    """r6-r9 and r10 are the caller's again after a local call returns."""
    code = asm("""
        mov %r6, 6
        mov %r9, 9
        mov %r8, %r10
        call local +4
        add %r6, %r9
        sub %r8, %r10
        add %r0, %r6
        exit
        mov %r6, 100
        mov %r9, 100
        mov %r0, %r10
        exit
    """)
    run = Run(Program.load_raw(code, engine=engine))
    assert run.start(0) == DONE
    # r0 = callee's r10 (one frame below) + 15; r8 = 0 (r10 restored)
    assert run.result == run.register(10) - 4096 + 15
    assert run.register(8) == 0
