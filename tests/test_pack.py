"""Packing a site directory: determinism, tar metadata, skipped files, script compilation, errors."""

import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import pytest

from zeroserve.core.compile import ScriptCompiler, is_bpf_object
from zeroserve.core.errors import ConfigError, ScriptCompileError
from zeroserve.core.pack import build
from zeroserve.core.site import Site

MTIME = 1_650_000_000
SCRIPT = "unsigned long long entry(void) { return 0; }\n"


@pytest.fixture(scope="module")
def compiler():
    return ScriptCompiler.find()


def make_tree(root, files):
    """Creates files ({rel: bytes}) under root with a fixed mtime on files and directories."""
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            os.utime(os.path.join(dirpath, name), (MTIME, MTIME))
    return root


@pytest.fixture
def tree(tmp_path):
    return make_tree(
        tmp_path / "site",
        {
            "index.html": b"<h1>home</h1>",
            "b.txt": b"b",
            "a/z.css": b"z",
            "a/b/deep.js": b"deep",
            "a.txt": b"a",
            "café.txt": b"utf8",
            "long/" + "n" * 150 + ".txt": b"long",
            ".zeroserve/config.json": b"{}",
        },
    )


def members(tar_path):
    with tarfile.open(tar_path) as tar:
        return tar.getmembers()


def test_pack_is_deterministic(tree, tmp_path):
    """Packing the same tree twice, or a copy of it made in another order, gives identical bytes."""
    build(tree, tmp_path / "one.tar")
    build(tree, tmp_path / "two.tar")
    copy = tmp_path / "copy"
    copy.mkdir()
    for rel in sorted((p.relative_to(tree) for p in tree.rglob("*")), key=str, reverse=True):
        source, target = tree / rel, copy / rel
        if source.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(source.read_bytes())
    make_tree(copy, {})
    build(copy, tmp_path / "three.tar")
    one = (tmp_path / "one.tar").read_bytes()
    assert one == (tmp_path / "two.tar").read_bytes() == (tmp_path / "three.tar").read_bytes()


def test_pack_entries_sorted_with_fixed_owner(tree, tmp_path):
    """Entries are depth first in byte order, owned by 0:0 with empty names, mtimes and modes kept."""
    (tree / "run.sh").write_bytes(b"#!/bin/sh\n")
    (tree / "run.sh").chmod(0o750)
    os.utime(tree / "run.sh", (MTIME, MTIME))
    build(tree, tmp_path / "out.tar")
    entries = members(tmp_path / "out.tar")
    assert [m.name for m in entries] == [
        ".zeroserve",
        ".zeroserve/config.json",
        "a",
        "a/b",
        "a/b/deep.js",
        "a/z.css",
        "a.txt",
        "b.txt",
        "café.txt",
        "index.html",
        "long",
        "long/" + "n" * 150 + ".txt",
        "run.sh",
    ]
    for member in entries:
        assert (member.uid, member.gid, member.uname, member.gname) == (0, 0, "", "")
        assert member.mtime == MTIME
        assert member.mode == (0o755 if member.isdir() or member.name == "run.sh" else 0o644)


def test_pack_output_serves_as_site(tree, tmp_path):
    """A packed tar opens as a site with every file, long and non-ASCII names included."""
    summary = build(tree, tmp_path / "out.tar")
    assert (summary.file_count, summary.total_bytes, summary.scripts_compiled) == (8, 30, 0)
    with Site.open(tmp_path / "out.tar") as site:
        assert site.file_count == 8
        assert site.read(site.get("café.txt")) == b"utf8"
        assert site.read(site.get("long/" + "n" * 150 + ".txt")) == b"long"
        assert site.get(".zeroserve/config.json").size == 2
        assert site.resolve("a/b/deep.js", False).mtime == MTIME


def test_pack_skips_symlinks_and_special_files(tree, tmp_path, caplog):
    """Symlinks and FIFOs are left out, each with a warning naming it."""
    (tree / "link.html").symlink_to("index.html")
    (tree / "dirlink").symlink_to("a")
    os.mkfifo(tree / "pipe")
    with caplog.at_level(logging.WARNING, logger="zeroserve.core.pack"):
        build(tree, tmp_path / "out.tar")
    names = {m.name for m in members(tmp_path / "out.tar")}
    assert not names & {"link.html", "dirlink", "pipe"}
    assert f"skipping symlink {tree / 'link.html'}" in caplog.text
    assert f"skipping symlink {tree / 'dirlink'}" in caplog.text
    assert f"skipping special file {tree / 'pipe'}" in caplog.text


def test_pack_skips_output_inside_source(tree):
    """Packing into the site directory does not put the previous tar inside the new one."""
    build(tree, tree / "site.tar")
    first = (tree / "site.tar").read_bytes()
    build(tree, tree / "site.tar")
    assert "site.tar" not in {m.name for m in members(tree / "site.tar")}
    assert (tree / "site.tar").read_bytes() == first


