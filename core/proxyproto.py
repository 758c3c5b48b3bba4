"""PROXY protocol v1 and v2: the header a load balancer sends before the client's bytes, parsed sans-IO.

v1 is a text line, `PROXY TCP4|TCP6 <src ip> <dst ip> <src port> <dst port>\\r\\n` or
`PROXY UNKNOWN ...\\r\\n`, at most 107 bytes (HAProxy's spec, section 2.1). v2 is binary
(section 2.2): a 12-byte signature, version and command, family and transport, a big-endian
length, then the addresses and TLVs. LOCAL (a health check), UNSPEC and UNIX keep the
socket's address; TLVs are skipped. Only the source address is used: it becomes the
request's peer.
"""

import ipaddress
import struct

from zeroserve.core.errors import ProtocolError

MAX_LINE = 107
# Addresses and TLVs of a v2 header; the spec allows 65535, real balancers send a few hundred.
MAX_V2_PAYLOAD = 4096
_SIGNATURE = b"PROXY "
_SIGNATURE_V2 = b"\r\n\r\n\x00\r\nQUIT\n"
_V2_HEAD = len(_SIGNATURE_V2) + 4
# v2 family nibble → (address block length, source ip length); a family absent here keeps the socket's address.
_V2_INET = {0x1: (12, 4), 0x2: (36, 16)}
_V2_KNOWN_FAMILIES = (0x0, 0x1, 0x2, 0x3)
_V2_STREAM_OR_UNSPEC = (0x0, 0x1)


def parse(buffer):
    """Parse a PROXY v1 line or v2 header at the start of `buffer`.

    Returns None while the header is incomplete, else (peer, consumed): peer is
    (ip, port) of the original client, or None to keep the socket's address;
    consumed is the header's length. Raises ProtocolError when the bytes cannot
    be a PROXY header.
    """
    if buffer[:1] == _SIGNATURE_V2[:1]:
        return _parse_v2(buffer)
    return _parse_v1(buffer)


def _parse_v1(buffer):
    prefix = buffer[:len(_SIGNATURE)]
    if not _SIGNATURE.startswith(prefix):
        raise ProtocolError("the connection does not start with a PROXY protocol header (v1 or v2)")
    end = buffer.find(b"\r\n", 0, MAX_LINE)
    if end < 0:
        if len(buffer) >= MAX_LINE:
            raise ProtocolError(f"PROXY line longer than {MAX_LINE} bytes")
        return None
    fields = buffer[len(_SIGNATURE):end].decode("ascii", "replace").split(" ")
    if fields[0] == "UNKNOWN":
        return None, end + 2
    if len(fields) != 5 or fields[0] not in ("TCP4", "TCP6"):
        raise ProtocolError(f"malformed PROXY line {bytes(buffer[:end])!r}")
    family, source, _destination, source_port, _destination_port = fields
    try:
        address = ipaddress.ip_address(source)
        port = int(source_port)
    except ValueError:
        raise ProtocolError(f"malformed PROXY line {bytes(buffer[:end])!r}") from None
    if address.version != (4 if family == "TCP4" else 6) or not 0 <= port <= 65535 or not source_port.isdigit():
        raise ProtocolError(f"malformed PROXY line {bytes(buffer[:end])!r}")
    return (str(address), port), end + 2


def _parse_v2(buffer):
    if not _SIGNATURE_V2.startswith(bytes(buffer[:len(_SIGNATURE_V2)])):
        raise ProtocolError("the connection does not start with a PROXY protocol header (v1 or v2)")
    if len(buffer) < _V2_HEAD:
        return None
    version_command, family_transport, length = struct.unpack_from("!BBH", buffer, len(_SIGNATURE_V2))
    version, command = version_command >> 4, version_command & 0xF
    family, transport = family_transport >> 4, family_transport & 0xF
    if version != 2 or command > 1:
        raise ProtocolError(f"PROXY v2 header with unknown version/command byte {version_command:#04x}")
    if family not in _V2_KNOWN_FAMILIES or transport > 2:
        raise ProtocolError(f"PROXY v2 header with unknown family/transport byte {family_transport:#04x}")
    if length > MAX_V2_PAYLOAD:
        raise ProtocolError(f"PROXY v2 header of {length} bytes after its head, more than {MAX_V2_PAYLOAD}")
    consumed = _V2_HEAD + length
    if len(buffer) < consumed:
        return None
    if command == 0 or family not in _V2_INET:  # LOCAL, UNSPEC or UNIX: keep the socket's address
        return None, consumed
    if transport not in _V2_STREAM_OR_UNSPEC:
        raise ProtocolError("PROXY v2 header for a datagram connection on a stream listener")
    block, ip_length = _V2_INET[family]
    if length < block:
        raise ProtocolError(f"PROXY v2 header too short for its addresses ({length} < {block} bytes)")
    source = ipaddress.ip_address(bytes(buffer[_V2_HEAD:_V2_HEAD + ip_length]))
    (port,) = struct.unpack_from("!H", buffer, _V2_HEAD + 2 * ip_length)
    return (str(source), port), consumed
