"""Fixtures shared by the end-to-end tests; the helpers they use live in harness.py."""

import pytest

from harness import EXAMPLE_SITE, build_site, start_server
from zeroserve.core import pack
from zeroserve.core.compile import ScriptCompiler


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


@pytest.fixture
def server_factory(request):
    """server_factory(tar, *flags, workers=1) -> a started ServerProcess, stopped after the test."""
    return lambda tar, *flags, workers=1: start_server(request, tar, *flags, workers=workers)
