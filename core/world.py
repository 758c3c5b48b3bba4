"""The World: everything loaded from the site tar and the flags, as one immutable object.

A request uses the World that was current when it started, from its first byte
of response to its last; a reload builds a whole new World off the request path
and swaps one reference (`server.py`). The old one is closed once its last
in-flight request has finished, which is what the lease count is for. Later
issues add fields here (scripts, TLS contexts, helper table, plugin state),
each built once in `World.build`.
"""

from dataclasses import dataclass, field

from zeroserve.core.config import ServerConfig
from zeroserve.core.site import Site
from zeroserve.core.static import StaticOptions


class _Leases:
    """How many requests still use a World, and whether it has been replaced."""

    __slots__ = ("count", "retired")

    def __init__(self):
        self.count = 0
        self.retired = False


@dataclass(frozen=True, slots=True, eq=False)
class World:
    """The site and settings one request is served with."""

    config: ServerConfig
    site: Site
    static_options: StaticOptions
    hostnames: frozenset  # allowed Host names (lowercase, no port); empty = any
    generation: int  # 0 at start, +1 per successful reload
    leases: _Leases = field(default_factory=_Leases, repr=False)

    @classmethod
    def build(cls, config, generation=0):
        """Load everything `config` names; raises SiteError (or another ZeroserveError)."""
        site = Site.open(config.site_path)
        return cls(
            config=config,
            site=site,
            static_options=StaticOptions(index=config.index, try_html=config.try_html),
            hostnames=frozenset(name.lower() for name in config.validate_hostnames),
            generation=generation,
        )

    def enter(self):
        """A request starts using this World."""
        self.leases.count += 1

    def exit(self):
        """A request is done with this World (its response is fully written or abandoned)."""
        leases = self.leases
        leases.count -= 1
        if leases.retired and leases.count == 0:
            self.site.close()

    def retire(self):
        """This World has been replaced: close it now if idle, else when its last request ends."""
        self.leases.retired = True
        if self.leases.count == 0:
            self.site.close()
