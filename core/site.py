"""The tar site: one open tar file, indexed once at load (path → byte range and validators), read in place.

The tar headers are parsed here rather than with `tarfile` because serving needs what
`tarfile` hides or loses: the raw file offset of every body, the exact byte offset of a
damaged header for the error message, and one strict pass with bounds checks on every
length. Supported: POSIX ustar, pax extended headers ('x'; 'g' is skipped), GNU long names
('L' and 'K') and GNU base-256 numbers. Regular files and hard links to them are served;
directories, symlinks, devices, FIFOs and sparse files are not.

Everything a response needs that can be computed at load time is computed here: the
ETag (BLAKE2b-128 of the content), the Content-Type, the Last-Modified string, the
precompressed siblings and the preformatted 200 header list.
"""

import hashlib
import logging
import mmap
import os
import stat
import time
from dataclasses import dataclass, field

from zeroserve.core.errors import SiteError
from zeroserve.core.mime import content_type_for

log = logging.getLogger(__name__)

BLOCK = 512
_ZERO_BLOCK = bytes(BLOCK)
# Extended headers (pax records, GNU long names) are read into memory; a tar that
# declares more than this is damaged or hostile.
MAX_EXTENDED_HEADER = 1 << 20
PRIVATE_PREFIX = ".zeroserve/"
SCRIPTS_PREFIX = ".zeroserve/scripts/"
# Precompressed siblings in server preference order: (suffix, content-coding).
SIBLING_CODINGS = ((".br", "br"), (".gz", "gzip"))
# Dates Last-Modified can carry as an IMF-fixdate (years 1 to 9999).
_MIN_HTTP_TIME = -62135596800
_MAX_HTTP_TIME = 253402300799

_REGULAR_TYPES = frozenset(b"07\0")
_HARDLINK = ord("1")
_SYMLINK = ord("2")
_DIRECTORY = ord("5")
# Types whose size field does not count data blocks (POSIX: links, devices, dirs, FIFOs).
_NO_DATA_TYPES = frozenset(b"123456")
_PAX_LOCAL = ord("x")
_PAX_GLOBAL = ord("g")
_GNU_LONG_NAME = ord("L")
_GNU_LONG_LINK = ord("K")
_GNU_SPARSE = ord("S")
_USTAR_MAGIC = b"ustar\x00"
_COMPRESSED_MAGICS = (
    (b"\x1f\x8b", "gzip"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"BZh", "bzip2"),
)
_REPACK = "re-create it with 'zeroserve pack DIR -o site.tar'"


@dataclass(frozen=True, slots=True)
class Entry:
    """One servable representation: a regular file of the tar (or a precompressed sibling).

    offset/size locate the body in the tar file; etag is the quoted strong ETag;
    last_modified is an IMF-fixdate or None when the tar mtime is 0; encodings lists the
    precompressed siblings as (content-coding, Entry) in server preference order;
    content_encoding is set on a sibling served for another path; headers is the full
    header list of a 200 response (lowercase names).
    """

    path: str
    offset: int
    size: int
    mtime: int
    etag: str
    content_type: str
    last_modified: str | None
    encodings: tuple = ()
    content_encoding: str | None = None
    headers: tuple = field(default=(), repr=False)

    @property
    def varies(self):
        """True when the representation depends on Accept-Encoding."""
        return bool(self.encodings) or self.content_encoding is not None


_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def http_date(timestamp):
    """The IMF-fixdate of a Unix time (RFC 9110 §5.6.7), independent of the locale."""
    t = time.gmtime(timestamp)
    return (
        f"{_WEEKDAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} {t.tm_year:04d} "
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT"
    )


