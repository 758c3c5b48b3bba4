"""The scripts' zs_tls_ja4 helper: the connection's JA4, read from the connection info set once per connection."""

import json


def zs_tls_ja4(call, out, out_len, *_):
    """Write the JA4 fingerprint of the client's ClientHello as a C string ("" on plaintext)."""
    text = call.context.connection_info
    ja4 = json.loads(text)["fingerprint"]["ja4"] if text else None
    return call.write_cstring(out, out_len, (ja4 or "").encode("ascii"))
