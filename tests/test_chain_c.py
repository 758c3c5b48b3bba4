"""The C chain runner (native/script/chain.c through ScriptChain.run_c and adopt) against the Python chain loop."""

import asyncio
import inspect
import json
import logging
import pathlib
from types import SimpleNamespace

import pytest

from zeroserve.core.chain import FAULT, NONE, OVERTIME, RESPOND, metadata_headers
from zeroserve.core.plugins import build_plugin_manager
from zeroserve.core.script_abi import CHAIN_BUSY, CHAIN_FINISHED
from zeroserve.native._zsvm import ffi
from zeroserve.plugins.ratelimit import limiter
from zeroserve.sdk import HelperSpec, hookimpl

ROOT = pathlib.Path(__file__).resolve().parents[1]
HEADER = '#include "zeroserve.h"\n'

# One script with a branch per case the runner must reproduce.
CASES = HEADER + """
ZS_ENTRY zs_u64 entry(void)
{
    char path[64];
    zs_req_path(path, sizeof path);
    zs_meta_set(ZS_STR("zs.response.header.X-First"), ZS_STR("one"));
    if (zs_strcmp(path, "/respond") == 0) {
        zs_log(ZS_STR("answering\\n"));
        zs_respond(201, ZS_STR("made"));
    } else if (zs_strcmp(path, "/abort") == 0) {
        zs_abort();
    } else if (zs_strcmp(path, "/proxy") == 0) {
        zs_reverse_proxy(ZS_STR("  http://127.0.0.1:9/up  "));
    } else if (zs_strcmp(path, "/trap") == 0) {
        zs_log(ZS_STR("about to trap\\n"));
        zs_meta_set("", 0, ZS_STR("x"));
    } else if (zs_strcmp(path, "/wild") == 0) {
        volatile zs_u64 *p = (zs_u64 *)0x10;
        *p = 1;
    } else if (zs_strcmp(path, "/rewrite") == 0) {
        zs_req_set_uri(ZS_STR("/new/place?q=1"));
        zs_req_set_method(ZS_STR("POST"));
        zs_req_set_header(ZS_STR("x-added"), ZS_STR("yes"));
    } else if (zs_strcmp(path, "/hook") == 0) {
        zs_s64 input = zs_json_new_object();
        zs_res_hook(ZS_STR(""), ZS_STR("mark"), input);
    } else if (zs_strcmp(path, "/bad-headers") == 0) {
        zs_meta_set(ZS_STR("zs.response.header.bad name"), ZS_STR("v"));
        zs_meta_set(ZS_STR("zs.response.header.x-ctl"), ZS_STR("a\\x01b"));
        zs_meta_set(ZS_STR("zs.response.header. X-Trim "), ZS_STR("tab\\there"));
    } else if (zs_strcmp(path, "/slow") == 0) {
        volatile zs_u64 i = 0;
        while (i < 1000000)
            i++;
        zs_meta_set(ZS_STR("counted"), ZS_STR("yes"));
    } else if (zs_strcmp(path, "/spin") == 0) {
        for (volatile zs_u64 i = 0; ; i++) {
        }
    }
    return 0;
}

ZS_CALL_ENTRY(mark, input)
{
    zs_res_set_status(299);
    return 0;
}
"""

# Runs after `cases`: the chain reaches it only without an outcome.
LATER = HEADER + """
ZS_ENTRY zs_u64 entry(void)
{
    zs_log(ZS_STR("later ran\\n"));
    zs_meta_set(ZS_STR("later"), ZS_STR("ran"));
    return 0;
}
"""

USES_PYTHON_HELPER = HEADER + """
ZS_ENTRY zs_u64 entry(void)
{
    zs_load_static_json(ZS_STR("data.json"));
    return 0;
}
"""

USES_ASYNC_HELPER = HEADER + """
extern zs_s64 zs_test_wait(zs_u64 value);
ZS_ENTRY zs_u64 entry(void)
{
    char digits[8];
    int n = zs_utoa10((zs_u64)zs_test_wait(6), digits, sizeof digits);
    zs_meta_set(ZS_STR("waited"), digits, (zs_u64)n);
    return 0;
}
"""


