"""The one seam between protocols and request logic: `handle(request, world) -> Response`.

HTTP/1.1 and HTTP/2 call it the same way; what happens inside (today: the host
check, path normalisation and the static action; later: the script chain
choosing an action) is invisible to them.
"""

from http import HTTPStatus

from zeroserve.core import static
from zeroserve.core.errors import ProtocolError
from zeroserve.core.paths import normalize_request_path
from zeroserve.core.request import Response

SERVER_HEADER = ("server", "zeroserve")
# The fixed plain-text answers the server itself decides (400, 408, 421, 431...),
# built once: status → (headers, body).
_ERRORS = {
    s.value: (
        [("content-type", "text/plain; charset=utf-8"), ("content-length", str(len(s.phrase))), SERVER_HEADER],
        s.phrase.encode("ascii"),
    )
    for s in HTTPStatus if s.value >= 400
}


def error_response(status, close=False):
    """The fixed plain-text answer for an error status the server decides itself."""
    headers, body = _ERRORS[status]
    return Response(status, headers, (body,), len(body), close=close)


def handle(request, world):
    """Answer one request with the given World."""
    if world.hostnames and not _host_allowed(request.authority, world.hostnames):
        return error_response(421)
    try:
        path = normalize_request_path(request.path)
    except ProtocolError as error:
        return error_response(error.status_hint)
    site = world.site
    result = static.serve(site, request.method, path.rel, path.dir_hint, request.header_dict(),
                          world.static_options)
    result.headers.append(SERVER_HEADER)
    return Response(result.status, result.headers, result.body, result.length, site.fd)


def _host_allowed(authority, hostnames):
    """True when the Host / :authority names an allowed host; the port does not matter."""
    if not authority:
        return False
    host = authority.lower()
    if host.startswith("["):  # an IPv6 literal keeps its brackets
        host = host[:host.find("]") + 1]
    elif ":" in host:
        host = host.rpartition(":")[0]
    return host in hostnames
