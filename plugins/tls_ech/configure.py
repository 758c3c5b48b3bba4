"""Turns the tls_ech flags into TLS material for one world: --cert-dir contexts, ECH keys, relay, inspector."""

import base64
import datetime
import functools
import logging

from zeroserve.plugins.tls_ech import echconfig
from zeroserve.plugins.tls_ech.certdir import CertDirectory
from zeroserve.plugins.tls_ech.handshake import HandshakePolicy, connection_facts, identity_dns_names
from zeroserve.plugins.tls_ech.relay import RelaySettings

log = logging.getLogger("zeroserve.plugins.tls_ech")


def add_options(parser):
    """The plugin's flags (the first two keep the original server's names)."""
    parser.add_argument("--cert-dir", metavar="DIR",
                        help="choose the certificate per SNI from the PEM certificates and keys in DIR")
    parser.add_argument("--ech-key", metavar="FILE|DIR",
                        help="accept Encrypted ClientHello with these keys (made by 'zeroserve ech-keygen')")
    parser.add_argument("--ech-relay-target", action="append", default=[], metavar="NAME=HOST:PORT",
                        help="relay non-ECH handshakes for public name NAME to HOST:PORT (default NAME:443)")
    parser.add_argument("--ech-relay-connect-timeout", type=float, default=5.0, metavar="SECONDS",
                        help="seconds to connect to a relay target (default 5)")
    parser.add_argument("--ech-relay-idle-timeout", type=float, default=60.0, metavar="SECONDS",
                        help="seconds a relayed connection may idle (default 60)")
    parser.add_argument("--ech-relay-max", type=int, default=256, metavar="N",
                        help="relayed connections at once per worker (default 256)")


def active(options):
    """True when any of the plugin's flags was given."""
    return bool(getattr(options, "cert_dir", None) or getattr(options, "ech_key", None))


def check(options):
    """Load every file the flags name once, so that a mistake stops start-up with the file named."""
    load_ech(options)
    if getattr(options, "cert_dir", None):
        CertDirectory.load(options.cert_dir)


def load_ech(options):
    """(ECHKeys, RelaySettings) of the flags, or ((), None) without --ech-key."""
    if not getattr(options, "ech_key", None):
        return (), None
    keys = echconfig.load(options.ech_key)
    relay = RelaySettings.build(
        echconfig.public_names(keys), options.ech_relay_target,
        connect_timeout=options.ech_relay_connect_timeout, idle_timeout=options.ech_relay_idle_timeout,
        max_relays=options.ech_relay_max)
    return keys, relay


def configure_tls(tls, options, choose=None):
    """Add --cert-dir, --ech-key and the handshake policy to a TLSConfigBuilder; return the public names.

    `choose` is the zeroserve_tls_client_hello hook caller (see HandshakePolicy), or None.
    """
    keys, relay = load_ech(options)
    ech_keys = echconfig.build_ssl_keys(keys) if keys else None
    if ech_keys is not None:
        tls.ech_keys = ech_keys
        names = echconfig.public_names(keys)
        encoded = base64.b64encode(echconfig.config_list([key.config for key in keys])).decode()
        log.warning('[tls_ech] ECH keys loaded: %d (config_ids %s), public names %s; DNS HTTPS record: ech="%s"',
                    len(keys), ", ".join(f"{k.config.config_id:#04x}" for k in keys), ", ".join(names), encoded)
    cert_dir = None
    if getattr(options, "cert_dir", None):
        cert_dir = CertDirectory.load(options.cert_dir).with_contexts(tls.ticket_keys, ech_keys)
        # The world's own context serves clients without SNI until the policy picks per handshake.
        tls.identity = cert_dir.default(datetime.datetime.now(datetime.timezone.utc)).identity
    policy = HandshakePolicy(
        cert_dir=cert_dir,
        # Only the relay asks what the single --cert covers.
        default_names=identity_dns_names(tls.identity) if cert_dir is None and relay is not None else (),
        relay=relay,
        choose=choose,
    )
    tls.add_inspector(policy)
    names = echconfig.public_names(keys)
    tls.connection_info = functools.partial(connection_facts, public_names=names)
    return names
