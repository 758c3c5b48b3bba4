"""The hook the tls_ech plugin offers other plugins: see every ClientHello, choose its certificate or refuse it."""

import pluggy

hookspec = pluggy.HookspecMarker("zeroserve")


@hookspec(firstresult=True)
def zeroserve_tls_client_hello(hello):
    """Choose the certificate of one TLS handshake, or refuse it.

    Called in BoringSSL's early ClientHello callback, once per handshake, before --cert-dir selection
    and the ECH relay decision. ``hello`` is a ``zeroserve.plugins.tls_ech.handshake.ClientHelloInfo``
    (SNI, offered ALPN, JA4 and JA4_r, whether ECH was accepted, the raw ClientHello). Return a
    ``zeroserve.core.tls.ServerContext`` built (at load time, not here) with the world's ticket keys to
    serve its certificate, or None to let the next plugin or the server's own certificates decide. Raise
    ``zeroserve.core.errors.TLSError`` to refuse the connection. This runs on every handshake: keep it to
    dictionary lookups.
    """
