"""The four zs_oidc_* helpers: read the script's config and the request, run a flow step, answer through the script.

Configuration errors (not an object, no client_id or redirect_uri, a weak
secret) log one `[oidc]` line and return -1, as in the original; the steps
that talk to the provider are async helpers, so the script waits while the
event loop keeps serving. Per process there is one `Runtime` (the provider
client over the proxy's upstream connections, and the discovery cache).
"""

import asyncio
import json
import logging

from zeroserve.core.upstream import UpstreamOptions, Upstreams
from zeroserve.plugins.oidc import flow
from zeroserve.plugins.oidc.discovery import Discovery
from zeroserve.plugins.oidc.http import ProviderClient

log = logging.getLogger("zeroserve.oidc")

CONFIG_ERROR = -1


class Runtime:
    """What the helpers share in one worker process: the provider client and the discovery cache."""

    def __init__(self, loop, allow_insecure, ca_file):
        self.loop = loop
        self.ca_file = ca_file
        self.client = ProviderClient(Upstreams(loop, UpstreamOptions(ca_file=ca_file)), allow_insecure)
        self.discovery = Discovery(self.client)


# The process's Runtime; it outlives world rebuilds so a reload keeps the discovery cache.
_runtime = None


class Settings:
    """The plugin's flags; `runtime()` gives the process's Runtime (made on first use in a worker)."""

    def __init__(self, allow_insecure=False, ca_file=None):
        self.allow_insecure = allow_insecure
        self.ca_file = ca_file

    def runtime(self):
        global _runtime
        loop = asyncio.get_running_loop()
        runtime = _runtime
        if (runtime is None or runtime.loop is not loop or runtime.client.allow_insecure != self.allow_insecure
                or runtime.ca_file != self.ca_file):
            runtime = _runtime = Runtime(loop, self.allow_insecure, self.ca_file)
        return runtime


def _config(call, handle, helper):
    """The OidcConfig behind JSON `handle`, or None after logging why it is unusable."""
    try:
        return flow.parse_config(call.run.json_text(handle))
    except flow.OidcConfigError as error:
        log.error("[oidc] %s: %s", helper, error)
        return None


def _cookie_header(call):
    return "; ".join(value for name, value in call.context.headers() if name == "cookie")


def _secure(call):
    return call.context.scheme == "https"


def answer(call, reply):
    """Make `reply` the script's response, every header kept (the callback's two Set-Cookie lines)."""
    call.respond(reply.status, reply.headers, reply.body)
    return 0


def make_helpers(settings):
    """{name: (function, is_async)} of the four helpers, bound to the plugin's settings."""

    async def begin_login(call, cfg, return_to, return_to_len, *_):
        config = _config(call, cfg, "zs_oidc_begin_login")
        if config is None:
            return CONFIG_ERROR
        runtime = settings.runtime()
        reply = await flow.begin_login(config, runtime.discovery, call.read_text(return_to, return_to_len),
                                       _secure(call))
        return answer(call, reply)

    async def handle_callback(call, cfg, *_):
        config = _config(call, cfg, "zs_oidc_handle_callback")
        if config is None:
            return CONFIG_ERROR
        runtime = settings.runtime()
        reply = await flow.handle_callback(config, runtime.discovery, runtime.client, call.context.query,
                                           _cookie_header(call), _secure(call))
        return answer(call, reply)

    def session_verify(call, cfg, *_):
        try:
            sealer = flow.sealer_only(call.run.json_text(cfg))
        except flow.OidcConfigError as error:
            log.error("[oidc] zs_oidc_session_verify: %s", error)
            return CONFIG_ERROR
        claims = flow.session_claims(sealer, _cookie_header(call))
        return call.run.json_parse(json.dumps(claims)) if claims is not None else 0

    async def logout(call, cfg, url, url_len, *_):
        text = call.run.json_text(cfg)
        try:
            config = flow.parse_config(text)
        except flow.OidcConfigError as error:
            if not text.startswith("{"):  # compact JSON text: an object starts with "{"
                log.error("[oidc] zs_oidc_logout: %s", error)
                return CONFIG_ERROR
            config = None  # the original only needs an object here: clear the cookie all the same
        reply = await flow.logout(config, settings.runtime().discovery, _cookie_header(call),
                                  call.read_text(url, url_len), _secure(call))
        return answer(call, reply)

    return {
        "zs_oidc_begin_login": (begin_login, True),
        "zs_oidc_handle_callback": (handle_callback, True),
        "zs_oidc_session_verify": (session_verify, False),
        "zs_oidc_logout": (logout, True),
    }