def _make_entry(path, offset, size, mtime, etag, content_type, encodings=(), content_encoding=None):
    """An Entry with its Last-Modified value and 200 header list preformatted."""
    last_modified = None
    if mtime != 0 and _MIN_HTTP_TIME <= mtime <= _MAX_HTTP_TIME:
        last_modified = http_date(mtime)
    headers = [("content-type", content_type), ("content-length", str(size)), ("etag", etag)]
    if last_modified is not None:
        headers.append(("last-modified", last_modified))
    headers.append(("accept-ranges", "bytes"))
    if content_encoding is not None:
        headers.append(("content-encoding", content_encoding))
    if encodings or content_encoding is not None:
        headers.append(("vary", "Accept-Encoding"))
    return Entry(
        path, offset, size, mtime, etag, content_type, last_modified, encodings, content_encoding, tuple(headers)
    )


def normalize_tar_path(name):
    """A tar member name as the index keys it: no "./", no empty segments, no outer slashes."""
    return "/".join(segment for segment in name.split("/") if segment and segment != ".")


@dataclass(slots=True)
class _Member:
    """A regular file found by the parser, before hashing."""

    offset: int
    size: int
    mtime: int


class _TarParser:
    """One pass over the tar's bytes; collects regular files and resolves hard links."""

    def __init__(self, display_path, data):
        self.display_path = display_path
        self.data = data
        self.end = len(data)
        self.members = {}

    def fail(self, what, offset):
        raise SiteError(f"{self.display_path}: {what} at offset {offset}; {_REPACK}")

    def number(self, field, name, header_offset):
        """An octal (or GNU base-256) numeric header field."""
        if field[0] & 0x80:
            if field[0] == 0xFF:
                return int.from_bytes(field, "big", signed=True)
            return int.from_bytes(bytes([field[0] & 0x7F]) + field[1:], "big")
        digits = field.split(b"\0", 1)[0].strip(b" ")
        if not digits:
            return 0
        if digits.strip(b"01234567"):
            self.fail(f"corrupt tar: header field '{name}' is not an octal number ({digits!r})", header_offset)
        return int(digits, 8)

    def check_header(self, block, offset):
        stored = block[148:156].split(b"\0", 1)[0].strip(b" ")
        if not stored or stored.strip(b"01234567"):
            if offset == 0:
                self.not_a_tar(block)
            self.fail("corrupt tar: header checksum field is not a number", offset)
        expected = int(stored, 8)
        unsigned = sum(block) - sum(block[148:156]) + 8 * 0x20
        if expected == unsigned:
            return
        # Some old writers summed signed chars.
        signed = unsigned - 256 * sum(1 for byte in block if byte & 0x80)
        signed += 256 * sum(1 for byte in block[148:156] if byte & 0x80)
        if expected == signed:
            return
        if offset == 0:
            self.not_a_tar(block)
        self.fail(f"corrupt tar: header checksum mismatch (stored {expected}, computed {unsigned})", offset)

    def not_a_tar(self, block):
        for magic, name in _COMPRESSED_MAGICS:
            if block.startswith(magic):
                raise SiteError(
                    f"{self.display_path}: is a {name}-compressed file, not a tar; zeroserve serves an "
                    f"uncompressed tar in place: decompress it or {_REPACK}"
                )
        raise SiteError(
            f"{self.display_path}: is not a tar archive (no valid tar header at offset 0); "
            f"give a tar made with 'zeroserve pack DIR -o site.tar'"
        )

    def extended_data(self, header_offset, data_start, size, kind):
        if size > MAX_EXTENDED_HEADER:
            self.fail(f"corrupt tar: {kind} declares {size} bytes (limit {MAX_EXTENDED_HEADER})", header_offset)
        self.check_body(header_offset, data_start, size, kind)
        return bytes(self.data[data_start : data_start + size])

    def check_body(self, header_offset, data_start, size, what):
        if size < 0:
            self.fail(f"corrupt tar: {what} has a negative size", header_offset)
        if data_start + size > self.end:
            raise SiteError(
                f"{self.display_path}: truncated tar: {what} (header at offset {header_offset}) needs "
                f"{size} bytes from offset {data_start} but the file ends at offset {self.end}; {_REPACK}"
            )

    def pax_records(self, raw, header_offset):
        """Parses 'LEN key=value\\n' records; values stay bytes."""
        records = {}
        i = 0
        while i < len(raw):
            if raw[i] == 0:
                break  # NUL padding after the last record, written by some tools
            space = raw.find(b" ", i)
            digits = raw[i:space] if space > i else b""
            if not digits.isdigit():
                self.fail("corrupt tar: pax record length is not a number", header_offset)
            length = int(digits)
            record_end = i + length
            if length <= space - i + 1 or record_end > len(raw) or raw[record_end - 1] != 0x0A:
                self.fail(f"corrupt tar: malformed pax record (byte {i} of the extended header)", header_offset)
            key, equals, value = raw[space + 1 : record_end - 1].partition(b"=")
            if not equals:
                self.fail(f"corrupt tar: pax record without '=' (byte {i} of the extended header)", header_offset)
            records[key.decode("utf-8", "surrogateescape")] = value
            i = record_end
        return records

    def pax_number(self, records, key, header_offset):
        value = records[key].decode("ascii", "replace")
        try:
            # Fractional seconds are dropped: HTTP dates have one-second resolution.
            return int(value.split(".", 1)[0]) if key == "mtime" else int(value)
        except ValueError:
            self.fail(f"corrupt tar: pax '{key}' value {value!r} is not a number", header_offset)

    def parse(self):
        data = self.data
        pos = 0
        pax = {}
        pax_offset = 0
        long_name = long_link = None
        while True:
            if pos + BLOCK > self.end:
                if pos == 0:
                    self.not_a_tar(bytes(data[: self.end]))
                if pos == self.end:
                    raise SiteError(
                        f"{self.display_path}: truncated tar: the file ends at offset {pos} without the "
                        f"end-of-archive marker; {_REPACK}"
                    )
                raise SiteError(
                    f"{self.display_path}: truncated tar: the header at offset {pos} is cut short "
                    f"({self.end - pos} of {BLOCK} bytes); {_REPACK}"
                )
            block = bytes(data[pos : pos + BLOCK])
            if block == _ZERO_BLOCK:
                if pax or long_name is not None or long_link is not None:
                    self.fail("corrupt tar: an extended header is followed by the end-of-archive marker", pos)
                return self.members
            self.check_header(block, pos)
            header_offset = pos
            typeflag = block[156]
            size = self.number(block[124:136], "size", pos)
            data_start = pos + BLOCK

            if typeflag in (_PAX_LOCAL, _PAX_GLOBAL, _GNU_LONG_NAME, _GNU_LONG_LINK):
                kind = "GNU long name" if typeflag in (_GNU_LONG_NAME, _GNU_LONG_LINK) else "pax header"
                raw = self.extended_data(header_offset, data_start, size, kind)
                if typeflag == _PAX_LOCAL:
                    pax.update(self.pax_records(raw, header_offset))
                    pax_offset = header_offset
                elif typeflag == _PAX_GLOBAL:
                    # Global records (e.g. git's commit comment) carry nothing a site uses.
                    self.pax_records(raw, header_offset)
                elif typeflag == _GNU_LONG_NAME:
                    long_name = raw.split(b"\0", 1)[0]
                else:
                    long_link = raw.split(b"\0", 1)[0]
                pos = data_start + _padded(size)
                continue

            if "size" in pax:
                size = self.pax_number(pax, "size", pax_offset)
            mtime = self.pax_number(pax, "mtime", pax_offset) if "mtime" in pax else (
                self.number(block[136:148], "mtime", header_offset)
            )
            name = self.member_name(block, pax, long_name)
            link_name = _pax_text(pax, "linkpath") or _text(long_link or block[157:257].split(b"\0", 1)[0])
            sparse = typeflag == _GNU_SPARSE or any(key.startswith("GNU.sparse.") for key in pax)
            pax = {}
            long_name = long_link = None

            data_size = 0 if typeflag in _NO_DATA_TYPES else size
            self.check_body(header_offset, data_start, data_size, f"entry '{name}'")
            self.add(name, link_name, typeflag, sparse, data_start, size, mtime, header_offset)
            pos = data_start + _padded(data_size)

    def member_name(self, block, pax, long_name):
        name = _pax_text(pax, "path")
        if name:
            return name
        if long_name is not None:
            return _text(long_name)
        name = _text(block[0:100].split(b"\0", 1)[0])
        if block[257:263] == _USTAR_MAGIC:
            prefix = _text(block[345:500].split(b"\0", 1)[0])
            if prefix:
                name = prefix + "/" + name
        return name

    def add(self, name, link_name, typeflag, sparse, data_start, size, mtime, header_offset):
        path = normalize_tar_path(name)
        if not path:
            return
        if sparse:
            log.warning(
                "%s: entry '%s' at offset %d is a sparse file; skipped (sparse files cannot be served in place)",
                self.display_path, name, header_offset,
            )
            self.members.pop(path, None)
        elif typeflag in _REGULAR_TYPES and not name.endswith("/"):
            self.members[path] = _Member(data_start, size, mtime)
        elif typeflag == _HARDLINK:
            target = self.members.get(normalize_tar_path(link_name))
            if target is None:
                log.warning(
                    "%s: entry '%s' at offset %d is a hard link to '%s', which is not an earlier file; skipped",
                    self.display_path, name, header_offset, link_name,
                )
                return
            self.members[path] = _Member(target.offset, target.size, mtime)
        elif typeflag == _DIRECTORY or typeflag in _REGULAR_TYPES:
            # A "regular" member whose name ends in "/" is how pre-POSIX tars store directories.
            self.members.pop(path, None)
        else:
            what = "a symlink" if typeflag == _SYMLINK else f"of type {chr(typeflag)!r}"
            log.warning(
                "%s: entry '%s' at offset %d is %s; skipped (only regular files and hard links are served)",
                self.display_path, name, header_offset, what,
            )
            self.members.pop(path, None)


