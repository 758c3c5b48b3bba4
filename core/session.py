"""The byte transport between a socket and the HTTP layer: plaintext here, TLS in tls.py.

HTTP code sees only this interface, so it never knows whether it runs over TLS.
Sessions are sans-IO: the connection feeds them bytes read from the socket and
writes whatever they return.
"""


class PlainSession:
    """The identity transport of the plaintext listener."""

    __slots__ = ()

    is_tls = False
    handshake_complete = True
    alpn = None
    sni = None

    def receive(self, data):
        """Bytes from the socket in; (plaintext for HTTP, bytes to send back) out."""
        return data, b""

    def send(self, plaintext):
        """Plaintext from HTTP in; bytes for the socket out."""
        return plaintext

    def close(self):
        """Bytes to send before closing the socket."""
        return b""
