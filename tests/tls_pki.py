"""The shared test PKI (test-recipes.md section 0), made with the openssl command line.

make_test_pki(directory) writes a P-256 CA and a leaf for localhost, site-a.test, secret.example and
127.0.0.1 (with the serverAuth EKU Chromium insists on) and returns their paths.
"""
import dataclasses
import pathlib
import subprocess

LEAF_NAMES = ("localhost", "site-a.test", "secret.example")


@dataclasses.dataclass(frozen=True)
class PKIPaths:
    """Paths of the CA and leaf files."""

    ca_cert: pathlib.Path
    ca_key: pathlib.Path
    leaf_cert: pathlib.Path
    leaf_key: pathlib.Path


def _openssl(directory, *args):
    subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)


def make_test_pki(directory):
    """Create ca.pem/ca.key and leaf.pem/leaf.key in directory; return a PKIPaths with their paths."""
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    _openssl(
        directory, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
        "-subj", "/CN=zeroserve test CA", "-keyout", "ca.key", "-out", "ca.pem",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )
    _openssl(
        directory, "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-subj", "/CN=localhost", "-keyout", "leaf.key", "-out", "leaf.csr",
    )
    sans = ",".join(f"DNS:{name}" for name in LEAF_NAMES)
    (directory / "leaf.ext").write_text(f"subjectAltName={sans},IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    _openssl(
        directory, "x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-days", "2", "-extfile", "leaf.ext", "-out", "leaf.pem",
    )
    return PKIPaths(directory / "ca.pem", directory / "ca.key", directory / "leaf.pem", directory / "leaf.key")
