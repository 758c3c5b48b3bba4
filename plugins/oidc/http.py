"""One HTTP/1.1 exchange with an identity provider over a fresh connection of the proxy's upstream client.

The provider is reached with `zeroserve.core.upstream` (BoringSSL's client
for https://, checked against the system CAs or the configured CA file).
Plain http:// is refused unless the server runs with
--oidc-allow-insecure-issuer, which exists for tests against a local provider.
"""

import json
from dataclasses import dataclass

from zeroserve.core.upstream import UpstreamError, parse_target

RESPONSE_LIMIT = 256 * 1024
TIMEOUT_SECONDS = 10.0


class ProviderError(Exception):
    """The provider could not be reached, or answered something unusable; the message says what (for the log)."""


@dataclass(frozen=True, slots=True)
class HttpReply:
    status: int
    body: bytes

    def json(self):
        """The body as a JSON object; ProviderError otherwise."""
        try:
            document = json.loads(self.body)
        except ValueError:
            raise ProviderError("the provider's answer is not JSON") from None
        if not isinstance(document, dict):
            raise ProviderError("the provider's answer is not a JSON object")
        return document


class ProviderClient:
    """Sends requests to identity providers through a worker's `Upstreams`."""

    def __init__(self, upstreams, allow_insecure=False):
        self.upstreams = upstreams
        self.allow_insecure = allow_insecure

    async def request(self, method, url, headers=(), body=b""):
        """The HttpReply of one request (body at most RESPONSE_LIMIT bytes); ProviderError on any failure."""
        try:
            target = parse_target(url)
        except UpstreamError as error:
            raise ProviderError(str(error)) from None
        if not target.tls and not self.allow_insecure:
            raise ProviderError(f"{url} is not https://; only tests may use plain http (--oidc-allow-insecure-issuer)")
        path = (target.base_path or "/") + (f"?{target.base_query}" if target.base_query else "")
        host = target.host if target.port in (80, 443) else f"{target.host}:{target.port}"
        lines = [f"{method} {path} HTTP/1.1", f"host: {host}", "connection: close", "accept: application/json",
                 f"content-length: {len(body)}", *(f"{name}: {value}" for name, value in headers)]
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        try:
            connection = await self.upstreams.open(target)
        except UpstreamError as error:
            raise ProviderError(str(error)) from None
        try:
            connection.begin(head_only=method == "HEAD")
            connection.send(head + body)
            await connection.read_head(TIMEOUT_SECONDS)
            chunks, size = [], 0
            while chunk := await connection.read_body(TIMEOUT_SECONDS):
                size += len(chunk)
                if size > RESPONSE_LIMIT:
                    raise ProviderError(f"{url} answered more than {RESPONSE_LIMIT} bytes")
                chunks.append(chunk)
            return HttpReply(connection.status, b"".join(chunks))
        except UpstreamError as error:
            raise ProviderError(str(error)) from None
        finally:
            connection.close()
