"""Writes the seed corpus (bench/fuzz/corpus/<target>/): valid and near-valid inputs for every target.

Run once after changing a target's input format: `.venv/bin/python bench/fuzz/seeds.py`.
The files are kept in the repository; fuzzing adds its finds to bench/fuzz/build/corpus,
not here. Python targets read a first byte that picks how the rest is split into
pieces (see pytargets._pieces); seeds use 0 (whole) and a small step.
"""

import hashlib
import io
import random
import ssl
import struct
import tarfile
from pathlib import Path

import h2.config
import h2.connection
import h2.settings
from hyperframe.frame import ContinuationFrame, HeadersFrame, PingFrame, PriorityFrame, SettingsFrame

from zeroserve.core.compile import ScriptCompiler

FUZZ_DIR = Path(__file__).resolve().parent
ROOT = FUZZ_DIR.parents[1]
CORPUS = FUZZ_DIR / "corpus"


def _write(target, seeds):
    folder = CORPUS / target
    folder.mkdir(parents=True, exist_ok=True)
    for seed in seeds:
        (folder / hashlib.sha1(seed).hexdigest()[:16]).write_bytes(seed)


def _split_variants(bodies):
    return [bytes([step]) + body for body in bodies for step in (0, 5)]


def http1_seeds():
    return _split_variants([
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET /a/b?c=d HTTP/1.1\r\nHost: a\r\nConnection: close\r\nCookie: x=1\r\n\r\n",
        b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
        b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\nT: v\r\n\r\n",
        b"PUT /e HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc",
        b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.0\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\nGET /x HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 9999\r\n\r\n",
    ])


def http2_seeds():
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
    client.initiate_connection()
    client.data_to_send()  # the preface is added by the target
    request = [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"a"), (b":path", b"/")]
    client.send_headers(1, request, end_stream=True)
    client.send_headers(3, [(b":method", b"POST"), *request[1:], (b"content-length", b"4")])
    client.send_data(3, b"body", end_stream=True)
    client.send_headers(5, request)
    client.reset_stream(5)
    client.ping(b"12345678")
    client.increment_flow_control_window(1000)
    client.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 100})
    conversation = client.data_to_send()
    settings = SettingsFrame(0).serialize()
    split_headers = HeadersFrame(7, data=b"\x82\x87", flags=["END_STREAM"]).serialize() + \
        ContinuationFrame(7, data=b"\x84\x41\x01a", flags=["END_HEADERS"]).serialize()
    pings = b"".join(PingFrame(0, opaque_data=b"%08d" % i).serialize() for i in range(3))
    priority = PriorityFrame(9, depends_on=1, stream_weight=10).serialize()
    return _split_variants([conversation, settings + split_headers, settings + pings + priority])


def tar_seeds():
    seeds = []
    for fmt in (tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT):
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w", format=fmt) as tar:
            # ustar splits a long name into prefix + name; GNU and pax carry it in an extra header
            long_name = "a/" + "long/" * 20 + ("x.txt" if fmt == tarfile.USTAR_FORMAT else "name" * 40)
            for name, body in (("index.html", b"<h1>hi</h1>"), (long_name, b"x" * 600),
                               (".zeroserve/scripts/s.o", b"\x7fELF")):
                info = tarfile.TarInfo(name)
                info.size, info.mtime = len(body), 1700000000
                tar.addfile(info, io.BytesIO(body))
            link = tarfile.TarInfo("copy.html")
            link.type, link.linkname = tarfile.LNKTYPE, "index.html"
            tar.addfile(link)
            sym = tarfile.TarInfo("sym")
            sym.type, sym.linkname = tarfile.SYMTYPE, "index.html"
            tar.addfile(sym)
            folder = tarfile.TarInfo("dir/")
            folder.type = tarfile.DIRTYPE
            tar.addfile(folder)
        seeds.append(buffer.getvalue())
    return seeds


_V2 = b"\r\n\r\n\x00\r\nQUIT\n"  # the PROXY v2 signature


