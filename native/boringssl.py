"""The BoringSSL binding's checking layer: the compiled ffi and lib, return-code checks, error-queue draining.

Every call whose result can signal failure goes through check() or check_ptr() so that a failure becomes a
TLSError carrying BoringSSL's own reason strings. The error queue is thread-local and sticky: every error
path drains it completely, so one failure's reasons never show up in the next, unrelated, error.
"""
from zeroserve.core.errors import TLSError

try:
    from zeroserve.native._boringssl import ffi, lib
except ImportError as exc:
    raise ImportError(
        f"the BoringSSL binding is not built ({exc}): install android-libboringssl-dev, then run "
        "`.venv/bin/python setup.py -q build_ext --inplace` in the source tree"
    ) from exc

# SSL_get_error() results, named for what the caller does next.
WANT_READ = lib.SSL_ERROR_WANT_READ
WANT_WRITE = lib.SSL_ERROR_WANT_WRITE
CLOSED = lib.SSL_ERROR_ZERO_RETURN
PENDING_CERTIFICATE = lib.SSL_ERROR_PENDING_CERTIFICATE
_SSL_ERROR_NAMES = {
    lib.SSL_ERROR_NONE: "SSL_ERROR_NONE",
    lib.SSL_ERROR_SSL: "SSL_ERROR_SSL",
    WANT_READ: "SSL_ERROR_WANT_READ",
    WANT_WRITE: "SSL_ERROR_WANT_WRITE",
    lib.SSL_ERROR_SYSCALL: "SSL_ERROR_SYSCALL",
    CLOSED: "SSL_ERROR_ZERO_RETURN",
    PENDING_CERTIFICATE: "SSL_ERROR_PENDING_CERTIFICATE",
}


def drain_errors():
    """Empty the thread's error queue; return its entries oldest first as 'library: REASON' strings."""
    reasons = []
    while code := lib.ERR_get_error():
        library = lib.ERR_lib_error_string(code)
        reason = lib.ERR_reason_error_string(code)
        library = ffi.string(library).decode() if library != ffi.NULL else "unknown library"
        reason = ffi.string(reason).decode() if reason != ffi.NULL else f"error {code:#x}"
        reasons.append(f"{library}: {reason}")
    return reasons


def error(what, reasons=None):
    """A TLSError for a failed operation, with the queue's reasons (drained here unless given)."""
    if reasons is None:
        reasons = drain_errors()
    return TLSError(f"{what}: {'; '.join(reasons) if reasons else 'BoringSSL gave no reason'}", reasons)


def check(result, what):
    """Raise TLSError unless result is 1, BoringSSL's success value for most calls."""
    if result != 1:
        raise error(what)
    return result


def check_ptr(pointer, what):
    """Raise TLSError if pointer is NULL; return it otherwise."""
    if pointer == ffi.NULL:
        raise error(what)
    return pointer


def ssl_error(ssl, result, what):
    """Classify a failed SSL_* I/O call: WANT_READ, WANT_WRITE, CLOSED or PENDING_CERTIFICATE; else raise TLSError."""
    code = lib.SSL_get_error(ssl, result)
    if code in (WANT_READ, WANT_WRITE, CLOSED, PENDING_CERTIFICATE):
        return code
    reasons = drain_errors()
    if not reasons:
        reasons = [_SSL_ERROR_NAMES.get(code, f"SSL_get_error {code}")]
    raise error(what, reasons)


def string(pointer):
    """A NUL-terminated C string as str, or None for NULL."""
    return None if pointer == ffi.NULL else ffi.string(pointer).decode("ascii", "replace")
