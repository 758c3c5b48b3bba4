"""Test helpers that write site tars (with tarfile, or header by header) and read responses back."""

import io
import os
import tarfile

BLOCK = 512


def write_tar(path, members, tar_format=tarfile.PAX_FORMAT):
    """Writes a tar of (name, content) pairs; content None is a directory, a TarInfo is added as is.

    A (name, content, mtime) triple sets the mtime (default 1_700_000_000).
    """
    with tarfile.open(path, "w", format=tar_format) as tar:
        for member in members:
            if isinstance(member, tarfile.TarInfo):
                tar.addfile(member)
                continue
            name, content, *rest = member
            info = tarfile.TarInfo(name)
            info.mtime = rest[0] if rest else 1_700_000_000
            if content is None:
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tar.addfile(info)
            else:
                info.size = len(content)
                info.mode = 0o644
                tar.addfile(info, io.BytesIO(content))
    return path


def link_info(name, target, link_type=tarfile.LNKTYPE):
    """A TarInfo for a hard link (default) or symlink to target."""
    info = tarfile.TarInfo(name)
    info.type = link_type
    info.linkname = target
    info.mtime = 1_700_000_000
    return info


def header_block(name, size=0, typeflag=b"0", mtime=1_700_000_000, magic=b"ustar\x0000"):
    """One 512-byte ustar header with a correct checksum, built field by field."""
    block = bytearray(BLOCK)
    block[0 : len(name)] = name
    block[100:108] = b"0000644\x00"
    block[108:116] = b"0000000\x00"
    block[116:124] = b"0000000\x00"
    block[124:136] = b"%011o\x00" % size
    block[136:148] = b"%011o\x00" % mtime
    block[156:157] = typeflag
    block[257:265] = magic
    set_checksum(block)
    return block


def set_checksum(block):
    """Recomputes the checksum field of a header block in place."""
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\x00 " % sum(block)


def pad(data):
    """data followed by zeros up to the next block boundary."""
    return data + bytes(-len(data) % BLOCK)


def end_marker():
    return bytes(2 * BLOCK)


def response_body(site, response):
    """The bytes a response's body parts stand for, read from the site's fd."""
    chunks = []
    for part in response.body:
        if isinstance(part, bytes):
            chunks.append(part)
        else:
            offset, length = part
            chunks.append(os.pread(site.fd, length, offset))
    data = b"".join(chunks)
    assert len(data) == response.length
    return data


def header(response, name):
    """The single value of a response header (lowercase name), or None; fails on duplicates."""
    values = [value for key, value in response.headers if key == name]
    assert len(values) <= 1, f"duplicate {name} header: {values}"
    return values[0] if values else None
