"""The tar site index: formats, entry types, lookup, reads, and every malformed-tar error."""

import gzip
import hashlib
import io
import logging
import os
import tarfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sitetars import BLOCK, end_marker, header_block, link_info, pad, set_checksum, write_tar
from zeroserve.core.errors import SiteError
from zeroserve.core.site import Site

FORMATS = pytest.mark.parametrize(
    "tar_format",
    [tarfile.USTAR_FORMAT, tarfile.PAX_FORMAT, tarfile.GNU_FORMAT],
    ids=["ustar", "pax", "gnu"],
)


def blake_etag(content):
    return '"' + hashlib.blake2b(content, digest_size=16).hexdigest() + '"'


@pytest.fixture
def open_site(tmp_path):
    """Writes members to a tar and opens it; closes every site at the end."""
    opened = []

    def _open(members, tar_format=tarfile.PAX_FORMAT, name="site.tar"):
        site = Site.open(write_tar(tmp_path / name, members, tar_format))
        opened.append(site)
        return site

    yield _open
    for site in opened:
        site.close()


def open_bytes(tmp_path, data, name="raw.tar"):
    path = tmp_path / name
    path.write_bytes(data)
    return Site.open(path)


def small_tar_bytes(tmp_path):
    """A valid tar of two files, as bytes."""
    members = [("a.txt", b"alpha" * 30), ("b/c.html", b"<p>c</p>")]
    path = write_tar(tmp_path / "small.tar", members, tarfile.USTAR_FORMAT)
    return path.read_bytes()


# --- formats ------------------------------------------------------------------------


@FORMATS
def test_site_indexes_every_format(open_site, tar_format):
    """ustar, pax and GNU tars index to the same paths, sizes, mtimes and contents."""
    content = b"hello world\n"
    site = open_site([("docs", None), ("docs/a.txt", content, 1_234_567_890), ("empty.bin", b"")], tar_format)
    entry = site.get("docs/a.txt")
    assert (entry.size, entry.mtime) == (len(content), 1_234_567_890)
    assert site.read(entry) == content
    assert entry.etag == blake_etag(content)
    assert entry.content_type == "text/plain; charset=utf-8"
    assert entry.last_modified == "Fri, 13 Feb 2009 23:31:30 GMT"
    assert site.file_count == 2
    assert site.total_bytes == len(content)


def test_site_reads_ustar_prefix_field(open_site):
    """A ustar name longer than 100 bytes is joined from the prefix and name fields."""
    long_dir = "d" * 120
    site = open_site([(f"{long_dir}/file.txt", b"prefixed")], tarfile.USTAR_FORMAT)
    assert site.read(site.get(f"{long_dir}/file.txt")) == b"prefixed"


@pytest.mark.parametrize("tar_format", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT], ids=["pax", "gnu"])
def test_site_reads_long_names_and_long_link_names(open_site, tar_format):
    """Names and hard-link targets beyond the ustar limits come from pax or GNU L/K records."""
    long_name = "/".join(["segment-" + "x" * 40] * 8) + "/target.css"
    alias = "alias-" + "y" * 300 + ".css"
    site = open_site([(long_name, b"body{}"), link_info(alias, long_name)], tar_format)
    assert site.read(site.get(long_name)) == b"body{}"
    assert site.read(site.get(alias)) == b"body{}"
    assert site.get(alias).etag == site.get(long_name).etag


def test_site_reads_pax_mtime_with_fraction_and_beyond_octal_range(open_site):
    """A pax mtime record overrides the header field; its fraction is dropped."""
    big = tarfile.TarInfo("future.txt")
    big.mtime = 9_000_000_000  # does not fit 11 octal digits, so tarfile writes a pax record
    fractional = tarfile.TarInfo("fraction.txt")
    fractional.mtime = 1_700_000_000.75
    site = open_site([big, fractional])
    assert site.get("future.txt").mtime == 9_000_000_000
    assert site.get("fraction.txt").mtime == 1_700_000_000


def test_site_reads_gnu_base256_numbers(open_site):
    """GNU base-256 mtimes (large and negative) are decoded."""
    large = tarfile.TarInfo("large.txt")
    large.mtime = 9_000_000_000
    negative = tarfile.TarInfo("old.txt")
    negative.mtime = -86400
    site = open_site([large, negative], tarfile.GNU_FORMAT)
    assert site.get("large.txt").mtime == 9_000_000_000
    assert site.get("old.txt").mtime == -86400
    assert site.get("old.txt").last_modified == "Wed, 31 Dec 1969 00:00:00 GMT"


