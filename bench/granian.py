"""Starts Granian (a Rust HTTP server for Python apps, PyPI `granian`) for a workload as a pinned child.

Granian runs one worker process with one runtime thread, on uvloop, without access log. Static workloads
are served by Granian itself (`--static-path-mount` at the root); scripted ones by the workload's tiny ASGI app,
written into the work directory. TLS 1.3 with the harness's certificate.
"""

from __future__ import annotations

import sys
from pathlib import Path

from process import PinnedProcess, Placement, RunningServer, TlsFiles, free_port
from workloads import Transport, Workload

# The granian installed next to the interpreter running the harness (the project's .venv, `bench` extra).
GRANIAN = Path(sys.executable).with_name("granian")
# The app behind a static mount: a request for a path outside the site is not found.
_NOT_FOUND_ASGI = """async def app(scope, receive, send):
    await send({"type": "http.response.start", "status": 404, "headers": []})
    await send({"type": "http.response.body", "body": b""})
"""


def start(
    label: str, workload: Workload, transport: Transport, site_root: Path, workdir: Path, placement: Placement,
    tls: TlsFiles | None,
) -> RunningServer:
    """Writes the workload's ASGI app into workdir, starts Granian on it, returns once its port accepts connections."""
    workdir.mkdir(parents=True)
    port = free_port()
    app = workload.granian_app or _NOT_FOUND_ASGI
    (workdir / "bench_app.py").write_text(f"SITE_ROOT = {str(site_root)!r}\n\n{app}")
    # Plaintext h2 is h2c with prior knowledge, which Granian speaks only when told to speak HTTP/2 alone.
    http = "auto" if transport.tls else ("2" if transport.h2 else "1")
    argv = [str(GRANIAN), "--interface", "asgi", "--host", "127.0.0.1", "--port", str(port),
            "--workers", str(placement.workers),
            "--runtime-threads", "1", "--loop", "uvloop", "--http", http, "--no-ws", "--no-access-log",
            "--log-level", "error", "--working-dir", str(workdir)]  # fmt: skip
    if workload.granian_app is None:
        # The route "" is the root; "/" would match nothing.
        argv += ["--static-path-mount", str(site_root), "--static-path-route", ""]
    if transport.tls:
        argv += ["--ssl-certificate", str(tls.cert), "--ssl-keyfile", str(tls.key), "--ssl-protocol-min", "tls1.3"]
    process = PinnedProcess(
        name=label,
        argv=[*argv, "bench_app:app"],
        cpus=placement.cpus,
        log_path=workdir / "stdout.log",
    )
    process.start(ready_port=port)
    return RunningServer(label=label, process=process, port=port)
