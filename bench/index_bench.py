"""Times Site.open on a generated tar of many small files (default 10,000) and prints the figure.

Usage: python bench/index_bench.py [FILE_COUNT] [FILE_BYTES]
"""

import io
import os
import sys
import tarfile
import tempfile
import time

from zeroserve.core.site import Site


def build_tar(path, file_count, file_bytes):
    """Writes a pax tar of file_count files spread over 100 directories, with long names mixed in."""
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for number in range(file_count):
            name = f"dir{number % 100:03d}/page-{number:05d}.html"
            if number % 10 == 0:
                name = f"dir{number % 100:03d}/" + "long-name-" * 12 + f"{number:05d}.html"
            body = (f"<p>{number}</p>".encode() * (file_bytes // 10 + 1))[:file_bytes]
            info = tarfile.TarInfo(name)
            info.size = len(body)
            info.mtime = 1_700_000_000 + number
            tar.addfile(info, io.BytesIO(body))


def main():
    file_count = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    file_bytes = int(sys.argv[2]) if len(sys.argv) > 2 else 1024
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "site.tar")
        build_tar(path, file_count, file_bytes)
        tar_bytes = os.path.getsize(path)
        wall, cpu = [], []
        for _ in range(5):
            started, started_cpu = time.perf_counter(), time.process_time()
            site = Site.open(path)
            wall.append(time.perf_counter() - started)
            cpu.append(time.process_time() - started_cpu)
            assert site.file_count == file_count
            site.close()
    # CPU time is reported beside wall time because a loaded machine inflates the latter.
    print(
        f"Site.open: {file_count} files of {file_bytes} bytes ({tar_bytes / 1e6:.1f} MB tar): "
        f"wall best {min(wall) * 1000:.1f} ms, median {sorted(wall)[len(wall) // 2] * 1000:.1f} ms; "
        f"CPU best {min(cpu) * 1000:.1f} ms over {len(wall)} runs"
    )


if __name__ == "__main__":
    main()
