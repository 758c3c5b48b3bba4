"""Helpers: C pointers and Python callables, faults they raise, async suspension and early exit."""
import pytest

from vm_support import COMPILERS, ENGINES, asm, compile_script
from zeroserve.core.errors import ScriptFault, ScriptLoadError
from zeroserve.native._zsvm import ffi, lib
from zeroserve.vm import DONE, SUSPENDED, Program, Run


def pending(keys):
    def fetch(run, key, *_):
        keys.append(key)
        run.pend()
        return 0
    return fetch


@pytest.mark.parametrize("compiler", COMPILERS)
@pytest.mark.parametrize("engine", ENGINES)
def test_helpers_async_suspend_and_resume_deliver_r0(compiler, engine):
    """A pending helper suspends the run; resume(value) makes value the call's result, state intact."""
    keys = []
    run = Run(Program.load_elf(compile_script("control", compiler), {"fetch": pending(keys)}, engine=engine))
    assert run.start("zeroserve.request", (4,)) == SUSPENDED
    assert run.resume(7) == SUSPENDED
    assert run.resume(9) == DONE
    assert keys == [1, 7]
    assert run.result == 4 * 3 + 15 * 1000 + 7 * 100 + 9


@pytest.mark.parametrize("engine", ENGINES)
def test_helpers_suspended_runs_are_independent(engine):
    """Two runs of one program suspended at once keep their own registers and stacks."""
    program = Program.load_elf(compile_script("control"), {"fetch": pending([])}, engine=engine)
    first, second = Run(program), Run(program)
    assert first.start("zeroserve.request", (1,)) == SUSPENDED
    assert second.start("zeroserve.request", (2,)) == SUSPENDED
    for run in (first, second):
        run.resume(3)
        assert run.resume(4) == DONE
    assert first.result == 3 + 12 * 1000 + 304
    assert second.result == 6 + 13 * 1000 + 304


@pytest.mark.parametrize("engine", ENGINES)
def test_helpers_c_function_pointer_is_called_by_name(engine):
    """A C helper (cffi function pointer) bound by symbol name runs without Python in between."""
    unwind = ffi.addressof(lib, "zs_helper_unwind")  # returns r1
    run = Run(Program.load_elf(compile_script("control"), {"fetch": unwind}, engine=engine))
    assert run.start("zeroserve.request", (5,)) == DONE
    assert run.result == 15 + 16 * 1000 + 100 + 1


@pytest.mark.parametrize("engine", ENGINES)
def test_helpers_exit_ends_run_at_once(engine):
    """A helper calling run.exit(v) ends the run DONE with r0 = v; nothing after the call runs."""
    code = asm("mov %r6, 1\ncall 0\nmov %r6, 2\nmov %r0, 3\nexit")
    run = Run(Program.load_raw(code, [lambda run, *_: run.exit(77) or 0], engine=engine))
    assert run.start(0) == DONE
    assert run.result == 77 and run.register(6) == 1


@pytest.mark.parametrize("engine", ENGINES)
def test_helpers_python_exception_faults_the_run(engine):
    """An exception in a Python helper becomes a ScriptFault naming the helper, and the run is reusable."""
    def broken(run, r1, *_):
        if r1:
            raise ValueError("upstream said no")
        return 5

    run = Run(Program.load_raw(asm("call 3\nexit"), {3: broken}, engine=engine))
    with pytest.raises(ScriptFault, match="helper 3 failed at pc 0: ValueError: upstream said no") as info:
        run.start(0, (1,))
    assert info.value.pc == 0
    assert run.start(0, (0,)) == DONE and run.result == 5


@pytest.mark.parametrize("engine", ENGINES)
def test_helpers_callx_of_unknown_index_faults(engine):
    """callx with a register naming no helper is a fault, not a jump into host memory."""
    code = asm("mov %r2, 5\ncall %r1\nexit")
    run = Run(Program.load_raw(code, {5: ffi.addressof(lib, "zs_helper_unwind")}, engine=engine))
    assert run.start(0, (5,)) == DONE and run.result == 5
    for index in (4, 6, 1 << 40):
        with pytest.raises(ScriptFault, match="unknown helper"):
            run.start(0, (index,))


@pytest.mark.parametrize("engine", ENGINES)
def test_helpers_resume_of_finished_run_is_refused(engine):
    """resume() of a run that ended raises instead of running code again."""
    run = Run(Program.load_raw(asm("mov %r0, 1\nexit"), engine=engine))
    run.start(0)
    with pytest.raises(ScriptFault, match="neither preempted nor suspended"):
        run.resume(0)


def test_helpers_non_callable_is_refused():
    """A helper table entry that is neither a function pointer nor callable fails the load."""
    with pytest.raises(ScriptLoadError, match="neither"):
        Program.load_raw(asm("exit"), {0: 42}, engine="interp")


@pytest.mark.parametrize("engine", ENGINES)
def test_helpers_reentering_own_run_faults(engine):
    """A helper that starts or resumes the run executing it gets an error, which faults the run."""
    run = Run(Program.load_raw(asm("call 0\nexit"), [lambda run, *_: run.start(0)], engine=engine))
    with pytest.raises(ScriptFault, match="start\\(\\) of a run that is executing"):
        run.start(0)
    run = Run(Program.load_raw(asm("call 0\nexit"), [lambda run, *_: run.resume(0)], engine=engine))
    with pytest.raises(ScriptFault, match="resume\\(\\) of a run that is executing"):
        run.start(0)


@pytest.mark.parametrize("engine", ENGINES)
def test_helpers_entry_arguments_reach_registers(engine):
    """start() args become r1..r5 (negatives as two's complement); fewer args zero the rest."""
    code = asm("mov %r0, %r1\nadd %r0, %r2\nadd %r0, %r3\nadd %r0, %r4\nadd %r0, %r5\nexit")
    run = Run(Program.load_raw(code, engine=engine))
    run.start(0, (1, 2, 3, 4, 5))
    assert run.result == 15
    run.start(0, (10, -1))
    assert run.result == 9
    run.start(0)
    assert run.result == 0
    with pytest.raises(ScriptFault, match="at most 5"):
        run.start(0, (1, 2, 3, 4, 5, 6))


@pytest.mark.parametrize("engine", ENGINES)
def test_helpers_see_the_host_state_given_to_run(engine):
    """With Run(host=state), Python helpers still find their Run while C code sees `state` as the host."""
    state = ffi.new("void *[4]")
    seen = []

    def record(run, *_):
        seen.append((run, lib.zs_run_host(run._run)))
        return 1

    run = Run(Program.load_raw(asm("call 0\nexit"), [record], engine=engine), host=state)
    assert run.start(0) == DONE and run.result == 1
    assert seen[0][0] is run and seen[0][1] == ffi.cast("void *", state)