class AsyncHelperPlugin:
    """A plugin with one async Python helper: zs_test_wait(n) answers n + 1 after yielding to the loop."""

    @hookimpl
    def zeroserve_known_helpers(self):
        return ["zs_test_wait"]

    @hookimpl
    def zeroserve_register_helpers(self, config):
        async def wait(call, value, *_):
            await asyncio.sleep(0)
            return value + 1
        return [HelperSpec("zs_test_wait", function=wait, is_async=True)]


class FakeWorld:
    """What helpers read from a world: its site, its chain and the plugins' state."""

    def __init__(self, chain):
        self.chain = chain
        self.site = None
        self.plugin_state = {}


def request(run, chain, path, query="", method="GET", headers=(("host", "example.test"),)):
    """One request through `run` (chain.run_python or chain.run_c), awaited if it had to wait."""
    result = run(FakeWorld(chain), "req-1", method, path, path, query, "https", "127.0.0.1:5000", (1, 1), True,
                 list(headers))
    if inspect.isawaitable(result):
        result = asyncio.run(_await(result))
    return result


async def _await(awaitable):
    return await awaitable


def summary(result):
    """Every field of a ChainResult a caller reads."""
    return (result.kind, result.status, result.body, tuple(result.response_headers), result.proxy_url,
            result.metadata, result.changed, result.method, result.path, result.normalized_path, result.query,
            result.headers, result.hooks is None)


def both(chain, path, caplog, **kwargs):
    """(Python result, C result, Python log lines, C log lines) of the same request on each path."""
    caplog.clear()
    python = request(chain.run_python, chain, path, **kwargs)
    python_log = [record.getMessage() for record in caplog.records]
    caplog.clear()
    c = request(chain.run_c, chain, path, **kwargs)
    c_log = [record.getMessage() for record in caplog.records]
    for result in (python, c):
        if result.hooks is not None:
            chain.release(result)
    return python, c, python_log, c_log


@pytest.fixture(scope="module")
def cases_chain(make_chain):
    return make_chain({"cases": CASES, "later": LATER}, preempt_interval_ms=0.2, cpu_budget_ms=40)


@pytest.mark.parametrize("path", ["/", "/respond", "/abort", "/proxy", "/trap", "/wild", "/rewrite", "/hook",
                                  "/bad-headers"])
def test_chain_c_matches_python_chain(cases_chain, caplog, path):
    """The C runner gives the Python chain's ChainResult and log lines for each outcome."""
    caplog.set_level(logging.ERROR)
    python, c, python_log, c_log = both(cases_chain, path, caplog)
    assert summary(c) == summary(python)
    assert c_log == python_log


def test_chain_c_fault_names_script_and_pc(cases_chain, caplog):
    """A faulting script gives FAULT 500 with its log line, then the fault naming script and pc."""
    caplog.set_level(logging.ERROR)
    _, c, _, c_log = both(cases_chain, "/trap", caplog)
    assert (c.kind, c.status) == (FAULT, 500)
    assert c_log[0] == "[user_log] req-1: cases.o: about to trap"
    assert c_log[1].startswith("[script_runtime] req-1: script 'cases.o' section 'zeroserve.request' failed at pc ")


def test_chain_c_no_outcome_runs_every_script(cases_chain, caplog):
    """Without an outcome every request script runs, in name order, and their log lines come in order."""
    caplog.set_level(logging.ERROR)
    _, c, _, c_log = both(cases_chain, "/", caplog)
    assert c.kind == NONE
    assert dict(c.metadata) == {"zs.response.header.X-First": "one", "later": "ran"}
    assert c_log == ["[user_log] req-1: later.o: later ran"]


def test_chain_c_metadata_headers_filter(cases_chain, caplog):
    """Response headers from metadata keep token names (trimmed, lowercased) and drop control bytes."""
    _, c, _, _ = both(cases_chain, "/bad-headers", caplog)
    assert metadata_headers(c.metadata) == (("x-first", "one"), ("x-trim", "tab\there"))


