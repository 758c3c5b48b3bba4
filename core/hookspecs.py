"""The extension points of zeroserve: every hook a plugin can implement, documented where it is declared.

A plugin is a module (or object) with functions marked ``@zeroserve.sdk.hookimpl``
named after the hooks below. It is found through the ``zeroserve.plugins``
entry-point group and enabled with ``--plugins NAME[,NAME...]``; the in-tree
plugins (``tls_ech``, ``oidc``, ``sigv4``, ``ratelimit``) are found the same way.

Every hook runs at load time: when the command line is parsed, when a world
(site + scripts + TLS + helper table) is built at start-up and on each reload,
when a worker process starts, and at shutdown. **No hook runs per request.**
What a plugin contributes to request handling it contributes as eBPF helpers
(see ``zeroserve_register_helpers``) or as tables built here, which the
request path then reads.

Hooks are called on every enabled plugin, in pluggy's order (last registered
first). Unless a hook says ``firstresult``, all results are collected in a
list. An exception raised by a hook at start-up stops the server with its
message; during a reload it aborts the reload and the previous world keeps
serving.
"""

import pluggy

hookspec = pluggy.HookspecMarker("zeroserve")

# ---------------------------------------------------------------------------
# Start-up: command line
# ---------------------------------------------------------------------------


@hookspec
def zeroserve_add_options(parser):
    """Add command-line flags to ``zeroserve run``.

    Called once, before the arguments are parsed, with an ``argparse``
    argument group titled after the plugin. Add flags with
    ``parser.add_argument``; choose names that start with the plugin's own
    prefix (``--ratelimit-redis``) unless the flag is a long-standing one of
    the original server (``--max-rate-limit-buckets``). The parsed values
    reach the other hooks as attributes of ``config.options``.
    """


@hookspec
def zeroserve_configure(config):
    """Check this plugin's flags once they are parsed.

    Called once in the parent process, after parsing and before any world is
    built. ``config`` is the frozen ``zeroserve.core.config.ServerConfig``;
    the plugin's own flags are in ``config.options``. Raise
    ``zeroserve.core.errors.ConfigError`` with a one-line message saying what
    is wrong and what to do, and the server refuses to start. Do not open
    sockets or start threads here: workers are forked afterwards.
    """


# ---------------------------------------------------------------------------
# World build (start-up and every reload)
# ---------------------------------------------------------------------------


@hookspec
def zeroserve_register_helpers(config):
    """Return the eBPF helpers this plugin gives scripts, as a list of ``zeroserve.sdk.HelperSpec``.

    Called once per world build, before the site's scripts are loaded: the
    helper table of the world is the core helpers plus every plugin's, and a
    script's calls are resolved against it by symbol name when it loads. Two
    helpers with one name (core or plugin) stop the build with an error naming
    both plugins. A script calling a helper that a known but disabled plugin
    provides fails to load with a message saying which ``--plugins`` to add;
    list such names through ``zeroserve_known_helpers``.

    A ``HelperSpec`` is either a C function (``c_function``: a cffi pointer to
    ``zs_helper_fn``, called by the VM directly, no Python per call) or a
    Python callable (``function``), optionally async (``is_async``: the callable
    returns an awaitable; the script is suspended until it completes and the
    awaited value becomes r0). Python helpers receive a
    ``zeroserve.sdk.HelperCall`` first, then r1..r5.
    """


@hookspec
def zeroserve_known_helpers():
    """Return the names of every helper this plugin can provide, enabled or not.

    Called once at start-up on every *installed* plugin (enabled or not), so
    that a script calling ``zs_rate_limit`` without ``--plugins ratelimit``
    gets "helper zs_rate_limit is provided by plugin 'ratelimit'; add
    --plugins ratelimit" instead of "unknown helper".
    """


@hookspec
def zeroserve_configure_tls(tls, config):
    """Add to the TLS configuration of the world being built.

    Called once per world build when an HTTPS listener is configured.
    ``tls`` is the ``zeroserve.core.tls.TLSConfigBuilder`` of the new world:
    a plugin may add certificates, ECH keys or a ClientHello inspector (which
    sees the SNI, ALPN and raw ClientHello of each handshake and may choose a
    certificate, refuse, or hand the connection to a relay). Raise
    ``zeroserve.core.errors.TLSError`` to reject the new TLS material; on a
    reload the previous TLS is then kept while the rest of the reload
    proceeds.
    """


@hookspec
def zeroserve_world_ready(world):
    """Provision what this plugin needs for a world that is about to serve.

    Called once per world, in each worker, after the world is fully built
    and verified and before it replaces the previous one. ``world`` is
    immutable; keep per-world state in ``world.plugin_state[name]`` (set by
    ``zeroserve_world_state``) and process-wide state (pools, caches,
    shared-memory tables) in the plugin module, which outlives reloads.
    """


@hookspec
def zeroserve_world_state(config, site):
    """Return this plugin's per-world state object, or None.

    Called once per world build. The returned object is stored in
    ``world.plugin_state`` under the plugin's name and reaches its helpers
    through ``HelperCall.world``. It must not change once built: the world
    is shared by every request that started on it.
    """


@hookspec
def zeroserve_world_retired(world):
    """Clean up after a world that no request uses any more.

    Called once per world, in each worker, after a newer world replaced it
    and the last request that started on it has finished.
    """


# ---------------------------------------------------------------------------
# Worker processes and shutdown
# ---------------------------------------------------------------------------


@hookspec
def zeroserve_worker_started(config, worker_index):
    """Set up process-wide state in a freshly started worker process.

    Called once in each worker after it forked and before it serves, with the
    event loop already running (``asyncio.get_running_loop()`` works).
    Connections to other services (Redis, identity providers) are made here
    or lazily, never in the parent.
    """


@hookspec
def zeroserve_unconfigure(config):
    """Release what the plugin holds: called once per process at graceful shutdown.

    In workers it runs after the last request finished; in the parent after
    every worker exited. Write snapshots and close connections here.
    """
