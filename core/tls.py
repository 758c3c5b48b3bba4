"""Sans-IO TLS through BoringSSL: server and client contexts, and the session that turns records into plaintext.

A TLSSession has the interface of session.PlainSession, so HTTP code cannot tell whether it runs over TLS:
the connection feeds it the bytes it read and writes out the bytes it gets back. BoringSSL sees only two
memory BIOs: one large recv lands in the read BIO in one copy and BoringSSL takes every record from it
without a system call, and everything BoringSSL writes (handshake flights, records, alerts) is collected
from the write BIO in one piece, so a response costs one send.

Callbacks (ALPN choice, session-ticket keys, the early ClientHello hook) are Python functions that
BoringSSL calls from inside SSL_do_handshake; they find their Python objects through ex_data handles.
"""
import hashlib
import hmac
import ipaddress
import json
import logging
import os
import threading
import time
from dataclasses import dataclass

from zeroserve.core import worldfiles
from zeroserve.core.errors import ConfigError, TLSError
from zeroserve.native.boringssl import (
    CLOSED,
    check,
    check_ptr,
    drain_errors,
    error,
    ffi,
    lib,
    ssl_error,
    string,
)

log = logging.getLogger(__name__)

# Server preference order; BoringSSL keeps pointers into this buffer, so it lives as long as the module.
_SERVER_ALPN = ffi.new("uint8_t[]", b"\x02h2\x08http/1.1")
_SERVER_ALPN_LEN = len(_SERVER_ALPN) - 1  # without ffi.new's trailing NUL
_CLIENT_ALPN = b"\x08http/1.1"
_ALPN_NAMES = {b"h2": "h2", b"http/1.1": "http/1.1"}
_ALPN_EXTENSION = 16  # RFC 7301

# The first of these that exists is the client's trust store when no CA file is given.
SYSTEM_CA_BUNDLES = (
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
    "/etc/ssl/ca-bundle.pem",
)

# One TLS record's plaintext is at most 16 KiB; SSL_read never returns more in one call.
_READ_SIZE = 16384
# A memory BIO that had to hold more than this is replaced by a fresh one, so that an idle connection
# does not keep the memory of its largest transfer.
_BIO_KEEP_CAPACITY = 32 * 1024

_SSL_SESSION_INDEX = lib.SSL_get_ex_new_index(0, ffi.NULL, ffi.NULL, ffi.NULL, ffi.NULL)
_CTX_TICKET_KEYS_INDEX = lib.SSL_CTX_get_ex_new_index(0, ffi.NULL, ffi.NULL, ffi.NULL, ffi.NULL)


class _Scratch(threading.local):
    """Per-thread buffers for SSL_read, BIO_read and BIO_mem_contents, so no call allocates."""

    def __init__(self):
        self.read = ffi.new("uint8_t[]", _READ_SIZE)
        self.write = ffi.new("uint8_t[]", _BIO_KEEP_CAPACITY)
        self.contents = ffi.new("const uint8_t **")
        self.length = ffi.new("size_t *")


_scratch = _Scratch()


# ---------------------------------------------------------------------------------------------------------
# Certificates and keys


def _read_file(path, what):
    try:
        return worldfiles.read_bytes(path)
    except FileNotFoundError:
        raise ConfigError(f"{what} {path} does not exist: give the path of a PEM file") from None
    except IsADirectoryError:
        raise ConfigError(f"{what} {path} is a directory: give the path of a PEM file") from None
    except OSError as exc:
        raise ConfigError(f"{what} {path} cannot be read: {exc.strerror}") from None


_PEM_END = "PEM routines: NO_START_LINE"


def _pem_bio(data):
    # BIO_new_mem_buf reads `data` in place; the caller keeps `data` alive while the BIO is used.
    return ffi.gc(check_ptr(lib.BIO_new_mem_buf(data, len(data)), "BIO_new_mem_buf"), lib.BIO_free)


