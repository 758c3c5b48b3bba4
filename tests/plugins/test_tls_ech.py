"""The tls_ech plugin's TLS material on real sockets: ECH keys with bssl-tool, --cert-dir selection, JA4, relay.

The servers here are small asyncio loops that put a core TLSSession, configured through the plugin's
configure_tls, between a socket and an answer reporting the plugin's connection facts (zs_connection_info's
JSON); the relay test hands the socket over exactly as the connection layer does on a RelayHandoff.
"""

import argparse
import asyncio
import base64
import datetime
import io
import json
import re
import socket
import subprocess
import threading

import cffi
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from zeroserve.core.errors import ConfigError, TLSError
from zeroserve.core.tls import ClientContext, Identity, TicketKeys, TLSConfigBuilder
from zeroserve.native.boringssl import ffi, lib
from zeroserve.plugins.tls_ech import configure, echconfig, relay
from zeroserve.plugins.tls_ech.handshake import connection_facts

TIMEOUT = 20
JA4_PATTERN = re.compile(r"^t13[di][0-9]{4}[A-Za-z0-9]{2}_[0-9a-f]{12}_[0-9a-f]{12}$")
NOW = datetime.datetime.now(datetime.timezone.utc)


# ---------------------------------------------------------------------------------------------------------
# A test PKI with one certificate per purpose, made with the cryptography package


class PKI:
    def __init__(self, directory):
        self.directory = directory
        self.ca_key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tls_ech test CA")])
        self.ca = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                   .public_key(self.ca_key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(NOW - datetime.timedelta(days=30)).not_valid_after(NOW + datetime.timedelta(days=30))
                   .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                   .sign(self.ca_key, hashes.SHA256()))
        self.ca_path = directory / "ca.pem"
        self.ca_path.write_bytes(self.ca.public_bytes(serialization.Encoding.PEM))

    def leaf(self, common_name, dns_names, *, expired=False):
        """(certificate PEM, key PEM) for a leaf with these DNS SANs (and IP 127.0.0.1)."""
        key = ec.generate_private_key(ec.SECP256R1())
        end = NOW - datetime.timedelta(days=1) if expired else NOW + datetime.timedelta(days=2)
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
                .issuer_name(self.ca.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(NOW - datetime.timedelta(days=10)).not_valid_after(end)
                .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in dns_names]), critical=False)
                .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
                .sign(self.ca_key, hashes.SHA256()))
        key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        return cert.public_bytes(serialization.Encoding.PEM), key_pem

    def write_pair(self, directory, stem, common_name, dns_names, *, expired=False, combined=False):
        cert, key = self.leaf(common_name, dns_names, expired=expired)
        directory.mkdir(parents=True, exist_ok=True)
        if combined:
            (directory / f"{stem}.pem").write_bytes(cert + key)
        else:
            (directory / f"{stem}.crt").write_bytes(cert)
            (directory / f"{stem}-key.txt").write_bytes(key)
        return directory / f"{stem}.crt", directory / f"{stem}-key.txt"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return PKI(tmp_path_factory.mktemp("pki"))


def options(**given):
    values = dict(cert_dir=None, ech_key=None, ech_relay_target=[], ech_relay_connect_timeout=2.0,
                  ech_relay_idle_timeout=5.0, ech_relay_max=8)
    values.update(given)
    return argparse.Namespace(**values)


def build_context(pki, tmp_path, default_names=("localhost", "public.example"), **given):
    """The ServerContext the plugin makes for these flags, over a default --cert identity (CN=default)."""
    cert, key = pki.write_pair(tmp_path / "default", "default", "default", list(default_names))
    builder = TLSConfigBuilder(Identity.load(cert, key), TicketKeys())
    names = configure.configure_tls(builder, options(**given))
    return builder.build(), names


# ---------------------------------------------------------------------------------------------------------
# The server loop: TLSSession on asyncio, answering with the connection facts, relaying on RelayHandoff