def test_pack_compiles_scripts(tree, tmp_path, compiler):
    """Every .c under .zeroserve/scripts/ (any depth) is stored compiled as .o; a stale .o beside it is dropped."""
    make_tree(
        tree,
        {
            ".zeroserve/scripts/10-main.c": SCRIPT.encode(),
            ".zeroserve/scripts/10-main.o": b"stale object",
            ".zeroserve/scripts/nested/20-more.c": SCRIPT.encode(),
            ".zeroserve/scripts/30-prebuilt.o": b"prebuilt",
            "src/not-a-script.c": b"kept as a file",
        },
    )
    summary = build(tree, tmp_path / "out.tar", compiler)
    assert summary.scripts_compiled == 2
    with Site.open(tmp_path / "out.tar") as site:
        names = [name for name, _ in site.scripts()]
        assert names == ["10-main.o", "30-prebuilt.o", "nested/20-more.o"]
        assert is_bpf_object(site.read(site.get(".zeroserve/scripts/10-main.o")))
        assert is_bpf_object(site.read(site.get(".zeroserve/scripts/nested/20-more.o")))
        assert site.get(".zeroserve/scripts/10-main.c") is None
        assert site.read(site.get("src/not-a-script.c")) == b"kept as a file"
        assert site.get(".zeroserve/scripts/10-main.o").mtime == MTIME


def test_pack_scripts_without_compiler_fail(tree, tmp_path):
    """C scripts with no compiler raise ScriptCompileError and leave no output."""
    make_tree(tree, {".zeroserve/scripts/10-main.c": SCRIPT.encode()})
    with pytest.raises(ScriptCompileError, match=r"10-main\.c: this site has C scripts but no compiler was given"):
        build(tree, tmp_path / "out.tar")
    assert os.listdir(tmp_path) == ["site"]


def test_pack_compile_error_leaves_nothing(tree, tmp_path, compiler):
    """A script that does not compile raises ScriptCompileError; neither output nor temp file remains."""
    make_tree(tree, {".zeroserve/scripts/10-bad.c": b"this is not C;\n"})
    (tmp_path / "out.tar").write_bytes(b"previous")
    with pytest.raises(ScriptCompileError, match=r"\.zeroserve/scripts/10-bad\.c"):
        build(tree, tmp_path / "out.tar", compiler)
    assert sorted(os.listdir(tmp_path)) == ["out.tar", "site"]
    assert (tmp_path / "out.tar").read_bytes() == b"previous"


def test_pack_unreadable_file_leaves_nothing(request):
    """A file pack cannot read gives ConfigError naming it, and neither output nor temp file remains."""
    # Run as nobody, since root reads any file; the work dir must be reachable by nobody.
    work = Path(tempfile.mkdtemp(prefix="zeroserve-pack-test-"))
    request.addfinalizer(lambda: shutil.rmtree(work))
    work.chmod(0o777)
    site = make_tree(work / "site", {"index.html": b"i", "secret.txt": b"s"})
    site.chmod(0o755)
    (site / "secret.txt").chmod(0o000)
    program = (
        "import sys\n"
        "from zeroserve.core.errors import ConfigError\n"
        "from zeroserve.core.pack import build\n"
        "try:\n"
        f"    build({str(site)!r}, {str(work / 'out.tar')!r})\n"
        "except ConfigError as error:\n"
        "    print(error)\n"
        "    sys.exit(3)\n"
    )
    run = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c", program],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 3, run.stderr
    assert "secret.txt: cannot read the file: Permission denied" in run.stdout
    assert sorted(os.listdir(work)) == ["site"]


def test_pack_source_missing(tmp_path):
    """A missing source directory raises ConfigError naming it."""
    with pytest.raises(ConfigError, match=r"missing: cannot open the site directory: No such file or directory"):
        build(tmp_path / "missing", tmp_path / "out.tar")


def test_pack_source_is_a_file(tmp_path):
    """A file given as the source raises ConfigError."""
    (tmp_path / "x").write_bytes(b"")
    with pytest.raises(ConfigError, match=r"x: is not a directory; give the site directory to pack"):
        build(tmp_path / "x", tmp_path / "out.tar")


def test_pack_source_without_files(tmp_path):
    """A tree of empty directories has nothing to serve: ConfigError and no output."""
    (tmp_path / "site" / "sub").mkdir(parents=True)
    with pytest.raises(ConfigError, match=r"site: holds no regular files to pack"):
        build(tmp_path / "site", tmp_path / "out.tar")
    assert not (tmp_path / "out.tar").exists()


def test_pack_output_directory_missing(tree, tmp_path):
    """An output path in a missing directory raises ConfigError."""
    with pytest.raises(ConfigError, match=r"the output's directory does not exist"):
        build(tree, tmp_path / "nope" / "out.tar")


def test_pack_output_is_a_directory(tree, tmp_path):
    """An output path naming a directory raises ConfigError."""
    with pytest.raises(ConfigError, match=r"is a directory; give the path of the tar file to write with -o"):
        build(tree, tmp_path)


def test_pack_output_is_readable(tree, tmp_path):
    """The packed tar is world-readable (0644), not the 0600 of a temporary file."""
    build(tree, tmp_path / "out.tar")
    assert (tmp_path / "out.tar").stat().st_mode & 0o777 == 0o644
