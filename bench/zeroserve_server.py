"""Packs a workload's site with `zeroserve pack` and starts `zeroserve run` on it, pinned, with its worker count."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from process import PinnedProcess, Placement, RunningServer, ServerStartError, TlsFiles, free_port
from workloads import Transport, Workload

# The zeroserve next to the interpreter running the harness: the project's .venv.
ZEROSERVE = Path(sys.executable).with_name("zeroserve")


def pack(workload: Workload, site_root: Path, workdir: Path) -> Path:
    """Packs site_root plus the workload's scripts into workdir/site.tar and returns its path."""
    source = workdir / "site"
    shutil.copytree(site_root, source)
    if workload.zeroserve_scripts:
        scripts = source / ".zeroserve" / "scripts"
        scripts.mkdir(parents=True)
        for name, code in workload.zeroserve_scripts.items():
            (scripts / name).write_text(code)
    tar = workdir / "site.tar"
    done = subprocess.run(
        [str(ZEROSERVE), "pack", str(source), "-o", str(tar)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise ServerStartError(f"`zeroserve pack {source}` failed with code {done.returncode}:\n{done.stderr}")
    return tar


def start(
    label: str, workload: Workload, transport: Transport, site_root: Path, workdir: Path, placement: Placement,
    tls: TlsFiles | None,
) -> RunningServer:
    """Packs and starts zeroserve for one workload in workdir and returns once the client's port accepts connections."""
    workdir.mkdir(parents=True)
    tar = pack(workload, site_root, workdir)
    plain_port = free_port()
    argv = [str(ZEROSERVE), "run", "--addr", f"127.0.0.1:{plain_port}", "--threads", str(placement.workers),
            "--disable-request-logging"]  # fmt: skip
    if transport.tls:
        port = free_port()
        argv += ["--tls-addr", f"127.0.0.1:{port}", "--cert", str(tls.cert), "--key", str(tls.key)]
    else:
        port = plain_port
        argv += ["--tls-addr", "off"]  # else it also binds its default HTTPS port, 8443
    argv += [*workload.zeroserve_flags, str(tar)]
    process = PinnedProcess(name=label, argv=argv, cpus=placement.cpus, log_path=workdir / "stderr.log")
    process.start(ready_port=port)
    return RunningServer(label=label, process=process, port=port)
