"""The script chain of a world: its scripts loaded and verified once, run in name order against each request.

Every script with a `zeroserve.request` section runs on every request, in
byte order of its name, sharing one RequestContext (request view, headers,
metadata). After each script the chain stops on the first outcome, in this
order: a fault (500), `zs_abort` (connection closed), `zs_respond` (that
response), `zs_reverse_proxy` (proxy). With no outcome the request goes on to
static serving, with whatever the scripts changed.

Time. A run gets an instruction budget worth about `--preempt-timer-interval-ms`
of CPU (measured once per process on a tight loop); when it is used up the run
stops PREEMPTED and `run()` hands back an awaitable that yields to the event
loop between slices, so other requests keep being served. CPU spent in slices
is summed per request; past `--script-cpu-budget-ms` the request is stopped
with a 503. A run that ends without being preempted or suspended never
leaves `run()`: the common path creates no coroutine and no Task.

Memory. Each pooled run owns `--script-memory-kb` of guest memory and the host
allocation budget of its execution context; runs and request contexts are
pooled per worker, so a request allocates nothing in C.
"""

import asyncio
import logging
import struct
import time
from dataclasses import dataclass

from zeroserve.core.errors import ScriptFault, ScriptLoadError
from zeroserve.core.script_abi import (
    OUTCOME_ABORT, OUTCOME_NONE, OUTCOME_PROXY, OUTCOME_RESPOND, RequestContext, ScriptRun, ScriptState,
)
from zeroserve.sdk import HelperCall
from zeroserve.vm import DEFAULT_ENGINE, DONE, PREEMPTED, SUSPENDED, Program

log = logging.getLogger(__name__)

REQUEST_SECTION = "zeroserve.request"
CALL_SECTION_PREFIX = "zeroserve.call."
MAX_CALL_DEPTH = 8

# ChainResult.kind: what the chain decided, beyond the scripts' own outcomes.
NONE, ABORT, RESPOND, PROXY = OUTCOME_NONE, OUTCOME_ABORT, OUTCOME_RESPOND, OUTCOME_PROXY
FAULT = 10  # a script faulted: 500
OVERTIME = 11  # the request's scripts used up the CPU budget: 503

# A tight loop (r0 = 0; loop: r0 += 1; goto loop) used to convert milliseconds of
# CPU into budget units (back-edges and calls) for this engine on this machine.
_CALIBRATION_LOOP = bytes.fromhex("b700000000000000" "0700000001000000" "0500feff00000000")
_CALIBRATION_UNITS = 2_000_000


def _log_error(message):
    """One line for the operator; the server's logging writes it to stderr."""
    log.error(message)


@dataclass(frozen=True, slots=True)
class ChainOptions:
    """The flags that govern script runs."""

    preempt_interval_ms: float = 2.0
    cpu_budget_ms: float = 100.0
    memory_kb: int = 256
    engine: str = DEFAULT_ENGINE


class ChainResult:
    """What the chain decided for one request, and the request as the scripts left it."""

    __slots__ = ("kind", "status", "body", "proxy_url", "metadata", "changed", "method", "path",
                 "normalized_path", "query", "headers", "hooks")

    def __init__(self, kind, ctx, status=0, body=b"", proxy_url="", hooks=None):
        self.kind = kind
        self.hooks = hooks  # the RequestState when response hooks wait for the response, else None
        self.status = status
        self.body = body
        self.proxy_url = proxy_url
        self.metadata = dict(ctx.metadata())
        changed = self.changed = ctx.changed
        # Only what a script changed is read back; the handler keeps its own copy otherwise.
        self.method = ctx.method if changed else None
        self.path = ctx.path if changed else None
        self.normalized_path = ctx.normalized_path if changed else None
        self.query = ctx.query if changed else None
        self.headers = ctx.headers() if changed else None


