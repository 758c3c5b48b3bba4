"""Tests of core/certs.py: the zero-config self-signed certificate, made once and kept in the state directory."""
import datetime
import subprocess

import pytest

from zeroserve.core.certs import default_state_dir, ensure_self_signed
from zeroserve.core.errors import ConfigError
from zeroserve.core.tls import ClientContext, ServerContext, TicketKeys


def test_certs_self_signed_is_made_once_and_reused(tmp_path):
    """The first call makes the certificate; later calls return the same files and fingerprint."""
    first = ensure_self_signed(tmp_path / "state")
    second = ensure_self_signed(tmp_path / "state")
    assert first.created and not second.created
    assert second.fingerprint == first.fingerprint
    assert first.cert_path.read_bytes() == second.cert_path.read_bytes()
    assert first.key_path.stat().st_mode & 0o777 == 0o600


def test_certs_fingerprint_matches_openssl(tmp_path):
    """The reported fingerprint is the SHA-256 fingerprint openssl prints for the certificate."""
    made = ensure_self_signed(tmp_path)
    out = subprocess.run(
        ["openssl", "x509", "-in", made.cert_path, "-noout", "-fingerprint", "-sha256"],
        check=True, capture_output=True, text=True,
    ).stdout
    assert out.strip() == f"sha256 Fingerprint={made.fingerprint}"


@pytest.mark.parametrize("hostname", ["localhost", "127.0.0.1"])
def test_certs_self_signed_verifies_for_localhost_names(tmp_path, hostname):
    """A client trusting the certificate completes a handshake for localhost and for 127.0.0.1."""
    made = ensure_self_signed(tmp_path)
    server = ServerContext.load(made.cert_path, made.key_path, TicketKeys()).new_session()
    client = ClientContext(ca_file=made.cert_path).new_session(hostname)
    _, hello = client.receive(b"")
    _, flight = server.receive(hello)
    _, finished = client.receive(flight)
    server.receive(finished)
    assert client.handshake_complete and server.handshake_complete


def test_certs_expiring_or_damaged_certificate_is_replaced(tmp_path):
    """A certificate close to expiry, or a damaged key file, is replaced by a new one."""
    first = ensure_self_signed(tmp_path)
    later = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=360)
    renewed = ensure_self_signed(tmp_path, now=later)
    assert renewed.created and renewed.fingerprint != first.fingerprint
    renewed.key_path.write_text("not a key")
    repaired = ensure_self_signed(tmp_path)
    assert repaired.created and repaired.fingerprint != renewed.fingerprint


def test_certs_state_dir_follows_xdg_state_home(tmp_path, monkeypatch):
    """The default state directory is $XDG_STATE_HOME/zeroserve, else ~/.local/state/zeroserve."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert default_state_dir() == tmp_path / "zeroserve"
    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_state_dir() == tmp_path / "home" / ".local" / "state" / "zeroserve"


def test_certs_unusable_state_dir_is_config_error(tmp_path):
    """A state directory that cannot be created is a ConfigError that says what to do."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match="state directory .* cannot be used .*XDG_STATE_HOME"):
        ensure_self_signed(blocker / "state")