def proxyproto_seeds():
    return [b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\nGET / HTTP/1.1\r\n",
            b"PROXY TCP6 2001:db8::1 2001:db8::2 1 65535\r\n", b"PROXY UNKNOWN\r\n",
            b"PROXY UNKNOWN ffff:f::1 ffff:f::2 1 2\r\n", b"PROXY TCP4 1.2.3.4",
            _V2 + b"\x21\x11\x00\x0c" + bytes([192, 0, 2, 1, 198, 51, 100, 2]) + struct.pack("!HH", 5678, 443),
            _V2 + b"\x21\x21\x00\x27" + bytes(15) + b"\x01" + bytes(16) + struct.pack("!HH", 1, 2)
            + b"\x04\x00\x00",  # TCP6 plus an empty TLV
            _V2 + b"\x20\x00\x00\x00"]  # LOCAL


def paths_seeds():
    return [b"/", b"/a/b/c.html", b"/a/./b/../c/", b"/%7Euser/x%20y", b"/../x", b"/a%2fb", b"/%e2%82%ac/%ff",
            b"//a///b/?q=1", b"/a/%2e%2e/b", b"/%"]


def clienthello_seeds():
    seeds = []
    for server_name, alpn in ((None, None), ("example.com", ["h2", "http/1.1"])):
        context = ssl.create_default_context()
        if alpn:
            context.set_alpn_protocols(alpn)
        if server_name is None:
            context.check_hostname = False
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = context.wrap_bio(incoming, outgoing, server_hostname=server_name)
        try:
            tls.do_handshake()
        except ssl.SSLWantReadError:
            pass
        seeds.append(outgoing.read())
    return _split_variants(seeds)


def oidc_cookie_seeds():
    return [b"zs_session=abc; other=1", b"a=b;zs_session=;c", b"zs_session=" + b"A" * 60, b"=;;=x; zs_session"]


def json_seeds():
    return [b'{"a":[1,2.5,-3e10,true,false,null],"b":{"c":"\\u00e9\\ud83d\\ude00"}}', b"[]", b'"x"',
            b"18446744073709551615", b"-9223372036854775808", b"1.7976931348623157e308", b'{"k":1,"k":2}',
            b"[[[[[[[[[[1]]]]]]]]]]", b' {"\\n\\t\\"":"\\/"} ']


def elf_seeds():
    compiler = ScriptCompiler.find(None)
    sources = sorted((ROOT / "examples" / "scripts").glob("*.c")) + sorted((ROOT / "tests" / "vm" / "scripts").glob("*.c"))
    return [compiler.compile(path, path.name) for path in sources]


def _insn(opcode, dst=0, src=0, off=0, imm=0):
    return struct.pack("<BBhi", opcode, dst | src << 4, off, imm)


def vm_seeds():
    exit_0 = _insn(0xB7, 0) + _insn(0x95)
    loop = (_insn(0xB7, 0, imm=0) + _insn(0x07, 0, imm=1) + _insn(0xA5, 0, off=-2, imm=50) + _insn(0x95))
    memory = (_insn(0x7B, 10, 1, off=-8) + _insn(0x79, 2, 10, off=-8) + _insn(0x61, 0, 1, off=4)
              + _insn(0xB7, 2, imm=16) + _insn(0x85, imm=1) + _insn(0x95))
    rng = random.Random(4)
    shaped = [bytes([1]) + bytes(rng.randrange(256) for _ in range(8 * n)) for n in (4, 16, 64)]
    return [b"\0" + exit_0, b"\0" + loop, b"\0" + memory, *shaped]


def sigv4_seeds():
    return [b"\x01GET\0/bucket/key%20x\0a=1&b=&c\0s3\0host\0example.com\0x-amz-date\0 20240101T000000Z ",
            b"\x00POST\0/a/./b/../c//d\0z=1&a=2&a=1\0execute-api\0Content-Type\0text/plain\0X-Amz-Content-SHA256\0abc",
            b"\xffPUT\0/\0\0sqs"]


SEEDS = {
    "http1": http1_seeds, "http2": http2_seeds, "tar": tar_seeds, "proxyproto": proxyproto_seeds,
    "paths": paths_seeds, "clienthello": clienthello_seeds, "oidc_cookie": oidc_cookie_seeds,
    "json": json_seeds, "elf": elf_seeds, "vm": vm_seeds, "sigv4": sigv4_seeds,
}

if __name__ == "__main__":
    for target, make in SEEDS.items():
        _write(target, make())
        print(target, len(list((CORPUS / target).iterdir())))