class ChainRun(ScriptRun):
    """A pooled ScriptRun with the HelperCall its Python helpers receive."""

    __slots__ = ("call", "script")

    def __init__(self, script, memory_kb):
        super().__init__(script.program, ScriptState(), memory_kb)
        self.script = script
        self.call = HelperCall(self)
        self.call.script = script.name


class Script:
    """One loaded script: its name, its program, its entries, and a pool of idle runs."""

    __slots__ = ("name", "program", "request_entry", "_pool", "_memory_kb")

    def __init__(self, name, program, memory_kb):
        self.name = name
        self.program = program
        self.request_entry = program.entries.get(REQUEST_SECTION)
        self._pool = []
        self._memory_kb = memory_kb

    def acquire(self):
        """An idle run of this script (a new one when all are busy)."""
        pool = self._pool
        return pool.pop() if pool else ChainRun(self, self._memory_kb)

    def release(self, run):
        self._pool.append(run)

    def call_entry(self, function):
        """The entry index of ZS_CALL_ENTRY(function), or None."""
        return self.program.entries.get(CALL_SECTION_PREFIX + function)


class RequestState:
    """What the chain keeps about one request while its scripts run."""

    __slots__ = ("world", "request_id", "ctx", "pending", "cpu_ms", "hooks")

    def __init__(self, world, request_id, ctx):
        self.world = world
        self.request_id = request_id
        self.ctx = ctx
        self.pending = None  # the awaitable of an async helper that suspended a run
        self.cpu_ms = 0.0
        self.hooks = []  # response hooks: (script name, function, input JSON text)


class Overtime(Exception):
    """The request's scripts used up --script-cpu-budget-ms."""


