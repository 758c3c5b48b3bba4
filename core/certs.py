"""The zero-config certificate: a self-signed certificate for localhost and 127.0.0.1, made once and kept.

`zeroserve run site.tar` without --cert/--key serves HTTPS with this certificate. It lives in the state
directory ($XDG_STATE_HOME/zeroserve, else ~/.local/state/zeroserve, or a directory given by the caller)
and is reused on later starts, so a browser exception or a trusted copy keeps working; it is replaced only
when it is missing, unreadable or about to expire.
"""
import dataclasses
import datetime
import fcntl
import ipaddress
import os
import pathlib

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from zeroserve.core.errors import ConfigError

CERT_FILE = "localhost-cert.pem"
KEY_FILE = "localhost-key.pem"
DNS_NAMES = ("localhost",)
IP_ADDRESSES = ("127.0.0.1", "::1")
VALIDITY = datetime.timedelta(days=365)
# Renew this long before expiry, so a running server is not caught out by the deadline.
RENEW_BEFORE = datetime.timedelta(days=7)


@dataclasses.dataclass(frozen=True)
class SelfSignedCertificate:
    """Where the zero-config certificate and key are, and the certificate's SHA-256 fingerprint."""

    cert_path: pathlib.Path
    key_path: pathlib.Path
    fingerprint: str  # SHA-256 of the DER certificate, as colon-separated upper-case hex
    created: bool  # True when this call made a new certificate


def default_state_dir():
    """$XDG_STATE_HOME/zeroserve if XDG_STATE_HOME is set (and absolute), else ~/.local/state/zeroserve."""
    xdg = os.environ.get("XDG_STATE_HOME", "")
    base = pathlib.Path(xdg) if os.path.isabs(xdg) else pathlib.Path.home() / ".local" / "state"
    return base / "zeroserve"


def fingerprint(certificate):
    """The SHA-256 fingerprint of a certificate, as browsers and `openssl x509 -fingerprint` show it."""
    return ":".join(f"{byte:02X}" for byte in certificate.fingerprint(hashes.SHA256()))


def ensure_self_signed(state_dir=None, *, now=None):
    """Return the state directory's self-signed certificate, making it first if needed.

    A lock file serialises concurrent starts, so two processes never write a mismatched pair.
    """
    state_dir = pathlib.Path(state_dir) if state_dir is not None else default_state_dir()
    now = now or datetime.datetime.now(datetime.timezone.utc)
    try:
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        lock = open(state_dir / ".lock", "w")
    except OSError as exc:
        raise ConfigError(
            f"state directory {state_dir} cannot be used ({exc.strerror}): "
            "set XDG_STATE_HOME to a writable directory or give --cert and --key"
        ) from None
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        cert_path, key_path = state_dir / CERT_FILE, state_dir / KEY_FILE
        certificate = _load_usable(cert_path, key_path, now)
        created = certificate is None
        if created:
            certificate = _create(cert_path, key_path, now)
    return SelfSignedCertificate(cert_path, key_path, fingerprint(certificate), created)


def _load_usable(cert_path, key_path, now):
    """The stored certificate if both files parse, belong together and stay valid past RENEW_BEFORE."""
    try:
        certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError):
        return None
    if certificate.public_key().public_numbers() != key.public_key().public_numbers():
        return None
    if certificate.not_valid_after_utc - RENEW_BEFORE < now:
        return None
    return certificate


def _create(cert_path, key_path, now):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost (zeroserve self-signed)")])
    alt_names = [x509.DNSName(n) for n in DNS_NAMES] + [x509.IPAddress(ipaddress.ip_address(a)) for a in IP_ADDRESSES]
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))  # tolerate a client clock slightly behind
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        # No keyUsage: BoringSSL accepts a self-signed trust anchor only if a keyUsage, when present,
        # includes keyCertSign, which a leaf should not claim; without the extension every verifier agrees.
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    _write(key_path, key_pem, 0o600)
    _write(cert_path, certificate.public_bytes(serialization.Encoding.PEM), 0o644)
    return certificate


def _write(path, data, mode):
    """Write through a temporary file and rename, so a reader never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