class FactsServer:
    """An asyncio loop in a thread; each connection answers one request with the facts JSON as its body."""

    def __init__(self, context, public_names=()):
        self.context = context
        self.public_names = tuple(public_names)
        self.errors = []
        self.handshakes = []  # the facts of every completed handshake, in order
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        threading.Thread(target=self._run, args=(ready,), daemon=True).start()
        ready.wait(5)

    def _run(self, ready):
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        ready.set()
        self.loop.run_forever()

    async def _serve(self, reader, writer):
        session = self.context.new_session()
        received = bytearray()
        pending = b""
        facts = None
        try:
            while data := await asyncio.wait_for(reader.read(65536), 10):
                if not session.handshake_complete:
                    received += data  # the connection keeps the first flight for the relay
                try:
                    plaintext, to_send = session.receive(data)
                except relay.RelayHandoff as handoff:
                    transport = writer.transport
                    await handoff.take_over(transport, received, transport.get_extra_info("peername"))
                    return
                if session.handshake_complete and facts is None:
                    facts = connection_facts(session, bytes(received), self.public_names)  # once per connection
                    self.handshakes.append(facts)
                pending += plaintext
                if b"\r\n\r\n" in pending:
                    body = facts.info_json.encode()
                    to_send += session.send(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\nconnection: close\r\n\r\n%s"
                                            % (len(body), body))
                    to_send += session.close()
                    writer.write(to_send)
                    break
                writer.write(to_send)
        except TLSError as exc:
            self.errors.append(str(exc))
            writer.write(session.close())
        except (OSError, asyncio.TimeoutError):
            pass
        writer.close()

    def stop(self):
        asyncio.run_coroutine_threadsafe(self._cancel_connections(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)

    async def _cancel_connections(self):
        tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def bssl_client(port, server_name=None, ech_list=None, ca=None):
    args = ["bssl-tool", "client", "-connect", f"127.0.0.1:{port}", "-min-version", "tls1.3"]
    if server_name:
        args += ["-server-name", server_name]
    if ech_list:
        args += ["-ech-config-list", str(ech_list)]
    if ca:
        args += ["-root-certs", str(ca)]
    request = b"GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % (server_name or "x").encode()
    result = subprocess.run(args, input=request, capture_output=True, timeout=TIMEOUT)
    return result, result.stdout.decode("utf-8", "replace") + result.stderr.decode("utf-8", "replace")


def facts_of(output):
    return json.loads(output[output.index("{"):output.rindex("}") + 1])


def keygen(path, public_name="public.example"):
    """Run ech-keygen into path; return the ECHConfigList file it announced and its stderr text."""
    stdout, stderr = io.StringIO(), io.StringIO()
    assert echconfig.keygen(public_name, str(path), stdout, stderr) == 0
    encoded = re.search(r'ech="([^"]+)"', stderr.getvalue()).group(1)
    list_path = path.parent.parent / f"{path.parent.name}-{path.stem}.list"
    list_path.write_bytes(base64.b64decode(encoded))
    return list_path, stderr.getvalue()


# ---------------------------------------------------------------------------------------------------------
# ech-keygen and key files


def test_tls_ech_keygen_writes_original_pem_format(tmp_path):
    """ech-keygen writes a private key block then a config block, mode 0600, and prints config_id and the list."""
    list_path, text = keygen(tmp_path / "k.pem")
    pem = (tmp_path / "k.pem").read_text()
    assert pem.startswith("-----BEGIN ECH PRIVATE KEY-----\n")
    assert "-----END ECH PRIVATE KEY-----\n-----BEGIN ECH CONFIG-----\n" in pem
    assert (tmp_path / "k.pem").stat().st_mode & 0o777 == 0o600
    (key,) = echconfig.load(tmp_path / "k.pem")
    assert text.startswith("Generated ECH key for public name public.example\n")
    assert f"config_id: {key.config.config_id:#04x}\n" in text
    config = key.config
    assert (config.kem_id, config.cipher_suites, config.maximum_name_length, config.extensions) == (
        0x0020, ((0x0001, 0x0001),), 0, b"")
    assert list_path.read_bytes() == len(config.encode()).to_bytes(2, "big") + config.encode()


def test_tls_ech_config_decodes_bssl_tool_output(tmp_path):
    """An ECHConfig made by bssl-tool generate-ech decodes and encodes back to the same bytes."""
    subprocess.run(["bssl-tool", "generate-ech", "-out-ech-config-list", str(tmp_path / "l.bin"),
                    "-out-ech-config", str(tmp_path / "c.bin"), "-out-private-key", str(tmp_path / "k.bin"),
                    "-public-name", "cover.example", "-config-id", "9", "-max-name-length", "64"],
                   check=True, capture_output=True, timeout=TIMEOUT)
    raw = (tmp_path / "c.bin").read_bytes()
    config = echconfig.ECHConfig.decode(raw)
    assert (config.config_id, config.public_name, config.maximum_name_length) == (9, "cover.example", 64)
    assert config.encode() == raw
    assert echconfig.config_list([config]) == (tmp_path / "l.bin").read_bytes()


@pytest.mark.parametrize("content, message", [
    ("", "holds no ECH key"),
    ("-----BEGIN ECH CONFIG-----\nAAAA\n-----END ECH CONFIG-----\n", "expected an 'ECH PRIVATE KEY'"),
    ("junk\n", "text outside PEM blocks"),
])
def test_tls_ech_bad_key_file_is_refused(tmp_path, content, message):
    """A key file that is empty, out of order or not PEM is refused naming the file."""
    (tmp_path / "bad.pem").write_text(content)
    with pytest.raises(ConfigError, match=message):
        echconfig.load(tmp_path / "bad.pem")


def test_tls_ech_key_not_matching_config_is_refused(tmp_path):
    """A private key paired with another key's config is refused."""
    one, two = echconfig.generate("a.example"), echconfig.generate("a.example")
    (tmp_path / "mixed.pem").write_text(echconfig.to_pem(echconfig.ECHKey(one.private_key, two.config, "x")))
    with pytest.raises(ConfigError, match="does not belong"):
        echconfig.load(tmp_path / "mixed.pem")


def test_tls_ech_duplicate_config_id_and_empty_directory_are_refused(tmp_path):
    """Two keys with one config_id, or a directory without key files, stop the load."""
    (tmp_path / "keys").mkdir()
    with pytest.raises(ConfigError, match="holds no key files"):
        echconfig.load(tmp_path / "keys")
    for name in ("a.pem", "b.pem"):
        (tmp_path / "keys" / name).write_text(echconfig.to_pem(echconfig.generate("p.example", config_id=5)))
    with pytest.raises(ConfigError, match="config_id 0x05 is used by both"):
        echconfig.load(tmp_path / "keys")


# ---------------------------------------------------------------------------------------------------------
# ECH handshakes


@pytest.fixture(scope="module")
def ech_setup(pki, tmp_path_factory):
    """A server with two ECH keys in a directory (rotation), the lists of both, and a stale list."""
    base = tmp_path_factory.mktemp("ech")
    (base / "keys").mkdir()
    list_one, _ = keygen(base / "keys" / "one.pem")
    list_two, _ = keygen(base / "keys" / "two.pem")
    while echconfig.load(base / "keys")[0].config.config_id == echconfig.load(base / "keys")[1].config.config_id:
        list_two, _ = keygen(base / "keys" / "two.pem")
    stale, _ = keygen(base / "stale.pem")
    context, names = build_context(pki, base, ech_key=str(base / "keys"))
    server = FactsServer(context, names)
    yield server, list_one, list_two, stale
    server.stop()


def test_tls_ech_bssl_tool_ech_is_accepted_with_keygen_config(ech_setup, pki):
    """bssl-tool with a list from ech-keygen gets ECH accepted; scripts see inner, outer name and ECH accepted."""
    server, list_one, _, _ = ech_setup
    _, out = bssl_client(server.port, "secret.example", list_one, pki.ca_path)
    assert "Encrypted ClientHello: yes" in out
    facts = facts_of(out)
    assert facts["ech"] == {"accepted": True}
    assert facts["sni"] == {"inner": "secret.example", "outer": "public.example"}
    assert JA4_PATTERN.match(facts["fingerprint"]["ja4"])


def test_tls_ech_rotated_keys_are_both_accepted(ech_setup, pki):
    """With two key files loaded, clients holding either config get ECH accepted."""
    server, list_one, list_two, _ = ech_setup
    for ech_list in (list_one, list_two):
        _, out = bssl_client(server.port, "secret.example", ech_list, pki.ca_path)
        assert "Encrypted ClientHello: yes" in out


def _retry_configs_reader():
    """SSL_get0_ech_retry_configs from BoringSSL's libssl, which the core binding does not declare."""
    extra = cffi.FFI()
    extra.cdef("void SSL_get0_ech_retry_configs(const void *ssl, const uint8_t **out, size_t *out_len);")
    libssl = extra.dlopen("/usr/lib/x86_64-linux-gnu/android/libssl.so")

    def read(session):
        data, length = extra.new("const uint8_t **"), extra.new("size_t *")
        libssl.SSL_get0_ech_retry_configs(extra.cast("void *", int(ffi.cast("uintptr_t", session._ssl))), data, length)
        return bytes(extra.buffer(data[0], length[0]))

    return read


def test_tls_ech_stale_config_gets_every_config_as_retry(ech_setup, pki):
    """A BoringSSL client with a stale config is rejected and receives both loaded configs as retry configs."""
    server, list_one, list_two, stale = ech_setup
    client = ClientContext(pki.ca_path).new_session("public.example")
    stale_list = stale.read_bytes()
    assert lib.SSL_set1_ech_config_list(client._ssl, stale_list, len(stale_list)) == 1
    _, hello = client.receive(b"")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(hello)
        with pytest.raises(TLSError, match="ECH_REJECTED"):
            while data := sock.recv(65536):
                _, out = client.receive(data)
                sock.sendall(out)
    retry = _retry_configs_reader()(client)
    expected = {list_one.read_bytes()[2:], list_two.read_bytes()[2:]}
    body = retry[2:]
    first = int.from_bytes(body[2:4], "big") + 4
    assert {body[:first], body[first:]} == expected


def test_tls_ech_client_without_ech_is_served_directly(ech_setup, pki):
    """curl without ECH gets the --cert identity for its name, with ech.accepted false and a JA4."""
    server, *_ = ech_setup
    result = subprocess.run(["curl", "-sS", "--http1.1", "--cacert", str(pki.ca_path), "--resolve",
                             f"localhost:{server.port}:127.0.0.1", f"https://localhost:{server.port}/"],
                            capture_output=True, timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr
    facts = json.loads(result.stdout)
    assert facts["ech"] == {"accepted": False}
    assert facts["sni"] == {"inner": "localhost", "outer": "localhost"}
    assert JA4_PATTERN.match(facts["fingerprint"]["ja4"])
    assert facts["fingerprint"]["ja4_r"].startswith(facts["fingerprint"]["ja4"][:10] + "_")


# ---------------------------------------------------------------------------------------------------------
# --cert-dir


def served_subject(out):
    match = re.search(r"Cert subject: CN = (\S+)", out)
    return match.group(1) if match else None


@pytest.fixture(scope="module")
def cert_dir_server(pki, tmp_path_factory):
    """A --cert-dir server: an expired site-a, a live site-a, a wildcard, a combined file; sorted by name."""
    directory = tmp_path_factory.mktemp("certdir") / "certs"
    pki.write_pair(directory, "10-expired", "expired-a", ["site-a.test"], expired=True)
    pki.write_pair(directory, "20-site-a", "site-a", ["site-a.test", "Other.TEST"])
    pki.write_pair(directory, "30-wildcard", "wildcard", ["*.wild.test"])
    pki.write_pair(directory, "40-combined", "combined", ["combined.test", "site-a.test"], combined=True)
    context, _ = build_context(pki, directory.parent, cert_dir=str(directory))
    server = FactsServer(context)
    yield server
    server.stop()


@pytest.mark.parametrize("name, subject", [
    ("site-a.test", "site-a"),  # the expired certificate sorted first is skipped
    ("OTHER.test", "site-a"),  # SAN matching is case-insensitive
    ("a.wild.test", "wildcard"),
    ("combined.test", "combined"),  # certificate and key in one file
])
def test_tls_ech_cert_dir_chooses_certificate_by_san(cert_dir_server, pki, name, subject):
    """bssl-tool gets the first unexpired certificate, in file order, whose DNS SAN covers its SNI."""
    _, out = bssl_client(cert_dir_server.port, name, ca=pki.ca_path)
    assert served_subject(out) == subject


def test_tls_ech_cert_dir_without_sni_gets_first_unexpired(cert_dir_server, pki):
    """A client without SNI gets the first certificate in file order that has not expired."""
    _, out = bssl_client(cert_dir_server.port)
    assert served_subject(out) == "site-a"


@pytest.mark.parametrize("name", ["unknown.test", "a.b.wild.test", "wild.test"])
def test_tls_ech_cert_dir_refuses_uncovered_names(cert_dir_server, name):
    """A name no certificate covers (a wildcard covers exactly one label) fails the handshake."""
    result, out = bssl_client(cert_dir_server.port, name)
    assert result.returncode != 0
    assert "Cert subject" not in out
    assert any(f"covers {name}" in error for error in cert_dir_server.errors)


def test_tls_ech_cert_dir_curl_verifies_chosen_certificate(cert_dir_server, pki):
    """curl checks the chosen certificate against its name and the test CA."""
    port = cert_dir_server.port
    result = subprocess.run(["curl", "-sS", "--http1.1", "--cacert", str(pki.ca_path), "--resolve",
                             f"x.wild.test:{port}:127.0.0.1", f"https://x.wild.test:{port}/"],
                            capture_output=True, timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["sni"]["inner"] == "x.wild.test"


def test_tls_ech_cert_dir_startup_errors(pki, tmp_path):
    """No certificates, a key without its certificate, and only expired certificates each stop the load."""
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("nothing here")
    with pytest.raises(ConfigError, match="holds no PEM certificate"):
        build_context(pki, tmp_path, cert_dir=str(empty))
    orphan = tmp_path / "orphan"
    pki.write_pair(orphan, "a", "a", ["a.test"])
    (orphan / "stray-key.txt").write_bytes(pki.leaf("b", ["b.test"])[1])
    with pytest.raises(ConfigError, match="stray-key.txt belongs to no certificate"):
        build_context(pki, tmp_path, cert_dir=str(orphan))
    expired = tmp_path / "expired"
    pki.write_pair(expired, "a", "a", ["a.test"], expired=True)
    with pytest.raises(ConfigError, match="every certificate has expired"):
        build_context(pki, tmp_path, cert_dir=str(expired))


# ---------------------------------------------------------------------------------------------------------
# ECH relay


@pytest.fixture(scope="module")
def relay_setup(pki, tmp_path_factory):
    """A cover site for public.example, and a hidden origin (ECH key for public.example) relaying to it."""
    base = tmp_path_factory.mktemp("relay")
    cover_cert, cover_key = pki.write_pair(base / "cover", "cover", "cover", ["public.example"])
    cover = FactsServer(TLSConfigBuilder(Identity.load(cover_cert, cover_key), TicketKeys()).build())
    ech_list, _ = keygen(base / "hidden.pem")
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))  # bound, never listening: connections to it are refused
    context, names = build_context(
        pki, base, default_names=("secret.example",), ech_key=str(base / "hidden.pem"),
        ech_relay_target=[f"public.example=127.0.0.1:{cover.port}"])
    hidden = FactsServer(context, names)
    dead_context, _ = build_context(
        pki, base / "dead", default_names=("secret.example",), ech_key=str(base / "hidden.pem"),
        ech_relay_target=[f"public.example=127.0.0.1:{dead.getsockname()[1]}"])
    dead_relay = FactsServer(dead_context, names)
    yield cover, hidden, dead_relay, ech_list
    for server in (cover, hidden, dead_relay):
        server.stop()
    dead.close()


def test_tls_ech_relay_probe_without_ech_sees_cover_site(relay_setup, pki):
    """A client without ECH asking for the public name gets the cover site's certificate and page through the relay."""
    cover, hidden, _, _ = relay_setup
    started = relay.STATS.started
    result, out = bssl_client(hidden.port, "public.example", ca=pki.ca_path)
    assert served_subject(out) == "cover"
    assert facts_of(out)["sni"]["outer"] == "public.example"
    assert facts_of(out)["ech"] is None  # the cover site has no ECH keys: this answer is the cover's
    assert relay.STATS.started == started + 1


def test_tls_ech_relay_ech_client_reaches_hidden_site(relay_setup, pki):
    """An ECH client for the hidden name is served by the hidden origin itself."""
    _, hidden, _, ech_list = relay_setup
    _, out = bssl_client(hidden.port, "secret.example", ech_list, pki.ca_path)
    assert "Encrypted ClientHello: yes" in out
    assert served_subject(out) == "default"
    assert facts_of(out)["sni"] == {"inner": "secret.example", "outer": "public.example"}


def test_tls_ech_relay_curl_through_relay_gets_cover_page(relay_setup, pki):
    """curl (OpenSSL) to the public name through the hidden origin verifies the cover's certificate."""
    _, hidden, _, _ = relay_setup
    result = subprocess.run(["curl", "-sS", "--http1.1", "--cacert", str(pki.ca_path), "--resolve",
                             f"public.example:{hidden.port}:127.0.0.1", f"https://public.example:{hidden.port}/"],
                            capture_output=True, timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["ech"] is None


def test_tls_ech_relay_other_names_are_not_relayed(relay_setup, pki):
    """A non-ECH client for another name is served locally, not relayed."""
    _, hidden, _, _ = relay_setup
    started = relay.STATS.started
    _, out = bssl_client(hidden.port, "secret.example", ca=pki.ca_path)
    assert served_subject(out) == "default"
    assert relay.STATS.started == started


def test_tls_ech_relay_to_dead_target_fails_cleanly(relay_setup, pki):
    """A relay whose target refuses connections closes the client, logs and counts the failure."""
    _, _, dead_relay, _ = relay_setup
    failed = relay.STATS.failed
    result, out = bssl_client(dead_relay.port, "public.example", ca=pki.ca_path)
    assert result.returncode != 0
    assert "Cert subject" not in out
    assert relay.STATS.failed == failed + 1
    assert 'to "public.example"' in relay.STATS.failures[-1] and "failed" in relay.STATS.failures[-1]
    assert relay.STATS.active == 0


def test_tls_ech_relay_target_flag_must_name_a_public_name(tmp_path):
    """--ech-relay-target for a name that is no public name, or without a port, is refused."""
    with pytest.raises(ConfigError, match="no ECH public name"):
        relay.RelaySettings.build(("public.example",), ["other.example=127.0.0.1:1"])
    with pytest.raises(ConfigError, match="NAME=HOST:PORT"):
        relay.RelaySettings.build(("public.example",), ["public.example=127.0.0.1"])
    settings = relay.RelaySettings.build(("public.example", "b.example"), ["public.example=[::1]:8443"])
    assert settings.targets == {"public.example": ("::1", 8443), "b.example": ("b.example", 443)}


# ---------------------------------------------------------------------------------------------------------
# JA4 of real clients


@pytest.fixture(scope="module")
def plain_server(pki, tmp_path_factory):
    context, _ = build_context(pki, tmp_path_factory.mktemp("plain"))
    server = FactsServer(context)
    yield server
    server.stop()




def test_tls_ech_ja4_of_curl_matches_its_wire_hello(plain_server, pki):
    """curl's JA4 from BoringSSL's ClientHello equals the JA4 of the hello captured from the wire, and is stable."""
    from test_clienthello import capture_client_hello
    from zeroserve.plugins.tls_ech.clienthello import ClientHelloReader
    from zeroserve.plugins.tls_ech.ja4 import fingerprint

    def curl(port):
        return ["curl", "-sS", "--http1.1", "--max-time", "5", "--cacert", str(pki.ca_path), "--resolve",
                f"localhost:{port}:127.0.0.1", f"https://localhost:{port}/"]

    seen = [json.loads(subprocess.run(curl(plain_server.port), capture_output=True, timeout=TIMEOUT).stdout)
            ["fingerprint"] for _ in range(2)]
    assert seen[0] == seen[1]
    wire = fingerprint(ClientHelloReader().feed(capture_client_hello(curl)))
    assert seen[0] == {"ja4": wire.ja4, "ja4_r": wire.ja4_r}
    assert re.match(r"^t13d\d{4}h1_", seen[0]["ja4"])
    print("JA4 curl:", seen[0]["ja4"])


def test_tls_ech_ja4_of_bssl_tool_differs_from_curl(plain_server, pki):
    """bssl-tool (BoringSSL) and curl (OpenSSL) get different JA4 values; bssl-tool's has no ALPN."""
    _, out = bssl_client(plain_server.port, "localhost", ca=pki.ca_path)
    ja4 = facts_of(out)["fingerprint"]["ja4"]
    result = subprocess.run(["curl", "-sS", "--http1.1", "--cacert", str(pki.ca_path), "--resolve",
                             f"localhost:{plain_server.port}:127.0.0.1", f"https://localhost:{plain_server.port}/"],
                            capture_output=True, timeout=TIMEOUT)
    assert JA4_PATTERN.match(ja4) and ja4[8:10] == "00"
    assert ja4 != json.loads(result.stdout)["fingerprint"]["ja4"]
    print("JA4 bssl-tool:", ja4)


# ---------------------------------------------------------------------------------------------------------
# The zeroserve_tls_client_hello hook


def test_hook_tls_client_hello(pki, tmp_path):
    """The hook sees SNI, ALPN and JA4; its context serves the handshake, its TLSError refuses it, None defers."""
    import zeroserve.plugins.tls_ech as plugin
    from zeroserve.core.plugins import build_plugin_manager
    from zeroserve.core.tls import ServerContext
    from zeroserve.sdk import hookimpl

    ticket_keys = TicketKeys()
    cert, key = pki.write_pair(tmp_path / "chosen", "chosen", "chosen", ["hooked.test"])
    chosen = ServerContext(Identity.load(cert, key), ticket_keys)
    seen = []

    class Chooser:
        @hookimpl
        def zeroserve_tls_client_hello(self, hello):
            seen.append(hello)
            if hello.sni == "blocked.test":
                raise TLSError("refused by the hook")
            return chosen if hello.sni == "hooked.test" else None

    pm = build_plugin_manager([])
    pm.register(Chooser(), name="chooser")
    default_cert, default_key = pki.write_pair(tmp_path / "default", "default", "default", ["localhost"])
    builder = TLSConfigBuilder(Identity.load(default_cert, default_key), ticket_keys)
    keys_dir = tmp_path / "keys"
    keys_dir.mkdir()
    keygen(keys_dir / "k.pem")
    plugin.zeroserve_configure_tls(tls=builder, config=argparse.Namespace(options=options(ech_key=str(keys_dir))),
                                   plugins=pm)
    server = FactsServer(builder.build())
    try:
        _, hooked = bssl_client(server.port, "hooked.test")
        _, deferred = bssl_client(server.port, "localhost")
        blocked_result, blocked = bssl_client(server.port, "blocked.test")
    finally:
        server.stop()
    assert served_subject(hooked) == "chosen"
    assert served_subject(deferred) == "default"
    assert blocked_result.returncode != 0 and "Cert subject" not in blocked
    assert server.errors == ["refused by the hook"]
    assert [info.sni for info in seen] == ["hooked.test", "localhost", "blocked.test"]
    assert seen[0].ja4 == facts_of(hooked)["fingerprint"]["ja4"]
    assert seen[0].alpn == () and seen[0].ech_accepted is False


def test_tls_ech_ja4_of_chromium_has_chrome_cipher_hash(plain_server, tmp_path):
    """Headless Chromium's JA4 has TLS 1.3, SNI, ALPN h2 and the cipher hash every Chrome release shares."""
    before = len(plain_server.handshakes)
    subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path}",
                    "--ignore-certificate-errors", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--dump-dom", f"https://localhost:{plain_server.port}/"],
                   capture_output=True, timeout=60)
    prints = {facts.ja4 for facts in plain_server.handshakes[before:]}
    assert prints
    # A second connection may resume the first one's session: pre_shared_key then adds one extension
    # (count and extension hash change), while the cipher part stays Chrome's.
    for ja4 in prints:
        assert re.match(r"^t13d15\d\dh2_8daaf6152771_[0-9a-f]{12}$", ja4), ja4
    print("JA4 Chromium:", sorted(prints))


