"""The oidc plugin: scripts put a site behind OpenID Connect login (authorization code + PKCE, sealed cookies).

Helpers: ``zs_oidc_begin_login``, ``zs_oidc_handle_callback``,
``zs_oidc_session_verify`` and ``zs_oidc_logout`` (helpers.py; the flow in
flow.py, id_token checks in tokens.py, cookies in seal.py, provider metadata
and keys in discovery.py).
"""

from zeroserve.core.tls import client_context
from zeroserve.plugins.oidc.helpers import Settings, make_helpers
from zeroserve.sdk import HelperSpec, hookimpl


@hookimpl
def zeroserve_add_options(parser):
    parser.add_argument("--oidc-allow-insecure-issuer", action="store_true",
                        help="let the oidc plugin talk to identity providers over plain http:// "
                             "(only for tests against a local provider)")
    parser.add_argument("--oidc-ca-file", metavar="PEM", default=None,
                        help="verify identity providers against this CA bundle instead of the system CAs")


@hookimpl
def zeroserve_configure(config):
    ca_file = getattr(config.options, "oidc_ca_file", None)
    if ca_file is not None:
        # Loaded here, in the supervisor before the workers fork: an isolated worker may not read the file.
        client_context(ca_file)


@hookimpl
def zeroserve_register_helpers(config):
    options = config.options
    settings = Settings(getattr(options, "oidc_allow_insecure_issuer", False), getattr(options, "oidc_ca_file", None))
    return [HelperSpec(name, function=function, is_async=is_async)
            for name, (function, is_async) in make_helpers(settings).items()]


@hookimpl
def zeroserve_known_helpers():
    return list(make_helpers(Settings()))
