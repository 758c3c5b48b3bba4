"""ECH keys: the ECHConfig wire format, the PEM key files (the original's format), generation and loading.

A key file holds one or more pairs of PEM blocks, `ECH PRIVATE KEY` (the raw 32-byte X25519 private key)
followed by `ECH CONFIG` (one serialised ECHConfig, version and length included). `--ech-key` names such
a file or a directory of them; every pair is installed, and offered to clients as a retry config.
"""

import base64
import os
import pathlib
import re
import secrets
import sys
from dataclasses import dataclass

from zeroserve.core import worldfiles
from zeroserve.core.errors import ConfigError
from zeroserve.native.boringssl import check, check_ptr, drain_errors, ffi, lib

ECH_VERSION = 0xFE0D  # RFC 9849 (draft-ietf-tls-esni-22 wire format)
KEM_X25519_HKDF_SHA256 = 0x0020
KDF_HKDF_SHA256 = 0x0001
AEAD_AES_128_GCM = 0x0001
_KEY_LABEL = "ECH PRIVATE KEY"
_CONFIG_LABEL = "ECH CONFIG"
_PEM_BLOCK = re.compile(r"-----BEGIN ([A-Z ]+)-----\s*(.*?)-----END \1-----", re.DOTALL)
_DNS_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


@dataclass(frozen=True, slots=True)
class ECHConfig:
    """One ECHConfig (version 0xfe0d): what a client needs to encrypt its ClientHello to us."""

    config_id: int
    kem_id: int
    public_key: bytes
    cipher_suites: tuple  # ((kdf_id, aead_id), ...)
    maximum_name_length: int
    public_name: str
    extensions: bytes

    def encode(self):
        """The ECHConfig as sent on the wire: version, length, contents."""
        suites = b"".join(kdf.to_bytes(2, "big") + aead.to_bytes(2, "big") for kdf, aead in self.cipher_suites)
        name = self.public_name.encode("ascii")
        contents = (
            bytes([self.config_id]) + self.kem_id.to_bytes(2, "big")
            + len(self.public_key).to_bytes(2, "big") + self.public_key
            + len(suites).to_bytes(2, "big") + suites
            + bytes([self.maximum_name_length]) + bytes([len(name)]) + name
            + len(self.extensions).to_bytes(2, "big") + self.extensions
        )
        return ECH_VERSION.to_bytes(2, "big") + len(contents).to_bytes(2, "big") + contents

    @classmethod
    def decode(cls, data, where="ECHConfig"):
        """Parse one serialised ECHConfig that fills `data` exactly; ConfigError names `where`."""
        def take(count, field):
            nonlocal position
            if count > len(data) - position:
                raise ConfigError(f"{where}: {field} runs past the end of the ECHConfig ({len(data)} bytes)")
            position += count
            return data[position - count:position]

        position = 0
        version = int.from_bytes(take(2, "version"), "big")
        if version != ECH_VERSION:
            raise ConfigError(f"{where}: ECHConfig version {version:#06x} is not {ECH_VERSION:#06x}")
        length = int.from_bytes(take(2, "length"), "big")
        if length != len(data) - 4:
            raise ConfigError(f"{where}: ECHConfig length {length} does not match its {len(data) - 4} bytes")
        config_id = take(1, "config_id")[0]
        kem_id = int.from_bytes(take(2, "kem_id"), "big")
        public_key = take(int.from_bytes(take(2, "public_key length"), "big"), "public_key")
        suite_bytes = take(int.from_bytes(take(2, "cipher_suites length"), "big"), "cipher_suites")
        if not suite_bytes or len(suite_bytes) % 4:
            raise ConfigError(f"{where}: cipher_suites must hold one or more 4-byte suites")
        suites = tuple((int.from_bytes(suite_bytes[i:i + 2], "big"), int.from_bytes(suite_bytes[i + 2:i + 4], "big"))
                       for i in range(0, len(suite_bytes), 4))
        maximum_name_length = take(1, "maximum_name_length")[0]
        name = take(take(1, "public_name length")[0], "public_name")
        extensions = take(int.from_bytes(take(2, "extensions length"), "big"), "extensions")
        if position != len(data):
            raise ConfigError(f"{where}: {len(data) - position} bytes after the ECHConfig's extensions")
        try:
            public_name = check_public_name(name.decode("ascii"))
        except (UnicodeDecodeError, ConfigError):
            raise ConfigError(f"{where}: public_name {name!r} is not a DNS name") from None
        return cls(config_id, kem_id, public_key, suites, maximum_name_length, public_name, extensions)


