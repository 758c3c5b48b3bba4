"""Where the sigv4 plugin finds AWS credentials: environment, shared credentials file, config file, --aws-profile."""

import pytest

from zeroserve.core.errors import ConfigError
from zeroserve.plugins.sigv4.credentials import resolve

CREDENTIALS_FILE = """\
[default]
aws_access_key_id = AKIADEFAULT
aws_secret_access_key = default-secret

[ops]
aws_access_key_id=AKIAOPS
aws_secret_access_key=ops-secret
aws_session_token=ops-token
"""

CONFIG_FILE = """\
[default]
region = eu-west-3

[profile ci]
aws_access_key_id = AKIACI
aws_secret_access_key = ci-secret
"""


@pytest.fixture
def environ(tmp_path):
    """An environment pointing at shared files in tmp_path (and no keys of its own)."""
    (tmp_path / "credentials").write_text(CREDENTIALS_FILE)
    (tmp_path / "config").write_text(CONFIG_FILE)
    return {"AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "credentials"),
            "AWS_CONFIG_FILE": str(tmp_path / "config"), "HOME": str(tmp_path)}


def test_sigv4_credentials_environment_comes_first(environ):
    """AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY/AWS_SESSION_TOKEN win over the shared files."""
    environ.update(AWS_ACCESS_KEY_ID="AKIAENV", AWS_SECRET_ACCESS_KEY="env-secret", AWS_SESSION_TOKEN="env-token")
    found = resolve(environ=environ)
    assert (found.access_key, found.secret_key, found.token, found.source) == (
        "AKIAENV", "env-secret", "env-token", "environment")


def test_sigv4_credentials_shared_file_default_profile(environ):
    """Without environment keys the [default] profile of the shared credentials file is used."""
    found = resolve(environ=environ)
    assert (found.access_key, found.secret_key, found.token) == ("AKIADEFAULT", "default-secret", None)
    assert found.source.endswith("credentials [default]")


def test_sigv4_credentials_aws_profile_variable_selects_a_profile(environ):
    """AWS_PROFILE picks a profile of the shared file, session token included."""
    environ["AWS_PROFILE"] = "ops"
    found = resolve(environ=environ)
    assert (found.access_key, found.secret_key, found.token) == ("AKIAOPS", "ops-secret", "ops-token")


def test_sigv4_credentials_profile_flag_overrides_environment_and_reads_config(environ):
    """--aws-profile ignores the environment's keys and falls back to [profile NAME] of the config file."""
    environ.update(AWS_ACCESS_KEY_ID="AKIAENV", AWS_SECRET_ACCESS_KEY="env-secret")
    found = resolve("ci", environ=environ)
    assert (found.access_key, found.secret_key) == ("AKIACI", "ci-secret")
    assert found.source.endswith("config [profile ci]")


def test_sigv4_credentials_unknown_profile_flag_is_a_config_error(environ):
    """--aws-profile naming a profile without keys stops with a message naming it."""
    with pytest.raises(ConfigError, match="--aws-profile nope"):
        resolve("nope", environ=environ)


def test_sigv4_credentials_none_anywhere_gives_none(tmp_path):
    """No environment keys and no files: no credentials (the helpers answer -1)."""
    assert resolve(environ={"AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "missing"),
                            "AWS_CONFIG_FILE": str(tmp_path / "missing-too")}) is None


def test_sigv4_credentials_repr_hides_the_secret_and_token(environ):
    """The repr of credentials (what a log line would show) holds neither the secret nor the token."""
    environ["AWS_PROFILE"] = "ops"
    text = repr(resolve(environ=environ))
    assert "AKIAOPS" in text and "ops-secret" not in text and "ops-token" not in text


def test_sigv4_credentials_unreadable_file_is_a_config_error(environ, tmp_path):
    """A credentials file that is not INI stops with a message naming the file, without its content."""
    (tmp_path / "credentials").write_text("aws_secret_access_key = leaked\n[broken")
    with pytest.raises(ConfigError, match="credentials") as error:
        resolve(environ=environ)
    assert "leaked" not in str(error.value)