def test_chain_c_preempted_run_resumes_through_adopt(cases_chain, caplog):
    """A script preempted in C goes on in Python from the same run and ends as the Python chain does."""
    waiting = cases_chain.run_c(FakeWorld(cases_chain), "req-1", "GET", "/slow", "/slow", "", "https",
                                "127.0.0.1:5000", (1, 1), True, [("host", "example.test")])
    assert inspect.isawaitable(waiting)
    asyncio.run(_await(waiting))
    python, c, _, _ = both(cases_chain, "/slow", caplog)
    assert summary(c) == summary(python)
    assert dict(c.metadata)["counted"] == "yes"
    assert dict(c.metadata)["later"] == "ran"


def test_chain_c_endless_loop_overtime_after_adopt(cases_chain, caplog):
    """An endless loop preempted in C is adopted and stopped with 503 past the CPU budget."""
    caplog.set_level(logging.ERROR)
    python, c, _, c_log = both(cases_chain, "/spin", caplog)
    assert (c.kind, c.status) == (OVERTIME, 503) == (python.kind, python.status)
    assert "more than --script-cpu-budget-ms 40" in c_log[-1]


def test_chain_c_pools_reuse_objects(cases_chain, caplog):
    """After requests on both paths, the runs and contexts come back to the shared pools."""
    pools = cases_chain._pools
    both(cases_chain, "/", caplog)
    contexts = len(pools._contexts)
    runs = len(pools._runs)
    for path in ("/", "/respond", "/trap", "/proxy", "/slow"):
        both(cases_chain, path, caplog)
    assert (len(pools._contexts), len(pools._runs)) == (contexts, runs)


def test_chain_c_busy_when_run_pool_empty(cases_chain, caplog):
    """With a script's run pool empty the C runner answers BUSY before any script runs; run_c then uses Python."""
    pools = cases_chain._pools
    script = cases_chain.request_scripts[1]
    taken = []
    while (run := pools.take_run(script.slot)) is not None:
        taken.append(run)
    try:
        ctx = pools.begin()
        ctx.begin("GET", "/", "/", "", "https", "127.0.0.1:5000")
        assert pools.run() == CHAIN_BUSY
        assert ctx.metadata() == []
        pools.release(pools.req)
        python, c, _, _ = both(cases_chain, "/", caplog)
        assert summary(c) == summary(python)
    finally:
        for run in taken:
            script.release(run)


def test_chain_c_busy_when_context_pool_empty(cases_chain):
    """With no idle request context, begin answers BUSY (None)."""
    pools = cases_chain._pools
    taken = []
    while (ctx := pools.begin()) is not None:
        taken.append(ctx)  # begin empties req: the context stays out of the pool
    try:
        assert pools.begin() is None
    finally:
        for ctx in taken:
            pools.put_context(ctx)


def test_chain_c_finished_leaves_req_for_fast_path(cases_chain):
    """FINISHED RESPOND leaves status and body in the C request until it is released."""
    pools = cases_chain._pools
    ctx = pools.begin()
    ctx.begin("GET", "/respond", "/respond", "", "https", "127.0.0.1:5000")
    assert pools.run() == CHAIN_FINISHED
    req = pools.req
    assert (req.kind, req.status, ffi.unpack(req.body, req.body_len)) == (RESPOND, 201, b"made")
    assert req.log_len > 0
    pools.release(req)
    assert not req.ctx and not req.run


def test_chain_c_eligible_for_c_helpers_only(make_chain):
    """A chain of scripts calling C helpers is fast-eligible and exposes its C chain."""
    chain = make_chain({"cases": CASES})
    assert chain.fast_eligible and chain.c_chain is not None
    assert chain.run == chain.run_c


def test_chain_c_fresh_chain_runs_first_request_in_c(make_chain):
    """A freshly loaded chain has an idle context and run, so its first request is not BUSY."""
    pools = make_chain({"cases": CASES})._pools
    ctx = pools.begin()
    ctx.begin("GET", "/respond", "/respond", "", "https", "127.0.0.1:5000")
    assert pools.run() == CHAIN_FINISHED
    pools.release(pools.req)


