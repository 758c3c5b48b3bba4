"""--cert-dir: certificates and keys read from a directory, paired by public key, chosen per SNI by DNS SAN.

Every regular file (sorted by path; no naming convention) may hold a PEM certificate chain, a PEM private
key, or both. A chain's leaf is paired with the key whose public key equals the leaf's. A client with SNI
gets the first pair, in path order, that has not expired and whose DNS SANs cover the name (exact, or a
`*.` wildcard standing for exactly one label; the CN and IP SANs do not count); a client without SNI gets
the first pair that has not expired. Expiry is judged at handshake time.
"""

import datetime
import logging
import pathlib
import re
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from zeroserve.core import worldfiles
from zeroserve.core.errors import ConfigError
from zeroserve.core.tls import Identity, ServerContext

log = logging.getLogger(__name__)

_CERT_BLOCK = re.compile(rb"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", re.DOTALL)
_KEY_BLOCK = re.compile(rb"-----BEGIN ((?:RSA |EC |ENCRYPTED )?PRIVATE KEY)-----.*?-----END \1-----", re.DOTALL)


def _spki(public_key):
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def dns_names(certificate):
    """The lowercase DNS SANs of a cryptography certificate (the CN and IP SANs do not count)."""
    try:
        sans = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    return tuple(name.lower().rstrip(".") for name in sans.get_values_for_type(x509.DNSName))


def name_matches(pattern, name):
    """True when a DNS SAN (exact or one-label `*.` wildcard, lowercase) covers the lowercase host name."""
    if pattern.startswith("*."):
        head, dot, rest = name.partition(".")
        return bool(head) and bool(dot) and rest == pattern[2:]
    return pattern == name


@dataclass(frozen=True, slots=True, eq=False)
class CertEntry:
    """One certificate chain with its key: its DNS SANs, expiry and the ServerContext serving it."""

    cert_path: str
    key_path: str
    dns_names: tuple
    not_after: datetime.datetime
    identity: Identity
    context: ServerContext | None

    def expired(self, now):
        return now > self.not_after

    def covers(self, name):
        return any(name_matches(pattern, name) for pattern in self.dns_names)


@dataclass(frozen=True, slots=True)
class CertDirectory:
    """The pairs found in a --cert-dir, in path order."""

    directory: str
    entries: tuple

    @classmethod
    def load(cls, directory):
        """Read and pair every file of the directory; ConfigError says what is missing where."""
        root = pathlib.Path(directory)
        if worldfiles.kind(root) != worldfiles.DIRECTORY:
            raise ConfigError(f"--cert-dir {directory} is not a directory: give a directory of PEM files")
        chains = []  # (path, leaf)
        keys = {}  # SubjectPublicKeyInfo DER -> path
        for path in (root / name for name in worldfiles.list_dir(root)):
            if worldfiles.kind(path) != worldfiles.FILE:
                continue
            try:
                data = worldfiles.read_bytes(path)
            except OSError as exc:
                raise ConfigError(f"--cert-dir file {path} cannot be read: {exc.strerror}") from None
            certificates = _CERT_BLOCK.findall(data)
            if certificates:
                try:
                    leaf = x509.load_pem_x509_certificate(certificates[0])
                except ValueError as exc:
                    raise ConfigError(f"--cert-dir file {path}: the first certificate is damaged ({exc})") from None
                chains.append((path, leaf))
            for match in _KEY_BLOCK.finditer(data):
                if match.group(1) == b"ENCRYPTED PRIVATE KEY":
                    raise ConfigError(f"--cert-dir file {path} holds an encrypted key: store it unencrypted")
                try:
                    key = serialization.load_pem_private_key(match.group(0), password=None)
                except (ValueError, TypeError) as exc:
                    raise ConfigError(f"--cert-dir file {path}: a private key is damaged ({exc})") from None
                keys.setdefault(_spki(key.public_key()), path)
        if not chains:
            raise ConfigError(f"--cert-dir {directory} holds no PEM certificate: add certificate files")
        if not keys:
            raise ConfigError(f"--cert-dir {directory} holds no PEM private key: add the certificates' key files")
        used_keys = set()
        entries = []
        for path, leaf in chains:
            spki = _spki(leaf.public_key())
            key_path = keys.get(spki)
            if key_path is None:
                log.warning("--cert-dir: certificate %s has no matching private key in %s; skipped", path, directory)
                continue
            used_keys.add(spki)
            entries.append(CertEntry(str(path), str(key_path), dns_names(leaf), leaf.not_valid_after_utc,
                                     Identity.load(path, key_path), None))
        for spki, key_path in keys.items():
            if spki not in used_keys:
                raise ConfigError(f"--cert-dir key {key_path} belongs to no certificate in {directory}: "
                                  "add its certificate or remove the key")
        if not entries:
            raise ConfigError(f"--cert-dir {directory}: no certificate has its private key (checked by public key)")
        now = datetime.datetime.now(datetime.timezone.utc)
        if all(entry.expired(now) for entry in entries):
            raise ConfigError(f"--cert-dir {directory}: every certificate has expired (the latest on "
                              f"{max(e.not_after for e in entries):%Y-%m-%d}); renew them")
        return cls(str(directory), tuple(entries))

    def with_contexts(self, ticket_keys, ech_keys):
        """The same entries, each with its own ServerContext (sharing ticket keys and ECH keys)."""
        return CertDirectory(self.directory, tuple(
            CertEntry(e.cert_path, e.key_path, e.dns_names, e.not_after, e.identity,
                      ServerContext(e.identity, ticket_keys, ech_keys=ech_keys))
            for e in self.entries))

    def default(self, now):
        """The entry for clients without SNI: the first that has not expired, or None."""
        return next((entry for entry in self.entries if not entry.expired(now)), None)

    def select(self, name, now):
        """The first unexpired entry covering the lowercase host name, or None."""
        return next((entry for entry in self.entries if not entry.expired(now) and entry.covers(name)), None)