def config_list(configs):
    """The ECHConfigList (2-byte length, then the configs) clients and DNS HTTPS records take."""
    body = b"".join(config.encode() for config in configs)
    return len(body).to_bytes(2, "big") + body


def check_public_name(name):
    """The public name lowercased; ConfigError unless it is a DNS name (not an IP address, no wildcard)."""
    lowered = name.lower().rstrip(".")
    labels = lowered.split(".")
    if (not lowered or len(lowered) > 253 or not all(_DNS_LABEL.match(label) for label in labels)
            or labels[-1].isdigit()):
        raise ConfigError(f"ECH public name {name!r} is not a DNS host name: give the name of the cover site, "
                          "e.g. public.example.com")
    return lowered


@dataclass(frozen=True, slots=True)
class ECHKey:
    """One loaded key: the raw X25519 private key, its ECHConfig and the file it came from."""

    private_key: bytes
    config: ECHConfig
    source: str


def _hpke_key(private_key):
    key = ffi.gc(check_ptr(lib.EVP_HPKE_KEY_new(), "EVP_HPKE_KEY_new"), lib.EVP_HPKE_KEY_free)
    check(lib.EVP_HPKE_KEY_init(key, lib.EVP_hpke_x25519_hkdf_sha256(), private_key, len(private_key)),
          "EVP_HPKE_KEY_init")
    return key


def _public_key_of(hpke_key):
    out = ffi.new("uint8_t[]", 32)
    length = ffi.new("size_t *")
    check(lib.EVP_HPKE_KEY_public_key(hpke_key, out, length, 32), "EVP_HPKE_KEY_public_key")
    return bytes(ffi.buffer(out, length[0]))


def generate(public_name, config_id=None):
    """A new ECHKey: a random X25519 key and config_id, HKDF-SHA256 / AES-128-GCM, no name padding hint."""
    public_name = check_public_name(public_name)
    hpke_key = ffi.gc(check_ptr(lib.EVP_HPKE_KEY_new(), "EVP_HPKE_KEY_new"), lib.EVP_HPKE_KEY_free)
    check(lib.EVP_HPKE_KEY_generate(hpke_key, lib.EVP_hpke_x25519_hkdf_sha256()), "EVP_HPKE_KEY_generate")
    private = ffi.new("uint8_t[]", 32)
    length = ffi.new("size_t *")
    check(lib.EVP_HPKE_KEY_private_key(hpke_key, private, length, 32), "EVP_HPKE_KEY_private_key")
    config = ECHConfig(
        config_id=secrets.randbelow(256) if config_id is None else config_id,
        kem_id=KEM_X25519_HKDF_SHA256,
        public_key=_public_key_of(hpke_key),
        cipher_suites=((KDF_HKDF_SHA256, AEAD_AES_128_GCM),),
        maximum_name_length=0,
        public_name=public_name,
        extensions=b"",
    )
    return ECHKey(bytes(ffi.buffer(private, length[0])), config, "generated")


def _pem(label, data):
    text = base64.b64encode(data).decode("ascii")
    lines = "\n".join(text[i:i + 64] for i in range(0, len(text), 64))
    return f"-----BEGIN {label}-----\n{lines}\n-----END {label}-----\n"


def to_pem(key):
    """The key in the original's PEM format: the private key block, then the config block."""
    return _pem(_KEY_LABEL, key.private_key) + _pem(_CONFIG_LABEL, key.config.encode())