def test_site_reads_pax_path_with_unicode(open_site):
    """A non-ASCII name (stored as a pax path record) is indexed as text."""
    site = open_site([("café/naïve.txt", b"utf8")])
    assert site.read(site.get("café/naïve.txt")) == b"utf8"


def test_site_normalises_member_names(open_site):
    """Leading "./" and "/" and trailing "/" are stripped from member names."""
    site = open_site([("./a.txt", b"a"), ("/b.txt", b"b"), ("./c/./d.txt", b"d")])
    assert [site.read(site.get(p)) for p in ("a.txt", "b.txt", "c/d.txt")] == [b"a", b"b", b"d"]


def test_site_later_member_replaces_earlier(open_site):
    """When a path appears twice, the later member wins, as when extracting."""
    site = open_site([("x.txt", b"first"), ("x.txt", b"second")])
    assert site.read(site.get("x.txt")) == b"second"
    assert site.file_count == 1


def test_site_empty_file_and_zero_mtime(open_site):
    """An empty file is served with the hash of no bytes; mtime 0 gives no Last-Modified."""
    site = open_site([("empty.txt", b"", 0), ("x.txt", b"x")])
    entry = site.get("empty.txt")
    assert (entry.size, entry.etag, entry.last_modified) == (0, blake_etag(b""), None)
    assert site.read(entry) == b""
    assert ("last-modified", None) not in entry.headers
    assert all(name != "last-modified" for name, _ in entry.headers)


# --- entry types --------------------------------------------------------------------


def test_site_serves_hard_links_as_their_target(open_site):
    """A hard link is an alias of the earlier file: same bytes and ETag, its own type."""
    site = open_site([("page.html", b"<h1>hi</h1>"), link_info("copy.txt", "page.html")])
    copy = site.get("copy.txt")
    assert site.read(copy) == b"<h1>hi</h1>"
    assert copy.etag == site.get("page.html").etag
    assert copy.content_type == "text/plain; charset=utf-8"


def test_site_skips_hard_link_to_missing_target(open_site, caplog):
    """A hard link whose target is not an earlier file is skipped with a warning."""
    with caplog.at_level(logging.WARNING, logger="zeroserve.core.site"):
        site = open_site([("real.txt", b"r"), link_info("dangling.txt", "nowhere.txt")])
    assert site.get("dangling.txt") is None
    assert "dangling.txt" in caplog.text and "nowhere.txt" in caplog.text


def test_site_skips_symlinks_and_fifos_with_warning(open_site, caplog):
    """Symlinks and FIFOs are not served; each is named in a warning."""
    fifo = tarfile.TarInfo("pipe")
    fifo.type = tarfile.FIFOTYPE
    with caplog.at_level(logging.WARNING, logger="zeroserve.core.site"):
        site = open_site([("index.html", b"i"), link_info("ln.html", "index.html", tarfile.SYMTYPE), fifo])
    assert site.get("ln.html") is None and site.get("pipe") is None
    assert "'ln.html'" in caplog.text and "symlink" in caplog.text
    assert "'pipe'" in caplog.text


def test_site_skips_gnu_sparse_files(tmp_path, caplog):
    """A GNU sparse member cannot be served in place, so it is skipped with a warning."""
    data = (
        header_block(b"sparse.bin", size=4, typeflag=b"S", magic=b"ustar  \x00")
        + pad(b"data")
        + header_block(b"ok.txt", size=2)
        + pad(b"ok")
        + end_marker()
    )
    with caplog.at_level(logging.WARNING, logger="zeroserve.core.site"):
        site = open_bytes(tmp_path, data)
    assert site.get("sparse.bin") is None
    assert site.read(site.get("ok.txt")) == b"ok"
    assert "sparse" in caplog.text
    site.close()


def test_site_directories_are_not_files(open_site):
    """Directory members are not entries; their index file is found through resolve."""
    site = open_site([("docs", None), ("docs/index.html", b"docs")])
    assert site.get("docs") is None
    assert site.resolve("docs", False).path == "docs/index.html"


def test_site_old_style_directory_is_not_a_file(tmp_path):
    """A pre-POSIX directory (type '0' with a name ending in '/') is a directory, not an empty file."""
    data = (
        header_block(b"docs/", typeflag=b"\x00", magic=b"\x00" * 8)
        + header_block(b"docs/index.html", size=4)
        + pad(b"docs")
        + end_marker()
    )
    with open_bytes(tmp_path, data) as site:
        assert site.get("docs") is None
        assert site.resolve("docs", False).path == "docs/index.html"


