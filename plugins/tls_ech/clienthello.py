"""Sans-IO TLS ClientHello parsing: a handshake body into its fields, or TLS records from the wire into one.

`parse_client_hello(body)` reads the ClientHello message body (what BoringSSL's early callback hands us:
legacy_version up to the end of the extensions). `ClientHelloReader` takes the bytes a client sends, in
any pieces, reassembles the handshake message from its records and keeps every byte it was given, so that
a relay can replay them verbatim. Every length read from the wire is checked against what remains before
it is used; malformed input raises MalformedClientHello, never IndexError or a short slice.
"""

from dataclasses import dataclass

from zeroserve.core.errors import ProtocolError

EXT_SERVER_NAME = 0x0000
EXT_SIGNATURE_ALGORITHMS = 0x000D
EXT_ALPN = 0x0010
EXT_SUPPORTED_VERSIONS = 0x002B
EXT_ENCRYPTED_CLIENT_HELLO = 0xFE0D

_RECORD_HANDSHAKE = 22
_HANDSHAKE_CLIENT_HELLO = 1
_RECORD_HEADER = 5
_HANDSHAKE_HEADER = 4
# A ClientHello is at most a few KiB (post-quantum key shares included); a bound keeps a slow client from
# making the reader buffer without end.
MAX_CLIENT_HELLO = 64 * 1024


class MalformedClientHello(ProtocolError):
    """The bytes are not a well-formed TLS ClientHello; the message says where it breaks."""


def is_grease(value):
    """True for the RFC 8701 GREASE values 0x0a0a, 0x1a1a, ... 0xfafa."""
    return (value & 0x0F0F) == 0x0A0A and (value >> 8) == (value & 0xFF)


class _Cursor:
    """Reads big-endian fields from bytes, checking each length against what is left."""

    __slots__ = ("data", "position", "end", "what")

    def __init__(self, data, what, start=0, end=None):
        self.data = data
        self.position = start
        self.end = len(data) if end is None else end
        self.what = what

    def remaining(self):
        return self.end - self.position

    def take(self, count, field):
        if count > self.end - self.position:
            raise MalformedClientHello(
                f"{self.what}: {field} needs {count} bytes but only {self.end - self.position} are left"
            )
        start = self.position
        self.position += count
        return self.data[start:self.position]

    def integer(self, size, field):
        return int.from_bytes(self.take(size, field), "big")

    def vector(self, length_size, field):
        """A length-prefixed byte string, as a cursor over its contents."""
        length = self.integer(length_size, f"{field} length")
        if length > self.end - self.position:
            raise MalformedClientHello(
                f"{self.what}: {field} claims {length} bytes but only {self.end - self.position} are left"
            )
        inner = _Cursor(self.data, f"{self.what} {field}", self.position, self.position + length)
        self.position += length
        return inner

    def rest(self):
        return self.take(self.end - self.position, "rest")


