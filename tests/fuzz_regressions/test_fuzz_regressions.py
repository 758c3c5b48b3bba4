"""Every input a fuzzer crashed on (tests/fuzz_regressions/<target>/<name>) replays on its target without a crash."""

import importlib.util
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
FUZZ_DIR = HERE.parents[1] / "bench" / "fuzz"

# Found by fuzzing, reported to the owner, not fixed yet: the test fails until the fix lands
# (strict: it then passes, and this entry must go, with its line in bench/fuzz/known_bugs.supp).
OPEN_BUGS = {}


def _load_runner():
    sys.path.insert(0, str(FUZZ_DIR))
    spec = importlib.util.spec_from_file_location("zeroserve_fuzz_run", FUZZ_DIR / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


runner = _load_runner()


def _cases():
    for path in sorted(p for target in runner.ALL_TARGETS for p in (HERE / target).glob("*")):
        name = f"{path.parent.name}/{path.name}"
        marks = [pytest.mark.xfail(strict=True, reason=OPEN_BUGS[name])] if name in OPEN_BUGS else []
        yield pytest.param(path.parent.name, path, id=name, marks=marks)


@pytest.mark.parametrize("target, path", list(_cases()))
def test_fuzz_regression_input_replays_cleanly(target, path):
    """The saved input runs through its fuzz target, sanitizers on and nothing suppressed, without a crash."""
    outcome = runner.replay(target, path)
    assert outcome.crash is None, outcome.log_tail
