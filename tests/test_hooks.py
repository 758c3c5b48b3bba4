"""Meta-tests that keep the plugin surface honest: every hook documented and tested, every core helper implemented."""

import ast
import inspect
from pathlib import Path

import pytest

from zeroserve.core import hookspecs
from zeroserve.core.plugins import CORE, build_helper_table, build_plugin_manager, sdk_helper_groups

TESTS = Path(__file__).resolve().parent
HOOKS = sorted(name for name, value in vars(hookspecs).items()
               if name.startswith("zeroserve_") and inspect.isfunction(value))


def _test_function_names():
    names = set()
    for path in TESTS.rglob("test_*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names.update(node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef))
    return names


def test_hooks_exist():
    """The hookspec module declares the zeroserve_* hooks (the list the other meta-tests walk)."""
    assert "zeroserve_register_helpers" in HOOKS and "zeroserve_known_helpers" in HOOKS


@pytest.mark.parametrize("hook", HOOKS)
def test_hooks_have_tests(hook):
    """Every hook has a test named test_hook_<name without the zeroserve_ prefix>."""
    wanted = "test_hook_" + hook.removeprefix("zeroserve_")
    assert wanted in _test_function_names(), f"no test function {wanted} under tests/"


@pytest.mark.parametrize("hook", HOOKS)
def test_hooks_are_documented(hook):
    """Every hook's docstring says when it is called, in more than a one-liner."""
    doc = inspect.getdoc(getattr(hookspecs, hook)) or ""
    assert len(doc.splitlines()) >= 3, f"{hook} needs a docstring: when it runs, its parameters, its result"
    assert "Called" in doc, f"{hook}'s docstring must say when it is called"


def test_hooks_have_no_per_request_hook():
    """No hook takes a request: hooks run at load time only."""
    for hook in HOOKS:
        assert "request" not in inspect.signature(getattr(hookspecs, hook)).parameters


def test_sdk_core_helpers_all_registered():
    """Every helper sdk/zeroserve.h declares outside the plugin and proxy groups has a core implementation."""
    table = build_helper_table(build_plugin_manager([]), None)
    core = sorted(name for name, group in sdk_helper_groups().items() if group == CORE)
    assert len(core) > 60
    missing = [name for name in core if table.owners.get(name) != CORE]
    assert not missing, f"declared in sdk/zeroserve.h but not implemented: {', '.join(missing)}"


def test_sdk_groups_name_installed_plugins():
    """Every plugin group of sdk/zeroserve.h is the name of an in-tree plugin (or the proxy)."""
    from zeroserve.core.plugins import installed_plugins
    groups = set(sdk_helper_groups().values()) - {CORE, "proxy"}
    assert groups == {"ratelimit", "sigv4", "oidc", "tls_ech"}
    assert groups <= set(installed_plugins())
