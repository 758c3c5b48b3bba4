"""The `zeroserve` command: parses `pack`, `run`, `check` and `sdk` into calls of the modules that do the work.

Plugins named with `--plugins` are loaded before the full parse, because they
add flags of their own (`zeroserve_add_options`).

Every error a user can cause ends as one line on stderr, `zeroserve: error: ...`,
and a non-zero exit status; no traceback.
"""

import argparse
import logging
import sys
from pathlib import Path

from zeroserve.core import __version__, pack, supervisor
from zeroserve.core.compile import ScriptCompiler, sdk_header_text
from zeroserve.core.config import DEFAULT_ADDR, DEFAULT_TLS_ADDR, Address, Limits, ServerConfig
from zeroserve.core.errors import ZeroserveError
from zeroserve.core.plugins import build_plugin_manager, call_impl
from zeroserve.core.upstream import UpstreamOptions
from zeroserve.core.world import World

_LIMIT_DEFAULTS = Limits()
_UPSTREAM_DEFAULTS = UpstreamOptions()


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line and exits 2."""

    def error(self, message):
        sys.stderr.write(f"zeroserve: error: {message} (see '{self.prog} --help')\n")
        sys.exit(2)


def _number(convert, what, accept, bound):
    """An argparse type: `convert` the text (else "is not `what`"), then `accept` it (else `bound`)."""
    def parse(text):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if not accept(value):
            raise argparse.ArgumentTypeError(f"{text!r} must be {bound}")
        return value
    return parse


_positive_int = _number(int, "a whole number", lambda v: v >= 1, "at least 1")
_byte_count = _number(int, "a number of bytes", lambda v: v >= 0, "0 or more")
_seconds = _number(float, "a number of seconds", lambda v: v > 0, "more than 0")
_positive_float = _number(float, "a number", lambda v: v > 0, "more than 0")


def _address(text):
    try:
        return Address.parse(text)
    except ZeroserveError as error:
        raise argparse.ArgumentTypeError(str(error).removeprefix("--addr ")) from None


def _tls_address(text):
    """An --tls-addr value: IP:PORT, or `off` for no HTTPS listener (None)."""
    return None if text == "off" else _address(text)


def _names(values):
    """Names from repeatable, comma-separated flag values, in order, once each."""
    return tuple(dict.fromkeys(name.strip() for value in values for name in value.split(",") if name.strip()))


# Flags that enable their plugin without --plugins: (flag or flag prefix, plugin name).
_ENABLING_FLAGS = (("--cert-dir", "tls_ech"), ("--ech-key", "tls_ech"), ("--ech-relay-", "tls_ech"))


def plugin_names(argv):
    """The --plugins names of a command line, read before the full parse, and those its flags enable."""
    early = argparse.ArgumentParser(add_help=False)
    early.add_argument("--plugins", action="append", default=[])
    known, _ = early.parse_known_args(argv)
    names = _names(known.plugins)
    flags = [arg.partition("=")[0] for arg in argv]
    enabled = [plugin for flag, plugin in _ENABLING_FLAGS
               if any(given == flag or (flag.endswith("-") and given.startswith(flag)) for given in flags)]
    return tuple(dict.fromkeys(names + tuple(enabled)))


def _add_site_flags(parser, pm):
    """Flags `run` and `check` share: plugins and the limits of scripts, then each plugin's own flags."""
    parser.add_argument("--plugins", action="append", default=[], metavar="NAME[,NAME...]",
                        help="enable these installed plugins (repeatable); an unknown name lists the installed ones")
    scripts = parser.add_argument_group("scripts")
    scripts.add_argument("--preempt-timer-interval-ms", type=_positive_float, default=2.0, metavar="MS",
                         help="CPU a script runs before it lets other requests run (default 2)")
    scripts.add_argument("--script-cpu-budget-ms", type=_positive_float, default=100.0, metavar="MS",
                         help="CPU the scripts of one request may use; beyond, the request gets 503 (default 100)")
    scripts.add_argument("--script-memory-kb", type=_positive_int, default=256, metavar="KB",
                         help="guest memory of one script run: stack and globals (default 256)")
    scripts.add_argument("--max-request-external-memory-footprint-kb", type=_positive_int, default=256,
                         metavar="KB", help="host memory (JSON values) one script run may allocate (default 256)")
    for impl in pm.hook.zeroserve_add_options.get_hookimpls():
        call_impl(impl, parser=parser.add_argument_group(f"plugin {impl.plugin_name}"))


