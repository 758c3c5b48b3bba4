"""The script chain (core/chain.py) on real compiled scripts: order, outcomes, faults, limits, zs_call, time."""

import asyncio
import inspect
import logging
import re

import pytest

from zeroserve.core.chain import ABORT, FAULT, NONE, OVERTIME, PROXY, RESPOND
from zeroserve.core.errors import ScriptLoadError

HEADER = '#include "zeroserve.h"\n'

APPEND_ORDER = HEADER + """
ZS_ENTRY zs_u64 entry(void)
{
    char order[32];
    zs_s64 n = zs_meta_get(ZS_STR("order"), order, sizeof order - 1);
    order[n] = '%s';
    zs_meta_set(ZS_STR("order"), order, n + 1);
    return 0;
}
"""

BY_PATH = HEADER + """
ZS_ENTRY zs_u64 entry(void)
{
    char path[64];
    zs_req_path(path, sizeof path);
    if (zs_strcmp(path, "/respond") == 0) {
        zs_respond(201, ZS_STR("made"));
        zs_meta_set(ZS_STR("after-respond"), ZS_STR("still running"));
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
        zs_req_set_header(ZS_STR("x-added"), ZS_STR("yes"));
    } else if (zs_strcmp(path, "/spin") == 0) {
        for (volatile zs_u64 i = 0; ; i++) {
        }
    } else if (zs_strcmp(path, "/handles") == 0) {
        for (int i = 0; i < 40; i++)
            zs_json_new_object();
    } else if (zs_strcmp(path, "/memory") == 0) {
        char chunk[256];
        zs_memset(chunk, 'a', sizeof chunk);
        zs_s64 list = zs_json_new_array();
        zs_s64 item = zs_json_new_object();
        zs_json_set_string(item, chunk, sizeof chunk);
        for (int i = 0; i < 1200; i++)
            zs_json_array_push(list, item);
        zs_respond(200, ZS_STR("fits"));
    }
    return 0;
}
"""

LATER = HEADER + """
ZS_ENTRY zs_u64 entry(void)
{
    zs_meta_set(ZS_STR("later"), ZS_STR("ran"));
    return 0;
}
"""

# Calls itself through zs_call, one level deeper each time, and answers the depth it reached
# (the callee at nesting depth d gets {"depth": d - 1}).
RECURSE = HEADER + """
ZS_CALL_ENTRY(down, input)
{
    zs_s64 depth_node = zs_json_get(input, ZS_STR("depth"));
    zs_s64 depth = 0;
    zs_json_read_i64(depth_node, &depth, 8);
    zs_s64 next = zs_json_new_object();
    zs_s64 value = zs_json_new_object();
    zs_json_set_i64(value, depth + 1);
    zs_json_set(next, ZS_STR("depth"), value);
    zs_s64 reply = zs_call(ZS_STR("recurse"), ZS_STR("down"), next);
    if (reply < 0) {
        zs_s64 mine = zs_json_new_object();
        zs_s64 reached = zs_json_new_object();
        zs_json_set_i64(reached, depth);
        zs_json_set(mine, ZS_STR("deepest"), reached);
        return mine;
    }
    return reply;
}

ZS_ENTRY zs_u64 entry(void)
{
    char path[32];
    zs_req_path(path, sizeof path);
    if (zs_strcmp(path, "/recurse") != 0)
        return 0;
    zs_s64 start = zs_json_parse(ZS_STR("{\\"depth\\":0}"));
    zs_s64 reply = zs_call(ZS_STR("recurse.o"), ZS_STR("down"), start);
    if (reply < 0) {
        zs_respond(502, ZS_STR("call failed"));
        return 0;
    }
    zs_s64 missing = zs_call(ZS_STR("nope"), ZS_STR("down"), start);
    zs_s64 no_function = zs_call(ZS_STR("recurse"), ZS_STR("nothing"), start);
    if (missing != -1 || no_function != -1) {
        zs_respond(500, ZS_STR("unknown callee did not give -1"));
        return 0;
    }
    zs_json_respond(200, reply);
    return 0;
}
"""

# A callee that needs many slices before it answers, and a caller that waits for it.
SLOW_CALL = HEADER + """
ZS_CALL_ENTRY(count, input)
{
    volatile zs_u64 i = 0;
    while (i < 3000000)
        i++;
    zs_s64 reply = zs_json_new_object();
    zs_json_set_i64(reply, (zs_s64)i);
    return reply;
}

ZS_ENTRY zs_u64 entry(void)
{
    zs_s64 input = zs_json_new_object();
    zs_s64 reply = zs_call(ZS_STR("slow"), ZS_STR("count"), input);
    if (reply < 0)
        zs_respond(502, ZS_STR("call failed"));
    else
        zs_json_respond(200, reply);
    return 0;
}
"""


