"""The core helpers as the "core" plugin: the C helpers of native/script, and the Python ones that need the site or the chain.

Nearly every helper (request, headers, metadata, respond, JSON, crypto,
response hooks) is a C function the VM calls directly. The few here need what
C does not see: `zs_call` (the world's other scripts) and `zs_load_static_json`
/ `zs_load_file_metadata` (the site tar). They are called rarely, so a Python
call per use is fine.
"""

import json

from zeroserve.core import __version__
from zeroserve.core.script_abi import core_helper_defs, set_version
from zeroserve.sdk import HelperSpec, hookimpl

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


PYTHON_HELPERS = (zs_call, zs_load_static_json, zs_load_file_metadata)


@hookimpl
def zeroserve_register_helpers(config):
    set_version(__version__)
    specs = [HelperSpec(name, c_function=fn, c_cookie=cookie if cookie else None)
             for name, (fn, cookie) in core_helper_defs().items()]
    specs.extend(HelperSpec(function.__name__, function=function) for function in PYTHON_HELPERS)
    return specs
