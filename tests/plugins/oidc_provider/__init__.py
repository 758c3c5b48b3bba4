"""The oidc tests' identity provider: npm oidc-provider run by node on 127.0.0.1, its keys, and a form login over HTTP.

The npm packages (oidc-provider@9, playwright-core@1) live in
.cache/oidc_provider of the checkout; bootstrap installs them, and
`node_modules()` installs them there when they are missing. Node resolves an
ES module's imports next to the module, so provider.mjs is copied beside them.
"""

import fcntl
import http.client
import json
import os
import pathlib
import shutil
import socket
import subprocess
import time
from http.cookies import SimpleCookie
from urllib.parse import urljoin, urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

HERE = pathlib.Path(__file__).resolve().parent
CACHE = HERE.parents[2] / ".cache" / "oidc_provider"
CLIENT_ID = "zeroserve"
CLIENT_SECRET = "zeroserve-test-client-secret"


def node_modules():
    """The directory holding the npm packages and the .mjs scripts (installed on first use).

    Test processes running in parallel take a lock, and the scripts are replaced
    atomically, so a provider starting in another process never reads half a file.
    """
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        installed = CACHE / "node_modules"
        if not (installed / "oidc-provider").is_dir() or not (installed / "playwright-core").is_dir():
            shutil.copy(HERE / "package.json", CACHE / "package.json")
            subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--silent"], cwd=CACHE, check=True,
                           timeout=300)
        for script in HERE.glob("*.mjs"):
            target = CACHE / script.name
            text = script.read_bytes()
            if not target.exists() or target.read_bytes() != text:
                staged = target.with_suffix(".tmp")
                staged.write_bytes(text)
                os.replace(staged, target)
    return CACHE


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def private_jwk(kind, kid):
    """A private signing JWK (dict) of `kind` RS256, ES256 or EdDSA, and its private key object."""
    if kind == "RS256":
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        jwk = jwt.algorithms.RSAAlgorithm.to_jwk(key, as_dict=True)
    elif kind == "ES256":
        key = ec.generate_private_key(ec.SECP256R1())
        jwk = jwt.algorithms.ECAlgorithm.to_jwk(key, as_dict=True)
    else:
        key = ed25519.Ed25519PrivateKey.generate()
        jwk = jwt.algorithms.OKPAlgorithm.to_jwk(key, as_dict=True)
    jwk.pop("key_ops", None)  # PyJWT marks a private JWK "sign" only; the provider also verifies with it
    return {**jwk, "kid": kid, "use": "sig", "alg": kind}, key


class Provider:
    """One oidc-provider process on 127.0.0.1:port; `restart(keys)` brings it back on the same port with new keys."""

    def __init__(self, workdir, redirect_uris, post_logout_redirect_uris=(), alg="RS256",
                 auth_method="client_secret_basic"):
        self.workdir = pathlib.Path(workdir)
        self.port = free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.client = {
            "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "redirect_uris": list(redirect_uris),
            "post_logout_redirect_uris": list(post_logout_redirect_uris), "grant_types": ["authorization_code"],
            "response_types": ["code"], "token_endpoint_auth_method": auth_method,
            "id_token_signed_response_alg": alg,
        }
        self.alg = alg
        self.process = None
        self.keys = None
        self.modules = node_modules()

    def start(self, kid="key-1"):
        jwk, _ = private_jwk(self.alg, kid)
        self.keys = [jwk]
        config = self.workdir / f"provider-{kid}.json"
        config.write_text(json.dumps({"clients": [self.client], "jwks": {"keys": self.keys}}))
        log = open(self.workdir / f"provider-{kid}.log", "wb")
        self.process = subprocess.Popen(["node", str(self.modules / "provider.mjs"), str(self.port), str(config)],
                                        cwd=self.modules, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"oidc-provider exited: {(self.workdir / f'provider-{kid}.log').read_text()}")
            try:
                status, _, _ = http_request("GET", self.issuer + "/.well-known/openid-configuration")
                if status == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError("oidc-provider did not answer within 30 s")

    def stop(self):
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None

    def restart(self, kid):
        """The provider again, signing with a fresh key `kid` (a key rotation; its sessions are gone)."""
        self.stop()
        return self.start(kid)


def http_request(method, url, headers=None, body=None):
    """(status, headers as a list, body) of one plain HTTP request, redirects not followed."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        target = parts.path + ("?" + parts.query if parts.query else "")
        connection.request(method, target or "/", body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.getheaders(), response.read()
    finally:
        connection.close()


def _location(headers):
    return next(value for name, value in headers if name.lower() == "location")


def sign_in(authorization_url, redirect_uri, login="alice"):
    """Follows the provider's login form as a browser would; the URL it finally sends the user to (the callback)."""
    jar = SimpleCookie()
    url = authorization_url
    body = None
    for _ in range(20):
        if url.startswith(redirect_uri):
            return url
        headers = {"cookie": "; ".join(f"{k}={m.value}" for k, m in jar.items())}
        if body is not None:
            headers["content-type"] = "application/x-www-form-urlencoded"
        status, response_headers, page = http_request("POST" if body is not None else "GET", url, headers, body)
        for name, value in response_headers:
            if name.lower() == "set-cookie":
                jar.load(value)
        body = None
        if status in (302, 303):
            url = urljoin(url, _location(response_headers))
            continue
        text = page.decode()
        if status == 200 and 'name="login"' in text:  # the devInteractions form
            action = text.split('action="', 1)[1].split('"', 1)[0]
            url = urljoin(url, action)
            body = f"prompt=login&login={login}&password=secret".encode()
            continue
        raise AssertionError(f"unexpected provider page {status} at {url}: {text[:300]}")
    raise AssertionError("the provider's login did not end at the redirect_uri")