class Identity:
    """A certificate chain (leaf first) and its private key, parsed and checked to belong together."""

    __slots__ = ("cert_path", "key_path", "leaf", "chain", "key")

    def __init__(self, cert_path, key_path, leaf, chain, key):
        self.cert_path = cert_path
        self.key_path = key_path
        self.leaf = leaf
        self.chain = chain
        self.key = key

    @classmethod
    def load(cls, cert_path, key_path):
        """Read a PEM certificate chain and a PEM private key; ConfigError says what is wrong with which file."""
        cert_pem = _read_file(cert_path, "certificate file")
        key_pem = _read_file(key_path, "key file")

        bio = _pem_bio(cert_pem)
        certs = []
        while (x509 := lib.PEM_read_bio_X509(bio, ffi.NULL, ffi.NULL, ffi.NULL)) != ffi.NULL:
            certs.append(ffi.gc(x509, lib.X509_free))
        # Reading ends with NO_START_LINE when no certificate block is left; any other reason means a
        # damaged block, which must not silently shorten the chain.
        reasons = drain_errors()
        if not certs:
            raise ConfigError(f"certificate file {cert_path} holds no PEM certificate ({'; '.join(reasons)})")
        if reasons != [_PEM_END]:
            raise ConfigError(
                f"certificate file {cert_path}: certificate {len(certs) + 1} is damaged ({'; '.join(reasons)})"
            )

        key = lib.PEM_read_bio_PrivateKey(_pem_bio(key_pem), ffi.NULL, ffi.NULL, ffi.NULL)
        if key == ffi.NULL:
            reasons = drain_errors()
            raise ConfigError(
                f"key file {key_path} holds no usable PEM private key ({'; '.join(reasons)}); "
                "encrypted keys are not supported"
            )
        key = ffi.gc(key, lib.EVP_PKEY_free)

        if lib.X509_check_private_key(certs[0], key) != 1:
            reasons = drain_errors()
            raise ConfigError(
                f"certificate {cert_path} and key {key_path} do not match ({'; '.join(reasons)}): "
                "give the key the certificate was issued for"
            )
        return cls(str(cert_path), str(key_path), certs[0], certs[1:], key)


# ---------------------------------------------------------------------------------------------------------
# Session-ticket keys


class TicketKey:
    """One session-ticket key: its public 16-byte name, an AES-128-CBC key and an HMAC-SHA256 key."""

    __slots__ = ("name", "aes_key", "hmac_key")

    def __init__(self, chain_value):
        self.name = hmac.digest(chain_value, b"zeroserve ticket key name", "sha256")[:16]
        self.aes_key = hmac.digest(chain_value, b"zeroserve ticket aes key", "sha256")[:16]
        self.hmac_key = hmac.digest(chain_value, b"zeroserve ticket hmac key", "sha256")[:16]


