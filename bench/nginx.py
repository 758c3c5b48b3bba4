"""Writes the nginx configuration for a workload, tuned as well as nginx allows, and starts nginx as a pinned child.

nginx is the baseline, so it gets its best static-file settings: one worker pinned to the server core,
open_file_cache, sendfile, no access log, keep-alive connections that never run out of requests.
It runs in the foreground (`daemon off`) with its own prefix, pid file and temp directories.
"""

from __future__ import annotations

from pathlib import Path

from process import PinnedProcess, Placement, RunningServer, TlsFiles, free_port
from workloads import Transport, Workload

NGINX = "/usr/sbin/nginx"
MODULES_DIR = Path("/usr/lib/nginx/modules")
MIME_TYPES = Path("/etc/nginx/mime.types")


def render_config(
    *, prefix: Path, root: Path, port: int, workload: Workload, transport: Transport, tls: TlsFiles | None,
    placement: Placement,
) -> str:
    """Returns nginx.conf text serving `root` on 127.0.0.1:port for one workload and transport."""
    modules = "".join(f"load_module {MODULES_DIR / module}.so;\n" for module in workload.nginx_modules)
    # Before nginx 1.25 `http2` is a listen flag: with `ssl` it adds h2 to ALPN (HTTP/1.1 stays
    # available); without `ssl` the port speaks only h2c prior knowledge, so it is set only for h2load.
    listen_flags = " ssl http2" if transport.tls else (" http2" if transport.h2 else "")
    tls_directives = (
        f"""
        ssl_certificate {tls.cert};
        ssl_certificate_key {tls.key};
        ssl_protocols TLSv1.3;
        ssl_prefer_server_ciphers on;
        ssl_conf_command Ciphersuites TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256;
        ssl_session_cache shared:bench:10m;"""
        if transport.tls
        else ""
    )
    # worker_cpu_affinity is one bit mask per worker, rightmost digit CPU 0; the workers take the cores in turn.
    cpus = placement.cpus
    affinity = " ".join("1" + "0" * cpus[i % len(cpus)] for i in range(placement.workers))
    return f"""{modules}worker_processes {placement.workers};
worker_cpu_affinity {affinity};
pid {prefix / "nginx.pid"};
error_log stderr warn;

events {{
    worker_connections 16384;
}}

http {{
    include {MIME_TYPES};
    default_type application/octet-stream;
    access_log off;
    server_tokens off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    open_file_cache max=10000 inactive=60s;
    open_file_cache_valid 60s;
    open_file_cache_min_uses 1;
    open_file_cache_errors on;
    keepalive_requests 100000;
    keepalive_timeout 65s;
    client_body_temp_path {prefix / "client_body"};
    proxy_temp_path {prefix / "proxy"};
    fastcgi_temp_path {prefix / "fastcgi"};
    uwsgi_temp_path {prefix / "uwsgi"};
    scgi_temp_path {prefix / "scgi"};
{workload.nginx_http}
    server {{
        listen 127.0.0.1:{port}{listen_flags};
        server_name localhost;
        root {root};{tls_directives}

        location / {{
{workload.nginx_location}
        }}
    }}
}}
"""


def start(
    label: str, workload: Workload, transport: Transport, site_root: Path, workdir: Path, placement: Placement,
    tls: TlsFiles | None,
) -> RunningServer:
    """Starts nginx for one workload in workdir (its prefix) and returns once its port accepts connections."""
    workdir.mkdir(parents=True)
    port = free_port()
    config = workdir / "nginx.conf"
    config.write_text(
        render_config(
            prefix=workdir, root=site_root, port=port, workload=workload, transport=transport, tls=tls,
            placement=placement,
        )
    )
    process = PinnedProcess(
        name=label,
        argv=[NGINX, "-p", str(workdir), "-c", str(config), "-e", "stderr", "-g", "daemon off;"],
        cpus=placement.cpus,
        log_path=workdir / "stdout.log",
    )
    process.start(ready_port=port)
    return RunningServer(label=label, process=process, port=port)
