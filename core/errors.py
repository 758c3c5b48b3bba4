"""The exception tree: one base, one class per layer, each carrying what its handler needs."""


class ZeroserveError(Exception):
    """Base of every error zeroserve raises on purpose."""


class ConfigError(ZeroserveError):
    """A flag or file given by the user is unusable; the message says what to do."""


class SiteError(ZeroserveError):
    """A site tar cannot be indexed (missing, not a tar, truncated, corrupt, empty)."""


class ScriptCompileError(ZeroserveError):
    """A script failed to compile at pack time; the message holds the compiler's output."""


class ScriptLoadError(ZeroserveError):
    """A compiled script failed to load or verify (bad ELF, unknown helper, rejected code)."""


class ScriptFault(ZeroserveError):
    """A script run ended in a fault: trap, memory fault or helper error."""

    def __init__(self, message, *, pc=None, address=None):
        super().__init__(message)
        self.pc = pc
        self.address = address


class TLSError(ZeroserveError):
    """BoringSSL reported an error; the message holds its reason strings, `reasons` the list of them."""

    def __init__(self, message, reasons=()):
        super().__init__(message)
        self.reasons = tuple(reasons)


class ProtocolError(ZeroserveError):
    """The peer broke the protocol. status_hint is the HTTP status to answer with, if any."""

    def __init__(self, message, status_hint=400):
        super().__init__(message)
        self.status_hint = status_hint
