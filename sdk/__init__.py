"""What plugin authors import: the hook marker, the helper description and what a Python helper receives.

    from zeroserve.sdk import hookimpl, HelperSpec

    def country(call, ip, ip_len, out, out_len, _r5):
        text = call.read_text(ip, ip_len)
        return call.write_cstring(out, out_len, lookup(text).encode())

    @hookimpl
    def zeroserve_register_helpers(config):
        return [HelperSpec("zs_geo_country", function=country)]

The hooks themselves are documented in ``zeroserve.core.hookspecs``; a longer
walk-through is ``docs/plugins.md``.
"""

from dataclasses import dataclass
from typing import Any, Callable

import pluggy

from zeroserve.core import worldfiles
from zeroserve.core.errors import ScriptFault

hookimpl = pluggy.HookimplMarker("zeroserve")


def read_world_file(path):
    """The bytes of a file a plugin loads while a World is built; raises OSError as reading it would.

    Workers run isolated (another user, a reduced mount namespace) and never open such files
    themselves: read through this, the file is read by the supervisor, which hands what it read
    to the workers with each reload. A plain ``open`` in a World-building hook fails in a worker.
    """
    return worldfiles.read_bytes(path)


class HelperError(ScriptFault):
    """Raised by a helper to fault the calling script (the request gets a 500; the message is logged)."""


@dataclass(frozen=True, slots=True)
class HelperSpec:
    """One eBPF helper: its symbol name and its implementation.

    Exactly one of ``function`` (a Python callable taking a ``HelperCall`` and
    r1..r5, returning an int, or an awaitable of one when ``is_async``) and
    ``c_function`` (a cffi pointer to a ``zs_helper_fn``, with ``c_cookie``
    passed through to it) is set.
    """

    name: str
    function: Callable[..., Any] | None = None
    c_function: Any = None
    c_cookie: Any = None
    is_async: bool = False

    def __post_init__(self):
        if not self.name.isidentifier():
            raise ValueError(f"helper name {self.name!r} is not a C identifier")
        if (self.function is None) == (self.c_function is None):
            raise ValueError(f"helper {self.name}: give exactly one of function= and c_function=")
        if self.is_async and self.function is None:
            raise ValueError(f"helper {self.name}: only Python helpers can be async")


class HelperCall:
    """What a Python helper gets as its first argument: the calling script's memory, request and world.

    One HelperCall exists per pooled script run and is reused request after
    request, so a helper must not keep it (or anything read through it) after
    it returns; copy what it needs. Guest memory is reached only through
    ``read``/``write``: an address range outside the script's memory faults
    the script, as a ``HelperError`` raised by the helper does.
    """

    __slots__ = ("run", "world", "context", "script", "depth", "chain_state")

    def __init__(self, run):
        self.run = run  # the zeroserve.vm.Run executing the script
        self.world = None  # the World the request started on
        self.context = None  # the zeroserve.core.script_abi.RequestContext of the request
        self.script = None  # the name of the calling script, e.g. "10-auth.o"
        self.depth = 0  # zs_call nesting: 0 for a chain script
        self.chain_state = None  # the chain's per-request state (the pending async helper, CPU used)

    def read(self, addr, length):
        """``length`` bytes of script memory at ``addr``."""
        return self.run.read(addr, length)

    def read_text(self, addr, length):
        """A UTF-8 string argument; invalid UTF-8 faults the script."""
        try:
            return self.run.read(addr, length).decode("utf-8")
        except UnicodeDecodeError:
            raise HelperError("string argument is not valid UTF-8") from None

    def write(self, addr, data):
        """Writes bytes into the script's writable memory."""
        self.run.write(addr, data)

    def write_cstring(self, out, out_len, value):
        """Writes ``value`` (bytes) by the C-string rule and returns what the helper should return.

        At most ``out_len - 1`` bytes and a NUL are written; the result is
        ``min(len(value), out_len)``: 0 when ``out_len`` is 0, ``out_len`` when
        the value was cut.
        """
        if out_len == 0:
            return 0
        kept = value[:out_len - 1]
        self.run.write(out, kept + b"\0")
        return min(len(value), out_len)

    def plugin_state(self, name):
        """The per-world state the plugin ``name`` built with ``zeroserve_world_state``."""
        return self.world.plugin_state.get(name)

    def meta_get(self, key):
        """The request metadata value of ``key`` ("" when unset)."""
        return dict(self.context.metadata()).get(key.strip(), "")

    def meta_set(self, key, value):
        """Sets request metadata ``key`` (trimmed, non-empty) to ``value``."""
        self.context.set_meta(key, value)

    def respond(self, status, headers, body):
        """Makes the script's outcome this response, as zs_respond does, with response headers.

        ``headers`` is [(name, value)] as str; a name may repeat (two Set-Cookie lines). ``body`` is bytes.
        The script goes on running after the helper returns; the response is sent when the chain ends
        with it (zs_abort still wins).
        """
        self.run.state.respond(status, body)
        self.chain_state.response_headers = [(name.lower(), value) for name, value in headers]


__all__ = ["HelperCall", "HelperError", "HelperSpec", "hookimpl"]
