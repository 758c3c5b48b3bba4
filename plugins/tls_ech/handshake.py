"""The tls_ech ClientHello inspector and what it learns per connection: certificate, refusal, relay, JA4.

HandshakePolicy runs in BoringSSL's early ClientHello callback (after ECH decryption, so it sees the inner
hello when ECH was accepted). It picks the --cert-dir certificate for the SNI, refuses a name nothing
covers, and hands a hello for an ECH public name that is neither ECH-accepted nor locally covered to the
relay. `connection_facts(session)` is what scripts and the access log see of a finished handshake; the
connection computes it once.
"""

import datetime
import json
from dataclasses import dataclass

from cryptography import x509

from zeroserve.core import worldfiles
from zeroserve.core.errors import TLSError
from zeroserve.core.tls import ConnectionFacts
from zeroserve.plugins.tls_ech.certdir import dns_names, name_matches
from zeroserve.plugins.tls_ech.clienthello import ClientHelloReader, MalformedClientHello, parse_client_hello
from zeroserve.plugins.tls_ech.ja4 import fingerprint
from zeroserve.plugins.tls_ech.relay import RelayHandoff


def identity_dns_names(identity):
    """The lowercase DNS SANs of an Identity's leaf (what --cert covers)."""
    return dns_names(x509.load_pem_x509_certificate(worldfiles.read_bytes(identity.cert_path)))


@dataclass(frozen=True, slots=True)
class ClientHelloInfo:
    """What the zeroserve_tls_client_hello hook sees of a ClientHello (the inner one when ECH was accepted)."""

    sni: str | None  # lowercase, or None without SNI
    alpn: tuple  # offered protocol names, in the client's order
    ja4: str
    ja4_r: str
    ech_accepted: bool
    raw: bytes  # the ClientHello message body


class HandshakePolicy:
    """The inspector added to the TLS configuration: certificate choice, refusal and relay per ClientHello.

    `choose(hello=info)` (the zeroserve_tls_client_hello hook caller) runs first when given: it returns a ServerContext
    whose certificate serves the handshake, or None to leave the choice to --cert-dir / --cert, and it
    raises TLSError to refuse the connection.
    """

    def __init__(self, *, cert_dir=None, default_names=(), relay=None, choose=None, clock=None):
        self.cert_dir = cert_dir  # a CertDirectory with contexts, or None in --cert mode
        self.default_names = default_names  # DNS SANs of the single --cert identity
        self.relay = relay  # RelaySettings, or None when no ECH keys are loaded
        self.choose = choose
        self._clock = clock or (lambda: datetime.datetime.now(datetime.timezone.utc))

    def _covered_by_default(self, name):
        return any(name_matches(pattern, name) for pattern in self.default_names)

    def __call__(self, session, hello):
        name = hello.servername
        name = name.lower().rstrip(".") if name else None
        if self.choose is not None:
            try:
                prints = fingerprint(parse_client_hello(hello.raw))
            except MalformedClientHello as error:  # extension bodies are parsed only when read
                raise TLSError(f"malformed ClientHello: {error}") from None
            info = ClientHelloInfo(name, tuple(hello.alpn_offered), prints.ja4, prints.ja4_r,
                                   session.ech_accepted, hello.raw)
            chosen = self.choose(hello=info)
            if chosen is not None:
                session.use_identity_of(chosen)
                return
        now = self._clock()
        if self.cert_dir is not None:
            entry = self.cert_dir.select(name, now) if name else self.cert_dir.default(now)
            if entry is not None:
                session.use_identity_of(entry.context)
                return
            covered = False
        else:
            covered = name is None or self._covered_by_default(name)
        relay = self.relay
        if name and relay is not None and name in relay.targets and not session.ech_accepted:
            if not covered:
                raise RelayHandoff(name, relay)
        if self.cert_dir is not None:
            raise TLSError(f"no certificate in --cert-dir {self.cert_dir.directory} covers "
                           f"{name if name else 'clients without SNI (every certificate has expired)'}")


def _outer_name(wire):
    if not wire:
        return None
    try:
        hello = ClientHelloReader().feed(wire)
        return hello.server_name if hello is not None else None
    except MalformedClientHello:
        return None


def connection_facts(session, wire=b"", public_names=()):
    """ConnectionFacts of a TLS session after its handshake.

    `wire` is what the client sent first (its ClientHello records), for the outer SNI when ECH was
    accepted; without it the outer name is the configured public name when there is exactly one.
    """
    ja4 = ja4_r = None
    if session.client_hello is not None:
        try:
            prints = fingerprint(parse_client_hello(session.client_hello))
            ja4, ja4_r = prints.ja4, prints.ja4_r
        except MalformedClientHello:
            pass  # BoringSSL accepted it, so this is our parser's gap; scripts see null
    accepted = session.ech_accepted
    # `inner` is the name served; `outer` the name in clear on the wire (the same without ECH).
    inner = outer = session.sni
    if accepted:
        outer = _outer_name(wire) or (public_names[0] if len(public_names) == 1 else None)
    info = {
        "tls": True,
        "tls_handshake_complete": session.handshake_complete,
        "alpn": session.alpn,
        "sni": {"inner": inner, "outer": outer},
        "ech": {"accepted": accepted} if public_names else None,
        "fingerprint": {"ja4": ja4, "ja4_r": ja4_r},
        "tls_client": {"certificate": None, "chain_fingerprints_sha256": []},
    }
    return ConnectionFacts(ja4, ja4_r, json.dumps(info, separators=(",", ":")))
