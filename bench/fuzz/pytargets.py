"""The Python fuzz targets: one function per parser, taking the fuzzer's bytes and asserting what must hold.

Each target feeds hostile bytes to a sans-IO parser the way the server does and
checks the parser's contract: it either refuses with its own error type or
returns a result whose invariants hold, and splitting the same bytes into
pieces changes nothing that the protocol says it must not. Any other exception
or a failed assertion is a finding. The fuzzer-chosen split points come from
the input's first byte, so the corpus files are plain protocol bytes after it.
"""

import argparse
import functools
import logging
import re
from pathlib import Path

from zeroserve.core import http1, http2, paths, proxyproto, site
from zeroserve.core.config import Limits
from zeroserve.core.errors import ProtocolError, SiteError, TLSError
from zeroserve.core.request import Request
from zeroserve.core.tls import Identity, TicketKeys, TLSConfigBuilder
from zeroserve.plugins.oidc import flow, seal
from zeroserve.plugins.tls_ech import clienthello, configure, handshake, ja4
from zeroserve.plugins.tls_ech.relay import RelayHandoff

logging.disable(logging.WARNING)  # the tar parser warns about every odd member

# Small limits so the fuzzer reaches every 4xx branch with short inputs.
LIMITS = Limits(max_head_bytes=600, max_header_count=12, max_uri_bytes=200, max_body_bytes=300,
                h2_max_concurrent_streams=8)
PEER = ("192.0.2.1", 4321)
_H1_STATUSES = {400, 413, 414, 417, 431}
_JA4 = re.compile(r"^t(13|12|11|10|s3|s2|d1|d2|d3|00)[di]\d\d\d\d[0-9a-z]{2}_[0-9a-f]{12}_[0-9a-f]{12}$")
_SEALER = seal.Sealer(b"fuzzing-cookie-secret-0123456789")
_RELAY_MATERIAL = Path(__file__).resolve().parent / "relay_material"  # written by seeds.relay_material
_RELAY_PUBLIC_NAME = "public.example"  # the ECH key's public name: the cover site's


def _pieces(data):
    """(step, body): the input after its first byte, to be fed in pieces of `step` bytes (0: all at once)."""
    if not data:
        return 0, b""
    return data[0] % 17, data[1:]


def _split(body, step):
    if not step:
        return [body]
    return [body[i:i + step] for i in range(0, len(body), step)] or [b""]


def _counter():
    count = iter(range(1 << 30))
    return lambda: str(next(count))


def _h1_events(body, step):
    conn = http1.H1Connection(LIMITS, "http", PEER, _counter(), lambda: 0.0)
    events = []
    for piece in _split(body, step):
        new = conn.receive(piece)
        assert not (new and events and isinstance(events[-1], http1.Failure)), "events after a Failure"
        assert all(not isinstance(e, http1.Failure) for e in new[:-1]), "events after a Failure"
        events += new
    for event in events:
        assert isinstance(event, (Request, bytes, http1.Failure)), f"unexpected event {event!r}"
        if isinstance(event, http1.Failure):
            assert event.status in _H1_STATUSES, f"unexpected failure status {event!r}"
        if isinstance(event, Request):
            assert len(event.headers) <= LIMITS.max_header_count, "too many headers accepted"
    return events


def _h1_summary(events):
    return [(e.method, e.target, e.headers, _h1_body(e)) if isinstance(e, Request) else e
            for e in events if not isinstance(e, http1.Failure)]


def _h1_body(request):
    """The body bytes a request received so far: the parser hands requests over at head time and streams bodies."""
    stream = request.body_stream
    return (request.body or b"") + (stream.take_buffered() if stream is not None else b"")


def http1_request(data):
    """HTTP/1.1 request heads and chunked bodies: fed whole or in pieces, the same requests come out."""
    step, body = _pieces(data)
    whole = _h1_events(body, 0)
    split = _h1_events(body, step)
    # The 431 check on an unfinished head bounds bytes seen, which depends on the
    # pieces; only compare when neither run failed.
    if not any(isinstance(e, http1.Failure) for e in whole + split):
        assert _h1_summary(whole) == _h1_summary(split), "splitting the input changed the requests"


def http2_frames(data):
    """HTTP/2 frame sequences after the preface: nghttp2 plus our limits never raise, and refuse only with 4xx."""
    step, body = _pieces(data)
    conn = http2.H2Connection(LIMITS, "https", PEER, _counter(), lambda: 0.0)
    conn.data_to_send()
    for piece in _split(http2.PREFACE + body, step or 4096):
        for event in conn.receive(piece):
            assert isinstance(event, (Request, http2.Failure)), f"unexpected event {event!r}"
            if isinstance(event, http2.Failure):
                assert 400 <= event.status < 500, f"unexpected failure status {event.status}"
            else:
                assert len(event.body or b"") <= LIMITS.max_body_bytes, "a body over the limit was accepted"
        conn.data_to_send()
    assert len(conn._incoming) <= LIMITS.h2_max_concurrent_streams + 1, "more open streams than allowed"


def tar_index(data):
    """The tar indexer: a SiteError, or members whose bodies lie inside the file under normalised names."""
    try:
        members = site._TarParser("fuzz.tar", memoryview(data)).parse()
    except SiteError:
        return
    for name, member in members.items():
        assert name and name == site.normalize_tar_path(name), f"member name {name!r} is not normalised"
        assert 0 <= member.offset and member.offset + member.size <= len(data), f"{name!r} lies outside the file"


