"""The one seam between protocols and request logic: `handle(request, world) -> Response`.

HTTP/1.1 and HTTP/2 call it the same way. Inside: the host check, path
normalisation, the world's script chain (which may answer, proxy, abort or
change the request), then the static action with the scripts' metadata
headers and the `<zs-meta>` template pass. A world without request scripts
goes straight to the static action. `after_chain` is the part after the
chain, where a request the C fast path ran the chain for comes in (through
`ScriptChain.adopt`).

`handle` returns a Response, except when a script had to wait (it was
preempted, or an async helper suspended it): then it returns an awaitable of
the Response, which the connection awaits. The response `ABORTED` means a
script called zs_abort: close the connection without answering.
"""

from http import HTTPStatus

from zeroserve.core import proxy, static, template
from zeroserve.core.accesslog import log_error
from zeroserve.core.chain import ABORT, FAULT, OVERTIME, PROXY, RESPOND, ChainResult, metadata_headers, set_headers
from zeroserve.core.errors import ProtocolError
from zeroserve.core.paths import normalize_request_path
from zeroserve.core.request import Response
from zeroserve.core.script_abi import URI_INVALID

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
_PROTO = {"1.0": (1, 0), "1.1": (1, 1), "2": (2, 0)}
# zs_res_continue_request may rerun a request's scripts this many times.
MAX_RERUNS = 8
# What handle() answers for zs_abort: the connection closes without a response (compare by identity).
ABORTED = Response(0, [], close=True)


def error_response(status, close=False):
    """The fixed plain-text answer for an error status the server decides itself."""
    headers, body = _ERRORS[status]
    return Response(status, headers, (body,), len(body), close=close)


def handle(request, world):
    """Answer one request with the given World: a Response, or an awaitable of one when a script waited."""
    if world.hostnames and request.host not in world.hostnames:
        return error_response(421)
    try:
        path = normalize_request_path(request.path)
    except ProtocolError as error:
        return error_response(error.status_hint)
    chain = world.chain
    if not chain:
        return _static(world, request.method, path.rel, path.dir_hint, request.header_dict(), None)
    peer = request.peer
    facts = request.connection_info
    result = chain.run(world, request.request_id, request.method, path.script_path, "/" + path.rel,
                       request.query, request.scheme,
                       f"[{peer[0]}]:{peer[1]}" if ":" in peer[0] else f"{peer[0]}:{peer[1]}",
                       _PROTO.get(request.http_version, (1, 1)), request.scheme == "https", request.headers,
                       request.body, facts.info_json if facts is not None else None)
    return after_chain(result, request, path, world)


def after_chain(result, request, path, world):
    """The Response (or an awaitable of one) for what the script chain decided on `request`.

    `result` is what `world.chain.run` or `world.chain.adopt` (the C fast
    path's hand-over) returned: a ChainResult or an awaitable of one; `path`
    is the request's NormalizedPath.
    """
    if type(result) is not ChainResult:
        return _respond_later(result, request, path, world)
    response = _act(result, request, path, world)
    if result.hooks is None:
        return response
    if type(response) is not Response:  # proxied: the hooks see the upstream's head once it is in
        return _proxied_with_hooks(result, request, path, world, response)
    waiting = world.chain.run_hooks(result, response)
    if waiting is None and not result.hooks.rerun:
        return response
    return _respond_later(result, request, path, world, response, waiting)


async def _respond_later(result, request, path, world, response=None, waiting=None):
    """The Response of a request whose scripts had to wait (preempted, async helper) or run again.

    `result` is a ChainResult or an awaitable of one; `response` and
    `waiting` are set when its response hooks already started.
    """
    chain = world.chain
    reruns = 0
    while True:
        if response is None:
            if type(result) is not ChainResult:
                result = await result
            response = _act(result, request, path, world)
            if type(response) is not Response:  # proxied
                response = await response
            if result.hooks is None:
                return response
            waiting = chain.run_hooks(result, response)
        if waiting is not None:
            await waiting
            waiting = None
        if not result.hooks.rerun:
            return response
        reruns += 1
        if reruns > MAX_RERUNS:
            return _too_many_reruns(result, request, world)
        result, response = chain.rerun(result.hooks), None