def _add_numeric_flags(group, flags, defaults, dest_prefix=""):
    """Add (flag, field, type, text) flags to `group`, each defaulting to that field of `defaults`."""
    for flag, name, kind, text in flags:
        default = getattr(defaults, name)
        group.add_argument(flag, dest=dest_prefix + name, type=kind, default=default,
                           metavar="SECONDS" if kind is _seconds else "N", help=f"{text} (default {default:n})")


def build_parser(pm):
    """The full parser; `pm` holds the enabled plugins, which may add flags."""
    parser = _Parser(
        prog="zeroserve", description="A zero-config web server that serves one site tar.",
        epilog="example: zeroserve pack ./public -o site.tar && zeroserve run --addr 127.0.0.1:8080 site.tar",
    )
    parser.add_argument("--version", action="version", version=f"zeroserve {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    packer = commands.add_parser("pack", help="pack a site directory into a tar",
                                 description="Pack DIR into a site tar, compiling every .c under "
                                             ".zeroserve/scripts/ to eBPF.")
    packer.add_argument("directory", metavar="DIR", help="the site directory")
    packer.add_argument("-o", "--output", required=True, metavar="TAR", help="the tar file to write")
    packer.add_argument("--compiler", metavar="NAME",
                        help="script compiler: clang, zig or a path to a clang-compatible binary "
                             "(default: clang, else zig)")

    runner = commands.add_parser("run", help="serve a site tar",
                                 description="Serve a site tar (made with 'zeroserve pack').")
    runner.add_argument("site", metavar="SITE_TAR", help="the site tar to serve")
    runner.add_argument("--addr", type=_address, default=Address.parse(DEFAULT_ADDR), metavar="IP:PORT",
                        help=f"plaintext HTTP address (default {DEFAULT_ADDR}; port 0 picks a free port)")
    runner.add_argument("--tls-addr", type=_tls_address, default=Address.parse(DEFAULT_TLS_ADDR),
                        metavar="IP:PORT|off",
                        help=f"HTTPS address (default {DEFAULT_TLS_ADDR}; 'off' serves no HTTPS)")
    runner.add_argument("--cert", metavar="PEM", help="HTTPS certificate chain, leaf first (with --key; "
                                                      "without both, a self-signed certificate for localhost)")
    runner.add_argument("--key", metavar="PEM", help="private key of --cert")
    runner.add_argument("--state-dir", metavar="DIR",
                        help="where the self-signed certificate is kept "
                             "(default $XDG_STATE_HOME/zeroserve or ~/.local/state/zeroserve)")
    runner.add_argument("--index", default="index.html", metavar="NAME",
                        help="file served for a directory (default index.html)")
    runner.add_argument("--try-html", action="store_true", help="serve PATH.html when PATH is not found")
    runner.add_argument("--threads", "--workers", dest="workers", type=_positive_int, metavar="N",
                        help="worker processes (default: the number of CPUs)")
    runner.add_argument("--validate-hostnames", action="append", default=[], metavar="HOST[,HOST...]",
                        help="answer 421 unless Host is one of these (repeatable)")
    runner.add_argument("--reload-signal-file", metavar="FILE",
                        help="reload when this file's content changes (checked every second)")
    runner.add_argument("--disable-request-logging", action="store_true", help="no access-log lines")
    runner.add_argument("--no-fast-path", dest="fast_path", action="store_false",
                        help="answer every request on the Python path (the C fast path's reference)")
    runner.add_argument("--enable-proxy-protocol", action="store_true",
                        help="expect a PROXY protocol header (v1 or v2) first on every connection and "
                             "use its source address as the client")
    runner.add_argument("--user", metavar="NAME",
                        help="when started as root, workers switch to this unprivileged account once the "
                             "listeners are bound (default nobody; the supervisor keeps root to read the "
                             "site and TLS files on reloads)")
    runner.add_argument("--disable-ns-isolation", action="store_true",
                        help="workers do not enter user and mount namespaces of their own (they still drop "
                             "to --user, every capability and new privileges)")
    runner.add_argument("--log-format", choices=("text", "json"), default="text",
                        help="access-log format (default text)")
    runner.add_argument("--shutdown-timeout", type=_seconds, default=10.0, metavar="SECONDS",
                        help="on SIGTERM, how long requests in flight may take to finish (default 10)")
    limits = runner.add_argument_group("limits (a request over one gets a 4xx; a connection is closed)")
    limit_flags = (
        ("--max-head-bytes", "max_head_bytes", _positive_int, "request line and headers, bytes (431)"),
        ("--max-headers", "max_header_count", _positive_int, "header fields per request (431)"),
        ("--max-uri-bytes", "max_uri_bytes", _positive_int, "request target, bytes (414)"),
        ("--max-body-bytes", "max_body_bytes", _byte_count, "request body, bytes (413)"),
        ("--header-timeout", "header_timeout", _seconds, "seconds for a whole request head (408)"),
        ("--idle-timeout", "idle_timeout", _seconds, "seconds a keep-alive connection may idle"),
        ("--body-timeout", "body_timeout", _seconds, "seconds of silence while reading a body (408)"),
        ("--write-timeout", "write_timeout", _seconds, "seconds the client may leave output unread"),
        ("--max-connections", "max_connections", _positive_int, "open connections per worker; beyond, accepting waits"),
        ("--h2-max-streams", "h2_max_concurrent_streams", _positive_int, "concurrent HTTP/2 streams"),
    )
    _add_numeric_flags(limits, limit_flags, _LIMIT_DEFAULTS)
    runner.set_defaults(limit_names=[name for _, name, _, _ in limit_flags])
    upstream = runner.add_argument_group("reverse proxy (upstreams a script sends requests to)")
    upstream.add_argument("--upstream-ca", dest="upstream_ca_file", metavar="PEM",
                          help="CA bundle that https:// upstreams are verified against (default: the system CAs)")
    upstream_flags = (
        ("--upstream-connect-timeout", "connect_timeout", _seconds, "seconds to connect (and TLS) (502)"),
        ("--upstream-response-timeout", "response_timeout", _seconds, "seconds until the response head (504)"),
        ("--upstream-body-timeout", "body_timeout", _seconds, "longest silence in a response body"),
        ("--upstream-idle-timeout", "idle_timeout", _seconds, "seconds a pooled connection may idle"),
        ("--upstream-max-idle", "max_idle", _positive_int, "idle pooled connections per worker"),
    )
    _add_numeric_flags(upstream, upstream_flags, _UPSTREAM_DEFAULTS, dest_prefix="upstream_")
    runner.set_defaults(upstream_names=[name for _, name, _, _ in upstream_flags])
    _add_site_flags(runner, pm)

    checker = commands.add_parser("check", help="load and verify every script of a site tar, without serving",
                                  description="Load SITE_TAR and verify every script in it against the "
                                              "helpers of the enabled plugins; exit 1 with the reason if one "
                                              "does not load.")
    checker.add_argument("site", metavar="SITE_TAR", help="the site tar to check")
    _add_site_flags(checker, pm)
    commands.add_parser("sdk", help="print the SDK header (zeroserve.h) scripts include",
                        description="Print sdk/zeroserve.h, the header every script includes.")
    keygen = commands.add_parser("ech-keygen", help="make an Encrypted ClientHello key for --ech-key",
                                 description="Make an ECH key (X25519, HKDF-SHA256 / AES-128-GCM) in PEM and "
                                             "print the ECHConfigList to publish in the HTTPS DNS record.")
    keygen.add_argument("--public-name", required=True, metavar="NAME",
                        help="the name clients show in clear (the cover site's host name)")
    keygen.add_argument("-o", "--output", metavar="FILE", help="write the key to FILE (mode 0600), not stdout")
    return parser