def test_site_skips_global_pax_header(tmp_path):
    """A global pax header (as git archive writes) does not become a file."""
    path = tmp_path / "global.tar"
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT, pax_headers={"comment": "abc123"}) as tar:
        info = tarfile.TarInfo("index.html")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"i"))
    assert path.read_bytes()[156:157] == b"g"
    with Site.open(path) as site:
        assert site.file_count == 1
        assert site.read(site.get("index.html")) == b"i"


def test_site_accepts_trailing_bytes_after_end_marker(tmp_path):
    """Whatever follows the end-of-archive marker is left unread."""
    with open_bytes(tmp_path, small_tar_bytes(tmp_path) + b"trailing garbage" * 100) as site:
        assert site.read(site.get("a.txt")) == b"alpha" * 30


def test_site_accepts_a_lone_zero_block_as_end(tmp_path):
    """One zero block ends the archive like two do."""
    data = header_block(b"a.txt", size=1) + pad(b"a") + bytes(BLOCK)
    with open_bytes(tmp_path, data) as site:
        assert site.read(site.get("a.txt")) == b"a"


# --- lookup -------------------------------------------------------------------------


@pytest.fixture
def lookup_site(open_site):
    return open_site(
        [
            ("index.html", b"root"),
            ("docs/index.html", b"docs"),
            ("about.html", b"about"),
            ("page.html.html", b"double"),
            ("home.htm", b"htm"),
            ("custom/start.html", b"start"),
            ("clash", b"file"),
            ("clash/index.html", b"dir index"),
            (".zeroserve/config.json", b"{}"),
            (".zeroserve/index.html", b"private"),
            (".zeroserve/scripts/20-b.o", b"b"),
            (".zeroserve/scripts/10-a.o", b"a"),
            (".zeroserve/scripts/sub/05-c.o", b"c"),
            (".zeroserve/scripts/readme.txt", b"r"),
            (".zeroserve/scripts/Z.o", b"z"),
            (".zeroserveX.html", b"public"),
            ("404.html", b"missing"),
        ]
    )


def test_site_resolve_root_and_directory_index(lookup_site):
    """The root and a directory (with or without a slash) resolve to their index."""
    assert lookup_site.resolve("", True).path == "index.html"
    assert lookup_site.resolve("docs", False).path == "docs/index.html"
    assert lookup_site.resolve("docs", True).path == "docs/index.html"


def test_site_resolve_custom_index(lookup_site):
    """The index name is an option; an empty one falls back to index.html."""
    assert lookup_site.resolve("custom", True, index="start.html").path == "custom/start.html"
    assert lookup_site.resolve("", True, index="").path == "index.html"


def test_site_resolve_try_html(lookup_site):
    """With try_html, a miss tries path.html, but never for a path already ending in .html."""
    assert lookup_site.resolve("about", False) is None
    assert lookup_site.resolve("about", False, try_html=True).path == "about.html"
    assert lookup_site.resolve("page.html", False, try_html=True) is None
    assert lookup_site.resolve("home", False, try_html=True) is None


def test_site_resolve_dir_hint_prefers_index(lookup_site):
    """For "/clash/" the directory index wins; for "/clash" the exact file does."""
    assert lookup_site.resolve("clash", False).path == "clash"
    assert lookup_site.resolve("clash", True).path == "clash/index.html"


def test_site_resolve_never_returns_private_files(lookup_site):
    """`.zeroserve/` files are reachable through get (for scripts) but never through resolve."""
    assert lookup_site.resolve(".zeroserve/config.json", False) is None
    assert lookup_site.resolve(".zeroserve", True) is None
    assert lookup_site.resolve(".zeroserve", False, try_html=False) is None
    assert lookup_site.get(".zeroserve/config.json").size == 2
    assert lookup_site.resolve(".zeroserveX", False, try_html=True).path == ".zeroserveX.html"


def test_site_scripts_sorted_by_byte_order(lookup_site):
    """Scripts are every .o under .zeroserve/scripts/ (any depth), named by the rest of the path, in byte order."""
    names = [name for name, _ in lookup_site.scripts()]
    assert names == ["10-a.o", "20-b.o", "Z.o", "sub/05-c.o"]
    assert lookup_site.read(dict(lookup_site.scripts())["sub/05-c.o"]) == b"c"


def test_site_not_found_page(lookup_site, open_site):
    """A root 404.html is remembered for 404 answers."""
    assert lookup_site.not_found_page.path == "404.html"
    assert open_site([("x.txt", b"x")], name="other.tar").not_found_page is None


# --- precompressed siblings -----------------------------------------------------------