# ---------------------------------------------------------------------------------------------------------
# The plugin's hooks


def test_tls_ech_hooks_parse_flags_and_refuse_missing_files(tmp_path):
    """The plugin's flags parse into options, and zeroserve_configure names a missing --ech-key file."""
    import zeroserve.plugins.tls_ech as plugin

    parser = argparse.ArgumentParser()
    plugin.zeroserve_add_options(parser=parser)
    parsed = parser.parse_args(["--cert-dir", "certs", "--ech-key", str(tmp_path / "missing.pem"),
                                "--ech-relay-target", "public.example=127.0.0.1:8443"])
    assert (parsed.cert_dir, parsed.ech_relay_target, parsed.ech_relay_max) == (
        "certs", ["public.example=127.0.0.1:8443"], 256)
    with pytest.raises(ConfigError, match="missing.pem does not exist"):
        plugin.zeroserve_configure(config=argparse.Namespace(options=parsed))
    assert [spec.name for spec in plugin.zeroserve_register_helpers(config=None)] == ["zs_tls_ja4"]


def raw_hello(name):
    """The first flight of a BoringSSL client for `name`, to send by hand."""
    _, hello = ClientContext().new_session(name).receive(b"")
    return hello


def test_tls_ech_relay_cap_and_idle_timeout(relay_setup, pki, tmp_path):
    """Beyond --ech-relay-max a relay is refused and counted; an idle relay is closed after the idle time."""
    cover, *_ = relay_setup
    keygen(tmp_path / "k.pem")
    context, names = build_context(
        pki, tmp_path, default_names=("secret.example",), ech_key=str(tmp_path / "k.pem"),
        ech_relay_target=[f"public.example=127.0.0.1:{cover.port}"], ech_relay_max=1, ech_relay_idle_timeout=1.0)
    server = FactsServer(context, names)
    busy, failed = relay.STATS.refused_busy, relay.STATS.failed
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as first:
            first.sendall(raw_hello("public.example"))
            assert first.recv(5)[:1] == b"\x16"  # the cover site's ServerHello came through the relay
            with socket.create_connection(("127.0.0.1", server.port), timeout=10) as second:
                second.sendall(raw_hello("public.example"))
                assert second.recv(5) == b""  # refused: closed without a byte
            assert relay.STATS.refused_busy == busy + 1
            while first.recv(65536):  # the rest of the cover's flight, then the close after 1 s idle
                pass
    finally:
        server.stop()
    assert relay.STATS.failed == failed + 2
    assert "idle for 1 s" in relay.STATS.failures[-1]