def parse_pem(text, source):
    """The ECHKeys of one file's text: pairs of key and config blocks, in that order; anything else is an error."""
    blocks = [(m.group(1), m.group(2)) for m in _PEM_BLOCK.finditer(text)]
    leftover = _PEM_BLOCK.sub("", text).strip()
    if leftover:
        raise ConfigError(f"ECH key file {source}: text outside PEM blocks ({leftover[:40]!r}); "
                          "make the file with 'zeroserve ech-keygen'")
    if not blocks:
        raise ConfigError(f"ECH key file {source} holds no ECH key: make one with 'zeroserve ech-keygen'")
    keys = []
    for index in range(0, len(blocks), 2):
        pair = blocks[index:index + 2]
        labels = [label for label, _ in pair]
        if labels != [_KEY_LABEL, _CONFIG_LABEL]:
            raise ConfigError(f"ECH key file {source}: block {index + 1} and {index + 2} are {labels}, expected "
                              f"an '{_KEY_LABEL}' followed by an '{_CONFIG_LABEL}'")
        try:
            private_key, config_bytes = (base64.b64decode(body, validate=False) for _, body in pair)
        except ValueError as exc:
            raise ConfigError(f"ECH key file {source}: a block is not valid base64 ({exc})") from None
        if len(private_key) != 32:
            raise ConfigError(f"ECH key file {source}: the private key is {len(private_key)} bytes, not 32")
        config = ECHConfig.decode(config_bytes, f"ECH key file {source}")
        if config.kem_id != KEM_X25519_HKDF_SHA256:
            raise ConfigError(f"ECH key file {source}: KEM {config.kem_id:#06x} is not X25519 (0x0020)")
        if _public_key_of(_hpke_key(private_key)) != config.public_key:
            raise ConfigError(f"ECH key file {source}: the private key does not belong to the config's public key")
        keys.append(ECHKey(private_key, config, source))
    return keys


def load(path):
    """Every ECHKey of --ech-key PATH (a file, or a directory of files read in sorted order)."""
    path = pathlib.Path(path)
    what = worldfiles.kind(path)
    if what == worldfiles.DIRECTORY:
        files = [path / name for name in worldfiles.list_dir(path)
                 if not name.startswith(".") and worldfiles.kind(path / name) == worldfiles.FILE]
        if not files:
            raise ConfigError(f"--ech-key directory {path} holds no key files: add one made with "
                              "'zeroserve ech-keygen'")
    elif what is not None:
        files = [path]
    else:
        raise ConfigError(f"--ech-key {path} does not exist: give a key file or a directory of them")
    keys = []
    for file in files:
        try:
            text = worldfiles.read_bytes(file).decode("ascii")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"ECH key file {file} cannot be read: {exc}") from None
        keys.extend(parse_pem(text, str(file)))
    seen = {}
    for key in keys:
        if key.config.config_id in seen:
            raise ConfigError(f"ECH config_id {key.config.config_id:#04x} is used by both {seen[key.config.config_id]} "
                              f"and {key.source}: generate one of them again")
        seen[key.config.config_id] = key.source
    return keys


def build_ssl_keys(keys):
    """An SSL_ECH_KEYS holding every key, each also offered as a retry config."""
    ssl_keys = ffi.gc(check_ptr(lib.SSL_ECH_KEYS_new(), "SSL_ECH_KEYS_new"), lib.SSL_ECH_KEYS_free)
    for key in keys:
        encoded = key.config.encode()
        if lib.SSL_ECH_KEYS_add(ssl_keys, 1, encoded, len(encoded), _hpke_key(key.private_key)) != 1:
            reasons = "; ".join(drain_errors()) or "BoringSSL gave no reason"
            raise ConfigError(f"ECH key from {key.source} was refused by BoringSSL ({reasons})")
    return ssl_keys


def public_names(keys):
    """The sorted, deduplicated public names of the keys (the names the relay answers for)."""
    return tuple(sorted({key.config.public_name for key in keys}))


def keygen(public_name, output=None, stdout=None, stderr=None):
    """`zeroserve ech-keygen`: make a key, write its PEM (to `output` with mode 0600, else stdout), print the record."""
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    key = generate(public_name)
    pem = to_pem(key)
    if output is None:
        stdout.write(pem)
    else:
        try:
            descriptor = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        except OSError as exc:
            raise ConfigError(f"cannot write ECH key file {output}: {exc.strerror}") from None
        with os.fdopen(descriptor, "w") as file:
            file.write(pem)
    stderr.write(f"Generated ECH key for public name {key.config.public_name}\n")
    stderr.write(f"config_id: {key.config.config_id:#04x}\n")
    stderr.write(f'ech="{base64.b64encode(config_list([key.config])).decode()}"\n')
    return 0
