"""A private S3 bucket behind zeroserve: moto_server as the real S3 API, requests signed by zs_aws_sign_request.

moto_server (pip moto[server]) runs on loopback with authentication on: its
first three calls create an IAM user with an s3:* policy and an access key;
every later call must carry a valid SigV4 signature. The helper runs in the
VM and the request it signed goes to moto straight, then through
zeroserve.core.proxy.forward; then a real `zeroserve run` serves
examples/scripts/s3_private_bucket.c (GET and HEAD) plus a test script that
proxies PUT the same way, with the key in a shared credentials file selected
by --aws-profile, and a second server signs with a wrong secret.
"""

import asyncio
import http.client
import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import time
from types import SimpleNamespace

import boto3
import pytest
from test_sigv4_helpers import Harness, load

from harness import REPO, curl, free_port, start_server, write_tree
from zeroserve.core import pack
from zeroserve.core.compile import ScriptCompiler
from zeroserve.core.proxy import forward
from zeroserve.core.upstream import Upstreams

BUCKET = "zs-private"
OBJECT = b"0123456789abcdefghijklmnopqrstuvwxyz\n"
MOTO_SERVER = pathlib.Path(sys.executable).with_name("moto_server")

UPLOAD_SCRIPT = """\
#include "zeroserve.h"

/* PUT of an object: proxied to the bucket and signed. */
ZS_ENTRY zs_u64 entry(void)
{
    char method[8];
    char endpoint[256];
    zs_s64 n = zs_req_method(method, sizeof method);
    if (n != 3 || zs_strncmp(method, "PUT", 3) != 0)
        return 0;
    zs_s64 len = zs_env_get(ZS_STR("ZS_S3_ENDPOINT"), endpoint, sizeof endpoint);
    if (len <= 0 || len >= (zs_s64)sizeof endpoint)
        return 0;
    zs_reverse_proxy(endpoint, (zs_u64)len);
    if (zs_aws_sign_request(ZS_STR("s3"), ZS_STR("us-east-1")) < 0)
        zs_respond(502, ZS_STR("no credentials\\n"));
    return 0;
}
"""


def wait_for_port(port, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"moto_server did not listen on {port}")


@pytest.fixture(scope="module")
def moto(tmp_path_factory):
    """A moto_server with authentication on; (endpoint URL, access key id, secret) of an s3:* user."""
    port = free_port()
    env = dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT="3")
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "wb")
    proc = subprocess.Popen([str(MOTO_SERVER), "-H", "127.0.0.1", "-p", str(port)], env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port)
        url = f"http://127.0.0.1:{port}"
        iam = boto3.client("iam", endpoint_url=url, region_name="us-east-1", aws_access_key_id="bootstrap",
                           aws_secret_access_key="bootstrap")
        iam.create_user(UserName="zeroserve")
        iam.put_user_policy(UserName="zeroserve", PolicyName="s3", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
        key = iam.create_access_key(UserName="zeroserve")["AccessKey"]
        s3 = boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id=key["AccessKeyId"],
                          aws_secret_access_key=key["SecretAccessKey"])
        s3.create_bucket(Bucket=BUCKET)
        s3.put_object(Bucket=BUCKET, Key="docs/hello.txt", Body=OBJECT, ContentType="text/plain")
        s3.put_object(Bucket=BUCKET, Key="with space/é.txt", Body=b"unicode key\n")
        yield url, key["AccessKeyId"], key["SecretAccessKey"], s3
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


@pytest.fixture(scope="module")
def site_tar(tmp_path_factory):
    directory = tmp_path_factory.mktemp("s3site") / "src"
    scripts = directory / ".zeroserve" / "scripts"
    scripts.mkdir(parents=True)
    shutil.copy(REPO / "examples" / "scripts" / "s3_private_bucket.c", scripts / "20-s3_private_bucket.c")
    write_tree(directory, {".zeroserve/scripts/10-upload.c": UPLOAD_SCRIPT, "index.html": "local\n"})
    output = directory.parent / "site.tar"
    pack.build(directory, output, compiler=ScriptCompiler.find("clang"))
    return output