def _config(args, plugins):
    """The ServerConfig of a `run` or `check` command line; `plugins` the enabled plugin names."""
    if args.command == "check":
        return ServerConfig(site_path=args.site, workers=1, plugins=plugins, options=args,
                            **_script_settings(args))
    hostnames = tuple(name.strip() for value in args.validate_hostnames for name in value.split(",")
                      if name.strip())
    optional = {"workers": args.workers} if args.workers is not None else {}
    return ServerConfig(
        site_path=args.site,
        addr=args.addr,
        tls_addr=args.tls_addr,
        cert=args.cert,
        key=args.key,
        state_dir=args.state_dir,
        index=args.index or "index.html",  # an empty --index means the default, as in the original
        try_html=args.try_html,
        validate_hostnames=hostnames,
        reload_signal_file=args.reload_signal_file,
        request_logging=not args.disable_request_logging,
        log_format=args.log_format,
        proxy_protocol=args.enable_proxy_protocol,
        fast_path=args.fast_path,
        user=args.user,
        ns_isolation=not args.disable_ns_isolation,
        shutdown_timeout=args.shutdown_timeout,
        limits=Limits(**{name: getattr(args, name) for name in args.limit_names}),
        upstream=UpstreamOptions(ca_file=args.upstream_ca_file,
                                 **{name: getattr(args, f"upstream_{name}") for name in args.upstream_names}),
        plugins=plugins,
        options=args,
        **_script_settings(args),
        **optional,
    )


