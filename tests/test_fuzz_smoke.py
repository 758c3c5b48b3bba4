"""CI's fuzzing smoke run: every fuzz target in bench/fuzz replays its seed corpus and fuzzes briefly without a crash."""

import importlib.util
import sys
from pathlib import Path

import pytest

FUZZ_DIR = Path(__file__).resolve().parents[1] / "bench" / "fuzz"
SMOKE_SECONDS = 2


def _load_runner():
    sys.path.insert(0, str(FUZZ_DIR))
    spec = importlib.util.spec_from_file_location("zeroserve_fuzz_run", FUZZ_DIR / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


runner = _load_runner()


@pytest.mark.parametrize("target", runner.ALL_TARGETS)
def test_fuzz_target_survives_corpus_and_short_run(target, tmp_path):
    """The target runs every seed in corpus/<target> and then fuzzes for two seconds with no crash."""
    seeds = list((FUZZ_DIR / "corpus" / target).iterdir())
    assert seeds, f"corpus/{target} holds no seeds"
    outcome = runner.fuzz(target, SMOKE_SECONDS, work_dir=tmp_path)
    assert outcome.crash is None, outcome.log_tail
    assert outcome.executions >= len(seeds), outcome.log_tail

