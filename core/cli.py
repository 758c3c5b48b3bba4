"""The `zeroserve` command: parses `pack` and `run` into calls of pack.build and supervisor.serve.

Every error a user can cause ends as one line on stderr, `zeroserve: error: ...`,
and a non-zero exit status; no traceback.
"""

import argparse
import logging
import sys
from pathlib import Path

from zeroserve.core import __version__, pack, supervisor
from zeroserve.core.compile import ScriptCompiler
from zeroserve.core.config import DEFAULT_ADDR, Address, Limits, ServerConfig
from zeroserve.core.errors import ZeroserveError

_LIMIT_DEFAULTS = Limits()


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line and exits 2."""

    def error(self, message):
        sys.stderr.write(f"zeroserve: error: {message} (see '{self.prog} --help')\n")
        sys.exit(2)


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def _byte_count(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of bytes") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be 0 or more")
    return value


def _seconds(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be more than 0")
    return value


def _address(text):
    try:
        return Address.parse(text)
    except ZeroserveError as error:
        raise argparse.ArgumentTypeError(str(error).removeprefix("--addr ")) from None


def build_parser():
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
    runner.add_argument("--enable-proxy-protocol", action="store_true",
                        help="expect a PROXY protocol v1 line first on every connection and log its "
                             "source address as the client")
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
        ("--max-connections", "max_connections", _positive_int, "open connections per worker (503)"),
        ("--h2-max-streams", "h2_max_concurrent_streams", _positive_int, "concurrent HTTP/2 streams"),
    )
    for flag, name, kind, text in limit_flags:
        default = getattr(_LIMIT_DEFAULTS, name)
        limits.add_argument(flag, dest=name, type=kind, default=default,
                            metavar="SECONDS" if kind is _seconds else "N", help=f"{text} (default {default:n})")
    runner.set_defaults(limit_names=[name for _, name, _, _ in limit_flags])
    return parser


def _run(args):
    hostnames = tuple(name.strip() for value in args.validate_hostnames for name in value.split(",")
                      if name.strip())
    optional = {"workers": args.workers} if args.workers is not None else {}
    config = ServerConfig(
        site_path=args.site,
        addr=args.addr,
        index=args.index or "index.html",  # an empty --index means the default, as in the original
        try_html=args.try_html,
        validate_hostnames=hostnames,
        reload_signal_file=args.reload_signal_file,
        request_logging=not args.disable_request_logging,
        log_format=args.log_format,
        proxy_protocol=args.enable_proxy_protocol,
        shutdown_timeout=args.shutdown_timeout,
        limits=Limits(**{name: getattr(args, name) for name in args.limit_names}),
        **optional,
    )
    return supervisor.serve(config)


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
    args = build_parser().parse_args(argv)
    try:
        return _run(args) if args.command == "run" else _pack(args)
    except ZeroserveError as error:
        sys.stderr.write(f"zeroserve: error: {error}\n")
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
