"""AWS SigV4 signing from Python: a checked wrapper over native/sigv4 (sigv4.h), the code the helpers run.

The plugin uses it to hand its credentials to the C helpers (``c_credentials``)
and tests use it to compare the signer with botocore byte for byte. Strings
go in as ``str`` (UTF-8) or ``bytes``; results come back as ``str``.
"""

from zeroserve.native._zsvm import ffi, lib

__all__ = ["c_credentials", "MAX_EXPIRES", "SigningError", "authorization", "canonical_request",
           "helper_functions", "presign"]

MAX_EXPIRES = lib.ZS_SIGV4_MAX_EXPIRES


class SigningError(Exception):
    """The signer refused its input or ran out of memory."""


def _bytes(value):
    return value if isinstance(value, bytes) else value.encode("utf-8")


def c_credentials(credentials):
    """A ``struct zs_sigv4_creds *`` owning a copy of `credentials` (None: empty ones), freed and wiped when dropped.

    It is the sigv4 helpers' cookie: empty credentials make them answer -1
    where they would need configured ones.
    """
    fields = [b"", b"", b""] if credentials is None else [
        _bytes(credentials.access_key), _bytes(credentials.secret_key), _bytes(credentials.token or "")]
    pointer = lib.zs_sigv4_creds_new(fields[0], len(fields[0]), fields[1], len(fields[1]), fields[2], len(fields[2]))
    if pointer == ffi.NULL:
        raise MemoryError("sigv4: out of memory for the credentials")
    return ffi.gc(pointer, lib.zs_sigv4_creds_free)


class _Request:
    """A ``struct zs_sigv4_request`` and the buffers it points to."""

    __slots__ = ("c", "_keep")

    def __init__(self, method, path, query, headers, payload_hash, region, service, timestamp):
        self._keep = []
        self.c = ffi.new("struct zs_sigv4_request *")
        for field, value in (("method", method), ("path", path), ("query", query),
                             ("payload_hash", payload_hash), ("region", region), ("service", service)):
            data = self._buffer(value)
            setattr(self.c, field, data)
            setattr(self.c, field + "_len", len(_bytes(value)))
        array = ffi.new("struct zs_sigv4_header[]", max(len(headers), 1))
        for i, (name, value) in enumerate(headers):
            array[i].name = self._buffer(name)
            array[i].name_len = len(_bytes(name))
            array[i].value = self._buffer(value)
            array[i].value_len = len(_bytes(value))
        self._keep.append(array)
        self.c.headers = array
        self.c.num_headers = len(headers)
        self.c.timestamp = int(timestamp)

    def _buffer(self, value):
        data = ffi.new("char[]", _bytes(value))
        self._keep.append(data)
        return data


def _result(rc, out, out_len, what):
    if rc == -2:
        raise SigningError(f"{what}: the input cannot be signed")
    if rc != 0:
        raise SigningError(f"{what}: out of memory")
    try:
        return ffi.unpack(out[0], out_len[0]).decode("utf-8")
    finally:
        lib.zs_sigv4_free(out[0])


def authorization(credentials, method, path, query, headers, payload_hash, region, service, timestamp):
    """The Authorization header value for a request; `headers` is [(name, value)], `timestamp` Unix seconds."""
    request = _Request(method, path, query, headers, payload_hash, region, service, timestamp)
    creds, out, out_len = c_credentials(credentials), ffi.new("char **"), ffi.new("size_t *")
    rc = lib.zs_sigv4_authorization(request.c, creds, out, out_len)
    return _result(rc, out, out_len, "authorization")


def presign(credentials, method, path, query, headers, region, service, timestamp, expires):
    """The presigned "path?query" of a request, valid `expires` seconds (1..MAX_EXPIRES)."""
    request = _Request(method, path, query, headers, "", region, service, timestamp)
    creds, out, out_len = c_credentials(credentials), ffi.new("char **"), ffi.new("size_t *")
    rc = lib.zs_sigv4_presign(request.c, creds, expires, out, out_len)
    return _result(rc, out, out_len, "presign")


def canonical_request(method, path, query, headers, payload_hash, region, service):
    """The canonical request header mode signs (to diagnose a signature mismatch)."""
    request = _Request(method, path, query, headers, payload_hash, region, service, 0)
    out, out_len = ffi.new("char **"), ffi.new("size_t *")
    return _result(lib.zs_sigv4_canonical_request(request.c, out, out_len), out, out_len, "canonical request")


def helper_functions():
    """{helper name: C function pointer} of the sigv4 helpers."""
    count = ffi.new("size_t *")
    table = lib.zs_sigv4_helpers(count)
    return {ffi.string(table[i].name).decode(): table[i].fn for i in range(count[0])}
