"""What plugin authors import: the hook marker and the helper description.

    from zeroserve.sdk import hookimpl, HelperSpec

    @hookimpl
    def zeroserve_register_helpers(config):
        return [HelperSpec("zs_geo_country", function=country)]

The hooks themselves are documented in ``zeroserve.core.hookspecs``.
"""

from dataclasses import dataclass
from typing import Any, Callable

import pluggy

hookimpl = pluggy.HookimplMarker("zeroserve")


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


__all__ = ["HelperSpec", "hookimpl"]
