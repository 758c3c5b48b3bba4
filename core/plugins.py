"""Builds the plugin manager (hookspecs, core, the plugins asked for by name, a check) and the helper table from it.

Everything here runs at load time: the request path only reads the
``HelperTable`` a world keeps.
"""

import re
from dataclasses import dataclass
from importlib import metadata

import pluggy

from zeroserve.core import hookspecs, scripthelpers
from zeroserve.core.compile import sdk_header_text
from zeroserve.core.errors import ConfigError, ScriptLoadError
from zeroserve.sdk import HelperSpec

ENTRY_POINT_GROUP = "zeroserve.plugins"
CORE = "core"
# A banner of sdk/zeroserve.h that starts the helpers of one plugin (or of the proxy).
_GROUP_BANNER = re.compile(r"/\* =+ (?:core helpers|helpers provided by the (\w+)(?: plugin)?)")
_HELPER_DECLARATION = re.compile(r"^extern\s+[\w\s*]+?\b(\w+)\s*\(", re.MULTILINE)
_UNKNOWN_HELPER = re.compile(r"call to unknown helper '(\w+)'")


def installed_plugins():
    """Names of every plugin installed in the zeroserve.plugins entry-point group, sorted."""
    return sorted({ep.name for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)})


def build_plugin_manager(names):
    """A checked PluginManager with the core helpers and the plugins called `names` registered.

    An unknown name is a ConfigError listing the installed plugins.
    """
    pm = pluggy.PluginManager("zeroserve")
    pm.add_hookspecs(hookspecs)
    pm.register(scripthelpers, name=CORE)
    available = installed_plugins()
    for name in dict.fromkeys(names):
        if name not in available:
            raise ConfigError(
                f"unknown plugin {name!r} in --plugins; installed plugins: {', '.join(available) or 'none'}"
            )
        pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP, name=name)
    pm.check_pending()
    return pm


@dataclass(frozen=True, slots=True)
class HelperTable:
    """Every helper a world's scripts may call: name -> HelperSpec, and name -> providing plugin."""

    specs: dict
    owners: dict

    def explain_load_error(self, error):
        """A ScriptLoadError for a call to a helper no enabled plugin provides, saying which to enable."""
        match = _UNKNOWN_HELPER.search(str(error))
        if match is None:
            return error
        provider = helper_providers().get(match.group(1))
        if provider is None or provider == CORE:
            return error
        if provider == "proxy":
            return ScriptLoadError(f"{error}: helper {match.group(1)} is provided by the reverse proxy, "
                                   f"which this build does not have")
        return ScriptLoadError(f"{error}: helper {match.group(1)} is provided by plugin {provider!r}; "
                               f"add --plugins {provider}")


def call_impl(impl, **kwargs):
    """Call one plugin's implementation of a hook with the arguments it declares (pluggy allows a subset)."""
    return impl.function(*[kwargs[name] for name in impl.argnames])


def build_helper_table(pm, config):
    """Collect every enabled plugin's HelperSpecs into one HelperTable; a name given twice is a ConfigError."""
    specs, owners = {}, {}
    hook = pm.hook.zeroserve_register_helpers
    for impl in hook.get_hookimpls():  # registration order: core first
        owner = impl.plugin_name
        for spec in call_impl(impl, config=config) or ():
            if not isinstance(spec, HelperSpec):
                raise ConfigError(f"plugin {owner!r} returned {spec!r} from zeroserve_register_helpers; "
                                  f"return zeroserve.sdk.HelperSpec objects")
            if spec.name in specs:
                raise ConfigError(f"helper {spec.name} is registered twice: by plugin {owners[spec.name]!r} "
                                  f"and by plugin {owner!r}; enable only one of them")
            specs[spec.name] = spec
            owners[spec.name] = owner
    return HelperTable(specs, owners)


def sdk_helper_groups():
    """{helper name: group} for every helper declared in sdk/zeroserve.h; group is "core", "proxy" or a plugin name."""
    groups = {}
    text = sdk_header_text()
    banners = list(_GROUP_BANNER.finditer(text))
    for banner, following in zip(banners, banners[1:] + [None]):
        end = following.start() if following else text.find("inline string functions", banner.end())
        group = banner.group(1) or CORE
        for declaration in _HELPER_DECLARATION.finditer(text, banner.end(), end):
            groups[declaration.group(1)] = group
    return groups


def helper_providers():
    """{helper name: plugin name} for every helper an installed plugin can provide, enabled or not.

    In-tree plugins are named by the SDK header's groups; every installed
    plugin is also asked through ``zeroserve_known_helpers``. Only called to
    explain a load error, so nothing is imported when every script loads.
    """
    providers = sdk_helper_groups()
    pm = pluggy.PluginManager("zeroserve")
    pm.add_hookspecs(hookspecs)
    for name in installed_plugins():
        pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP, name=name)
    for impl in pm.hook.zeroserve_known_helpers.get_hookimpls():
        for helper in call_impl(impl) or ():
            providers[helper] = impl.plugin_name
    return providers
