"""The JA4 TLS client fingerprint (FoxIO's JA4 specification) and its raw form JA4_r, from a parsed ClientHello.

JA4 is `t{version}{d|i}{ciphers:02}{extensions:02}{alpn}_{cipher hash}_{extension hash}`: GREASE values
are left out everywhere, counts stop at 99, ciphers and extensions are sorted by value, SNI and ALPN are
counted but left out of the extension list, and signature algorithms keep the client's order. JA4_r has
the same first part followed by the lists themselves instead of their truncated SHA-256.
"""

import hashlib
from dataclasses import dataclass

from zeroserve.plugins.tls_ech.clienthello import EXT_ALPN, EXT_SERVER_NAME, is_grease

_VERSIONS = {
    0x0304: "13", 0x0303: "12", 0x0302: "11", 0x0301: "10", 0x0300: "s3", 0x0002: "s2",
    0xFEFF: "d1", 0xFEFD: "d2", 0xFEFC: "d3",
}
_EMPTY_HASH = "000000000000"


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """JA4 and JA4_r of one ClientHello."""

    ja4: str
    ja4_r: str


def _version(hello):
    offered = [version for version in hello.supported_versions if not is_grease(version)]
    version = max(offered) if offered else hello.legacy_version
    return _VERSIONS.get(version, "00")


def _alpn_code(hello):
    protocols = hello.alpn_protocols
    if not protocols or not protocols[0]:
        return "00"
    first = protocols[0]
    head, tail = chr(first[0]), chr(first[-1])
    if head.isascii() and head.isalnum() and tail.isascii() and tail.isalnum():
        return head + tail
    # Not printable: the first hex digit of the first byte and the last hex digit of the last byte.
    return f"{first[0]:02x}"[0] + f"{first[-1]:02x}"[1]


def _hash12(text):
    return hashlib.sha256(text.encode("ascii")).hexdigest()[:12] if text else _EMPTY_HASH


def fingerprint(hello, transport="t"):
    """The Fingerprint of a ClientHello; transport is "t" (TCP), "q" (QUIC) or "d" (DTLS)."""
    ciphers = sorted(c for c in hello.cipher_suites if not is_grease(c))
    extension_types = [kind for kind, _ in hello.extensions if not is_grease(kind)]
    sni = "d" if EXT_SERVER_NAME in extension_types else "i"
    prefix = (f"{transport}{_version(hello)}{sni}{min(len(ciphers), 99):02d}"
              f"{min(len(extension_types), 99):02d}{_alpn_code(hello)}")
    cipher_list = ",".join(f"{c:04x}" for c in ciphers)
    extension_list = ",".join(
        f"{kind:04x}" for kind in sorted(extension_types) if kind not in (EXT_SERVER_NAME, EXT_ALPN)
    )
    algorithms = ",".join(f"{a:04x}" for a in hello.signature_algorithms if not is_grease(a))
    extension_text = f"{extension_list}_{algorithms}" if algorithms else extension_list
    ja4 = f"{prefix}_{_hash12(cipher_list)}_{_hash12(extension_text) if extension_list else _EMPTY_HASH}"
    return Fingerprint(ja4, f"{prefix}_{cipher_list}_{extension_text}")
