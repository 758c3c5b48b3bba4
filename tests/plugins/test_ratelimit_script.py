"""zs_rate_limit and zs_rate_limit_ex called from real BPF scripts in the VM (both engines), and the 429 example script."""

import pathlib

import pytest

from zeroserve.core.compile import ScriptCompiler
from zeroserve.core.errors import ScriptFault
from zeroserve.core.script_abi import (
    OUTCOME_NONE, OUTCOME_RESPOND, RequestContext, ScriptRun, ScriptState, core_helper_defs,
)
from zeroserve.plugins.ratelimit.table import ALLOWED, BAD_ARGS, LIMITED, LocalTable
from zeroserve.vm import Program, jit_available

REPO = pathlib.Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "scripts" / "ratelimit_429.c"
ENGINES = ["interp"] + (["jit"] if jit_available() else [])
MASK64 = (1 << 64) - 1

# Passes r1..r5 straight to each helper, so the tests choose the arguments.
FORWARD_SOURCE = r"""
#include "zeroserve.h"

ZS_SECTION("fwd/zs_rate_limit")
zs_s64 fwd_rate_limit(zs_u64 a, zs_u64 b, zs_u64 c, zs_u64 d, zs_u64 e)
{
    return zs_rate_limit((const void *)a, b, c, d, e);
}

ZS_SECTION("fwd/zs_rate_limit_ex")
zs_s64 fwd_rate_limit_ex(zs_u64 a, zs_u64 b, zs_u64 c, zs_u64 d, zs_u64 e)
{
    return zs_rate_limit_ex((const void *)a, b, c, d, (zs_u64 *)e);
}
"""


@pytest.fixture(scope="module")
def compiler():
    return ScriptCompiler.find(None)


@pytest.fixture(scope="module")
def objects(compiler, tmp_path_factory):
    directory = tmp_path_factory.mktemp("ratelimit-scripts")
    source = directory / "forward.c"
    source.write_text(FORWARD_SOURCE)
    return {"forward": compiler.compile(source, "forward.c"),
            "example": compiler.compile(EXAMPLE, "ratelimit_429.c")}


@pytest.fixture(params=ENGINES)
def engine(request):
    return request.param


@pytest.fixture
def table():
    table = LocalTable(100)
    table.set_clock(0)
    return table


class Script:
    """One program on one table, run against a fresh request context."""

    def __init__(self, data, table, engine, peer="192.0.2.7:4711"):
        helpers = dict(core_helper_defs())
        helpers.update(table.helpers())
        self.program = Program.load_elf(data, helpers, engine=engine)
        self.ctx = RequestContext()
        self.state = ScriptState()
        self.run = ScriptRun(self.program, self.state, 64)
        self.peer = peer

    def begin(self):
        self.ctx.begin("GET", "/", "/", "", "https", self.peer, (1, 1), True, [("Host", "a.test")])
        self.run.begin(self.ctx, "10-ratelimit.o")

    def call(self, section, *args):
        """The signed result of entry `section`; bytes arguments are placed in the script's heap."""
        self.begin()
        registers = [self.run.alloc(arg) if isinstance(arg, bytes) else arg & MASK64 for arg in args]
        self.run.start(section, registers)
        result = self.run.result
        return result - (1 << 64) if result >> 63 else result


def test_ratelimit_helper_sequence_from_script(objects, table, engine):
    """zs_rate_limit from a script allows the burst, reports the exceeded limit and refills on the table's clock."""
    script = Script(objects["forward"], table, engine)
    key = b"192.0.2.7"
    assert [script.call("fwd/zs_rate_limit", key, len(key), 2, 0, 0) for _ in range(3)] == [ALLOWED, ALLOWED, 1]
    assert script.call("fwd/zs_rate_limit", key, len(key), 0, 0, 0) == ALLOWED
    table.set_clock(500_000_000)
    assert [script.call("fwd/zs_rate_limit", key, len(key), 2, 0, 0) for _ in range(2)] == [ALLOWED, 1]
    assert script.call("fwd/zs_rate_limit", key, 0, 2, 0, 0) == BAD_ARGS
    assert script.call("fwd/zs_rate_limit", b"x" * 300, 257, 2, 0, 0) == BAD_ARGS


def test_ratelimit_helper_ex_writes_retry_after(objects, table, engine):
    """zs_rate_limit_ex writes 0 when allowed and the ms until the next token when limited."""
    script = Script(objects["forward"], table, engine)
    results = []
    for _ in range(3):
        script.begin()
        key = script.run.alloc(b"k")
        out = script.run.alloc(b"\xff" * 8)
        script.run.start("fwd/zs_rate_limit_ex", [key, 1, 2000, 2, out])
        results.append((script.run.result, int.from_bytes(script.run.read(out, 8), "little")))
    assert results == [(ALLOWED, 0), (ALLOWED, 0), (LIMITED, 500)]
    assert script.call("fwd/zs_rate_limit_ex", b"k", 1, 0, 2, 0) == BAD_ARGS


def test_ratelimit_helper_faults_on_bad_pointers(objects, table, engine):
    """A key or output pointer outside the script's memory faults the script."""
    script = Script(objects["forward"], table, engine)
    with pytest.raises(ScriptFault):
        script.call("fwd/zs_rate_limit", 0x10, 8, 1, 0, 0)
    with pytest.raises(ScriptFault):
        script.call("fwd/zs_rate_limit_ex", b"k", 1, 1000, 1, 0x10)


def test_ratelimit_example_answers_429_with_retry_after(objects, table, engine):
    """ratelimit_429.c lets 10 requests of one address through, then answers 429 with Retry-After: 1."""
    script = Script(objects["example"], table, engine)
    outcomes = []
    for _ in range(11):
        script.begin()
        script.run.start(script.program.entry("zeroserve.request"))
        outcomes.append(script.state.outcome)
    assert outcomes == [OUTCOME_NONE] * 10 + [OUTCOME_RESPOND]
    assert script.state.status == 429
    assert script.state.body == b"Too Many Requests\n"
    assert dict(script.ctx.metadata())["zs.response.header.retry-after"] == "1"
    other = Script(objects["example"], table, engine, peer="[2001:db8::1]:443")
    other.begin()
    other.run.start(other.program.entry("zeroserve.request"))
    assert other.state.outcome == OUTCOME_NONE
    keys = {bucket.key for bucket in table.buckets()}
    assert keys == {b"192.0.2.7", b"[2001:db8::1]"}
