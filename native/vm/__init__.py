"""The eBPF VM from Python: load programs, run and resume their entries, raise on errors and faults.

A Program is loaded once (an ELF object or raw instructions) against a helper
table; a Run owns one caged arena (the memory cap) and the guest state, and is
reused run after run. Helpers are C function pointers (cffi `zs_helper_fn`,
optionally with a cookie) or Python callables `fn(run, r1, r2, r3, r4, r5) -> int`
that reach guest memory through `run.read` / `run.write` and may call
`run.pend()` (async: the run is SUSPENDED until `resume(r0)`) or `run.exit(r0)`.
An exception raised by a Python helper becomes a fault of that run.
"""
import weakref

from zeroserve.core.errors import ScriptFault, ScriptLoadError
from zeroserve.native._zsvm import ffi, lib

__all__ = [
    "DONE", "FAULT", "PREEMPTED", "SUSPENDED", "DEFAULT_ENGINE", "DEFAULT_MEMORY_KB",
    "MemoryFault", "Program", "Run", "jit_available",
]

DONE = lib.ZS_DONE
FAULT = lib.ZS_FAULT
PREEMPTED = lib.ZS_PREEMPTED
SUSPENDED = lib.ZS_SUSPENDED

ENGINES = {"interp": lib.ZS_ENGINE_INTERP, "jit": lib.ZS_ENGINE_JIT}
DEFAULT_MEMORY_KB = 256
MASK64 = (1 << 64) - 1


def jit_available():
    """True when this build has a JIT for this machine."""
    return bool(lib.zs_jit_available())


DEFAULT_ENGINE = "jit" if jit_available() else "interp"


class MemoryFault(ScriptFault):
    """A guest load, store or atomic outside the script's memory (pc and address set)."""


def _take_error(errmsg, what):
    message = ffi.string(errmsg[0]).decode("utf-8", "replace") if errmsg[0] else "out of memory"
    lib.free(errmsg[0])
    return ScriptLoadError(f"{what}: {message}")


@ffi.def_extern(onerror=lambda exc, value, tb: _helper_raised(value, tb))
def zs_py_helper(run, cookie, r1, r2, r3, r4, r5):
    """The one C entry for Python helpers: the cookie is a handle to the callable."""
    fn = ffi.from_handle(cookie)
    owner = ffi.from_handle(ffi.cast("void **", lib.zs_run_host(run))[0])()
    return fn(owner, r1, r2, r3, r4, r5) & MASK64


def _helper_raised(value, tb):
    """Turns an exception escaping a Python helper into a fault of the run that called it."""
    run = tb.tb_frame.f_locals.get("run") if tb is not None else None
    if run is not None:
        message = f"{type(value).__name__}: {value}".encode("utf-8", "replace")[:200]
        lib.zs_helper_fault(run, b"%s", ffi.new("char[]", message))
    return 0


def _helper_defs(helpers, by_index):
    """A C helper table for `helpers` (name -> helper, or index -> helper for raw
    programs) and the objects that must outlive the program."""
    if not helpers:
        return ffi.NULL, 0, []
    if by_index:
        items = dict(enumerate(helpers)) if isinstance(helpers, (list, tuple)) else dict(helpers)
        size = max(items) + 1 if items else 0
        if any(not isinstance(i, int) or i < 0 for i in items):
            raise ScriptLoadError("raw program helpers must be keyed by non-negative call numbers")
    else:
        items = dict(helpers)
        size = len(items)
    defs = ffi.new("struct zs_helper_def[]", size)
    keep = []
    for slot, (key, helper) in enumerate(items.items()):
        if by_index:
            slot = key
        name = ffi.new("char[]", str(key).encode())
        keep.append(name)
        defs[slot].name = name
        if helper is None:
            continue
        if isinstance(helper, tuple):
            fn, cookie = helper
            defs[slot].fn = ffi.cast("zs_helper_fn", fn)
            defs[slot].cookie = cookie
        elif isinstance(helper, ffi.CData):
            defs[slot].fn = ffi.cast("zs_helper_fn", helper)
        elif callable(helper):
            handle = ffi.new_handle(helper)
            keep.append(handle)
            defs[slot].fn = lib.zs_py_helper
            defs[slot].cookie = handle
        else:
            raise ScriptLoadError(f"helper {key!r} is neither a C function pointer nor a callable")
    return defs, size, keep