class ScriptChain:
    """The scripts of one world, loaded and verified, and how to run them on a request."""

    def __init__(self, scripts, options):
        self.scripts = {script.name: script for script in scripts}
        self.request_scripts = tuple(s for s in scripts if s.request_entry is not None)
        self.options = options
        self.slice_budget = max(1, int(units_per_ms(options.engine) * options.preempt_interval_ms))
        self._contexts = []

    @classmethod
    def load(cls, site, helper_table, options):
        """Load and verify every `.zeroserve/scripts/**/*.o` of `site`; a bad one raises ScriptLoadError naming it."""
        helpers = vm_helpers(helper_table)
        scripts = []
        for name, entry in site.scripts():
            try:
                program = Program.load_elf(site.read(entry), helpers, options.engine)
            except ScriptLoadError as error:
                error = helper_table.explain_load_error(error)
                raise ScriptLoadError(f"script '{name}': {error}") from None
            scripts.append(Script(name, program, options.memory_kb))
        return cls(scripts, options)

    def __bool__(self):
        return bool(self.request_scripts)

    def find(self, name):
        """The loaded script called `name` (or `name` + ".o"), or None."""
        scripts = self.scripts
        return scripts.get(name) or scripts.get(name + ".o")

    # -- running ------------------------------------------------------------------

    def run(self, world, request_id, method, path, normalized_path, query, scheme, peer, proto, is_tls,
            headers, body=b""):
        """Run the request scripts; a ChainResult, or an awaitable of one when a script had to wait.

        `path` is the normalised, still-encoded path; `normalized_path` "/" +
        the decoded relative path; `peer` "ip:port"; `headers` [(name, value)].
        """
        contexts = self._contexts
        ctx = contexts.pop() if contexts else RequestContext()
        ctx.begin(method, path, normalized_path, query, scheme, peer, proto, is_tls, headers)
        if body:
            ctx.set_body(body)
        state = RequestState(world, request_id, ctx)
        scripts = self.request_scripts
        for index, script in enumerate(scripts):
            run = script.acquire()
            call = run.call
            call.world = world
            call.context = ctx
            call.chain_state = state
            call.depth = 0
            run.begin(ctx)
            try:
                status = run.start(script.request_entry, (), self.slice_budget)
            except ScriptFault as fault:
                return self._fault(state, script, run, fault)
            if status != DONE:
                return self._finish_later(state, index, run, status)
            result = self._after_script(state, script, run)
            if result is not None:
                return result
        return self._finish(state, NONE)

    def _after_script(self, state, script, run):
        """The chain's result if this (finished) script decided one, else None; the run goes back to its pool."""
        sr = run.state
        lines = sr.take_log_lines()
        if lines:
            self._user_log(state, script.name, lines)
        outcome = sr.outcome
        if outcome == OUTCOME_NONE:
            script.release(run)
            return None
        if outcome == OUTCOME_RESPOND:
            status, body, url = sr.status, sr.body, ""
        elif outcome == OUTCOME_PROXY:
            status, body, url = 0, b"", sr.proxy_url
        else:
            status, body, url = 0, b"", ""
        script.release(run)
        return self._finish(state, outcome, status, body, url)

    def _finish(self, state, kind, status=0, body=b"", proxy_url=""):
        ctx = state.ctx
        if state.hooks and kind != ABORT:  # the hooks still need the request and its metadata
            return ChainResult(kind, ctx, status, body, proxy_url, state)
        result = ChainResult(kind, ctx, status, body, proxy_url)
        self._contexts.append(ctx)
        return result

    def _fault(self, state, script, run, fault, section=REQUEST_SECTION):
        lines = run.state.take_log_lines()
        if lines:
            self._user_log(state, script.name, lines)
        _log_error(f"[script_runtime] {state.request_id}: script '{script.name}' section '{section}' "
                   f"failed at pc {fault.pc}: {fault}")
        script.release(run)
        return self._finish(state, FAULT, 500)

    def _user_log(self, state, name, lines):
        for line in lines:
            _log_error(f"[user_log] {state.request_id}: {name}: {line}")

    async def _finish_later(self, state, index, run, status):
        """The rest of the chain, from a run that was preempted or suspended."""
        scripts = self.request_scripts
        script = scripts[index]
        if status == PREEMPTED:  # the first slice ran untimed; it used about one interval
            state.cpu_ms += self.options.preempt_interval_ms
        try:
            while True:
                try:
                    await self.drive(state, run, status, state.pending)
                except ScriptFault as fault:
                    return self._fault(state, script, run, fault)
                result = self._after_script(state, script, run)
                if result is not None:
                    return result
                index += 1
                if index == len(scripts):
                    return self._finish(state, NONE)
                script = scripts[index]
                run = script.acquire()
                call = run.call
                call.world = state.world
                call.context = state.ctx
                call.chain_state = state
                call.depth = 0
                run.begin(state.ctx)
                try:
                    status = self.timed(state, run.start, script.request_entry, (), self.slice_budget)
                except ScriptFault as fault:
                    return self._fault(state, script, run, fault)
        except Overtime:
            _log_error(f"[script_runtime] {state.request_id}: script '{script.name}' section "
                       f"'{REQUEST_SECTION}' stopped: the request's scripts used {state.cpu_ms:.0f} ms of CPU, "
                       f"more than --script-cpu-budget-ms {self.options.cpu_budget_ms:g}")
            script.release(run)
            return self._finish(state, OVERTIME, 503)

    async def drive(self, state, run, status, pending):
        """Carry a run from PREEMPTED or SUSPENDED to DONE; raises ScriptFault or Overtime.

        `pending` is the awaitable of the async helper that suspended it (status SUSPENDED).
        """
        while status != DONE:
            if status == SUSPENDED:
                state.pending = None
                try:
                    r0 = await pending
                except (ScriptFault, Overtime):
                    raise
                except Exception as error:  # an async helper failed: a fault of the run it serves
                    raise ScriptFault(f"async helper failed: {type(error).__name__}: {error}") from None
                status = self.timed(state, run.resume, r0, self.slice_budget)
            else:
                await asyncio.sleep(0)  # let other requests run between slices
                status = self.timed(state, run.resume, 0, self.slice_budget)
            if status == SUSPENDED:
                pending = state.pending

    def timed(self, state, step, *args):
        """Run one slice (start or resume), add its CPU time to the request, stop it past the budget."""
        started = time.thread_time()
        try:
            return step(*args)
        finally:
            state.cpu_ms += (time.thread_time() - started) * 1000.0
            if state.cpu_ms > self.options.cpu_budget_ms:
                raise Overtime()

    # -- response hooks -------------------------------------------------------------

    def run_hooks(self, result, response):
        """Run the response hooks `result` carries on `response` (edited in place) and release the request.

        Returns None when done, or an awaitable when a hook had to wait. A
        hook that cannot be found is logged and skipped; one that faults is
        logged and its changes to the response are undone. Metadata headers
        are applied again afterwards, as hooks may have set some.
        """
        state = result.hooks
        hooks = state.hooks
        for index, hook in enumerate(hooks):
            started = self._start_hook(state, hook, response)
            if started is None:
                continue
            target, run, status, saved = started
            if status != DONE:
                return self._hooks_later(state, response, index, target, run, status, saved)
            self._hook_done(state, target, run)
        return self._hooks_finished(state, response)

    def _start_hook(self, state, hook, response):
        """(script, run, status, saved response) of a started hook, or None when it is skipped or failed."""
        script_name, function, input_text = hook
        target = self.find(script_name)
        entry = target.call_entry(function) if target is not None else None
        if entry is None:
            _log_error(f"[script_runtime] {state.request_id}: response hook {script_name}:{function} skipped: "
                       f"no script '{script_name}' with ZS_CALL_ENTRY({function})")
            return None
        run = target.acquire()
        call = run.call
        call.world = state.world
        call.context = state.ctx
        call.chain_state = state
        call.depth = 0
        call.response = response
        run.begin(state.ctx)
        saved = (response.status, list(response.headers))
        try:
            calldata = run.alloc(struct.pack("<q", run.json_parse(input_text)))
            status = run.start(entry, (calldata,), self.slice_budget)
        except (ScriptFault, MemoryError) as fault:
            self._hook_failed(state, target, run, function, fault, response, saved)
            return None
        return target, run, status, saved

    def _hook_done(self, state, target, run):
        lines = run.state.take_log_lines()
        if lines:
            self._user_log(state, target.name, lines)
        run.call.response = None
        target.release(run)

    def _hook_failed(self, state, target, run, function, fault, response, saved):
        _log_error(f"[script_runtime] {state.request_id}: response hook script '{target.name}' section "
                   f"'{CALL_SECTION_PREFIX}{function}' failed at pc {getattr(fault, 'pc', None)}: {fault}; "
                   f"its changes to the response are undone")
        response.status, response.headers[:] = saved
        run.call.response = None
        target.release(run)

    async def _hooks_later(self, state, response, index, target, run, status, saved):
        hooks = state.hooks
        while True:
            try:
                await self.drive(state, run, status, state.pending)
                self._hook_done(state, target, run)
            except ScriptFault as fault:
                self._hook_failed(state, target, run, hooks[index][1], fault, response, saved)
            except Overtime:
                self._hook_failed(state, target, run, hooks[index][1], ScriptFault("over the CPU budget"),
                                  response, saved)
                break
            while True:
                index += 1
                if index == len(hooks):
                    return self._hooks_finished(state, response)
                started = self._start_hook(state, hooks[index], response)
                if started is not None:
                    break
            target, run, status, saved = started
        return self._hooks_finished(state, response)

    def _hooks_finished(self, state, response):
        ctx = state.ctx
        headers = ctx.response_headers()
        if headers:
            set_headers(response.headers, headers)
        state.hooks = []
        self._contexts.append(ctx)

    # -- zs_call --------------------------------------------------------------------

    def call(self, caller, script_name, function, handle):
        """Run ZS_CALL_ENTRY `function` of `script_name` for the run `caller` with a copy of JSON `handle`.

        Returns the new handle in the caller, -1 on the soft failures of
        zs_call, or, when the callee had to wait, -2 after setting the
        request's pending awaitable (the caller's helper then pends).
        """
        call = caller.call
        state = call.chain_state
        target = self.find(script_name)
        entry = target.call_entry(function) if target is not None else None
        if entry is None or call.depth >= MAX_CALL_DEPTH:
            caller.json_text(handle)  # an invalid input handle still faults the caller
            return -1
        callee = target.acquire()
        callee_call = callee.call
        callee_call.world = call.world
        callee_call.context = call.context
        callee_call.chain_state = state
        callee_call.depth = call.depth + 1
        callee.begin(call.context)
        try:
            input_handle = callee.json_copy_from(caller, handle)
        except ValueError as error:
            target.release(callee)
            raise ScriptFault(f"zs_call: {error}") from None
        calldata = callee.alloc(struct.pack("<q", input_handle))
        try:
            status = callee.start(entry, (calldata,), self.slice_budget)
        except ScriptFault as fault:
            return self._callee_failed(state, target, callee, function, fault)
        if status == DONE:
            return self._call_result(state, caller, target, callee)
        state.pending = self._call_later(state, caller, target, callee, function, status, state.pending)
        return -2

    async def _call_later(self, state, caller, target, callee, function, status, pending):
        try:
            await self.drive(state, callee, status, pending)
        except ScriptFault as fault:
            return self._callee_failed(state, target, callee, function, fault)
        return self._call_result(state, caller, target, callee)

    def _call_result(self, state, caller, target, callee):
        lines = callee.state.take_log_lines()
        if lines:
            self._user_log(state, target.name, lines)
        result = callee.result
        if result >= 1 << 63:
            result -= 1 << 64
        try:
            copied = caller.json_copy_from(callee, result) if result > 0 else -1
        except ValueError:  # the callee returned something that is not a live handle
            copied = -1
        target.release(callee)
        return copied

    def _callee_failed(self, state, target, callee, function, fault):
        _log_error(f"[script_runtime] {state.request_id}: script '{target.name}' section "
                   f"'{CALL_SECTION_PREFIX}{function}' failed at pc {fault.pc}: {fault}")
        target.release(callee)
        return -1


