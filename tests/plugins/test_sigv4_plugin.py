"""The sigv4 plugin as the command line sees it: `zeroserve check` with and without it, and --aws-profile."""

import subprocess
import sys

import pytest

from harness import REPO, write_tree
from zeroserve.core import pack
from zeroserve.core.compile import ScriptCompiler


@pytest.fixture(scope="module")
def example_site(tmp_path_factory):
    """A site holding examples/scripts/s3_private_bucket.c."""
    directory = tmp_path_factory.mktemp("example") / "src"
    write_tree(directory, {".zeroserve/scripts/s3_private_bucket.c":
                           (REPO / "examples" / "scripts" / "s3_private_bucket.c").read_text()})
    output = directory.parent / "site.tar"
    pack.build(directory, output, compiler=ScriptCompiler.find("clang"))
    return output


def check(site, *flags, env=None):
    """`zeroserve check` of a site: (exit status, stderr text)."""
    result = subprocess.run([sys.executable, "-m", "zeroserve.core.cli", "check", *flags, str(site)],
                            capture_output=True, timeout=60, env=env)
    return result.returncode, result.stderr.decode("utf-8", "replace")


def test_sigv4_plugin_example_loads_with_the_plugin(example_site, tmp_path):
    """The example script loads with --plugins sigv4 and credentials from a named profile."""
    credentials = tmp_path / "credentials"
    credentials.write_text("[site]\naws_access_key_id = AKIAEXAMPLE\naws_secret_access_key = secret\n")
    status, stderr = check(example_site, "--plugins", "sigv4", "--aws-profile", "site",
                           env={"AWS_SHARED_CREDENTIALS_FILE": str(credentials), "HOME": str(tmp_path),
                                "PATH": "/usr/bin:/bin"})
    assert status == 0, stderr
    assert "secret" not in stderr


def test_sigv4_plugin_missing_says_which_plugin_to_enable(example_site):
    """Without --plugins sigv4 the example fails to load with a message naming the plugin."""
    status, stderr = check(example_site)
    assert status == 1
    assert "add --plugins sigv4" in stderr


def test_sigv4_plugin_unknown_profile_stops_with_a_message(example_site, tmp_path):
    """--aws-profile naming a profile without keys is refused, naming the profile."""
    status, stderr = check(example_site, "--plugins", "sigv4", "--aws-profile", "absent",
                           env={"AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
                                "AWS_CONFIG_FILE": str(tmp_path / "none"), "HOME": str(tmp_path),
                                "PATH": "/usr/bin:/bin"})
    assert status != 0
    assert "--aws-profile absent" in stderr
