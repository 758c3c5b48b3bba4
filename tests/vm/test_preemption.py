"""Preemption by budget: a run stops at a back-edge or call with its whole state saved and resumes exactly."""
import pytest

from vm_support import COMPILERS, ENGINES, MASK64, asm, compile_script
from zeroserve.vm import DONE, PREEMPTED, Program, Run

COUNT_FOREVER = asm("""
    mov %r1, 11
    mov %r2, 22
    mov %r3, 33
    mov %r4, 44
    mov %r5, 55
    mov %r6, 66
    mov %r7, 77
    mov %r8, 88
    mov %r9, 99
    stdw [%r10-8], 0x1234
    mov %r0, 0
loop:
    add %r0, 1
    ja loop
""")


def lcg(seed, n):
    for _ in range(n):
        seed = (seed * 6364136223846793005 + 1442695040888963407) & MASK64
    return seed


@pytest.mark.parametrize("engine", ENGINES)
def test_preemption_stops_infinite_loop_with_state_intact(engine):
    """An endless loop returns PREEMPTED after each budget; registers and stack survive 1000 resumes."""
    run = Run(Program.load_raw(COUNT_FOREVER, engine=engine))
    budget = 50
    assert run.start(0, budget=budget) == PREEMPTED
    assert run.register(0) == budget + 1
    for k in range(1, 1001):
        assert run.resume(budget=budget) == PREEMPTED
        assert run.register(0) == budget + 1 + k * budget
    assert [run.register(i) for i in range(1, 10)] == [11, 22, 33, 44, 55, 66, 77, 88, 99]
    assert run.read(run.register(10) - 8, 8) == (0x1234).to_bytes(8, "little")


@pytest.mark.parametrize("engine", ENGINES)
def test_preemption_budget_zero_stops_at_first_back_edge(engine):
    """With budget 0 the run stops at the first back-edge, before it takes effect."""
    run = Run(Program.load_raw(COUNT_FOREVER, engine=engine))
    assert run.start(0, budget=0) == PREEMPTED
    assert run.register(0) == 1


@pytest.mark.parametrize("compiler", COMPILERS)
@pytest.mark.parametrize("engine", ENGINES)
def test_preemption_resumed_run_gives_uninterrupted_result(compiler, engine):
    """A compiled loop cut into hundreds of slices ends with the result of one uninterrupted run."""
    run = Run(Program.load_elf(compile_script("control", compiler), {"fetch": lambda run, *_: 0}, engine=engine))
    status, slices = run.start("zeroserve.call.lcg", (12345, 20000), budget=37), 1
    while status == PREEMPTED:
        status, slices = run.resume(budget=37), slices + 1
    assert status == DONE and slices > 400
    assert run.result == lcg(12345, 20000)


ACROSS_CALLS = asm("""
    mov %r6, 0
    mov %r7, 5
outer:
    call local count
    add %r6, %r0
    sub %r7, 1
    jne %r7, 0, outer
    mov %r0, %r6
    exit
count:
    mov %r0, 0
    mov %r6, 100
inner:
    add %r0, 1
    sub %r6, 1
    jne %r6, 0, inner
    exit
""")


@pytest.mark.parametrize("budget", [1, 2, 3, 7, 100])
@pytest.mark.parametrize("engine", ENGINES)
def test_preemption_inside_local_calls_resumes_in_frame(engine, budget):
    """Preempted inside a callee (at calls and back-edges), the run returns to the right caller frame."""
    run = Run(Program.load_raw(ACROSS_CALLS, engine=engine))
    status = run.start(0, budget=budget)
    while status == PREEMPTED:
        status = run.resume(budget=budget)
    assert run.result == 500


@pytest.mark.parametrize("engine", ENGINES)
def test_preemption_before_helper_call_runs_helper_once(engine):
    """A budget running out at a helper call stops before the helper; resuming calls it exactly once."""
    calls = []
    code = asm("mov %r1, 9\ncall 1\nexit")
    run = Run(Program.load_raw(code, {1: lambda run, r1, *_: calls.append(r1) or r1 * 2}, engine=engine))
    assert run.start(0, budget=0) == PREEMPTED and calls == []
    assert run.resume(budget=0) == PREEMPTED and calls == []
    assert run.resume(budget=1) == DONE and calls == [9] and run.result == 18