def test_site_links_precompressed_siblings(open_site):
    """x.br and x.gz become representations of x with their own ETag and x's type."""
    css = b"body { color: red }" * 20
    site = open_site([("app.css", css), ("app.css.br", b"brotli-bytes"), ("app.css.gz", gzip.compress(css, mtime=0))])
    entry = site.get("app.css")
    codings = [coding for coding, _ in entry.encodings]
    assert codings == ["br", "gzip"]
    brotli = dict(entry.encodings)["br"]
    assert brotli.content_type == entry.content_type == "text/css; charset=utf-8"
    assert brotli.content_encoding == "br"
    assert brotli.etag != entry.etag
    assert site.read(brotli) == b"brotli-bytes"
    assert ("vary", "Accept-Encoding") in entry.headers
    assert ("content-encoding", "br") in brotli.headers
    assert site.get("app.css.gz").content_encoding is None


# --- reads --------------------------------------------------------------------------


def test_site_read_ranges_and_bounds(open_site):
    """read returns any sub-range of a body and refuses one outside it."""
    site = open_site([("n.txt", bytes(range(256)) * 8)])
    entry = site.get("n.txt")
    assert site.read(entry, 10, 5) == bytes(range(10, 15))
    assert site.read(entry, 2040) == bytes(range(248, 256))
    with pytest.raises(ValueError):
        site.read(entry, 2040, 9)
    with pytest.raises(ValueError):
        site.read(entry, -1, 1)


def test_site_close_is_idempotent(open_site):
    """close releases the fd once; a second close does nothing."""
    site = open_site([("a", b"a")])
    fd = site.fd
    site.close()
    site.close()
    with pytest.raises(OSError):
        os.fstat(fd)


# --- errors -------------------------------------------------------------------------


def test_site_error_missing_file(tmp_path):
    """A missing tar names the path and says to check it."""
    message = r"nope\.tar: cannot open the site tar: No such file or directory; check the path"
    with pytest.raises(SiteError, match=message):
        Site.open(tmp_path / "nope.tar")


def test_site_error_directory(tmp_path):
    """A directory given as the site says to pack it."""
    with pytest.raises(SiteError, match=r"is a directory, not a site tar; pack it with 'zeroserve pack"):
        Site.open(tmp_path)


def test_site_error_empty_file(tmp_path):
    """An empty file is not a tar."""
    with pytest.raises(SiteError, match=r"raw\.tar: is empty, not a tar archive"):
        open_bytes(tmp_path, b"")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"<html>hello</html>\n" * 40, r"is not a tar archive \(no valid tar header at offset 0\)"),
        (b"short text", r"is not a tar archive \(no valid tar header at offset 0\)"),
        (gzip.compress(b"x" * 2000), r"is a gzip-compressed file, not a tar"),
        (b"\x28\xb5\x2f\xfd" + bytes(600), r"is a zstd-compressed file, not a tar"),
    ],
    ids=["html", "short", "gzip", "zstd"],
)
def test_site_error_not_a_tar(tmp_path, data, message):
    """A file that does not start with a tar header is reported as not a tar (compressed ones by name)."""
    with pytest.raises(SiteError, match=message):
        open_bytes(tmp_path, data)


def test_site_error_no_regular_files(tmp_path, open_site):
    """A tar with only directories and symlinks has nothing to serve."""
    with pytest.raises(SiteError, match=r"site\.tar: tarball does not contain any regular files"):
        open_site([("docs", None), link_info("l", "docs", tarfile.SYMTYPE)])


def test_site_error_truncated_in_body(tmp_path):
    """A tar cut inside a body names the entry, its header offset and where the file ends."""
    data = small_tar_bytes(tmp_path)
    with pytest.raises(
        SiteError,
        match=r"truncated tar: entry 'a\.txt' \(header at offset 0\) needs 150 bytes from offset 512 "
        r"but the file ends at offset 600",
    ):
        open_bytes(tmp_path, data[:600])


def test_site_error_truncated_in_header(tmp_path):
    """A tar cut inside a header names the header's offset."""
    data = small_tar_bytes(tmp_path)
    with pytest.raises(SiteError, match=r"truncated tar: the header at offset 1024 is cut short \(100 of 512 bytes\)"):
        open_bytes(tmp_path, data[:1124])


def test_site_error_missing_end_marker(tmp_path):
    """A tar that stops at a header boundary without the end marker is reported as truncated."""
    data = small_tar_bytes(tmp_path)
    with pytest.raises(SiteError, match=r"the file ends at offset 2048 without the end-of-archive marker"):
        open_bytes(tmp_path, data[:2048])