class Program:
    """A loaded, verified (and, with the JIT, compiled) program and its entry points."""

    __slots__ = ("_prog", "_keep", "entries", "engine", "__weakref__")

    def __init__(self, prog, keep, engine):
        self._prog = ffi.gc(prog, lib.zs_program_free)
        self._keep = keep
        self.engine = engine
        self.entries = {
            ffi.string(lib.zs_program_entry_name(prog, i)).decode("utf-8", "replace"): i
            for i in range(lib.zs_program_num_entries(prog))
        }

    @classmethod
    def load_elf(cls, data, helpers=None, engine=None):
        """Loads a BPF ELF object; `helpers` maps symbol names to helpers."""
        defs, n, keep = _helper_defs(helpers, by_index=False)
        return cls._load(lib.zs_program_load_elf, data, defs, n, keep, engine, "cannot load script")

    @classmethod
    def load_raw(cls, code, helpers=None, engine=None):
        """Loads raw instructions (one entry, index 0); `helpers` maps call numbers to helpers."""
        defs, n, keep = _helper_defs(helpers, by_index=True)
        return cls._load(lib.zs_program_load_raw, code, defs, n, keep, engine, "cannot load program")

    @classmethod
    def _load(cls, loader, data, defs, n, keep, engine, what):
        engine = engine or DEFAULT_ENGINE
        if engine not in ENGINES:
            raise ScriptLoadError(f"unknown engine {engine!r}: use one of {', '.join(ENGINES)}")
        data = bytes(data)
        errmsg = ffi.new("char **")
        prog = loader(data, len(data), defs, n, ENGINES[engine], errmsg)
        if prog == ffi.NULL:
            raise _take_error(errmsg, what)
        return cls(prog, keep, engine)

    def entry(self, name):
        """Index of the entry point (ELF section) `name`."""
        try:
            return self.entries[name]
        except KeyError:
            raise ScriptLoadError(f"the script has no section {name!r}") from None

    def called_helpers(self):
        """The names of the helpers this program's code can call (all bound ones if it uses callx)."""
        count = lib.zs_program_called_helpers(self._prog, ffi.NULL, 0)
        names = ffi.new("const char *[]", count)
        lib.zs_program_called_helpers(self._prog, names, count)
        return frozenset(ffi.string(name).decode("utf-8", "replace") for name in names)

    def run(self, memory_kb=DEFAULT_MEMORY_KB, host=None):
        """A new Run of this program with `memory_kb` KiB of guest memory."""
        return Run(self, memory_kb, host)