def server_with_key(request, tmp_path_factory, site_tar, url, access_key, secret):
    """A zeroserve with --plugins sigv4 signing with (access_key, secret) from a profile of a credentials file."""
    credentials = tmp_path_factory.mktemp("aws") / "credentials"
    credentials.write_text(f"[zs-test]\naws_access_key_id = {access_key}\naws_secret_access_key = {secret}\n")
    with pytest.MonkeyPatch.context() as patch:  # the child inherits the environment when it starts
        patch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
        patch.setenv("ZS_S3_ENDPOINT", f"{url}/{BUCKET}")
        patch.delenv("AWS_ACCESS_KEY_ID", raising=False)
        return start_server(request, site_tar, "--plugins", "sigv4", "--aws-profile", "zs-test")


@pytest.fixture(scope="module")
def server(request, tmp_path_factory, site_tar, moto):
    url, access_key, secret, _ = moto
    return server_with_key(request, tmp_path_factory, site_tar, url, access_key, secret)


@pytest.fixture(scope="module")
def wrong_server(request, tmp_path_factory, site_tar, moto):
    url, access_key, _, _ = moto
    return server_with_key(request, tmp_path_factory, site_tar, url, access_key, "not-the-secret")


def fetch(url, *args):
    """(status, {lowercase header: value}, body) of one curl request."""
    result = curl("-D", "-", "-o", "-", *args, url)
    head, _, body = result.stdout.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, body


@pytest.fixture(scope="module")
def forward_object(tmp_path_factory):
    out = tmp_path_factory.mktemp("fwd") / "sigv4_forward.o"
    subprocess.run(["clang", "-O2", "-target", "bpf", "-I", str(REPO / "sdk"), "-c",
                    str(REPO / "tests" / "plugins" / "scripts" / "sigv4_forward.c"), "-o", str(out)],
                   check=True, capture_output=True)
    return out.read_bytes()


def signed_context(moto, forward_object, secret, method, path, headers=()):
    """A request context after zs_reverse_proxy to the bucket and zs_aws_sign_request ran in the VM."""
    url, access_key, _, _ = moto
    program, cookie = load(forward_object, "interp", SimpleNamespace(access_key=access_key, secret_key=secret,
                                                                     token=None))
    h = Harness(program)
    h.begin(method=method, path=path, headers=[("host", "zeroserve.test"), ("user-agent", "curl/8"), *headers])
    target = f"{url}/{BUCKET}"
    h.call("zs_reverse_proxy", target, len(target))
    assert h.call("zs_aws_sign_request", "s3", 2, "us-east-1", 9) == 0
    del cookie  # the credentials lived until the helper ran
    return h.ctx


def send_signed(moto, forward_object, secret, method, path, headers=(), body=b""):
    """Sends the request zs_aws_sign_request signed straight to moto: (status, body)."""
    url = moto[0]
    ctx = signed_context(moto, forward_object, secret, method, path, headers)
    connection = http.client.HTTPConnection("127.0.0.1", int(url.rsplit(":", 1)[1]), timeout=10)
    connection.putrequest(method, f"/{BUCKET}{path}", skip_host=True, skip_accept_encoding=True)
    for name, value in ctx.headers():
        connection.putheader(name, value)
    connection.endheaders(body or None)
    response = connection.getresponse()
    result = response.status, response.read()
    connection.close()
    return result


@pytest.mark.parametrize("method, path, headers, body, expected", [
    ("GET", "/docs/hello.txt", (), b"", (200, OBJECT)),
    ("HEAD", "/docs/hello.txt", (), b"", (200, b"")),
    ("GET", "/docs/hello.txt", (("range", "bytes=2-5"),), b"", (206, OBJECT[2:6])),
    ("GET", "/with%20space/%C3%A9.txt", (), b"", (200, b"unicode key\n")),
    ("PUT", "/direct/put.txt", (("content-length", "5"),), b"hello", (200, b"")),
])
def test_sigv4_sign_request_is_accepted_by_moto(moto, forward_object, method, path, headers, body, expected):
    """The headers zs_aws_sign_request sets make moto's S3 accept GET, HEAD, ranged GET and PUT."""
    assert send_signed(moto, forward_object, moto[2], method, path, headers, body) == expected