def _script_settings(args):
    return {
        "preempt_timer_interval_ms": args.preempt_timer_interval_ms,
        "script_cpu_budget_ms": args.script_cpu_budget_ms,
        "script_memory_kb": args.script_memory_kb,
        "max_request_external_memory_footprint_kb": args.max_request_external_memory_footprint_kb,
    }


def _check(config):
    """Load every script of the site as a world build would; report how many."""
    world = World.build(config)
    chain = world.chain
    sys.stdout.write(f"{config.site_path}: {len(chain.scripts)} scripts loaded and verified "
                     f"({len(chain.request_scripts)} run on every request)\n")
    world.retire()
    return 0


def _pack(args):
    directory = Path(args.directory)
    scripts = directory / ".zeroserve" / "scripts"
    has_sources = scripts.is_dir() and any(scripts.rglob("*.c"))
    compiler = ScriptCompiler.find(args.compiler) if has_sources else None
    summary = pack.build(directory, args.output, compiler=compiler)
    sys.stderr.write(f"packed {summary.file_count} files ({summary.total_bytes} bytes, "
                     f"{summary.scripts_compiled} scripts compiled) into {args.output}\n")
    return 0


def main(argv=None):
    """Entry point of the `zeroserve` console script."""
    logging.basicConfig(format="%(message)s", level=logging.WARNING, stream=sys.stderr)
    try:
        names = plugin_names(sys.argv[1:] if argv is None else argv)
        pm = build_plugin_manager(names)
    except ZeroserveError as error:
        sys.stderr.write(f"zeroserve: error: {error}\n")
        return 1
    args = build_parser(pm).parse_args(argv)
    try:
        if args.command == "pack":
            return _pack(args)
        if args.command == "sdk":
            sys.stdout.write(sdk_header_text())
            return 0
        if args.command == "ech-keygen":
            # The key format belongs to the tls_ech plugin; the CLI only names the command.
            from zeroserve.plugins.tls_ech.echconfig import keygen
            return keygen(args.public_name, args.output)
        config = _config(args, names)
        pm.hook.zeroserve_configure(config=config)
        return _check(config) if args.command == "check" else supervisor.serve(config)
    except ZeroserveError as error:
        sys.stderr.write(f"zeroserve: error: {error}\n")
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