def test_chain_c_python_helper_not_eligible(make_chain):
    """A request script calling a Python helper makes the chain Python-only."""
    chain = make_chain({"cases": CASES, "static": USES_PYTHON_HELPER})
    assert not chain.fast_eligible and chain.c_chain is None
    assert chain.run == chain.run_python


def test_chain_c_async_helper_stays_python(make_chain, caplog):
    """A chain with an async helper is not eligible and runs on the Python path, the helper awaited."""
    pm = build_plugin_manager([])
    pm.register(AsyncHelperPlugin(), name="test_async")
    chain = make_chain({"wait": USES_ASYNC_HELPER}, pm=pm)
    assert not chain.fast_eligible and chain.c_chain is None
    assert dict(request(chain.run, chain, "/").metadata) == {"waited": "7"}


def test_chain_c_zs_call_not_eligible(make_chain):
    """The zs_call example (zs_call is a Python helper) is not eligible."""
    scripts = {name: (ROOT / "examples" / "scripts" / f"{name}.c").read_text()
               for name in ("call_caller", "call_callee")}
    assert make_chain(scripts).c_chain is None


@pytest.fixture(scope="module")
def site_example_chain(make_chain):
    scripts = {path.stem: path.read_text() for path in (ROOT / "examples/site/.zeroserve/scripts").glob("*.c")}
    return make_chain(scripts)


@pytest.mark.parametrize("path,query", [("/", ""), ("/index.html", ""), ("/api/hello", "name=Ada"),
                                        ("/api/other", ""), ("/about.html", "")])
def test_chain_c_site_examples_match(site_example_chain, caplog, path, query):
    """The example site's scripts give the same results on both paths (now_ms aside)."""
    assert site_example_chain.fast_eligible
    python, c, python_log, c_log = both(site_example_chain, path, caplog, query=query)
    if python.kind == RESPOND:
        python.body, c.body = _without_now(python.body), _without_now(c.body)
    assert summary(c) == summary(python)
    assert c_log == python_log


def _without_now(body):
    data = json.loads(body)
    assert isinstance(data.pop("now_ms", 0), int)
    return data


@pytest.fixture(scope="module")
def examples_chain(make_chain):
    scripts = {name: (ROOT / "examples" / "scripts" / f"{name}.c").read_text()
               for name in ("basic_auth", "redirect", "ratelimit_429", "s3_private_bucket")}
    limiter.start(SimpleNamespace(ratelimit_state=None, ratelimit_redis=None, max_rate_limit_buckets=1000))
    return make_chain(scripts, plugins=["ratelimit", "sigv4"],
                      config=SimpleNamespace(options=SimpleNamespace(aws_profile=None)))


AUTH = (("host", "example.test"), ("authorization", "Basic YWRtaW46emVyb3NlcnZl"))  # admin:zeroserve


@pytest.mark.parametrize("path,method,headers,status", [
    ("/private/x", "GET", (("host", "example.test"),), 401),
    ("/private/x", "GET", AUTH, 502),  # through basic auth to S3 signing, which has no endpoint (logs it)
    ("/old/page", "GET", AUTH, 301),
    ("/", "GET", AUTH, 404),
    ("/docs/a.txt", "POST", AUTH, 405),
])
def test_chain_c_script_examples_match(examples_chain, caplog, path, method, headers, status):
    """examples/scripts (basic auth, redirect, rate limit, S3 signing) give the same results on both paths."""
    chain = examples_chain
    assert chain.fast_eligible
    python, c, python_log, c_log = both(chain, path, caplog, method=method, headers=headers)
    assert (c.kind, c.status) == (RESPOND, status)
    assert summary(c) == summary(python)
    assert c_log == python_log


def test_chain_c_interpreter_matches(make_chain, caplog):
    """On the interpreter engine too, the C runner gives the Python chain's results, preemption included."""
    chain = make_chain({"cases": CASES, "later": LATER}, engine="interp", preempt_interval_ms=0.2)
    for path in ("/", "/respond", "/trap", "/rewrite", "/slow"):
        python, c, python_log, c_log = both(chain, path, caplog)
        assert summary(c) == summary(python)
        assert c_log == python_log