def proxy_protocol(data):
    """PROXY v1/v2: a ProtocolError, None while incomplete, or a valid peer and the header's length; prefixes agree."""
    try:
        result = proxyproto.parse(data)
    except ProtocolError:
        return
    v1 = not data.startswith(b"\r")
    if result is None:
        if v1:
            assert b"\r\n" not in data[:proxyproto.MAX_LINE], "a complete v1 line was reported incomplete"
        return
    peer, consumed = result
    assert consumed <= len(data)
    if v1:
        assert consumed <= proxyproto.MAX_LINE and data[consumed - 2:consumed] == b"\r\n"
    else:
        assert consumed >= 16, "a v2 header shorter than its fixed head"
    if peer is not None:
        ip, port = peer
        assert 0 <= port <= 65535
    for cut in range(consumed):
        assert proxyproto.parse(data[:cut]) is None, f"the prefix of {cut} bytes was not incomplete"


def request_path(data):
    """Path normalisation: a ProtocolError(400), or a relative path with no dot or empty segment, stable."""
    try:
        normal = paths.normalize_request_path(data)
    except ProtocolError as error:
        assert error.status_hint == 400
        return
    if normal.rel:
        segments = normal.rel.split("/")
        assert all(s not in ("", ".", "..") for s in segments), f"bad segment in {normal.rel!r}"
    assert normal.script_path.startswith("/")
    again = paths.normalize_request_path(normal.script_path)
    assert again.rel == normal.rel, "normalising the script path changed it"


def client_hello(data):
    """ClientHello reassembly, parsing and JA4: MalformedClientHello, or a hello with a well-formed JA4."""
    step, body = _pieces(data)
    reader = clienthello.ClientHelloReader()
    hello = None
    try:
        for piece in _split(body, step):
            hello = reader.feed(piece) or hello
    except clienthello.MalformedClientHello:
        return
    assert bytes(reader.received) == body, "the reader lost bytes it must replay"
    if hello is None:
        return
    assert len(hello.session_id) <= 32
    # Extension bodies are parsed when first read, so these may still refuse the hello.
    try:
        prints = ja4.fingerprint(hello)
        server_name = hello.server_name
    except clienthello.MalformedClientHello:
        return
    assert _JA4.match(prints.ja4), f"malformed JA4 {prints.ja4!r}"
    assert prints.ja4_r.split("_", 1)[0] == prints.ja4.split("_", 1)[0]
    assert server_name is None or server_name == server_name.lower()


def oidc_cookie(data):
    """Cookie parsing and opening sealed cookies: never raises; only a real seal opens, to what was sealed."""
    text = data.decode("latin-1")
    value = flow.cookie_value(text, "zs_session")
    assert value is None or ";" not in value
    opened = _SEALER.open(seal.SESSION_AAD, value or text, now=0)
    assert opened is None, "a forged cookie opened"
    payload = {"claims": {"sub": text}}
    sealed = _SEALER.seal(seal.SESSION_AAD, payload, 60, now=0)
    assert _SEALER.open(seal.SESSION_AAD, sealed, now=0)["claims"] == payload["claims"]
    assert _SEALER.open(seal.STATE_AAD, sealed, now=0) is None, "a seal opened under another purpose"


@functools.cache
def _relay_context():
    """The ServerContext tls_ech makes for `--cert` (hidden.example only) and `--ech-key` (public.example)."""
    builder = TLSConfigBuilder(Identity.load(_RELAY_MATERIAL / "cert.pem", _RELAY_MATERIAL / "key.pem"), TicketKeys())
    options = argparse.Namespace(cert_dir=None, ech_key=str(_RELAY_MATERIAL / "ech.pem"),
                                 ech_relay_target=[f"{_RELAY_PUBLIC_NAME}=127.0.0.1:9"], ech_relay_connect_timeout=1.0,
                                 ech_relay_idle_timeout=1.0, ech_relay_max=1)
    configure.configure_tls(builder, options)
    return builder.build()


def _relay_outcome(body, step):
    """What the server decides for these first bytes: ("relay", name), ("refuse",) or ("continue", ech_accepted)."""
    session = _relay_context().new_session()
    for piece in _split(body, step):
        try:
            session.receive(piece)
        except RelayHandoff as handoff:
            assert not session.ech_accepted, "a handshake whose ECH was accepted was relayed"
            return ("relay", handoff.public_name)
        except TLSError:
            return ("refuse",)
    return ("continue", session.ech_accepted)


def relay_decision(data):
    """The ECH relay decision on raw first flights through BoringSSL and tls_ech: it relays only a ClientHello
    whose SNI is the public name, without accepted ECH; it refuses anything else with TLSError; the pieces
    the bytes arrive in do not change it."""
    step, body = _pieces(data)
    whole = _relay_outcome(body, 0)
    assert _relay_outcome(body, step) == whole, "splitting the input changed the relay decision"
    outer = handshake._outer_name(body)  # what connection_facts reports as the outer SNI; never raises
    if whole[0] == "relay":
        assert whole[1] == _RELAY_PUBLIC_NAME, f"relayed for {whole[1]!r}, which is no public name"
        # BoringSSL chose on its own parse of the SNI; our parser, when it reads the hello, must agree.
        assert outer in (None, _RELAY_PUBLIC_NAME), f"relayed a hello whose SNI our parser reads as {outer!r}"


TARGETS = {
    "http1": http1_request,
    "http2": http2_frames,
    "tar": tar_index,
    "proxyproto": proxy_protocol,
    "paths": request_path,
    "clienthello": client_hello,
    "oidc_cookie": oidc_cookie,
    "relay": relay_decision,
}