class Run:
    """One guest state and its caged arena; start() runs an entry, resume() continues it.

    `host` is the pointer C helpers get from zs_run_host(): a C struct whose first
    member is a `void *` reserved for this wrapper (it stores its handle there, which
    is how Python helpers find this Run). None: a private one-pointer host.
    """

    __slots__ = ("program", "_run", "_regs", "_args", "_nargs", "_handle", "_host", "__weakref__")

    def __init__(self, program, memory_kb=DEFAULT_MEMORY_KB, host=None):
        self.program = program
        self._handle = ffi.new_handle(weakref.ref(self))
        self._host = ffi.new("void *[1]") if host is None else host
        ffi.cast("void **", self._host)[0] = self._handle
        errmsg = ffi.new("char **")
        run = lib.zs_run_new(program._prog, int(memory_kb) * 1024, self._host, errmsg)
        if run == ffi.NULL:
            raise _take_error(errmsg, "cannot create a script run")
        self._run = ffi.gc(run, lib.zs_run_free)
        self._regs = lib.zs_run_regs(run)
        self._args = ffi.new("uint64_t[5]")
        self._nargs = 0

    def start(self, entry, args=(), budget=-1):
        """Runs entry `entry` (index or section name) with r1.. = args; returns DONE,
        PREEMPTED or SUSPENDED. budget: back-edges and calls allowed before PREEMPTED
        (< 0: no limit; give >= 1 to make progress)."""
        if entry.__class__ is str:
            entry = self.program.entry(entry)
        if args:
            a, n = self._args, len(args)
            if n > 5:
                raise ScriptFault(f"an entry takes at most 5 arguments (r1..r5), not {n}")
            try:
                a[0:n] = args
            except OverflowError:  # negative values: their 64-bit two's complement
                a[0:n] = [value & MASK64 for value in args]
            if n < self._nargs:
                a[n:self._nargs] = [0] * (self._nargs - n)
            self._nargs = n
            status = lib.zs_run_start(self._run, entry, a, budget)
        else:
            status = lib.zs_run_start(self._run, entry, ffi.NULL, budget)
        if status == FAULT:
            self._raise_fault()
        if status < 0:
            raise ScriptFault("start() of a run that is executing (called from one of its helpers)")
        return status

    def resume(self, r0=0, budget=-1):
        """Continues a PREEMPTED run, or a SUSPENDED one with r0 = the pending helper's result."""
        status = lib.zs_run_resume(self._run, r0 & MASK64, budget)
        if status == FAULT:
            self._raise_fault()
        if status < 0:
            raise ScriptFault("resume() of a run that is executing, or neither preempted nor suspended")
        return status

    @property
    def result(self):
        """r0: the entry's return value once DONE."""
        return self._regs[0]

    @property
    def status(self):
        return lib.zs_run_status(self._run)

    def register(self, n):
        """Guest register rN as it was at the last stop."""
        return self._regs[n]

    def _raise_fault(self):
        run = self._run
        message = ffi.string(lib.zs_run_fault_message(run)).decode("utf-8", "replace")
        kind = MemoryFault if lib.zs_run_fault_kind(run) == lib.ZS_FAULT_KIND_MEMORY else ScriptFault
        raise kind(message, pc=lib.zs_run_fault_pc(run), address=lib.zs_run_fault_addr(run))

    # -- memory: input placed before a run, and helper access to guest buffers --

    def reset(self):
        """Empties the heap of earlier alloc() calls and the charges."""
        lib.zs_run_reset(self._run)

    def alloc(self, data):
        """Copies bytes (or reserves `data` zero bytes) into the heap; returns the guest address."""
        size = data if isinstance(data, int) else len(data)
        addr = lib.zs_run_alloc(self._run, size)
        if addr == 0:
            raise ScriptFault(f"script memory is full: {size} bytes do not fit (raise --script-memory-kb)")
        if not isinstance(data, int) and size:
            ffi.memmove(lib.zs_run_host_ptr(self._run, addr, size), data, size)
        return addr

    def read(self, addr, length):
        """Bytes of guest memory; a range outside the arena raises MemoryFault (and, from
        a helper, faults the run)."""
        return ffi.unpack(ffi.cast("char *", self._guest_ptr(addr, length, 0)), length)

    def write(self, addr, data):
        """Writes bytes into writable guest memory; outside it raises MemoryFault (and,
        from a helper, faults the run)."""
        ffi.memmove(self._guest_ptr(addr, len(data), 1), data, len(data))

    def _guest_ptr(self, addr, length, writable):
        ptr = lib.zs_guest_ptr(self._run, addr & MASK64, length, writable)
        if ptr == ffi.NULL:
            what = ("is not writable script memory (outside it, or read-only data)" if writable
                    else "is outside the script memory")
            raise MemoryFault(f"0x{addr & MASK64:x} (+{length} bytes) {what}", address=addr)
        return ptr

    def _helper_fault_message(self):
        """The message a C helper left with zs_helper_fault (for host calls into helper code)."""
        return ffi.string(lib.zs_run_fault_message(self._run)).decode("utf-8", "replace")

    def pend(self):
        """From a helper: the result is not ready; the run stops SUSPENDED until resume(r0)."""
        lib.zs_helper_pend(self._run)

    def exit(self, r0):
        """From a helper: ends the run now, DONE with r0."""
        lib.zs_helper_exit(self._run, r0 & MASK64)
