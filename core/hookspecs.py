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
    helper table of the world is the core helpers (registered as plugin
    ``core``) plus every enabled plugin's, and a script's calls are resolved
    against it by symbol name when it loads. Two helpers with one name stop the
    build with an error naming both plugins. A script calling a helper that a
    known but disabled plugin provides fails to load with a message saying
    which ``--plugins`` to add (see ``zeroserve_known_helpers``).

    A ``HelperSpec`` is one of:

    - a C function (``c_function``: a cffi pointer to ``zs_helper_fn``, with
      ``c_cookie`` passed through): the VM calls it directly, no Python runs
      per call. Use this for anything called on most requests. It reaches
      guest memory through ``zs_guest_ptr`` and the request through
      ``zs_script_of(run)`` (``native/script/zsscript.h``).
    - a Python callable (``function``), called as ``function(call, r1, r2, r3,
      r4, r5)`` and returning an int (negative values are returned to the
      script as ``zs_s64``). ``call`` is a ``zeroserve.sdk.HelperCall``: read
      and write the script's memory with ``call.read``/``call.read_text``/
      ``call.write``/``call.write_cstring``, reach the request metadata with
      ``call.meta_get``/``call.meta_set`` and this plugin's per-world state
      with ``call.plugin_state(name)``. Raise ``zeroserve.sdk.HelperError``
      to fault the script (the request gets a 500 and the message is logged);
      any other exception faults it too.
    - an async Python callable (``is_async=True``): it returns an awaitable;
      the script is suspended, other requests run, and the awaited int becomes
      the helper's result. An exception from the awaitable faults the script.
      Time spent waiting does not count toward ``--script-cpu-budget-ms``.

    ``config`` is the ``ServerConfig`` (the plugin's flags in
    ``config.options``).
    """


@hookspec
def zeroserve_known_helpers():
    """Return the names of every helper this plugin can provide, enabled or not.

    Called only when a script fails to load because it calls a helper no
    enabled plugin registered: then every *installed* plugin (enabled or not)
    is imported and asked, so that a script calling ``zs_geoip_country``
    without ``--plugins geoip`` gets "helper zs_geoip_country is provided by
    plugin 'geoip'; add --plugins geoip" instead of "unknown helper". The
    in-tree plugins' helpers are also known from their groups in
    ``sdk/zeroserve.h``. Return a list of names; import nothing heavy here.
    """


@hookspec
def zeroserve_configure_tls(tls, config, plugins):
    """Add to the TLS configuration of the world being built.

    Called once per world build when an HTTPS listener is configured.
    ``tls`` is the ``zeroserve.core.tls.TLSConfigBuilder`` of the new world:
    a plugin may add certificates, ECH keys, a ClientHello inspector (which
    sees the SNI, ALPN and raw ClientHello of each handshake and may choose a
    certificate, refuse, or hand the connection to a relay) or set
    ``tls.connection_info`` (what scripts and the access log learn of each
    handshake, computed once per connection). ``plugins`` is the plugin
    manager, for an inspector that calls another hook (tls_ech calls
    ``zeroserve_tls_client_hello``). Raise ``zeroserve.core.errors.TLSError``
    to reject the new TLS material; on a reload the previous TLS is then kept
    while the rest of the reload proceeds.
    """


@hookspec(firstresult=True)
def zeroserve_tls_client_hello(hello):
    """Choose the certificate of one TLS handshake, or refuse it.

    Called by the tls_ech plugin's ClientHello inspector (active with --cert-dir or --ech-key) in
    BoringSSL's early ClientHello callback, once per handshake, before --cert-dir selection and the ECH
    relay decision. ``hello`` is a ``zeroserve.plugins.tls_ech.handshake.ClientHelloInfo`` (SNI, offered
    ALPN, JA4 and JA4_r, whether ECH was accepted, the raw ClientHello). Return a
    ``zeroserve.core.tls.ServerContext`` built (at load time, not here) with the world's ticket keys to
    serve its certificate, or None to let the next plugin or the server's own certificates decide. Raise
    ``zeroserve.core.errors.TLSError`` to refuse the connection. This runs on every handshake: keep it to
    dictionary lookups.
    """


@hookspec
def zeroserve_world_ready(world):
    """Provision what this plugin needs for a world that is about to serve.

    Called once per world build, in the process that built it, after the
    world is fully built and verified and before it serves: at start-up in
    the parent (workers inherit the world when they fork), and on a reload
    in the parent (which checks the new site first) and again in each worker.
    Do not start threads or open connections here; do that in
    ``zeroserve_worker_started`` or lazily. ``world`` is immutable; keep per-world state in ``world.plugin_state[name]`` (set by
    ``zeroserve_world_state``) and process-wide state (pools, caches,
    shared-memory tables) in the plugin module, which outlives reloads.
    """


@hookspec
def zeroserve_world_state(config, site):
    """Return this plugin's per-world state object, or None.

    Called once per world build, after the scripts loaded and before
    ``zeroserve_world_ready``; ``site`` is the world's ``zeroserve.core.site.Site``
    (read files with ``site.get(path)`` and ``site.read(entry)``). The
    returned object is stored in ``world.plugin_state`` under the plugin's
    name and reaches its helpers as ``call.plugin_state(name)``. It must not
    change once built: the world is shared by every request that started on
    it. Raise ``ConfigError`` to refuse the site (at a reload the old world
    keeps serving).
    """


@hookspec
def zeroserve_world_retired(world):
    """Clean up after a world that no request uses any more.

    Called once per ``zeroserve_world_ready``, in the same process, after a
    newer world replaced it and the last request that started on it has
    finished.
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
    """Release what the plugin holds at graceful shutdown.

    Called once per process: in workers it runs after the last request finished; in the parent after
    every worker exited. Write snapshots and close connections here.
    """