class FakeWorld:
    """The two things helpers read from a world: its site and its chain."""

    def __init__(self, chain):
        self.chain = chain
        self.site = None
        self.plugin_state = {}


def run(chain, path, query=""):
    """One request through the chain; the ChainResult, awaiting it if the chain had to wait."""
    result = chain.run(FakeWorld(chain), "req-1", "GET", path, path, query, "http", "127.0.0.1:5000", (1, 1),
                       False, [("host", "example.test"), ("cookie", "a=1")])
    if inspect.isawaitable(result):
        result = asyncio.run(_await(result))
    return result


def meta(result):
    """The metadata a ChainResult carries, as a dict."""
    return dict(result.metadata)


async def _await(awaitable):
    return await awaitable


@pytest.fixture(scope="module")
def main_chain(make_chain):
    return make_chain({"10-first": APPEND_ORDER % "a", "20-decide": BY_PATH, "30-later": LATER,
                       "15-second": APPEND_ORDER % "b"})


def test_chain_runs_scripts_in_name_order(main_chain):
    """Every request script runs in byte order of its name, sharing the metadata map."""
    result = run(main_chain, "/")
    assert result.kind == NONE
    assert meta(result)["order"] == "ab"
    assert meta(result)["later"] == "ran"


def test_chain_respond_stops_after_script(main_chain):
    """zs_respond ends the chain once its script returns; the script itself runs to its end."""
    result = run(main_chain, "/respond")
    assert (result.kind, result.status, result.body) == (RESPOND, 201, b"made")
    assert meta(result)["after-respond"] == "still running"
    assert "later" not in meta(result)


def test_chain_abort_stops_chain(main_chain):
    """zs_abort ends the chain with the abort outcome."""
    result = run(main_chain, "/abort")
    assert result.kind == ABORT
    assert "later" not in meta(result)


def test_chain_proxy_outcome_has_trimmed_url(main_chain):
    """zs_reverse_proxy ends the chain with the proxy outcome and the trimmed URL."""
    result = run(main_chain, "/proxy")
    assert (result.kind, result.proxy_url) == (PROXY, "http://127.0.0.1:9/up")


def test_chain_fault_gives_500_and_one_log_line(main_chain, caplog):
    """A helper trap ends the chain with a 500 and logs script, section, pc and reason once."""
    with caplog.at_level(logging.ERROR, logger="zeroserve.core.chain"):
        result = run(main_chain, "/trap")
    assert (result.kind, result.status) == (FAULT, 500)
    assert "later" not in meta(result)
    failures = [r.getMessage() for r in caplog.records if "failed at pc" in r.getMessage()]
    assert len(failures) == 1
    assert re.search(r"req-1: script '20-decide.o' section 'zeroserve.request' failed at pc \d+: .*zs_meta_set",
                     failures[0])
    assert any("[user_log] req-1: 20-decide.o: about to trap" in r.getMessage() for r in caplog.records)


def test_chain_memory_fault_gives_500(main_chain, caplog):
    """A store outside the script's memory is a fault with a 500, not a crash; the next request is served."""
    with caplog.at_level(logging.ERROR, logger="zeroserve.core.chain"):
        result = run(main_chain, "/wild")
    assert (result.kind, result.status) == (FAULT, 500)
    assert any("section 'zeroserve.request' failed at pc" in r.getMessage() for r in caplog.records)
    assert meta(run(main_chain, "/"))["order"] == "ab"


def test_chain_mutations_read_back(main_chain):
    """Request changes made by scripts come back in the result: new path, query and headers."""
    result = run(main_chain, "/rewrite")
    assert result.kind == NONE
    assert (result.path, result.query) == ("/new/place", "q=1")
    assert ("x-added", "yes") in result.headers


def test_chain_unchanged_request_reads_nothing_back(main_chain):
    """When no script changed the request, the result carries no copy of it."""
    result = run(main_chain, "/")
    assert result.changed == 0 and result.headers is None and result.path is None


def test_chain_handle_limit_faults(main_chain):
    """More than 32 live JSON handles in one run is a fault."""
    assert run(main_chain, "/handles").kind == FAULT


def test_chain_memory_cap_faults(main_chain):
    """JSON beyond --script-memory-kb (default 256) faults the script."""
    assert run(main_chain, "/memory").kind == FAULT


def test_chain_memory_cap_follows_flag(make_chain):
    """With a larger --script-memory-kb the same JSON fits."""
    chain = make_chain({"20-decide": BY_PATH}, memory_kb=2048)
    result = run(chain, "/memory")
    assert (result.kind, result.body) == (RESPOND, b"fits")