def _u16_list(cursor, field):
    if cursor.remaining() % 2:
        raise MalformedClientHello(f"{cursor.what}: {field} has an odd length")
    return [cursor.integer(2, field) for _ in range(cursor.remaining() // 2)]


@dataclass(frozen=True, slots=True)
class ClientHello:
    """The fields of one ClientHello; lists keep the client's order, GREASE values included."""

    legacy_version: int
    random: bytes
    session_id: bytes
    cipher_suites: tuple
    compression_methods: bytes
    extensions: tuple  # ((type, body), ...) in wire order

    def extension(self, extension_type):
        """The body of the first extension of this type, or None."""
        for kind, body in self.extensions:
            if kind == extension_type:
                return body
        return None

    @property
    def server_name(self):
        """The host_name of the SNI extension (lowercased ASCII), or None when there is none."""
        body = self.extension(EXT_SERVER_NAME)
        if body is None:
            return None
        names = _Cursor(body, "server_name").vector(2, "server_name_list")
        while names.remaining():
            name_type = names.integer(1, "name_type")
            name = names.vector(2, "host_name").rest()
            if name_type == 0:
                return name.decode("ascii", "replace").lower()
        return None

    @property
    def alpn_protocols(self):
        """The ALPN protocol names (bytes), in the client's order; empty without the extension."""
        body = self.extension(EXT_ALPN)
        if body is None:
            return ()
        names = _Cursor(body, "ALPN").vector(2, "protocol_name_list")
        protocols = []
        while names.remaining():
            protocols.append(names.vector(1, "protocol_name").rest())
        return tuple(protocols)

    @property
    def supported_versions(self):
        """The versions of the supported_versions extension, in order; empty without it."""
        body = self.extension(EXT_SUPPORTED_VERSIONS)
        if body is None:
            return ()
        return tuple(_u16_list(_Cursor(body, "supported_versions").vector(1, "versions"), "versions"))

    @property
    def signature_algorithms(self):
        """The signature schemes of the signature_algorithms extension, in order; empty without it."""
        body = self.extension(EXT_SIGNATURE_ALGORITHMS)
        if body is None:
            return ()
        return tuple(_u16_list(_Cursor(body, "signature_algorithms").vector(2, "schemes"), "schemes"))


def parse_client_hello(body):
    """Parse a ClientHello message body (no handshake header); trailing bytes after the extensions are an error."""
    cursor = _Cursor(bytes(body), "ClientHello")
    legacy_version = cursor.integer(2, "legacy_version")
    random = cursor.take(32, "random")
    session_id = cursor.vector(1, "legacy_session_id").rest()
    if len(session_id) > 32:
        raise MalformedClientHello(f"ClientHello: legacy_session_id is {len(session_id)} bytes, at most 32 allowed")
    cipher_suites = _u16_list(cursor.vector(2, "cipher_suites"), "cipher_suites")
    compression_methods = cursor.vector(1, "legacy_compression_methods").rest()
    extensions = []
    if cursor.remaining():  # a hello without extensions is legal (TLS 1.2 and older)
        block = cursor.vector(2, "extensions")
        while block.remaining():
            kind = block.integer(2, "extension type")
            extensions.append((kind, block.vector(2, f"extension {kind:#06x}").rest()))
    if cursor.remaining():
        raise MalformedClientHello(f"ClientHello: {cursor.remaining()} bytes after the extensions")
    return ClientHello(legacy_version, random, session_id, tuple(cipher_suites), compression_methods,
                       tuple(extensions))


class ClientHelloReader:
    """Reassembles the first ClientHello from TLS records fed in any pieces, keeping every byte received.

    feed(data) returns the ClientHello once its last byte arrived, else None; bytes after it (the next
    records) are kept in `received` but not parsed. A stream that is not a TLS handshake raises
    MalformedClientHello at the first byte that shows it.
    """

    __slots__ = ("received", "_message", "_offset", "client_hello")

    def __init__(self):
        self.received = bytearray()  # every byte fed, for a verbatim replay
        self._message = bytearray()  # the handshake message bytes gathered from the records so far
        self._offset = 0  # where the next unread record starts in `received`
        self.client_hello = None

    def feed(self, data):
        """Add bytes from the client; the ClientHello when it is complete (once), else None."""
        self.received += data
        if self.client_hello is not None:
            return None
        while True:
            header = self.received[self._offset:self._offset + _RECORD_HEADER]
            if len(header) >= 1 and header[0] != _RECORD_HANDSHAKE:
                raise MalformedClientHello(f"TLS record: content type {header[0]} is not a handshake (22)")
            if len(header) >= 2 and header[1] != 3:
                raise MalformedClientHello(f"TLS record: version major byte {header[1]} is not 3")
            if len(header) < _RECORD_HEADER:
                return None
            length = int.from_bytes(header[3:5], "big")
            if length == 0 or length > 16384 + 256:
                raise MalformedClientHello(f"TLS record: length {length} is outside 1..16640")
            start = self._offset + _RECORD_HEADER
            if len(self.received) < start + length:
                return None
            self._message += self.received[start:start + length]
            self._offset = start + length
            hello = self._message_complete()
            if hello is not None:
                self.client_hello = hello
                return hello

    def _message_complete(self):
        message = self._message
        if message[0] != _HANDSHAKE_CLIENT_HELLO:
            raise MalformedClientHello(f"handshake: message type {message[0]} is not ClientHello (1)")
        if len(message) < _HANDSHAKE_HEADER:
            return None
        length = int.from_bytes(message[1:4], "big")
        if length > MAX_CLIENT_HELLO:
            raise MalformedClientHello(f"handshake: ClientHello of {length} bytes exceeds {MAX_CLIENT_HELLO}")
        if len(message) < _HANDSHAKE_HEADER + length:
            return None
        return parse_client_hello(bytes(message[_HANDSHAKE_HEADER:_HANDSHAKE_HEADER + length]))