def _padded(size):
    return (size + BLOCK - 1) // BLOCK * BLOCK


def _text(raw):
    # Names that are not UTF-8 stay indexable; normalised request paths never match them.
    return raw.decode("utf-8", "surrogateescape")


def _pax_text(pax, key):
    value = pax.get(key)
    return _text(value) if value else None


class Site:
    """An open, indexed site tar. Bodies are read with os.pread (or sendfile) from `fd`."""

    __slots__ = ("path", "fd", "file_count", "total_bytes", "not_found_page", "_files", "_servable", "_scripts")

    def __init__(self, path, fd, files):
        self.path = path
        self.fd = fd
        self._files = files
        self._servable = {p: e for p, e in files.items() if not (p + "/").startswith(PRIVATE_PREFIX)}
        self.file_count = len(files)
        self.total_bytes = sum(entry.size for entry in files.values())
        self.not_found_page = self._servable.get("404.html")
        scripts = [
            (path[len(SCRIPTS_PREFIX) :], entry)
            for path, entry in files.items()
            if path.startswith(SCRIPTS_PREFIX) and path.endswith(".o")
        ]
        scripts.sort(key=lambda item: item[0].encode("utf-8", "surrogateescape"))
        self._scripts = scripts

    @classmethod
    def open(cls, path):
        """Opens and indexes the tar at `path`; raises SiteError with a one-line message."""
        display_path = os.fspath(path)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as error:
            raise SiteError(f"{display_path}: cannot open the site tar: {error.strerror}; check the path") from None
        return cls.from_fd(fd, display_path)

    @classmethod
    def from_fd(cls, fd, display_path):
        """Indexes the tar open at `fd` (opened elsewhere, e.g. handed over by the supervisor); owns `fd` from here on.

        Raises SiteError with a one-line message naming `display_path`, after closing `fd`.
        """
        try:
            return cls(display_path, fd, _index(display_path, fd))
        except BaseException:
            os.close(fd)
            raise

    def get(self, tar_path):
        """The file at this exact tar path (private `.zeroserve/` files included), or None."""
        return self._files.get(tar_path)

    def servable_paths(self):
        """The site-relative paths of every file a request may be answered with (none under `.zeroserve/`)."""
        return self._servable.keys()

    def resolve(self, rel_path, dir_hint, index="index.html", try_html=False):
        """The entry to serve for a normalised request path, or None; never a `.zeroserve/` file.

        Lookup order (compatible with the original): the exact path, then `rel/<index>`
        (there is no redirect to add a slash), then `rel.html` with try_html. With a dir
        hint ("/a/"), the index is tried before the exact path, which matters only for a
        tar holding both a file "a" and "a/<index>".
        """
        files = self._servable
        index = index or "index.html"
        if not rel_path:
            return files.get(index)
        index_path = rel_path + "/" + index
        first, second = (index_path, rel_path) if dir_hint else (rel_path, index_path)
        entry = files.get(first) or files.get(second)
        if entry is None and try_html and not rel_path.endswith(".html"):
            entry = files.get(rel_path + ".html")
        return entry

    def scripts(self):
        """(name, Entry) for every `.zeroserve/scripts/**/*.o`, sorted by name in byte order."""
        return list(self._scripts)

    def read(self, entry, offset=0, length=None):
        """Bytes [offset, offset+length) of an entry's body, read with os.pread."""
        if length is None:
            length = entry.size - offset
        if offset < 0 or length < 0 or offset + length > entry.size:
            raise ValueError(f"range {offset}+{length} is outside '{entry.path}' ({entry.size} bytes)")
        parts = []
        position = entry.offset + offset
        remaining = length
        while remaining:
            chunk = os.pread(self.fd, remaining, position)
            if not chunk:
                raise SiteError(
                    f"{self.path}: '{entry.path}' ends early at offset {position}; the tar changed on disk, "
                    f"reload the server with the new file"
                )
            parts.append(chunk)
            position += len(chunk)
            remaining -= len(chunk)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def close(self):
        """Closes the tar file; the Site must not be used afterwards."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


def _index(display_path, fd):
    """path → Entry for every served file of the tar behind fd."""
    info = os.fstat(fd)
    if stat.S_ISDIR(info.st_mode):
        raise SiteError(
            f"{display_path}: is a directory, not a site tar; pack it with "
            f"'zeroserve pack {display_path} -o site.tar' and serve the tar"
        )
    if not stat.S_ISREG(info.st_mode):
        raise SiteError(f"{display_path}: is not a regular file; give the path of a site tar")
    if info.st_size == 0:
        raise SiteError(f"{display_path}: is empty, not a tar archive; {_REPACK}")
    with mmap.mmap(fd, 0, access=mmap.ACCESS_READ) as mapped:
        view = memoryview(mapped)
        try:
            members = _TarParser(display_path, view).parse()
            if not members:
                raise SiteError(
                    f"{display_path}: tarball does not contain any regular files; pack a directory "
                    f"that holds the site's files"
                )
            etags = {}
            for member in members.values():
                key = (member.offset, member.size)
                if key not in etags:
                    digest = hashlib.blake2b(view[member.offset : member.offset + member.size], digest_size=16)
                    etags[key] = f'"{digest.hexdigest()}"'
        finally:
            view.release()
    return _entries(members, etags)


def _entries(members, etags):
    """Builds the Entry objects, linking each file to its precompressed siblings."""
    plain = {
        path: _make_entry(path, m.offset, m.size, m.mtime, etags[m.offset, m.size], content_type_for(path))
        for path, m in members.items()
    }
    entries = {}
    for path, entry in plain.items():
        encodings = []
        for suffix, coding in SIBLING_CODINGS:
            sibling = plain.get(path + suffix)
            if sibling is not None:
                encodings.append(
                    (
                        coding,
                        _make_entry(
                            sibling.path, sibling.offset, sibling.size, sibling.mtime, sibling.etag,
                            entry.content_type, content_encoding=coding,
                        ),
                    )
                )
        if encodings:
            entry = _make_entry(
                path, entry.offset, entry.size, entry.mtime, entry.etag, entry.content_type, tuple(encodings)
            )
        entries[path] = entry
    return entries
