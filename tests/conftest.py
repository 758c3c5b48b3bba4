"""Fixtures shared by the test modules; the end-to-end helpers they use live in harness.py."""

import pytest

from harness import EXAMPLE_SITE, build_site, start_server, write_tree
from proxy_backends import PythonBackend
from tls_pki import make_test_pki
from zeroserve.core import pack
from zeroserve.core.chain import ChainOptions, ScriptChain
from zeroserve.core.compile import ScriptCompiler
from zeroserve.core.plugins import build_helper_table, build_plugin_manager
from zeroserve.core.site import Site


@pytest.fixture(scope="module")
def make_site(tmp_path_factory):
    """make_site(files dict | directory) -> path of a packed site tar (module-scoped)."""
    counter = iter(range(1_000_000))

    def make(source):
        base = tmp_path_factory.mktemp("site")
        output = base / f"site-{next(counter)}.tar"
        if isinstance(source, dict):
            return build_site(base / "src", source, output)
        pack.build(source, output, compiler=ScriptCompiler.find(None))
        return output

    return make


@pytest.fixture(scope="module")
def example_tar(make_site):
    """The example site (examples/site) packed into a tar."""
    return make_site(EXAMPLE_SITE)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A test CA and a leaf it signed for tls_pki.LEAF_NAMES and 127.0.0.1 (tls_pki.PKIPaths), one per module."""
    return make_test_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def server_factory(request):
    """server_factory(tar, *flags, workers=1) -> a started ServerProcess, stopped after the test."""
    return lambda tar, *flags, workers=1: start_server(request, tar, *flags, workers=workers)


@pytest.fixture(scope="module")
def backend():
    """The Python upstream of proxy_backends.py on a loopback port (module-scoped)."""
    server = PythonBackend()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def make_chain(tmp_path_factory):
    """make_chain({script name: C source}, plugins=[...], pm=None, config=None, **ChainOptions) -> a ScriptChain.

    Its site holds index.html and data.json besides the scripts; its helper table is built from `pm`, or else
    from the named plugins, with `config`."""
    compiler = ScriptCompiler.find(None)
    counter = iter(range(1000))

    def make(scripts, plugins=(), pm=None, config=None, **options):
        base = tmp_path_factory.mktemp(f"chain{next(counter)}")
        files = {"index.html": "<p>hi</p>", "data.json": '{"a": 1}'}
        files.update({f".zeroserve/scripts/{name}.c": source for name, source in scripts.items()})
        write_tree(base / "src", files)
        pack.build(base / "src", base / "site.tar", compiler=compiler)
        helpers = build_helper_table(pm or build_plugin_manager(list(plugins)), config)
        return ScriptChain.load(Site.open(base / "site.tar"), helpers, ChainOptions(**options))

    return make
