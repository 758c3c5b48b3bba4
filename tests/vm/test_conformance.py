"""The bpf_conformance vectors (RFC 9669) on both engines, in process and through the plugin command."""
import json
import re
import subprocess
import sys

import pytest

from vm_support import CONFORMANCE, ENGINES
from zeroserve.core.errors import ScriptLoadError
from zeroserve.native._zsvm import ffi, lib
from zeroserve.vm import DONE, Program, Run

VECTORS = [json.loads(line) for line in (CONFORMANCE / "bpf_conformance.jsonl").read_text().splitlines() if line]
UNUSED_FIELDS = [json.loads(line) for line in
                 (CONFORMANCE / "bpf_conformance_unused_fields.jsonl").read_text().splitlines() if line]
HELPERS = {5: ffi.addressof(lib, "zs_helper_unwind")}


def run_vector(vector, engine):
    run = Run(Program.load_raw(bytes.fromhex(vector["program_hex"]), HELPERS, engine=engine))
    memory = bytes.fromhex(vector["mem_hex"])
    addr = run.alloc(memory) if memory else 0
    assert run.start(0, (addr, len(memory))) == DONE
    return run.result


def test_conformance_vectors_are_all_present():
    """The shared vector file holds the whole suite: 313 vectors with unique names."""
    assert len(VECTORS) == 313
    assert len({v["name"] for v in VECTORS}) == 313


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_conformance_vector_gives_expected_r0(vector, engine):
    """Each conformance program leaves the expected 64-bit r0."""
    assert run_vector(vector, engine) == vector["expected_r0"]


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("vector", UNUSED_FIELDS, ids=[v["name"] for v in UNUSED_FIELDS])
def test_conformance_unused_field_is_rejected(vector, engine):
    """A program with a non-zero unused instruction field fails to load."""
    with pytest.raises(ScriptLoadError, match="verifier"):
        Program.load_raw(bytes.fromhex(vector["program_hex"]), HELPERS, engine=engine)


@pytest.mark.parametrize("engine", ENGINES)
def test_conformance_command_passes_runner(engine):
    """`python -m zeroserve.vm run` speaks the suite's plugin protocol (memory, helper 5, callx)."""
    wanted = [v for v in VECTORS if v["mem_hex"] or v["helpers_used"]]
    pattern = "^(" + "|".join(re.escape(v["name"]) for v in wanted) + ")$"
    result = subprocess.run(
        [sys.executable, str(CONFORMANCE / "conformance_runner.py"), "-j", "2", "-k", pattern,
         "--", sys.executable, "-m", "zeroserve.vm", "run", "--engine", engine],
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(wanted)} passed, 0 failed" in result.stdout


def test_conformance_command_reports_load_error():
    """The command exits non-zero with the verifier's message for an invalid program."""
    result = subprocess.run([sys.executable, "-m", "zeroserve.vm", "run", "--engine", "interp"],
                            input="b7  00  00  00  01  00  00  00\n", capture_output=True, text=True)
    assert result.returncode == 1
    assert "fall off the end" in result.stderr
