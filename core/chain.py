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

C runner. The pools live in one C chain (script_abi.CChain, native/script/
chain.c) that Python and the C fast path share. When every helper the request
scripts call is a C function (`fast_eligible`), `run` is `run_c`: the whole
chain runs in one C call, and `adopt` turns what it left into what the Python
loop (`run_python`) returns; the C fast path calls `adopt` for the requests it
does not finish itself.
"""

import asyncio
import functools
import logging
import struct
import time
from dataclasses import dataclass

from zeroserve.core.errors import ScriptFault, ScriptLoadError
from zeroserve.core.script_abi import (
    CHAIN_BUSY, OUTCOME_ABORT, OUTCOME_NONE, OUTCOME_PROXY, OUTCOME_RESPOND, CChain, ScriptRun, ScriptState,
    meta_headers,
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

    __slots__ = ("kind", "status", "body", "response_headers", "proxy_url", "metadata", "changed", "method",
                 "path", "normalized_path", "query", "headers", "hooks")

    def __init__(self, kind, ctx, status=0, body=b"", proxy_url="", hooks=None, response_headers=()):
        self.kind = kind
        self.hooks = hooks  # the RequestState when response hooks wait for the response, else None
        self.status = status
        self.body = body
        self.response_headers = response_headers  # [(name, value)] a helper's HelperCall.respond gave
        self.proxy_url = proxy_url
        self.metadata = tuple(ctx.metadata())  # ((key, value), ...) in the order scripts set them
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
    """One loaded script: its name, its program, its entries, and its slot (pool of idle runs) in the C chain."""

    __slots__ = ("name", "program", "request_entry", "slot", "_pools", "_memory_kb")

    def __init__(self, name, program, memory_kb, pools, slot):
        self.name = name
        self.program = program
        self.request_entry = program.entries.get(REQUEST_SECTION)
        self.slot = slot
        self._pools = pools
        self._memory_kb = memory_kb
        pools.set_script(slot, name, self.request_entry)
        self.release(self._new_run())  # a memory size it cannot use fails here

    def _new_run(self):
        run = ChainRun(self, self._memory_kb)
        self._pools.register_run(run)
        return run

    def release(self, run):
        self._pools.put_run(self.slot, run)

    def prepare(self, state, depth=0, in_hook=False):
        """An idle run of this script, set up for a new execution context on the request of `state`."""
        run = self._pools.take_run(self.slot) or self._new_run()
        call = run.call
        call.world = state.world
        call.context = state.ctx
        call.chain_state = state
        call.depth = depth
        run.begin(state.ctx, self.name, in_hook)
        return run

    def call_entry(self, function):
        """The entry index of ZS_CALL_ENTRY(function), or None."""
        return self.program.entries.get(CALL_SECTION_PREFIX + function)


class RequestState:
    """What the chain keeps about one request while its scripts run."""

    __slots__ = ("world", "request_id", "ctx", "pending", "cpu_ms", "rerun", "response_headers")

    def __init__(self, world, request_id, ctx):
        self.world = world
        self.request_id = request_id
        self.ctx = ctx
        self.response_headers = ()  # [(name, value)] of HelperCall.respond: a name may repeat (Set-Cookie)
        self.pending = None  # the awaitable of an async helper that suspended a run
        self.cpu_ms = 0.0
        self.rerun = False  # a hook called zs_res_continue_request


class Overtime(Exception):
    """The request's scripts used up --script-cpu-budget-ms."""