class TicketKeys:
    """Session-ticket keys that rotate in memory every `period` seconds and never touch disk.

    The keys of successive periods come from a hash ratchet: chain(n+1) = SHA-256(chain(n)), starting from
    a random seed. A key can therefore not be recomputed once its period has passed (forward secrecy for
    tickets), while processes that share the seed and start period derive the same keys at the same time
    without talking to each other. Create one TicketKeys in the parent before forking workers and resumption
    works across workers; created per worker, a ticket resumes only on the worker that issued it (the
    other workers cannot decrypt it and fall back to a full handshake).

    Tickets are issued under the current key and accepted under the current and previous key, so a ticket
    stays usable for at least one full period; ServerContext advertises that period as the ticket lifetime.
    """

    __slots__ = ("period", "_clock", "_epoch", "_chain", "current", "previous")

    def __init__(self, period=12 * 3600, *, seed=None, clock=time.time):
        self.period = period
        self._clock = clock
        self._epoch = int(clock() // period)
        self._chain = seed if seed is not None else os.urandom(32)
        self.current = TicketKey(self._chain)
        self.previous = None

    def rotate_if_due(self):
        """Advance the ratchet to the current period; cheap when nothing is due (one clock read)."""
        epoch = int(self._clock() // self.period)
        if epoch <= self._epoch:
            return
        for _ in range(epoch - self._epoch):
            previous_chain = self._chain
            self._chain = hashlib.sha256(self._chain).digest()
        self._epoch = epoch
        self.current = TicketKey(self._chain)
        self.previous = TicketKey(previous_chain)

    def lookup(self, name):
        """(key, renew) for a ticket's key name: renew is True for the previous key; (None, False) if unknown."""
        if name == self.current.name:
            return self.current, False
        if self.previous is not None and name == self.previous.name:
            return self.previous, True
        return None, False


@ffi.def_extern(error=-1, onerror=lambda *exc_info: log.error("session-ticket key callback failed", exc_info=exc_info))
def zs_ticket_key(ssl, key_name, iv, cipher_ctx, hmac_ctx, encrypt):
    """BoringSSL's ticket key callback: choose the key for a new ticket, or find the key of a presented one."""
    keys = ffi.from_handle(lib.SSL_CTX_get_ex_data(lib.SSL_get_SSL_CTX(ssl), _CTX_TICKET_KEYS_INDEX))
    keys.rotate_if_due()
    if encrypt:
        key = keys.current
        ffi.memmove(key_name, key.name, 16)
        if lib.RAND_bytes(iv, 16) != 1:
            return -1
        result = 1
    else:
        key, renew = keys.lookup(bytes(ffi.buffer(key_name, 16)))
        if key is None:
            return 0  # unknown or expired key: ignore the ticket, do a full handshake
        result = 2 if renew else 1
    init = lib.EVP_EncryptInit_ex if encrypt else lib.EVP_DecryptInit_ex
    if init(cipher_ctx, lib.EVP_aes_128_cbc(), ffi.NULL, key.aes_key, iv) != 1:
        return -1
    if lib.HMAC_Init_ex(hmac_ctx, key.hmac_key, 16, lib.EVP_sha256(), ffi.NULL) != 1:
        return -1
    return result


# ---------------------------------------------------------------------------------------------------------
# Server side


@ffi.def_extern(error=lib.SSL_TLSEXT_ERR_NOACK)
def zs_alpn_select(ssl, out, out_len, client_list, client_list_len, arg):
    """Pick the first of our protocols (h2, http/1.1) that the client offers; none in common means no ALPN."""
    chosen = ffi.cast("uint8_t **", out)
    if lib.SSL_select_next_proto(
        chosen, out_len, _SERVER_ALPN, _SERVER_ALPN_LEN, client_list, client_list_len
    ) != lib.OPENSSL_NPN_NEGOTIATED:
        return lib.SSL_TLSEXT_ERR_NOACK
    return lib.SSL_TLSEXT_ERR_OK


class ClientHello:
    """The ClientHello as BoringSSL parsed it; usable only while the on_client_hello hook runs."""

    __slots__ = ("_hello", "raw")

    def __init__(self, hello, raw):
        self._hello = hello
        self.raw = raw

    @property
    def servername(self):
        """The SNI host name, or None."""
        return string(lib.SSL_get_servername(self._hello.ssl, lib.TLSEXT_NAMETYPE_host_name))

    @property
    def alpn_offered(self):
        """The ALPN protocol names the client offers, in its order (empty when it sends no ALPN)."""
        body = self.extension(_ALPN_EXTENSION)
        names = []
        position = 2  # after the list's own 2-byte length
        while body is not None and position < len(body):
            length = body[position]
            names.append(body[position + 1 : position + 1 + length].decode("ascii", "replace"))
            position += 1 + length
        return names

    def extension(self, extension_type):
        """The body of one extension, or None when the client did not send it."""
        data = ffi.new("const uint8_t **")
        length = ffi.new("size_t *")
        if not lib.SSL_early_callback_ctx_extension_get(self._hello, extension_type, data, length):
            return None
        return bytes(ffi.buffer(data[0], length[0]))


@ffi.def_extern(
    error=lib.ssl_select_cert_error,
    onerror=lambda *exc_info: log.error("ClientHello callback failed", exc_info=exc_info),
)
def zs_select_certificate(hello):
    """The early ClientHello callback: keep the raw ClientHello and run the context's on_client_hello hook.

    A hook's exception is kept on the session and re-raised from TLSSession.receive once BoringSSL returns.
    """
    session = ffi.from_handle(lib.SSL_get_ex_data(hello.ssl, _SSL_SESSION_INDEX))
    raw = bytes(ffi.buffer(hello.client_hello, hello.client_hello_len))
    session.client_hello = raw
    hook = session.context.on_client_hello
    if hook is not None:
        try:
            hook(session, ClientHello(hello, raw))
        except BaseException as exc:
            session._hook_error = exc
            return lib.ssl_select_cert_error
    return lib.ssl_select_cert_success


def _new_ctx():
    return ffi.gc(check_ptr(lib.SSL_CTX_new(lib.TLS_method()), "SSL_CTX_new"), lib.SSL_CTX_free)


class TLSConfigBuilder:
    """The TLS material of a world being built, which plugins add to before the ServerContext is made.

    The world build creates it with the default identity (--cert/--key, or the self-signed certificate)
    and the worker's TicketKeys, passes it to the zeroserve_configure_tls hook, then calls build().
    Plugins may replace `identity`, set `ech_keys` (an SSL_ECH_KEYS * made with the binding), and add
    ClientHello inspectors: `inspector(session, hello)` runs on every handshake, in the order added; it may
    call session.use_identity_of(context) for a ServerContext it made with the same ticket_keys, or raise
    to refuse the handshake (the exception comes out of TLSSession.receive unchanged). They may also set
    `connection_info(session, handshake_bytes) -> ConnectionFacts`, which each connection calls once when
    its handshake completes (default: basic_connection_facts).
    """

    __slots__ = ("identity", "ticket_keys", "ech_keys", "inspectors", "connection_info")

    def __init__(self, identity, ticket_keys):
        self.identity = identity
        self.ticket_keys = ticket_keys
        self.ech_keys = None
        self.inspectors = []
        self.connection_info = basic_connection_facts

    def add_inspector(self, inspector):
        """Run inspector(session, hello) on every ClientHello, after those added before it."""
        self.inspectors.append(inspector)

    def build(self):
        """The ServerContext of this configuration."""
        inspectors = tuple(self.inspectors)
        if not inspectors:
            on_client_hello = None
        elif len(inspectors) == 1:
            on_client_hello = inspectors[0]
        else:
            def on_client_hello(session, hello):
                for inspector in inspectors:
                    inspector(session, hello)
        return ServerContext(self.identity, self.ticket_keys, on_client_hello=on_client_hello, ech_keys=self.ech_keys,
                             connection_info=self.connection_info)


@dataclass(frozen=True, slots=True)
class ConnectionFacts:
    """What a finished TLS handshake tells scripts and the access log; `info_json` is zs_connection_info."""

    ja4: str | None
    ja4_r: str | None
    info_json: str


def basic_connection_facts(session, handshake_bytes=b""):
    """ConnectionFacts without a fingerprint: TLS, ALPN and SNI (the same name inside and outside)."""
    info = {
        "tls": True,
        "tls_handshake_complete": session.handshake_complete,
        "alpn": session.alpn,
        "sni": {"inner": session.sni, "outer": session.sni},
        "ech": None,
        "fingerprint": {"ja4": None, "ja4_r": None},
        "tls_client": {"certificate": None, "chain_fingerprints_sha256": []},
    }
    return ConnectionFacts(None, None, json.dumps(info, separators=(",", ":")))


class ServerContext:
    """The server's SSL_CTX: TLS 1.3 only, one identity, ALPN h2 then http/1.1, rotating tickets, no 0-RTT.

    This is the one place a server SSL_CTX is made (TLSConfigBuilder.build gathers its arguments for a
    world). Plugins extend it through two arguments:
    `on_client_hello(session, hello)` runs for every handshake before certificate selection (it may call
    session.use_identity_of(other_context) or raise to refuse the handshake; the exception comes out of
    TLSSession.receive unchanged), and `ech_keys` is an `SSL_ECH_KEYS *` built with the binding.
    `connection_info(session, handshake_bytes)` gives a finished handshake's ConnectionFacts.
    A context is immutable once made; a reload makes a new one, and sessions keep the context they began with.
    """

    __slots__ = ("ctx", "identity", "ticket_keys", "on_client_hello", "connection_info", "_ticket_keys_handle")

    def __init__(self, identity, ticket_keys, *, on_client_hello=None, ech_keys=None,
                 connection_info=basic_connection_facts):
        self.identity = identity
        self.ticket_keys = ticket_keys
        self.on_client_hello = on_client_hello
        self.connection_info = connection_info
        ctx = self.ctx = _new_ctx()
        check(lib.SSL_CTX_set_min_proto_version(ctx, lib.TLS1_3_VERSION), "SSL_CTX_set_min_proto_version")
        check(lib.SSL_CTX_set_max_proto_version(ctx, lib.TLS1_3_VERSION), "SSL_CTX_set_max_proto_version")
        check(lib.SSL_CTX_use_certificate(ctx, identity.leaf), f"certificate {identity.cert_path}")
        for cert in identity.chain:
            check(lib.SSL_CTX_add1_chain_cert(ctx, cert), f"chain certificate in {identity.cert_path}")
        check(lib.SSL_CTX_use_PrivateKey(ctx, identity.key), f"key {identity.key_path}")
        check(lib.SSL_CTX_check_private_key(ctx), f"key {identity.key_path}")
        lib.SSL_CTX_set_alpn_select_cb(ctx, lib.zs_alpn_select, ffi.NULL)
        lib.SSL_CTX_set_select_certificate_cb(ctx, lib.zs_select_certificate)
        lib.SSL_CTX_set_early_data_enabled(ctx, 0)
        # TLS 1.3 resumption is by stateless ticket only; a server-side cache would just hold memory.
        lib.SSL_CTX_set_session_cache_mode(ctx, lib.SSL_SESS_CACHE_OFF)
        # One ticket per connection: browsers and curl resume one connection at a time, and each
        # ticket costs a callback and an encryption in every full handshake.
        lib.SSL_CTX_set_num_tickets(ctx, 1)
        lib.SSL_CTX_set_session_psk_dhe_timeout(ctx, ticket_keys.period)
        self._ticket_keys_handle = ffi.new_handle(ticket_keys)
        check(lib.SSL_CTX_set_ex_data(ctx, _CTX_TICKET_KEYS_INDEX, self._ticket_keys_handle), "SSL_CTX_set_ex_data")
        check(lib.SSL_CTX_set_tlsext_ticket_key_cb(ctx, lib.zs_ticket_key), "SSL_CTX_set_tlsext_ticket_key_cb")
        if ech_keys is not None:
            check(lib.SSL_CTX_set1_ech_keys(ctx, ech_keys), "SSL_CTX_set1_ech_keys")

    @classmethod
    def load(cls, cert_path, key_path, ticket_keys, **hooks):
        """Read --cert and --key and build a context; ConfigError names the file and the problem."""
        return cls(Identity.load(cert_path, key_path), ticket_keys, **hooks)

    def new_session(self):
        """A TLSSession for one accepted connection."""
        ssl = _new_ssl(self.ctx)
        lib.SSL_set_accept_state(ssl)
        return TLSSession(self, ssl, server=True)


def _new_ssl(ctx):
    ssl = ffi.gc(check_ptr(lib.SSL_new(ctx), "SSL_new"), lib.SSL_free)
    lib.SSL_set0_rbio(ssl, _new_mem_bio())  # the SSL owns its BIOs from here on
    lib.SSL_set0_wbio(ssl, _new_mem_bio())
    return ssl


def _new_mem_bio():
    return check_ptr(lib.BIO_new(lib.BIO_s_mem()), "BIO_new")


# ---------------------------------------------------------------------------------------------------------
# Client side


def system_ca_bundle():
    """The path of the system CA bundle (the first of SYSTEM_CA_BUNDLES that exists)."""
    for path in SYSTEM_CA_BUNDLES:
        if os.path.isfile(path):
            return path
    raise ConfigError(
        f"no system CA bundle found (looked for {', '.join(SYSTEM_CA_BUNDLES)}): "
        "install the ca-certificates package or give a CA file"
    )


class ClientContext:
    """The upstream client's SSL_CTX: TLS 1.2 or 1.3, chain checked against a CA bundle, ALPN http/1.1.

    The host name is checked per session (TLSSession through new_session). The original refused TLS 1.2
    upstreams; we accept them, since many origins still speak only 1.2.
    """

    __slots__ = ("ctx", "ca_file")

    def __init__(self, ca_file=None):
        self.ca_file = str(ca_file) if ca_file is not None else system_ca_bundle()
        if not os.path.isfile(self.ca_file):
            raise ConfigError(f"CA file {self.ca_file} does not exist: give the path of a PEM bundle")
        ctx = self.ctx = _new_ctx()
        check(lib.SSL_CTX_set_min_proto_version(ctx, lib.TLS1_2_VERSION), "SSL_CTX_set_min_proto_version")
        check(lib.SSL_CTX_set_max_proto_version(ctx, lib.TLS1_3_VERSION), "SSL_CTX_set_max_proto_version")
        if lib.SSL_CTX_load_verify_locations(ctx, self.ca_file.encode(), ffi.NULL) != 1:
            raise ConfigError(f"CA file {self.ca_file} holds no usable PEM certificate ({'; '.join(drain_errors())})")
        lib.SSL_CTX_set_verify(ctx, lib.SSL_VERIFY_PEER, ffi.NULL)
        # A BoringSSL client hands TLS 1.3 tickets only to a new-session callback ("external cache").
        lib.SSL_CTX_set_session_cache_mode(ctx, lib.SSL_SESS_CACHE_CLIENT | lib.SSL_SESS_CACHE_NO_INTERNAL)
        lib.SSL_CTX_sess_set_new_cb(ctx, lib.zs_new_session)
        # SSL_CTX_set_alpn_protos returns 0 on success, unlike almost everything else.
        if lib.SSL_CTX_set_alpn_protos(ctx, _CLIENT_ALPN, len(_CLIENT_ALPN)) != 0:
            raise error("SSL_CTX_set_alpn_protos")

    def new_session(self, server_hostname, *, resume=None):
        """A TLSSession connecting to server_hostname (a DNS name or an IP address), checked against it.

        resume is a ResumptionTicket from an earlier session to the same server. Call receive(b"") to get
        the ClientHello.
        """
        ssl = _new_ssl(self.ctx)
        lib.SSL_set_connect_state(ssl)
        param = lib.SSL_get0_param(ssl)
        try:
            ipaddress.ip_address(server_hostname)
        except ValueError:
            try:
                name = server_hostname.encode("idna")
            except UnicodeError:
                raise TLSError(f"{server_hostname!r} is not a host name TLS can check") from None
            check(lib.SSL_set_tlsext_host_name(ssl, name), "SSL_set_tlsext_host_name")
            check(lib.X509_VERIFY_PARAM_set1_host(param, name, len(name)), "X509_VERIFY_PARAM_set1_host")
        else:
            check(lib.X509_VERIFY_PARAM_set1_ip_asc(param, server_hostname.encode()), "X509_VERIFY_PARAM_set1_ip_asc")
        if resume is not None:
            check(lib.SSL_set_session(ssl, resume.session), "SSL_set_session")
        return TLSSession(self, ssl, server=False)


_client_contexts = {}  # CA file (None: the system CAs) -> ClientContext, one per process


def client_context(ca_file=None):
    """This process's ClientContext for `ca_file`, made on first use and kept.

    The supervisor makes the ones the flags name before the workers fork: an isolated worker
    may not be able to read the CA file, and inherits the loaded context instead.
    """
    context = _client_contexts.get(ca_file)
    if context is None:
        context = _client_contexts[ca_file] = ClientContext(ca_file)
    return context


@ffi.def_extern(error=0, onerror=lambda *exc_info: log.error("new-session callback failed", exc_info=exc_info))
def zs_new_session(ssl, ssl_session):
    """BoringSSL hands a client a resumable session (a ticket arrived): keep it on the TLSSession."""
    session = ffi.from_handle(lib.SSL_get_ex_data(ssl, _SSL_SESSION_INDEX))
    session._ticket = ResumptionTicket(ffi.gc(ssl_session, lib.SSL_SESSION_free))
    return 1  # we own the reference now


class ResumptionTicket:
    """A client's resumable session (TLS 1.3 ticket), to pass to ClientContext.new_session(resume=...)."""

    __slots__ = ("session",)

    def __init__(self, session):
        self.session = session


# ---------------------------------------------------------------------------------------------------------
# The session


class TLSSession:
    """One TLS connection, sans-IO, with the interface of session.PlainSession.

    receive(data) -> (plaintext, bytes_to_send); send(plaintext) -> bytes; close() -> bytes.
    A fatal handshake or record error raises TLSError (BoringSSL's reasons in the message); the alert
    BoringSSL queued for the peer is then returned by close(). A close_notify from the peer sets `closed`.
    """

    __slots__ = (
        "context", "_ssl", "_rbio", "_wbio", "is_server", "handshake_complete", "closed", "alpn", "sni",
        "client_hello", "_handle", "_hook_error", "_failed", "_shut", "_ticket",
    )

    is_tls = True

    def __init__(self, context, ssl, *, server):
        self.context = context
        self._ssl = ssl
        self._rbio = lib.SSL_get_rbio(ssl)
        self._wbio = lib.SSL_get_wbio(ssl)
        self.is_server = server
        self.handshake_complete = False
        self.closed = False
        self.alpn = None
        self.sni = None
        self.client_hello = None
        # Callbacks find the session through this handle (ex_data). A server needs it only until the
        # handshake ends (ClientHello hook); a client until close(), as tickets arrive after the handshake.
        self._handle = ffi.new_handle(self)
        check(lib.SSL_set_ex_data(ssl, _SSL_SESSION_INDEX, self._handle), "SSL_set_ex_data")
        self._hook_error = None
        self._failed = False
        self._shut = False
        self._ticket = None

    def receive(self, data):
        """Ciphertext from the socket in; (plaintext for HTTP, bytes to send to the peer) out."""
        if data and lib.BIO_write(self._rbio, data, len(data)) != len(data):
            raise error("BIO_write")
        if not self.handshake_complete and not self._handshake():
            plaintext = b""
        else:
            plaintext = self._read_plaintext()
        if len(data) > _BIO_KEEP_CAPACITY and not lib.BIO_pending(self._rbio):
            # A mem BIO keeps its largest size; give an idle connection a small one back.
            self._rbio = _new_mem_bio()
            lib.SSL_set0_rbio(self._ssl, self._rbio)
        return plaintext, self._pending_output()

    def send(self, plaintext):
        """Plaintext from HTTP in; TLS records for the socket out (one record per 16 KiB)."""
        if not plaintext:
            return b""
        written = lib.SSL_write(self._ssl, plaintext if type(plaintext) is bytes else ffi.from_buffer(plaintext),
                                len(plaintext))
        if written <= 0:
            self._failed = True
            ssl_error(self._ssl, written, "TLS write")
            raise error("TLS write", ["SSL_write wrote nothing"])
        return self._pending_output()

    def close(self):
        """Bytes to send before closing the socket: a close_notify, or the alert of a failed handshake."""
        self._release_handle()
        if not self._shut and not self._failed and self.handshake_complete:
            self._shut = True
            if lib.SSL_shutdown(self._ssl) < 0:
                drain_errors()  # a peer that already went away; nothing to report
        return self._pending_output()

    @property
    def ssl_address(self):
        """The address of this session's SSL object, for C code (the fast path) linked to the same libssl."""
        return int(ffi.cast("uintptr_t", self._ssl))

    @property
    def version(self):
        """The negotiated protocol version, e.g. 'TLSv1.3'."""
        return string(lib.SSL_get_version(self._ssl))

    @property
    def cipher(self):
        """The negotiated cipher suite's standard name, or None before the handshake."""
        cipher = lib.SSL_get_current_cipher(self._ssl)
        return None if cipher == ffi.NULL else string(lib.SSL_CIPHER_standard_name(cipher))

    @property
    def resumed(self):
        """True when the handshake resumed an earlier session from a ticket."""
        return bool(lib.SSL_session_reused(self._ssl))

    @property
    def ech_accepted(self):
        """True when the client's Encrypted ClientHello was decrypted."""
        return bool(lib.SSL_ech_accepted(self._ssl))

    def use_identity_of(self, context):
        """From inside on_client_hello: serve this handshake with another ServerContext's certificate."""
        check_ptr(lib.SSL_set_SSL_CTX(self._ssl, context.ctx), "SSL_set_SSL_CTX")

    def resumption_ticket(self):
        """Client side: the newest ResumptionTicket the server sent, or None if it sent none yet."""
        return self._ticket

    def _handshake(self):
        result = lib.SSL_do_handshake(self._ssl)
        if result == 1:
            self.handshake_complete = True
            if self.is_server:
                self._release_handle()
            data = ffi.new("const uint8_t **")
            length = ffi.new("unsigned *")
            lib.SSL_get0_alpn_selected(self._ssl, data, length)
            if length[0]:
                alpn = bytes(ffi.buffer(data[0], length[0]))
                self.alpn = _ALPN_NAMES.get(alpn) or alpn.decode("ascii", "replace")
            if self.is_server:
                sni = string(lib.SSL_get_servername(self._ssl, lib.TLSEXT_NAMETYPE_host_name))
                self.sni = sni.lower() if sni else None
            return True
        try:
            ssl_error(self._ssl, result, "TLS handshake failed")
        except TLSError as exc:
            self._failed = True
            self._release_handle()
            hook_error, self._hook_error = self._hook_error, None
            if hook_error is not None:
                drain_errors()
                raise hook_error from None
            if not self.is_server:
                verify = lib.SSL_get_verify_result(self._ssl)
                if verify != lib.X509_V_OK:
                    reason = string(lib.X509_verify_cert_error_string(verify))
                    raise error("TLS handshake failed", [*exc.reasons, f"certificate: {reason}"]) from None
            raise
        return False

    def _read_plaintext(self):
        ssl, rbio = self._ssl, self._rbio
        buf = _scratch.read
        chunks = []
        while True:
            count = lib.SSL_read(ssl, buf, _READ_SIZE)
            if count > 0:
                chunks.append(ffi.buffer(buf, count)[:])
                # BoringSSL reads exactly one record at a time and keeps nothing back once a record is
                # consumed, so an empty read BIO means the next SSL_read could only say WANT_READ.
                if lib.BIO_pending(rbio):
                    continue
                break
            try:
                if ssl_error(ssl, count, "TLS record") == CLOSED:
                    self.closed = True
            except TLSError:
                self._failed = True
                raise
            break
        if len(chunks) == 1:
            return chunks[0]
        return b"".join(chunks)

    def _pending_output(self):
        wbio = self._wbio
        pending = lib.BIO_pending(wbio)
        if not pending:
            return b""
        if pending <= _BIO_KEEP_CAPACITY:
            # BIO_read rather than BIO_reset: a reset clears the BIO's whole capacity every time.
            buf = _scratch.write
            return ffi.buffer(buf, lib.BIO_read(wbio, buf, pending))[:]
        lib.BIO_mem_contents(wbio, _scratch.contents, _scratch.length)
        out = ffi.buffer(_scratch.contents[0], _scratch.length[0])[:]
        self._wbio = _new_mem_bio()
        lib.SSL_set0_wbio(self._ssl, self._wbio)  # frees the large one
        return out

    def _release_handle(self):
        if self._handle is not None:
            lib.SSL_set_ex_data(self._ssl, _SSL_SESSION_INDEX, ffi.NULL)
            self._handle = None