async def _proxied_with_hooks(result, request, path, world, proxied):
    response = await proxied
    return await _respond_later(result, request, path, world, response, world.chain.run_hooks(result, response))


def _too_many_reruns(result, request, world):
    log_error(f"[script_runtime] {request.request_id}: response hooks asked to rerun the request more than "
              f"{MAX_RERUNS} times; answering 500")
    world.chain.release(result)
    return _script_error(500, request, result.metadata)


def _act(result, request, path, world):
    """The Response for what the chain decided."""
    kind = result.kind
    metadata = result.metadata
    if kind == RESPOND:
        body = result.body
        headers = [("content-length", str(len(body)))]
        if metadata:
            _apply_metadata(headers, metadata)
        headers.extend(result.response_headers)
        return Response(result.status, headers, (body,) if body and request.method != "HEAD" else (),
                        len(body) if request.method != "HEAD" else 0)
    if kind == ABORT:
        return ABORTED
    if kind == FAULT or kind == OVERTIME:
        return _script_error(result.status, request, metadata)
    if kind == PROXY:
        if result.changed:
            if result.changed & URI_INVALID:
                return error_response(400)
            _apply_changes(request, result)
        return proxy.respond(request, result.proxy_url, metadata_headers(metadata) if metadata else (),
                             world.config.upstream)
    # No outcome: static serving, with whatever the scripts changed.
    method = request.method
    rel, dir_hint = path.rel, path.dir_hint
    headers = None
    if result.changed:
        if result.changed & URI_INVALID:
            return error_response(400)
        _apply_changes(request, result)
        method = request.method
        rel, dir_hint = result.normalized_path[1:], result.path.endswith("/")
        headers = request.header_dict()
    return _static(world, method, rel, dir_hint, headers if headers is not None else request.header_dict(),
                   metadata)


def _static(world, method, rel, dir_hint, request_headers, metadata):
    site = world.site
    options = world.static_options
    if metadata and (method == "GET" or method == "HEAD"):
        entry = site.resolve(rel, dir_hint, options.index, options.try_html)
        if entry is not None and template.applies(entry.content_type, metadata):
            body = template.render(site.read(entry), dict(metadata))
            headers = [("content-type", entry.content_type), ("content-length", str(len(body))), SERVER_HEADER]
            _apply_metadata(headers, metadata)
            if method == "HEAD":
                return Response(200, headers)
            return Response(200, headers, (body,), len(body))
    result = static.serve(site, method, rel, dir_hint, request_headers, options)
    headers = result.headers
    headers.append(SERVER_HEADER)
    if metadata:
        _apply_metadata(headers, metadata)
    return Response(result.status, headers, result.body, result.length, site.fd)


def _script_error(status, request, metadata):
    """The 500 (fault) or 503 (CPU budget) of a request whose script failed: names the request, nothing else."""
    body = f"{HTTPStatus(status).phrase} (request {request.request_id})\n".encode()
    headers = [("content-type", "text/plain; charset=utf-8"), ("content-length", str(len(body))), SERVER_HEADER]
    if metadata:
        _apply_metadata(headers, metadata)
    return Response(status, headers, (body,), len(body))


def _apply_metadata(headers, metadata):
    """Set the response headers `zs.response.header.*` metadata names, replacing any of the same name."""
    replacements = metadata_headers(metadata)
    if replacements:
        set_headers(headers, replacements)


def _apply_changes(request, result):
    """Write the scripts' changes to method, target and headers back into the Request (for proxy and logs)."""
    request.method = result.method
    request.target = result.path + ("?" + result.query if result.query else "")
    request.headers = result.headers