def test_site_error_checksum_mismatch(tmp_path):
    """A damaged header after the first is a corrupt tar with its offset."""
    data = bytearray(small_tar_bytes(tmp_path))
    data[1024 + 5] ^= 0x01  # a byte of the second member's name
    message = r"corrupt tar: header checksum mismatch \(stored \d+, computed \d+\) at offset 1024"
    with pytest.raises(SiteError, match=message):
        open_bytes(tmp_path, bytes(data))


def test_site_error_bad_octal_size(tmp_path):
    """A size field that is not octal is reported with its offset."""
    block = header_block(b"a.txt", size=1)
    block[124:136] = b"0000000009z\x00"
    set_checksum(block)
    with pytest.raises(SiteError, match=r"header field 'size' is not an octal number .* at offset 0"):
        open_bytes(tmp_path, bytes(block) + pad(b"a") + end_marker())


def _pax_member(records, name=b"f.txt", content=b"pax"):
    return (
        header_block(b"PaxHeader/f", size=len(records), typeflag=b"x")
        + pad(records)
        + header_block(name, size=len(content))
        + pad(content)
    )


def test_site_reads_pax_size_and_path_records(tmp_path):
    """A pax header's size and path records override the ustar fields."""
    records = b"18 path=real-name\n" + b"11 size=11\n"
    data = (
        header_block(b"PaxHeader/f", size=len(records), typeflag=b"x")
        + pad(records)
        + header_block(b"ignored", size=0)
        + pad(b"hello world")
        + end_marker()
    )
    with open_bytes(tmp_path, data) as site:
        assert site.get("ignored") is None
        assert site.read(site.get("real-name")) == b"hello world"


@pytest.mark.parametrize(
    ("records", "message"),
    [
        (b"abc path=x\n", r"pax record length is not a number at offset 0"),
        (b"99 path=x\n", r"malformed pax record \(byte 0 of the extended header\) at offset 0"),
        (b"10 pathx\n\n", r"pax record without '=' \(byte 0 of the extended header\) at offset 0"),
        (b"12 size=1x2\n", r"pax 'size' value '1x2' is not a number at offset 0"),
    ],
    ids=["length", "overlong", "no-equals", "size"],
)
def test_site_error_corrupt_pax_record(tmp_path, records, message):
    """Malformed pax records are reported with the extended header's offset."""
    with pytest.raises(SiteError, match=message):
        open_bytes(tmp_path, _pax_member(records) + end_marker())


def test_site_error_oversized_extended_header(tmp_path):
    """An extended header declaring more than the limit is refused before it is read."""
    data = header_block(b"././@LongLink", size=5 << 20, typeflag=b"L") + bytes(BLOCK) + end_marker()
    with pytest.raises(SiteError, match=r"GNU long name declares 5242880 bytes \(limit 1048576\) at offset 0"):
        open_bytes(tmp_path, data)


def test_site_error_extended_header_before_end(tmp_path):
    """An extended header with no member after it is corrupt."""
    records = b"18 path=real-name\n"
    data = header_block(b"PaxHeader/f", size=len(records), typeflag=b"x") + pad(records) + end_marker()
    with pytest.raises(SiteError, match=r"extended header is followed by the end-of-archive marker at offset 1024"):
        open_bytes(tmp_path, data)


def test_site_every_truncation_is_a_clean_error(tmp_path):
    """Cutting a tar at any byte either still indexes (after the marker) or raises SiteError."""
    data = small_tar_bytes(tmp_path)
    marker_end = 2048 + BLOCK
    for cut in range(0, marker_end + 2 * BLOCK, 5):
        try:
            with open_bytes(tmp_path, data[:cut]) as site:
                assert cut >= marker_end
                assert site.file_count == 2
        except SiteError as error:
            assert cut < marker_end
            assert str(error).startswith(str(tmp_path / "raw.tar") + ": ")
            assert "\n" not in str(error)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(flips=st.lists(st.tuples(st.integers(0, 3583), st.integers(1, 255)), min_size=1, max_size=4))
def test_site_corrupted_bytes_never_crash(tmp_path, flips):
    """Any damaged tar indexes or raises SiteError with a one-line message; nothing else escapes."""
    data = bytearray(small_tar_bytes(tmp_path)[:3584])
    for position, mask in flips:
        data[position] ^= mask
    try:
        with open_bytes(tmp_path, bytes(data)) as site:
            for path in ("a.txt", "b/c.html"):
                entry = site.get(path)
                if entry is not None:
                    assert len(site.read(entry)) == entry.size
    except SiteError as error:
        assert "\n" not in str(error)
