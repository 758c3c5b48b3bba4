"""Where the sigv4 plugin's AWS credentials come from: the environment, then the shared files, as the AWS tools look.

The order is botocore's for static credentials:

1. ``--aws-profile NAME`` given: that profile of the shared credentials file,
   else of the config file; the environment's keys are not used. A profile
   found in neither is a configuration error.
2. Otherwise ``AWS_ACCESS_KEY_ID`` and ``AWS_SECRET_ACCESS_KEY`` (with
   ``AWS_SESSION_TOKEN`` when set).
3. Otherwise the profile ``AWS_PROFILE`` (or ``default``) of the shared
   credentials file (``AWS_SHARED_CREDENTIALS_FILE``, default
   ``~/.aws/credentials``), then of the config file (``AWS_CONFIG_FILE``,
   default ``~/.aws/config``, where it is ``[profile NAME]`` unless it is
   ``default``).

Credentials never come from the site. A secret never appears in a message,
a log line or a repr.
"""

import configparser
import os
import pathlib
from dataclasses import dataclass, field

from zeroserve.core import worldfiles
from zeroserve.core.errors import ConfigError

__all__ = ["Credentials", "resolve"]


@dataclass(frozen=True)
class Credentials:
    """Static AWS credentials and where they were found (``source`` is safe to log)."""

    access_key: str
    secret_key: str = field(repr=False)
    token: str | None = field(default=None, repr=False)
    source: str = ""


def _path(environ, variable, default):
    return pathlib.Path(environ.get(variable) or pathlib.Path(default).expanduser())


def _read_ini(path):
    parser = configparser.RawConfigParser()
    try:
        parser.read_string(worldfiles.read_bytes(path).decode("utf-8"), str(path))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, configparser.Error) as error:
        raise ConfigError(f"sigv4: cannot read AWS credentials from {path}: {error.__class__.__name__}; "
                          "fix the file or point AWS_SHARED_CREDENTIALS_FILE / AWS_CONFIG_FILE elsewhere") from None
    return parser


def _from_section(parser, section, path):
    """Credentials of an INI section, None when the section is absent or has no key pair."""
    if parser is None or not parser.has_section(section):
        return None
    values = parser[section]
    access_key = values.get("aws_access_key_id", "").strip()
    secret_key = values.get("aws_secret_access_key", "").strip()
    if not access_key or not secret_key:
        return None
    token = values.get("aws_session_token", "").strip() or None
    return Credentials(access_key, secret_key, token, f"{path} [{section}]")


def _from_profile(profile, environ):
    credentials_file = _path(environ, "AWS_SHARED_CREDENTIALS_FILE", "~/.aws/credentials")
    found = _from_section(_read_ini(credentials_file), profile, credentials_file)
    if found is None:
        config_file = _path(environ, "AWS_CONFIG_FILE", "~/.aws/config")
        section = profile if profile == "default" else f"profile {profile}"
        found = _from_section(_read_ini(config_file), section, config_file)
    return found


def resolve(profile=None, environ=None):
    """The credentials to sign with, or None when none are configured.

    `profile` is ``--aws-profile`` (None when not given); `environ` defaults to
    ``os.environ``. Raises ConfigError when the named profile has no keys.
    """
    environ = os.environ if environ is None else environ
    if profile:
        found = _from_profile(profile, environ)
        if found is None:
            raise ConfigError(f"sigv4: --aws-profile {profile}: no aws_access_key_id/aws_secret_access_key "
                              "for that profile in the shared credentials or config file; add them or "
                              "choose another profile")
        return found
    access_key = environ.get("AWS_ACCESS_KEY_ID", "").strip()
    secret_key = environ.get("AWS_SECRET_ACCESS_KEY", "").strip()
    if access_key and secret_key:
        return Credentials(access_key, secret_key, environ.get("AWS_SESSION_TOKEN", "").strip() or None,
                           "environment")
    return _from_profile(environ.get("AWS_PROFILE", "").strip() or "default", environ)
