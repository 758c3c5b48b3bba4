"""The core helpers as the "core" plugin: the C helpers of native/script, and the Python ones that need the site or the chain.

The hot helpers (request, headers, metadata, respond, JSON, crypto) are C
functions the VM calls directly. The few here need what C does not see:
`zs_call` (the world's other scripts), `zs_res_hook` and the hook-only
helpers (the response being sent), `zs_load_static_json` and
`zs_load_file_metadata` (the site tar). They are called rarely, so a Python
call per use is fine.
"""

import json
import re

from zeroserve.core import __version__
from zeroserve.core.script_abi import core_helper_defs, set_version
from zeroserve.sdk import HelperError, HelperSpec, hookimpl

# zs_call answers this when the callee had to wait: the helper pends instead.
_CALL_WAITS = -2


def zs_call(call, script, script_len, function, function_len, handle):
    """Run ZS_CALL_ENTRY `function` of script `script` with a copy of JSON `handle`; a handle or -1."""
    script_name = call.read_text(script, script_len)
    function_name = call.read_text(function, function_len)
    result = call.world.chain.call(call.run, script_name, function_name, handle)
    if result == _CALL_WAITS:
        call.run.pend()
        return 0
    return result


def zs_res_hook(call, script, script_len, function, function_len, handle):
    """Register ZS_CALL_ENTRY `function` of `script` ("" = this one) as a response hook with a copy of `handle`."""
    function_name = call.read_text(function, function_len)
    if not function_name:
        raise HelperError("zs_res_hook: the function name is empty")
    script_name = call.read_text(script, script_len) or call.script
    call.chain_state.hooks.append((script_name, function_name, call.run.json_text(handle)))
    return 0


def zs_res_hooks_clear(call, *_):
    """Drop the response hooks registered so far."""
    call.chain_state.hooks.clear()
    return 0


def _response(call, helper):
    """The response a hook is editing; outside a hook the helper faults."""
    response = call.response
    if response is None:
        raise HelperError(f"{helper} works only in a response hook (see zs_res_hook)")
    return response


def zs_res_status(call, *_):
    """In a hook: the response status."""
    return _response(call, "zs_res_status").status


def zs_res_set_status(call, status, *_):
    """In a hook: set the response status (100..999, else a fault)."""
    response = _response(call, "zs_res_set_status")
    if not 100 <= status <= 999:
        raise HelperError(f"zs_res_set_status: {status} is not a status between 100 and 999")
    response.status = status
    return 0


def zs_res_header(call, name, name_len, out, out_len, *_):
    """In a hook: the last value of a response header (case-insensitive name), as a C-string."""
    response = _response(call, "zs_res_header")
    wanted = call.read_text(name, name_len).strip().lower()
    if not wanted:
        raise HelperError("zs_res_header: the header name is empty")
    value = ""
    for key, text in response.headers:
        if key.lower() == wanted:
            value = text
    return call.write_cstring(out, out_len, value.encode("latin-1", "replace"))


def zs_res_replace_header(call, op, op_len, *_):
    """In a hook: edit a response header with {"name", "search" | "search_regexp", "replace"}."""
    response = _response(call, "zs_res_replace_header")
    try:
        spec = json.loads(call.read_text(op, op_len))
        name = spec["name"].strip().lower()
        replace = spec.get("replace", "")
        if "search_regexp" in spec:
            pattern = re.compile(spec["search_regexp"])
            edit = lambda value: pattern.sub(replace.replace("$", "\\"), value)  # noqa: E731
        else:
            search = spec["search"]
            edit = lambda value: value.replace(search, replace) if search else replace  # noqa: E731
    except (ValueError, KeyError, TypeError, AttributeError, re.error) as error:
        raise HelperError(f"zs_res_replace_header: bad operation ({error}); give "
                          f'{{"name", "search" or "search_regexp", "replace"}}') from None
    response.headers[:] = [(key, edit(value) if key.lower() == name else value)
                           for key, value in response.headers]
    return 0


def _site_entry(call, path, path_len):
    """The tar entry at a verbatim path (no leading '/', no index or .html fallback), or None."""
    return call.world.site.get(call.read_text(path, path_len))


def zs_load_static_json(call, path, path_len, *_):
    """A handle to the parsed JSON file at a tar path, or -1 (missing or not JSON)."""
    entry = _site_entry(call, path, path_len)
    if entry is None:
        return -1
    return call.run.json_parse(call.world.site.read(entry))


def zs_load_file_metadata(call, path, path_len, *_):
    """A handle to {"size", "etag" (32 hex), "mtime"} of the file at a tar path, or -1."""
    entry = _site_entry(call, path, path_len)
    if entry is None:
        return -1
    text = json.dumps({"size": entry.size, "etag": entry.etag.strip('"'), "mtime": entry.mtime})
    return call.run.json_parse(text)


PYTHON_HELPERS = (zs_call, zs_res_hook, zs_res_hooks_clear, zs_res_status, zs_res_set_status, zs_res_header,
                  zs_res_replace_header, zs_load_static_json, zs_load_file_metadata)


@hookimpl
def zeroserve_register_helpers(config):
    set_version(__version__)
    specs = [HelperSpec(name, c_function=fn, c_cookie=cookie if cookie else None)
             for name, (fn, cookie) in core_helper_defs().items()]
    specs.extend(HelperSpec(function.__name__, function=function) for function in PYTHON_HELPERS)
    return specs
