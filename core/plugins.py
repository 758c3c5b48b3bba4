"""Builds the plugin manager: hookspecs, then the plugins asked for by name, then a check."""

from importlib import metadata

import pluggy

from zeroserve.core import hookspecs
from zeroserve.core.errors import ConfigError

ENTRY_POINT_GROUP = "zeroserve.plugins"


def installed_plugins():
    """Names of every plugin installed in the zeroserve.plugins entry-point group, sorted."""
    return sorted({ep.name for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)})


def build_plugin_manager(names):
    """A checked PluginManager with the plugins called `names` registered.

    An unknown name is a ConfigError listing the installed plugins.
    """
    pm = pluggy.PluginManager("zeroserve")
    pm.add_hookspecs(hookspecs)
    available = installed_plugins()
    for name in names:
        if name not in available:
            raise ConfigError(
                f"unknown plugin {name!r} in --plugins; installed plugins: {', '.join(available) or 'none'}"
            )
        pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP, name=name)
    pm.check_pending()
    return pm
