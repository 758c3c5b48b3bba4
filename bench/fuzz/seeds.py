"""Writes the seed corpus (bench/fuzz/corpus/<target>/): valid and near-valid inputs for every target.

Run once after changing a target's input format: `.venv/bin/python bench/fuzz/seeds.py`.
The files are kept in the repository; fuzzing adds its finds to bench/fuzz/build/corpus,
not here. Python targets read a first byte that picks how the rest is split into
pieces (see pytargets._pieces); seeds use 0 (whole) and a small step.
"""

import datetime
import hashlib
import io
import random
import socket
import ssl
import struct
import subprocess
import tarfile
import tempfile
import threading
from pathlib import Path

import h2.config
import h2.connection
import h2.settings
from hyperframe.frame import ContinuationFrame, HeadersFrame, PingFrame, PriorityFrame, SettingsFrame

from zeroserve.core.compile import ScriptCompiler
from zeroserve.plugins.tls_ech import echconfig
from zeroserve.plugins.tls_ech.clienthello import ClientHelloReader, MalformedClientHello

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


# The relay target's fixed TLS material (see pytargets.relay_decision): a certificate for the hidden
# site's name only, and one ECH key whose public name is the cover site's.
RELAY_MATERIAL = FUZZ_DIR / "relay_material"
RELAY_HIDDEN_NAME = "hidden.example"
RELAY_PUBLIC_NAME = "public.example"


def relay_material():
    """Writes the relay target's certificate, key and ECH key once; they stay fixed so the seeds keep decrypting."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    RELAY_MATERIAL.mkdir(exist_ok=True)
    if not (RELAY_MATERIAL / "cert.pem").exists():
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, RELAY_HIDDEN_NAME)])
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                .serial_number(1).not_valid_before(datetime.datetime(2020, 1, 1))
                .not_valid_after(datetime.datetime(2120, 1, 1))
                .add_extension(x509.SubjectAlternativeName([x509.DNSName(RELAY_HIDDEN_NAME)]), critical=False)
                .sign(key, hashes.SHA256()))
        (RELAY_MATERIAL / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (RELAY_MATERIAL / "key.pem").write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    if not (RELAY_MATERIAL / "ech.pem").exists():
        (RELAY_MATERIAL / "ech.pem").write_text(echconfig.to_pem(echconfig.generate(RELAY_PUBLIC_NAME, 7)))


def _first_flight(client_argv, server_name=None):
    """The bytes a real client sends first (its ClientHello records) to a listener that answers nothing.

    `client_argv` takes the port through "{port}"; the client fails once the listener closes, as intended.
    With `server_name`, connections whose ClientHello names another host are skipped.
    """
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    captured = bytearray()

    def capture():
        listener.settimeout(20)
        while not captured:  # a browser may open other connections first (plain HTTP, background fetches)
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            reader = ClientHelloReader()
            with connection:
                connection.settimeout(10)
                try:
                    hello = None
                    while hello is None and (data := connection.recv(65536)):
                        hello = reader.feed(data)
                    if hello is not None and server_name in (None, hello.server_name):
                        captured.extend(reader.received)
                except (MalformedClientHello, OSError):
                    pass

    thread = threading.Thread(target=capture)
    thread.start()
    subprocess.run([arg.format(port=port) for arg in client_argv], stdin=subprocess.DEVNULL,
                   capture_output=True, timeout=30, check=False)
    thread.join(10)
    listener.close()
    if not captured:
        raise RuntimeError(f"{client_argv[0]} sent no ClientHello")
    return bytes(captured)


def relay_seeds():
    """Real first flights: curl and bssl-tool for the cover and hidden names, bssl-tool with ECH to our key,
    to a stranger's key and with GREASE ECH, Chromium, and a client without SNI."""
    relay_material()
    [key] = echconfig.load(RELAY_MATERIAL / "ech.pem")
    stranger = echconfig.generate(RELAY_PUBLIC_NAME, 9)
    flights = []
    with tempfile.TemporaryDirectory() as scratch:
        ours, theirs = Path(scratch) / "ours.list", Path(scratch) / "theirs.list"
        ours.write_bytes(echconfig.config_list([key.config]))
        theirs.write_bytes(echconfig.config_list([stranger.config]))
        bssl = ["bssl-tool", "client", "-connect", "127.0.0.1:{port}", "-min-version", "tls1.3"]
        for name in (RELAY_PUBLIC_NAME, RELAY_HIDDEN_NAME):
            flights.append(_first_flight(["curl", "-sk", "--max-time", "5", "--resolve", f"{name}:{{port}}:127.0.0.1",
                                          f"https://{name}:{{port}}/"]))
            flights.append(_first_flight([*bssl, "-server-name", name]))
        flights.append(_first_flight([*bssl, "-server-name", "secret.example", "-ech-config-list", str(ours)]))
        flights.append(_first_flight([*bssl, "-server-name", "secret.example", "-ech-config-list", str(theirs)]))
        flights.append(_first_flight([*bssl, "-server-name", RELAY_PUBLIC_NAME, "-ech-grease"]))
        flights.append(_first_flight([*bssl, "-alpn-protos", "h2"]))
        flights.append(_first_flight(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                                      "--disable-background-networking", "--disable-component-update",
                                      f"--user-data-dir={scratch}/chromium", "--timeout=5000",
                                      "--host-resolver-rules=MAP * 127.0.0.1:{port}",
                                      f"https://{RELAY_PUBLIC_NAME}/"], RELAY_PUBLIC_NAME))
    return _split_variants(flights)


SEEDS = {
    "http1": http1_seeds, "http2": http2_seeds, "h2": http2_seeds, "tar": tar_seeds, "proxyproto": proxyproto_seeds,
    "paths": paths_seeds, "clienthello": clienthello_seeds, "oidc_cookie": oidc_cookie_seeds,
    "json": json_seeds, "elf": elf_seeds, "vm": vm_seeds, "sigv4": sigv4_seeds, "relay": relay_seeds,
}

if __name__ == "__main__":
    for target, make in SEEDS.items():
        _write(target, make())
        print(target, len(list((CORPUS / target).iterdir())))
