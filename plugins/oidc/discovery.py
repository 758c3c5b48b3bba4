"""Provider metadata and signing keys: fetched from the issuer, cached per process, keys refetched on an unknown kid.

Metadata comes from `{issuer}/.well-known/openid-configuration` and must name
the same issuer, an authorization, a token and a JWKS endpoint. The JWKS is
fetched again before its TTL ends when an id_token names a key it lacks (the
provider rotated its keys), at most once per `min_refresh_seconds`: id_tokens
come from the provider itself, so this only stops a burst of callbacks from
fetching the same JWKS again and again.
"""

import asyncio
import time
from dataclasses import dataclass

from zeroserve.plugins.oidc.http import ProviderError
from zeroserve.plugins.oidc.tokens import parse_jwks

TTL_SECONDS = 3600.0
MIN_REFRESH_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class ProviderMetadata:
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    end_session_endpoint: str  # "" when the provider has none
    token_auth_methods: tuple  # token_endpoint_auth_methods_supported


def metadata_from_document(issuer, document):
    """The ProviderMetadata of a discovery document; ProviderError when it lacks an endpoint or names another issuer."""
    if document.get("issuer") != issuer:
        raise ProviderError(f"discovery for {issuer} names issuer {document.get('issuer')!r}")
    fields = {}
    for name in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
        value = document.get(name)
        if not isinstance(value, str) or not value:
            raise ProviderError(f"discovery for {issuer} has no {name}")
        fields[name] = value
    end_session = document.get("end_session_endpoint")
    methods = document.get("token_endpoint_auth_methods_supported") or ["client_secret_basic"]
    return ProviderMetadata(issuer, fields["authorization_endpoint"], fields["token_endpoint"], fields["jwks_uri"],
                            end_session if isinstance(end_session, str) else "",
                            tuple(m for m in methods if isinstance(m, str)))


class _Entry:
    __slots__ = ("value", "fetched_at")

    def __init__(self, value, fetched_at):
        self.value = value
        self.fetched_at = fetched_at


class Discovery:
    """The per-process cache of provider metadata (by issuer) and signing keys (by JWKS URI)."""

    def __init__(self, client, ttl=TTL_SECONDS, min_refresh_seconds=MIN_REFRESH_SECONDS, clock=time.monotonic):
        self.client = client
        self.ttl = ttl
        self.min_refresh_seconds = min_refresh_seconds
        self.clock = clock
        self._metadata = {}
        self._keys = {}
        self._inflight = {}  # one fetch per URL at a time: concurrent callers share it

    async def metadata(self, issuer):
        """The ProviderMetadata of `issuer` (no trailing '/'); ProviderError when it cannot be had."""
        entry = self._metadata.get(issuer)
        if entry is None or self.clock() - entry.fetched_at > self.ttl:
            url = issuer.rstrip("/") + "/.well-known/openid-configuration"
            document = await self._fetch(url)
            entry = self._metadata[issuer] = _Entry(metadata_from_document(issuer, document), self.clock())
        return entry.value

    async def keys(self, jwks_uri, kid=None):
        """{kid: PyJWK} of `jwks_uri`; fetched again when `kid` is given but missing (rate-limited)."""
        entry = self._keys.get(jwks_uri)
        now = self.clock()
        stale = entry is None or now - entry.fetched_at > self.ttl
        unknown = (entry is not None and kid is not None and kid not in entry.value
                   and now - entry.fetched_at >= self.min_refresh_seconds)
        if stale or unknown:
            entry = self._keys[jwks_uri] = _Entry(parse_jwks(await self._fetch(jwks_uri)), self.clock())
        return entry.value

    async def _fetch(self, url):
        task = self._inflight.get(url)
        if task is None:
            task = self._inflight[url] = asyncio.ensure_future(self._get_json(url))
            task.add_done_callback(lambda _: self._inflight.pop(url, None))
        return await asyncio.shield(task)

    async def _get_json(self, url):
        reply = await self.client.request("GET", url)
        if reply.status != 200:
            raise ProviderError(f"{url} answered {reply.status}")
        return reply.json()
