"""Packing: a site directory in, a deterministic site tar out (scripts compiled on the way).

Deterministic means the same tree gives the same bytes: entries in sorted order
(depth first, names in byte order), owner 0:0 with empty user and group names, mode
0644 or 0755, mtimes kept (whole seconds), pax format. Directory entries are stored;
symlinks, special files and names that are not UTF-8 are skipped with a warning.
`.zeroserve/` is kept. Every `.c` under `.zeroserve/scripts/` is compiled and stored as
the same path ending in `.o` (a `.o` beside a `.c` of the same stem is dropped: the
source wins). The tar is written to a temporary file beside the output and renamed into
place, so a failed pack leaves no output behind.
"""

import io
import logging
import os
import stat
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from zeroserve.core.errors import ConfigError, ScriptCompileError

log = logging.getLogger(__name__)

SCRIPTS_DIR = ".zeroserve/scripts/"


@dataclass(frozen=True, slots=True)
class PackSummary:
    """What a pack stored: regular files, their total bytes, and scripts compiled."""

    file_count: int
    total_bytes: int
    scripts_compiled: int


@dataclass(frozen=True, slots=True)
class _Item:
    """One tar entry to write: a directory, a file copied from disk, or compiled bytes."""

    rel: str
    source: Path
    mode: int
    mtime: int
    is_dir: bool = False
    data: bytes | None = None


def build(source_dir, output_path, compiler=None):
    """Packs source_dir into the tar output_path; returns a PackSummary.

    compiler.compile(source_path, rel_path) -> bytes turns each script source into an
    eBPF object (raising ScriptCompileError). Raises ConfigError for an unusable
    directory or output, ScriptCompileError when scripts need a compiler and none was
    given or compilation fails.
    """
    source = Path(source_dir)
    output = Path(output_path)
    try:
        source_mode = source.stat().st_mode
    except OSError as error:
        raise ConfigError(f"{source}: cannot open the site directory: {error.strerror}; check the path") from None
    if not stat.S_ISDIR(source_mode):
        raise ConfigError(f"{source}: is not a directory; give the site directory to pack")
    if not output.parent.is_dir():
        raise ConfigError(f"{output}: the output's directory does not exist; create it or choose another -o path")
    if output.is_dir():
        raise ConfigError(f"{output}: is a directory; give the path of the tar file to write with -o")
    items = _walk(source, "", _identity(output), [])
    items = _compile_scripts(items, compiler)
    files = [item for item in items if not item.is_dir]
    if not files:
        raise ConfigError(f"{source}: holds no regular files to pack; a site needs at least one file")
    try:
        temp = tempfile.NamedTemporaryFile(dir=output.parent, prefix=f".{output.name}.", suffix=".tmp", delete=False)
    except OSError as error:
        raise ConfigError(f"{output}: cannot write in its directory: {error.strerror}; choose another -o path") from None
    try:
        with temp:
            os.fchmod(temp.fileno(), 0o644)
            total_bytes = _write_tar(temp, items)
        os.replace(temp.name, output)
    except OSError as error:
        os.unlink(temp.name)
        raise ConfigError(f"{output}: cannot write the tar: {error.strerror or error}; choose another -o path") from None
    except BaseException:
        os.unlink(temp.name)
        raise
    scripts_compiled = sum(1 for item in files if item.data is not None)
    return PackSummary(len(files), total_bytes, scripts_compiled)


def _identity(path):
    """(device, inode) of an existing output file, so a tar packed into its own site is not re-added."""
    try:
        info = path.stat()
    except OSError:
        return None
    return info.st_dev, info.st_ino


def _walk(directory, prefix, output_identity, items):
    """Appends every directory and regular file under directory, depth first, names in byte order."""
    try:
        with os.scandir(directory) as scan:
            children = sorted(scan, key=lambda child: os.fsencode(child.name))
    except OSError as error:
        raise ConfigError(f"{directory}: cannot list the directory: {error.strerror}; fix its permissions") from None
    for child in children:
        rel = prefix + child.name
        try:
            rel.encode("utf-8")
        except UnicodeEncodeError:
            log.warning("skipping %s: its name is not UTF-8, so no request could name it", child.path)
            continue
        try:
            info = child.stat(follow_symlinks=False)
        except OSError as error:
            raise ConfigError(f"{child.path}: cannot read it: {error.strerror}; fix it and pack again") from None
        if stat.S_ISLNK(info.st_mode):
            log.warning("skipping symlink %s: a site tar holds only directories and regular files", child.path)
        elif stat.S_ISDIR(info.st_mode):
            items.append(_Item(rel, Path(child.path), 0o755, int(info.st_mtime), is_dir=True))
            _walk(child.path, rel + "/", output_identity, items)
        elif stat.S_ISREG(info.st_mode):
            if (info.st_dev, info.st_ino) != output_identity:
                mode = 0o755 if info.st_mode & 0o111 else 0o644
                items.append(_Item(rel, Path(child.path), mode, int(info.st_mtime)))
        else:
            log.warning("skipping special file %s: a site tar holds only directories and regular files", child.path)
    return items


def _compile_scripts(items, compiler):
    """Replaces each script source by its compiled object and drops stale objects."""
    sources = {item.rel for item in items if _is_script_source(item)}
    if sources and compiler is None:
        first = min(sources)
        raise ScriptCompileError(
            f"{first}: this site has C scripts but no compiler was given; pass a script compiler to pack"
        )
    packed = []
    for item in items:
        if _is_script_source(item):
            data = compiler.compile(item.source, item.rel)
            packed.append(_Item(item.rel[:-2] + ".o", item.source, 0o644, item.mtime, data=data))
        elif item.rel.startswith(SCRIPTS_DIR) and item.rel.endswith(".o") and item.rel[:-2] + ".c" in sources:
            log.info("leaving out %s: %s.c beside it is compiled instead", item.source, item.rel[:-2])
        else:
            packed.append(item)
    return packed


def _is_script_source(item):
    return not item.is_dir and item.rel.startswith(SCRIPTS_DIR) and item.rel.endswith(".c")


def _write_tar(stream, items):
    """Writes the tar to stream; returns the total bytes of the regular files."""
    total = 0
    with tarfile.open(fileobj=stream, mode="w", format=tarfile.PAX_FORMAT, encoding="utf-8") as tar:
        for item in items:
            info = tarfile.TarInfo(item.rel)
            info.mode = item.mode
            info.mtime = item.mtime
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if item.is_dir:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
                continue
            if item.data is not None:
                info.size = len(item.data)
                tar.addfile(info, io.BytesIO(item.data))
            else:
                try:
                    with open(item.source, "rb") as body:
                        info.size = os.fstat(body.fileno()).st_size
                        tar.addfile(info, body)
                except OSError as error:
                    raise ConfigError(
                        f"{item.source}: cannot read the file: {error.strerror or error}; fix it and pack again"
                    ) from None
            total += info.size
    return total