def test_chain_spinning_script_gets_503_and_yields(make_chain, caplog):
    """An endless loop is preempted, yields the event loop between slices, and is stopped with a 503."""
    chain = make_chain({"20-decide": BY_PATH}, cpu_budget_ms=60, preempt_interval_ms=2)

    async def scenario():
        ticks = 0
        pending = chain.run(FakeWorld(chain), "req-spin", "GET", "/spin", "/spin", "", "http", "127.0.0.1:1",
                            (1, 1), False, [])
        assert inspect.isawaitable(pending)
        task = asyncio.ensure_future(pending)
        while not task.done():
            ticks += 1
            await asyncio.sleep(0)
        return task.result(), ticks

    with caplog.at_level(logging.ERROR, logger="zeroserve.core.chain"):
        result, ticks = asyncio.run(scenario())
    assert (result.kind, result.status) == (OVERTIME, 503)
    assert ticks > 5  # the loop ran other work between the script's slices
    assert any("req-spin: script '20-decide.o'" in r.getMessage() and "--script-cpu-budget-ms 60" in r.getMessage()
               for r in caplog.records)
    assert run(chain, "/respond").status == 201  # the pooled run is reusable


def test_chain_done_run_returns_result_directly(main_chain):
    """A chain whose scripts finish in one slice returns its result, not an awaitable."""
    result = main_chain.run(FakeWorld(main_chain), "r", "GET", "/", "/", "", "http", "127.0.0.1:1", (1, 1),
                            False, [])
    assert not inspect.isawaitable(result)


def test_chain_without_request_scripts_is_empty(make_chain):
    """A site whose scripts have no request entry has an empty (false) chain."""
    chain = make_chain({"lib": HEADER + "ZS_CALL_ENTRY(f, in) { return in; }\n"})
    assert not chain
    assert chain.find("lib") is chain.find("lib.o") is not None


def test_chain_zs_call_depth_limit(make_chain):
    """zs_call nests callees up to depth 8 (the chain script is depth 0); a call from depth 8 gets -1."""
    chain = make_chain({"recurse": RECURSE})
    result = run(chain, "/recurse")
    assert (result.kind, result.status) == (RESPOND, 200), result.body
    assert result.body == b'{"deepest":7}'


def test_chain_unknown_helper_of_disabled_plugin(make_chain):
    """A script calling a helper of a plugin that is not enabled fails to load, naming the flag to add."""
    source = HEADER + """
ZS_ENTRY zs_u64 entry(void)
{
    zs_rate_limit(ZS_STR("k"), 1, 0, 0);
    return 0;
}
"""
    with pytest.raises(ScriptLoadError) as raised:
        make_chain({"limited": source})
    assert "script 'limited.o'" in str(raised.value)
    assert "helper zs_rate_limit is provided by plugin 'ratelimit'; add --plugins ratelimit" in str(raised.value)


def test_chain_zs_call_preempted_callee_resumes_caller(make_chain):
    """A callee that is preempted many times still hands its result back to the waiting caller."""
    chain = make_chain({"slow": SLOW_CALL}, preempt_interval_ms=0.1, cpu_budget_ms=10_000)
    result = chain.run(FakeWorld(chain), "r", "GET", "/", "/", "", "http", "127.0.0.1:1", (1, 1), False, [])
    assert inspect.isawaitable(result)
    result = asyncio.run(_await(result))
    assert (result.kind, result.status, result.body) == (RESPOND, 200, b"3000000")


HOOKS = HEADER + """
ZS_CALL_ENTRY(stamp, input)
{
    char type[64];
    zs_res_header(ZS_STR("content-type"), type, sizeof type);
    zs_meta_set(ZS_STR("zs.response.header.x-hook-saw"), ZS_STR(type));
    if (zs_res_status() == 404)
        zs_res_set_status(410);
    return input;
}

ZS_CALL_ENTRY(broken, input)
{
    zs_res_set_status(299);
    zs_meta_set("", 0, ZS_STR("x"));
    return input;
}

ZS_ENTRY zs_u64 entry(void)
{
    zs_res_hook("", 0, ZS_STR("stamp"), zs_json_new_object());
    zs_res_hook("", 0, ZS_STR("broken"), zs_json_new_object());
    zs_res_hook(ZS_STR("nowhere"), ZS_STR("stamp"), zs_json_new_object());
    return 0;
}
"""


def test_chain_response_hooks_edit_and_roll_back(make_chain, caplog):
    """Hooks run in order on the final response; a failing hook's changes are undone, a missing one skipped."""
    from zeroserve.core.request import Response
    chain = make_chain({"hooks": HOOKS})
    result = run(chain, "/")
    assert result.hooks is not None
    response = Response(404, [("content-type", "text/plain"), ("content-length", "9")])
    with caplog.at_level(logging.ERROR, logger="zeroserve.core.chain"):
        assert chain.run_hooks(result, response) is None
    assert response.status == 410
    assert ("x-hook-saw", "text/plain") in response.headers
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "response hook script 'hooks.o' section 'zeroserve.call.broken' failed" in messages
    assert "response hook 'nowhere' 'zeroserve.call.stamp' skipped" in messages