@pytest.mark.parametrize("method, path, headers, body, expected", [
    ("GET", "/docs/hello.txt", (("range", "bytes=3-7"),), b"", (206, OBJECT[3:8])),
    ("HEAD", "/docs/hello.txt", (), b"", (200, b"")),
    ("PUT", "/via-proxy/put.txt", (("content-length", "11"),), b"proxied put", (200, b"")),
])
def test_sigv4_sign_request_through_the_proxy_module_is_accepted_by_moto(moto, forward_object, method, path,
                                                                          headers, body, expected):
    """The signed request, sent by zeroserve.core.proxy.forward (X-Forwarded-*, framing), is accepted by moto."""
    ctx = signed_context(moto, forward_object, moto[2], method, path, headers)

    async def exchange():
        upstreams = Upstreams(asyncio.get_running_loop())
        reply = await forward(upstreams, f"{moto[0]}/{BUCKET}", method, ctx.path, ctx.query, ctx.headers(),
                              authority="zeroserve.test", peer_ip="192.0.2.1", scheme="http", body=body)
        chunks = []
        while chunk := await reply.read():
            chunks.append(chunk)
        reply.finish()
        return reply.status, b"".join(chunks)

    assert asyncio.run(exchange()) == expected


def test_sigv4_sign_request_with_a_wrong_secret_is_refused_by_moto(moto, forward_object):
    """Signed with a wrong secret, moto answers 403 SignatureDoesNotMatch."""
    status, body = send_signed(moto, forward_object, "wrong", "GET", "/docs/hello.txt")
    assert status == 403 and b"SignatureDoesNotMatch" in body


def test_sigv4_s3_proxy_get_returns_the_private_object(server):
    """A signed GET through zeroserve returns the object moto holds."""
    status, headers, body = fetch(server.url("/docs/hello.txt"))
    assert (status, body) == (200, OBJECT)
    assert headers["content-type"] == "text/plain"


def test_sigv4_s3_proxy_head_returns_length_without_body(server):
    """A signed HEAD returns the object's length and ETag and no body."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    connection.request("HEAD", "/docs/hello.txt")
    response = connection.getresponse()
    assert response.status == 200 and int(response.getheader("content-length")) == len(OBJECT)
    assert response.getheader("etag") and response.read() == b""
    connection.close()


def test_sigv4_s3_proxy_range_passes_through(server):
    """A Range header reaches the bucket unsigned and the 206 partial body comes back."""
    status, headers, body = fetch(server.url("/docs/hello.txt"), "-H", "Range: bytes=10-15")
    assert (status, body) == (206, OBJECT[10:16])
    assert headers["content-range"] == f"bytes 10-15/{len(OBJECT)}"


def test_sigv4_s3_proxy_encoded_key_is_signed_as_sent(server):
    """A key with a space and a non-ASCII character, percent-encoded by the client, is signed and found."""
    status, _, body = fetch(server.url("/with%20space/%C3%A9.txt"))
    assert (status, body) == (200, b"unicode key\n")


def test_sigv4_s3_proxy_missing_object_is_the_buckets_404(server):
    """A missing key gives the bucket's 404 NoSuchKey through the proxy."""
    status, _, body = fetch(server.url("/docs/missing.txt"))
    assert status == 404 and b"NoSuchKey" in body


@pytest.mark.parametrize("size", [2700, 1000 * 1000])
def test_sigv4_s3_proxy_put_uploads_the_object(server, moto, size):
    """A PUT is proxied signed, its body (which the server buffers) hashed, and moto stores it intact."""
    data = (b"uploaded through zeroserve\n" * (size // 27 + 1))[:size]
    result = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{response_code}", "-X", "PUT",
                             "-H", "Content-Type: application/octet-stream", "--data-binary", "@-",
                             server.url(f"/uploads/{size}.bin")], input=data, capture_output=True, timeout=30)
    assert result.stdout == b"200"
    assert moto[3].get_object(Bucket=BUCKET, Key=f"uploads/{size}.bin")["Body"].read() == data


def test_sigv4_s3_example_refuses_other_methods_and_the_listing(server):
    """The example answers 405 to DELETE and 404 to "/" without reaching the bucket."""
    status, headers, _ = fetch(server.url("/docs/hello.txt"), "-X", "DELETE")
    assert status == 405 and headers["allow"] == "GET, HEAD"
    assert fetch(server.url("/"))[0] == 404


def test_sigv4_s3_proxy_wrong_secret_gets_the_upstreams_403(wrong_server):
    """Signed with a wrong secret, the bucket's 403 SignatureDoesNotMatch comes back through the proxy."""
    status, _, body = fetch(wrong_server.url("/docs/hello.txt"))
    assert status == 403 and b"SignatureDoesNotMatch" in body
