"""JA4 and JA4_r of ClientHellos built byte by byte from the JA4 specification's rules."""

import hashlib

from test_clienthello import (
    alpn_extension,
    client_hello_body,
    extension,
    sigalgs_extension,
    sni_extension,
    versions_extension,
)
from zeroserve.plugins.tls_ech.clienthello import parse_client_hello
from zeroserve.plugins.tls_ech.ja4 import fingerprint


def sha12(text):
    return hashlib.sha256(text.encode()).hexdigest()[:12]


# A Chrome 143 ClientHello in wire order (ciphers and extensions as Chrome sends them, GREASE included),
# whose JA4 was published by a fingerprinting service: t13d1516h2_8daaf6152771_d8a2da3f94cd.
CHROME_CIPHERS = [0x4A4A, 0x1301, 0x1302, 0x1303, 0xC02B, 0xC02F, 0xC02C, 0xC030, 0xCCA9, 0xCCA8, 0xC013,
                  0xC014, 0x009C, 0x009D, 0x002F, 0x0035]
CHROME_SIGALGS = [0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601]


def chrome_hello():
    empty = b""
    extensions = [
        extension(0x8A8A, empty), extension(0x002D, b"\x01\x01"), extension(0x0033, b"\x00\x00"),
        alpn_extension(b"h2", b"http/1.1"), extension(0xFE0D, b"\x00" * 8), extension(0x0017, empty),
        extension(0x44CD, b"\x00\x03\x02h2"), sni_extension("tls.example"), extension(0x000B, b"\x01\x00"),
        extension(0x000A, b"\x00\x02\x00\x1d"), versions_extension(0x5A5A, 0x0304, 0x0303),
        extension(0xFF01, b"\x00"), extension(0x0023, empty), extension(0x0012, empty),
        extension(0x0005, b"\x01\x00\x00\x00\x00"), sigalgs_extension(*CHROME_SIGALGS),
        extension(0x001B, b"\x02\x00\x02"), extension(0x3A3A, b"\x00"),
    ]
    return parse_client_hello(client_hello_body(CHROME_CIPHERS, extensions))


def test_ja4_chrome_hello_matches_published_value():
    """A Chrome ClientHello with GREASE gets the JA4 a public fingerprinting service published for it."""
    assert fingerprint(chrome_hello()).ja4 == "t13d1516h2_8daaf6152771_d8a2da3f94cd"


def test_ja4_raw_form_lists_sorted_ciphers_extensions_and_ordered_sigalgs():
    """JA4_r lists sorted ciphers, sorted extensions without SNI/ALPN/GREASE, and signature schemes in order."""
    assert fingerprint(chrome_hello()).ja4_r == (
        "t13d1516h2_002f,0035,009c,009d,1301,1302,1303,c013,c014,c02b,c02c,c02f,c030,cca8,cca9_"
        "0005,000a,000b,000d,0012,0017,001b,0023,002b,002d,0033,44cd,fe0d,ff01_"
        "0403,0804,0401,0503,0805,0501,0806,0601"
    )


def test_ja4_no_sni_no_alpn_uses_i_and_00():
    """Without SNI and ALPN the fingerprint has 'i' and '00', and the counts exclude nothing else."""
    hello = parse_client_hello(client_hello_body(
        [0x1302, 0x1301], [versions_extension(0x0304), sigalgs_extension(0x0804, 0x0403)]))
    expected = f"t13i020200_{sha12('1301,1302')}_{sha12('000d,002b_0804,0403')}"
    assert fingerprint(hello).ja4 == expected


def test_ja4_grease_is_ignored_in_every_list():
    """GREASE ciphers, extensions, versions and signature schemes change neither counts nor hashes."""
    plain = client_hello_body([0x1301], [sni_extension("a.test"), versions_extension(0x0304),
                                         sigalgs_extension(0x0403)])
    greasy = client_hello_body([0x0A0A, 0x1301, 0xFAFA], [
        extension(0x1A1A, b""), sni_extension("a.test"), versions_extension(0xEAEA, 0x0304),
        sigalgs_extension(0x2A2A, 0x0403), extension(0xDADA, b"\x00")])
    assert fingerprint(parse_client_hello(greasy)) == fingerprint(parse_client_hello(plain))
    assert fingerprint(parse_client_hello(plain)).ja4 == f"t13d010300_{sha12('1301')}_{sha12('000d,002b_0403')}"


def test_ja4_version_falls_back_to_legacy_version():
    """Without supported_versions the version comes from legacy_version (0x0301 gives '10')."""
    hello = parse_client_hello(client_hello_body([0x002F], [sni_extension("a.test")], legacy_version=0x0301))
    assert fingerprint(hello).ja4 == f"t10d010100_{sha12('002f')}_000000000000"


def test_ja4_unknown_version_is_00():
    """A version JA4 does not name is written as '00'."""
    hello = parse_client_hello(client_hello_body([0x1301], [versions_extension(0x7F1C)]))
    assert fingerprint(hello).ja4.startswith("t00i0101")


def test_ja4_no_ciphers_and_no_extensions_hash_as_zeros():
    """An empty cipher list and no extensions give twelve zeros for both hashes."""
    hello = parse_client_hello(client_hello_body([], None))
    assert fingerprint(hello).ja4 == "t12i000000_000000000000_000000000000"


def test_ja4_extensions_without_sigalgs_hash_without_underscore():
    """With no signature_algorithms the extension string is hashed without a trailing underscore."""
    hello = parse_client_hello(client_hello_body([0x1301], [extension(0x0017, b""), extension(0x000A, b"\x00\x00")]))
    assert fingerprint(hello).ja4.endswith("_" + sha12("000a,0017"))
    assert fingerprint(hello).ja4_r.endswith("_1301_000a,0017")


def test_ja4_alpn_non_alphanumeric_uses_hex_digits():
    """An ALPN value starting or ending with a non-alphanumeric byte is written as hex digits."""
    hello = parse_client_hello(client_hello_body([0x1301], [alpn_extension(b"\xabx\xcd")]))
    assert fingerprint(hello).ja4[8:10] == "ad"
    hello = parse_client_hello(client_hello_body([0x1301], [alpn_extension(b"http/1.1")]))
    assert fingerprint(hello).ja4[8:10] == "h1"
    hello = parse_client_hello(client_hello_body([0x1301], [alpn_extension(b"x")]))
    assert fingerprint(hello).ja4[8:10] == "xx"


def test_ja4_counts_stop_at_99():
    """More than 99 ciphers or extensions are counted as 99."""
    ciphers = list(range(0x0100, 0x0100 + 120))
    extensions = [extension(0x1000 + i, b"") for i in range(105)]
    hello = parse_client_hello(client_hello_body(ciphers, extensions))
    assert fingerprint(hello).ja4[:8] == "t12i9999"
