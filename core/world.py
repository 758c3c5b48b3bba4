"""The World: everything loaded from the site tar and the flags, as one immutable object.

A request uses the World that was current when it started, from its first byte
of response to its last; a reload builds a whole new World off the request path
and swaps one reference (`server.py`). The old one is closed once its last
in-flight request has finished, which is what the lease count is for. Every
field is built once in `World.build`: the site, the script chain (verified
against the helpers of the enabled plugins) and each plugin's per-world state;
plugins see a world through `zeroserve_world_ready` / `zeroserve_world_retired`.
"""

from dataclasses import dataclass, field

from zeroserve.core.accesslog import log_error
from zeroserve.core.chain import ChainOptions, ScriptChain
from zeroserve.core.config import ServerConfig
from zeroserve.core.errors import ConfigError, TLSError
from zeroserve.core.fastpath import FastTable, eligible as fast_eligible
from zeroserve.core.plugins import build_helper_table, build_plugin_manager, call_impl
from zeroserve.core import worldfiles
from zeroserve.core.site import Site
from zeroserve.core.static import StaticOptions
from zeroserve.core.tls import Identity, TicketKeys, TLSConfigBuilder


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
    chain: ScriptChain  # the site's scripts, loaded and verified against `helpers`
    plugin_state: dict  # plugin name -> what its zeroserve_world_state returned
    plugins: object  # the pluggy PluginManager of the enabled plugins
    tls: object  # the tls.ServerContext of the HTTPS listener, or None without one
    leases: _Leases = field(default_factory=_Leases, repr=False)
    reads_body: bool = False  # a script calls a helper that reads the request body: read it whole first
    fast_table: object = None  # fastpath.FastTable (with a C-only script chain, if any); None: Python serves all

    @classmethod
    def build(cls, config, generation=0, previous=None, files=None):
        """Load everything `config` names; raises SiteError (or another ZeroserveError).

        `previous` is the World a reload replaces: its TLS is kept when the new TLS material is bad.
        `files` is what the build reads through (`worldfiles`): a DiskFiles that records it (the
        supervisor), the ReplayFiles of that record (a worker), or None for the disk unrecorded.
        """
        with worldfiles.reading(files):
            return cls._load(config, generation, previous)

    @classmethod
    def _load(cls, config, generation, previous):
        site = worldfiles.open_site(config.site_path)
        try:
            plugins = build_plugin_manager(config.plugins)
            options = ChainOptions(
                preempt_interval_ms=config.preempt_timer_interval_ms,
                cpu_budget_ms=config.script_cpu_budget_ms,
                # The VM charges a run's host allocations to the run's memory, so one arena holds both.
                memory_kb=config.script_memory_kb + config.max_request_external_memory_footprint_kb,
            )
            chain = ScriptChain.load(site, build_helper_table(plugins, config), options)
            plugin_state = {}
            for impl in plugins.hook.zeroserve_world_state.get_hookimpls():
                state = call_impl(impl, config=config, site=site)
                if state is not None:
                    plugin_state[impl.plugin_name] = state
            tls = _build_tls(config, plugins, previous.tls if previous is not None else None)
            static_options = StaticOptions(index=config.index, try_html=config.try_html)
            hostnames = frozenset(name.lower() for name in config.validate_hostnames)
            fast_table = (FastTable(site, static_options, hostnames, chain)
                          if config.fast_path and fast_eligible(chain) else None)
        except BaseException:
            site.close()
            raise
        world = cls(
            config=config,
            site=site,
            static_options=static_options,
            hostnames=hostnames,
            generation=generation,
            chain=chain,
            plugin_state=plugin_state,
            plugins=plugins,
            tls=tls,
            reads_body=_scripts_read_body(site),
            fast_table=fast_table,
        )
        plugins.hook.zeroserve_world_ready(world=world)
        return world

    def enter(self):
        """A request starts using this World."""
        self.leases.count += 1

    def exit(self):
        """A request is done with this World (its response is fully written or abandoned)."""
        leases = self.leases
        leases.count -= 1
        if leases.retired and leases.count == 0:
            self._close()

    def retire(self):
        """This World has been replaced: close it now if idle, else when its last request ends."""
        self.leases.retired = True
        if self.leases.count == 0:
            self._close()

    def _close(self):
        self.plugins.hook.zeroserve_world_retired(world=self)
        self.site.close()


# Helpers that see the request body: a world whose scripts call one reads each body whole before they run.
_BODY_HELPERS = (b"zs_req_body_json", b"zs_aws_sign_request")


def _scripts_read_body(site):
    """True when a script's ELF names a body helper among its symbols."""
    return any(helper in site.read(entry) for _, entry in site.scripts() for helper in _BODY_HELPERS)


def _build_tls(config, plugins, previous_tls):
    """The ServerContext of the HTTPS listener (None without one); a reload with bad TLS keeps `previous_tls`.

    The ticket keys pass from world to world, and the first ones are made in the parent before it forks,
    so every worker derives the same keys and a ticket resumes on any worker.
    """
    if config.tls_addr is None:
        return None
    ticket_keys = previous_tls.ticket_keys if previous_tls is not None else TicketKeys()
    try:
        builder = TLSConfigBuilder(Identity.load(config.cert, config.key), ticket_keys)
        plugins.hook.zeroserve_configure_tls(tls=builder, config=config, plugins=plugins)
        return builder.build()
    except (ConfigError, TLSError) as error:
        if previous_tls is None:
            raise
        log_error(f"TLS reload failed (keeping previous TLS): {error}")
        return previous_tls
