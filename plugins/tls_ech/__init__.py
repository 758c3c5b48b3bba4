"""The tls_ech plugin: --cert-dir SNI selection, Encrypted ClientHello, ECH relay mode and JA4 for scripts.

This module holds only the hook implementations; the work is done in the modules beside it.
"""

from zeroserve.plugins.tls_ech import configure
from zeroserve.plugins.tls_ech.helpers import zs_tls_ja4
from zeroserve.sdk import HelperSpec, hookimpl


@hookimpl
def zeroserve_add_options(parser):
    configure.add_options(parser)


@hookimpl
def zeroserve_configure(config):
    # Fail at start-up, with the file named, rather than in the first world build.
    configure.check(config.options)


@hookimpl
def zeroserve_configure_tls(tls, config, plugins):
    if configure.active(config.options):
        hook = plugins.hook.zeroserve_tls_client_hello
        # Without an implementation, skip the per-handshake JA4 the hook's argument would cost.
        configure.configure_tls(tls, config.options, choose=hook if hook.get_hookimpls() else None)


@hookimpl
def zeroserve_register_helpers(config):
    return [HelperSpec("zs_tls_ja4", function=zs_tls_ja4)]


@hookimpl
def zeroserve_known_helpers():
    return ["zs_tls_ja4"]
