"""Writes the Caddyfile for a workload and starts Caddy (Debian's `caddy`) as a pinned child.

Caddy is a Go program: it cannot be limited to one worker, so it gets the nearest thing, taskset on the
server core and GOMAXPROCS=1 (GOMAXPROCS=N for N "workers"). Static files go through `file_server`; the
workload's `caddy_site` directives stand in for scripts (`header`, `respond`, `reverse_proxy`). No access log
(Caddy logs requests only when a site asks for it), no admin endpoint, no automatic HTTPS: TLS 1.3 with the
harness's certificate.
"""

from __future__ import annotations

import os
from pathlib import Path

from process import PinnedProcess, Placement, RunningServer, TlsFiles, free_port
from workloads import Transport, Workload

CADDY = "/usr/bin/caddy"


def render_config(*, root: Path, port: int, workload: Workload, transport: Transport, tls: TlsFiles | None) -> str:
    """Returns a Caddyfile serving `root` on 127.0.0.1:port for one workload and transport."""
    scheme = "https" if transport.tls else "http"
    # h2c must be named to be spoken over plaintext; h3 is left out so that Caddy opens no UDP port.
    protocols = "h1 h2" if transport.tls else "h1 h2c"
    tls_directive = f"tls {tls.cert} {tls.key} {{\n        protocols tls1.3\n    }}" if transport.tls else ""
    return f"""{{
    admin off
    auto_https off
    default_sni localhost
    log {{
        level ERROR
    }}
    servers {{
        protocols {protocols}
    }}
}}

{scheme}://127.0.0.1:{port} {{
    bind 127.0.0.1
    {tls_directive}
    root * {root}
    {workload.caddy_site}
}}
"""


def start(
    label: str, workload: Workload, transport: Transport, site_root: Path, workdir: Path, placement: Placement,
    tls: TlsFiles | None,
) -> RunningServer:
    """Starts Caddy for one workload in workdir and returns once its port accepts connections."""
    workdir.mkdir(parents=True)
    port = free_port()
    config = workdir / "Caddyfile"
    config.write_text(render_config(root=site_root, port=port, workload=workload, transport=transport, tls=tls))
    process = PinnedProcess(
        name=label,
        argv=[CADDY, "run", "--adapter", "caddyfile", "--config", str(config)],
        cpus=placement.cpus,
        log_path=workdir / "stdout.log",
        # Caddy keeps its state (certificates, autosave) under XDG_DATA_HOME and XDG_CONFIG_HOME.
        env=os.environ | {"GOMAXPROCS": str(placement.workers),
                          "XDG_DATA_HOME": str(workdir), "XDG_CONFIG_HOME": str(workdir)},
    )
    process.start(ready_port=port)
    return RunningServer(label=label, process=process, port=port)