def set_headers(headers, replacements):
    """Set each (name, value) of `replacements` in the header list `headers`, replacing any of that name."""
    names = {name.lower() for name, _ in replacements}
    headers[:] = [item for item in headers if item[0].lower() not in names]
    headers.extend(replacements)


def vm_helpers(helper_table):
    """{name: VM helper} for Program.load_elf: C functions as they are, Python ones wrapped to get a HelperCall."""
    helpers = {}
    for name, spec in helper_table.specs.items():
        if spec.c_function is not None:
            helpers[name] = (spec.c_function, spec.c_cookie) if spec.c_cookie is not None else spec.c_function
        elif spec.is_async:
            helpers[name] = _async_helper(spec.function)
        else:
            helpers[name] = _sync_helper(spec.function)
    return helpers


def _sync_helper(function):
    def helper(run, r1, r2, r3, r4, r5):
        return function(run.call, r1, r2, r3, r4, r5)
    return helper


def _async_helper(function):
    def helper(run, r1, r2, r3, r4, r5):
        run.call.chain_state.pending = function(run.call, r1, r2, r3, r4, r5)
        run.pend()
        return 0
    return helper


_units_per_ms = {}


def units_per_ms(engine):
    """Budget units (back-edges and calls) one millisecond of CPU runs on `engine`, measured once per process."""
    rate = _units_per_ms.get(engine)
    if rate is None:
        run = Program.load_raw(_CALIBRATION_LOOP, engine=engine).run(64)
        run.start(0, (), 1000)  # warm up
        started = time.thread_time()
        run.start(0, (), _CALIBRATION_UNITS)
        elapsed_ms = max((time.thread_time() - started) * 1000.0, 1e-3)
        rate = _units_per_ms[engine] = _CALIBRATION_UNITS / elapsed_ms
    return rate