class ScriptChain:
    """The scripts of one world, loaded and verified, and how to run them on a request."""

    def __init__(self, scripts, options, helper_table, pools):
        # The table owns the C helpers' cookies: it lives as long as the programs that call them.
        self.helper_table = helper_table
        self.scripts = {script.name: script for script in scripts}
        self.request_scripts = tuple(s for s in scripts if s.request_entry is not None)
        self.options = options
        self.slice_budget = slice_budget(options)
        self._pools = pools
        self.fast_eligible = bool(self.request_scripts) and all(
            helper_table.specs[name].c_function is not None
            for script in self.request_scripts for name in script.program.called_helpers())
        # The C chain (struct zs_chain *) the fast path runs requests on; None when a script can call Python.
        self.c_chain = pools.ptr if self.fast_eligible else None
        # run(world, request_id, ...): the request scripts on one request, as run_python documents; the C
        # runner gives the same results in less time where it may run (bench/chain_bench.py).
        self.run = self.run_c if self.fast_eligible else self.run_python

    @classmethod
    def load(cls, site, helper_table, options):
        """Load and verify every `.zeroserve/scripts/**/*.o` of `site`; a bad one raises ScriptLoadError naming it."""
        helpers = vm_helpers(helper_table)
        entries = list(site.scripts())
        pools = CChain(len(entries), slice_budget(options))
        scripts = []
        for slot, (name, entry) in enumerate(entries):
            try:
                program = Program.load_elf(site.read(entry), helpers, options.engine)
                scripts.append(Script(name, program, options.memory_kb, pools, slot))
            except ScriptLoadError as error:
                error = helper_table.explain_load_error(error)
                raise ScriptLoadError(f"script '{name}': {error}") from None
        return cls(scripts, options, helper_table, pools)

    def __bool__(self):
        return bool(self.request_scripts)

    def find(self, name):
        """The loaded script called `name` (or `name` + ".o"), or None."""
        scripts = self.scripts
        return scripts.get(name) or scripts.get(name + ".o")

    # -- running ------------------------------------------------------------------

    def run_python(self, world, request_id, method, path, normalized_path, query, scheme, peer, proto, is_tls,
                   headers, body=b"", connection_info=None):
        """Run the request scripts; a ChainResult, or an awaitable of one when a script had to wait.

        `path` is the normalised, still-encoded path; `normalized_path` "/" +
        the decoded relative path; `peer` "ip:port"; `headers` [(name, value)];
        `connection_info` the JSON text zs_connection_info answers (None: plaintext).
        This is the reference loop; `run` is it, or `run_c` for a fast-eligible chain.
        """
        ctx = self._pools.take_context()
        ctx.begin(method, path, normalized_path, query, scheme, peer, proto, is_tls, headers)
        if body:
            ctx.set_body(body)
        if connection_info is not None:
            ctx.set_connection_info(connection_info)
        return self._run_scripts(RequestState(world, request_id, ctx))

    def run_c(self, world, request_id, method, path, normalized_path, query, scheme, peer, proto, is_tls,
              headers, body=b"", connection_info=None):
        """`run_python` through the C chain runner (a fast-eligible chain only): the same ChainResult or awaitable.

        Pools exhausted: the Python path runs the request instead.
        """
        pools = self._pools
        ctx = pools.begin()
        if ctx is None:
            return self.run_python(world, request_id, method, path, normalized_path, query, scheme, peer, proto,
                                   is_tls, headers, body, connection_info)
        ctx.begin(method, path, normalized_path, query, scheme, peer, proto, is_tls, headers)
        if body:
            ctx.set_body(body)
        if connection_info is not None:
            ctx.set_connection_info(connection_info)
        if pools.run() == CHAIN_BUSY:
            pools.release(pools.req)
            return self.run_python(world, request_id, method, path, normalized_path, query, scheme, peer, proto,
                                   is_tls, headers, body, connection_info)
        return self.adopt(world, request_id, pools.req)

    def adopt(self, world, request_id, req):
        """What `run` would have returned for a request the C runner ran (`req`: struct zs_chain_req *, or its
        address) and stopped FINISHED or YIELDED: a ChainResult, or an awaitable of one.

        Takes over req's context and run (req is left empty: do not release it);
        writes the scripts' log lines and a fault as `run` does.
        """
        taken = self._pools.take_over(req)
        state = RequestState(world, request_id, taken.ctx)
        for name, line in taken.log:
            _log_error(f"[user_log] {request_id}: {name}: {line}")
        run = taken.run
        if taken.run_status:  # YIELDED: the rest of the chain goes on in Python from that run
            call = run.call
            call.world = world
            call.context = state.ctx
            call.chain_state = state
            call.depth = 0
            run.state.ctx = state.ctx
            return self._finish_later(state, taken.script, run, taken.run_status)
        kind = taken.kind
        if run is not None:
            run.script.release(run)
        if kind == FAULT:
            self._log_fault(state, run.script, taken.fault_pc, taken.fault_message)
            return self._finish(state, FAULT, 500)
        return self._finish(state, kind, taken.status, taken.body, taken.proxy_url)

    def rerun(self, state):
        """Run the request scripts again on the same request and metadata (after zs_res_continue_request)."""
        state.rerun = False
        state.response_headers = ()  # a new run decides its own response
        return self._run_scripts(state)

    def _run_scripts(self, state):
        for index, script in enumerate(self.request_scripts):
            run = script.prepare(state)
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
        headers = state.response_headers if kind == RESPOND else ()
        if kind != ABORT and ctx.response_hooks():  # the hooks still need the request and its metadata
            return ChainResult(kind, ctx, status, body, proxy_url, state, headers)
        result = ChainResult(kind, ctx, status, body, proxy_url, response_headers=headers)
        self._pools.put_context(ctx)
        return result

    def _fault(self, state, script, run, fault):
        lines = run.state.take_log_lines()
        if lines:
            self._user_log(state, script.name, lines)
        self._log_fault(state, script, fault.pc, fault)
        script.release(run)
        return self._finish(state, FAULT, 500)

    def _log_fault(self, state, script, pc, message):
        _log_error(f"[script_runtime] {state.request_id}: script '{script.name}' section '{REQUEST_SECTION}' "
                   f"failed at pc {pc}: {message}")

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
                run = script.prepare(state)
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
        """Run one slice (start or resume) and add its CPU time to the request; Overtime past the budget."""
        started = time.thread_time()
        status = step(*args)
        state.cpu_ms += (time.thread_time() - started) * 1000.0
        if status != DONE and state.cpu_ms > self.options.cpu_budget_ms:
            raise Overtime()
        return status

    # -- response hooks -------------------------------------------------------------

    def run_hooks(self, result, response):
        """Run the response hooks the scripts registered on `response` (edited in place); then release the request.

        Returns None when done, or an awaitable when a hook had to wait. A
        hook whose script or function does not exist is logged and skipped;
        one that faults is logged and its changes to the response are undone.
        Metadata headers are applied again afterwards, as hooks may set some.
        When a hook called zs_res_continue_request, `result.hooks.rerun` is
        set and the request is kept for `rerun`.
        """
        state = result.hooks
        ctx = state.ctx
        hooks = ctx.response_hooks()
        ctx.begin_response(response.status, response.headers)
        saved = (response.status, response.headers)
        for index, hook in enumerate(hooks):
            started = self._start_hook(state, hook, saved)
            if started is None:
                continue
            target, run, status = started
            if status != DONE:
                return self._hooks_later(state, response, hooks, index, target, run, status, saved)
            saved = self._hook_done(state, target, run)
        return self._hooks_finished(state, response)

    def _start_hook(self, state, hook, saved):
        """(script, run, status) of a started hook, or None when it is skipped or failed at once
        (then the response goes back to `saved`)."""
        script_name, function, input_text = hook
        target = self.find(script_name)
        entry = target.call_entry(function) if target is not None else None
        if entry is None:
            _log_error(f"[script_runtime] {state.request_id}: response hook '{script_name}' "
                       f"'{CALL_SECTION_PREFIX}{function}' skipped: no such script or function")
            return None
        run = target.prepare(state, in_hook=True)
        try:
            calldata = run.alloc(struct.pack("<q", run.json_parse(input_text)))
            status = run.start(entry, (calldata,), self.slice_budget)
        except (ScriptFault, MemoryError) as fault:
            self._hook_failed(state, target, run, function, fault, saved)
            return None
        return target, run, status

    def _hook_done(self, state, target, run):
        """The response as this hook left it, kept in case a later hook fails."""
        lines = run.state.take_log_lines()
        if lines:
            self._user_log(state, target.name, lines)
        target.release(run)
        status, headers, _ = state.ctx.response()
        return status, headers

    def _hook_failed(self, state, target, run, function, fault, saved):
        _log_error(f"[script_runtime] {state.request_id}: response hook script '{target.name}' section "
                   f"'{CALL_SECTION_PREFIX}{function}' failed at pc {getattr(fault, 'pc', None)}: {fault}; "
                   f"its changes to the response are undone")
        state.ctx.begin_response(*saved)
        target.release(run)

    async def _hooks_later(self, state, response, hooks, index, target, run, status, saved):
        while True:
            function = hooks[index][1]
            try:
                await self.drive(state, run, status, state.pending)
                saved = self._hook_done(state, target, run)
            except ScriptFault as fault:
                self._hook_failed(state, target, run, function, fault, saved)
            except Overtime:
                self._hook_failed(state, target, run, function, ScriptFault("over the CPU budget"), saved)
                return self._hooks_finished(state, response)
            while True:
                index += 1
                if index == len(hooks):
                    return self._hooks_finished(state, response)
                started = self._start_hook(state, hooks[index], saved)
                if started is not None:
                    break
            target, run, status = started

    def _hooks_finished(self, state, response):
        ctx = state.ctx
        status, headers, state.rerun = ctx.response()
        if state.rerun:  # the request runs again: keep its context
            return
        replacements = metadata_headers(tuple(ctx.metadata()))
        if replacements:
            set_headers(headers, replacements)
        response.status = status
        response.headers = headers
        self._pools.put_context(ctx)
        state.ctx = None

    def release(self, result):
        """Give back the request a result still holds (hooks pending) when it will not be answered."""
        state = result.hooks
        if state is not None and state.ctx is not None:
            self._pools.put_context(state.ctx)
            state.ctx = None

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
        callee = target.prepare(state, call.depth + 1)
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


@functools.lru_cache(maxsize=1024)
def metadata_headers(metadata):
    """[(lowercase name, value)] the `zs.response.header.<name>` keys of `metadata` set; invalid ones are skipped.

    `metadata` is a tuple of (key, value) pairs; scripts mostly set the same
    ones request after request, so the answer is cached. The filter is the
    C one the fast path applies (script_abi.meta_headers).
    """
    return tuple(meta_headers(metadata))


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


def slice_budget(options):
    """Budget units of one slice: about --preempt-timer-interval-ms of CPU."""
    return max(1, int(units_per_ms(options.engine) * options.preempt_interval_ms))


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
