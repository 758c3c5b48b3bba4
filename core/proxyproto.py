"""PROXY protocol v1: the text line a load balancer sends before the client's bytes, parsed sans-IO.

`PROXY TCP4|TCP6 <src ip> <dst ip> <src port> <dst port>\\r\\n`, or `PROXY UNKNOWN ...\\r\\n`
(keep the socket's address), at most 107 bytes (HAProxy's spec, section 2.1). Only the
source address is used: it becomes the request's peer.
"""

import ipaddress

from zeroserve.core.errors import ProtocolError

MAX_LINE = 107
_SIGNATURE = b"PROXY "


def parse(buffer):
    """Parse a PROXY v1 line at the start of `buffer`.

    Returns None while the line is incomplete, else (peer, consumed): peer is
    (ip, port) of the original client, or None for UNKNOWN; consumed is the
    line's length. Raises ProtocolError when the bytes cannot be a PROXY line.
    """
    prefix = buffer[:len(_SIGNATURE)]
    if not _SIGNATURE.startswith(prefix):
        raise ProtocolError("the connection does not start with a PROXY protocol v1 line")
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
