"""A zeroserve plugin: `zs_geoip_country` tells scripts which country an IP address is in, from a CIDR table.

Enable it with `zeroserve run --plugins geoip [--geoip-ranges FILE] site.tar`.
The table is a CSV of `network,country` lines (IPv4 and IPv6, `#` comments);
it is read when a world is built, so a SIGHUP picks up a changed file. Scripts
declare the helper with `zeroserve_geoip.h` (shipped in this package) or by
hand:

    extern zs_s64 zs_geoip_country(const char *ip, zs_u64 ip_len, char *out, zs_u64 out_len);
"""

import bisect
import ipaddress
from importlib import resources

from zeroserve.core.errors import ConfigError
from zeroserve.sdk import HelperSpec, hookimpl, read_world_file

PLUGIN = "geoip"
HELPER = "zs_geoip_country"


class RangeTable:
    """Sorted, non-overlapping address ranges per IP version, each with a country code."""

    __slots__ = ("_starts", "_ends", "_countries")

    def __init__(self, rows):
        self._starts, self._ends, self._countries = {4: [], 6: []}, {4: [], 6: []}, {4: [], 6: []}
        for network, country in sorted(rows, key=lambda row: (row[0].version, int(row[0].network_address))):
            version = network.version
            start = int(network.network_address)
            ends = self._ends[version]
            if ends and start <= ends[-1]:
                raise ValueError(f"network {network} overlaps the one before it")
            self._starts[version].append(start)
            ends.append(int(network.broadcast_address))
            self._countries[version].append(country)

    @classmethod
    def parse(cls, text, source):
        """A table from CSV text; a bad line raises ConfigError naming `source` and the line."""
        rows = []
        for number, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            try:
                network, country = (field.strip() for field in line.split(","))
                rows.append((ipaddress.ip_network(network), country))
            except ValueError as error:
                raise ConfigError(f"{source}:{number}: {error}; lines are 'network,country'") from None
        try:
            return cls(rows)
        except ValueError as error:
            raise ConfigError(f"{source}: {error}") from None

    def country(self, address):
        """The country of an ipaddress address, or ""."""
        version = address.version
        value = int(address)
        index = bisect.bisect_right(self._starts[version], value) - 1
        if index >= 0 and value <= self._ends[version][index]:
            return self._countries[version][index]
        return ""


def parse_address(text):
    """An address from "ip", "ip:port" or "[v6]:port", or None."""
    if text.startswith("["):
        text = text[1:text.find("]")]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def geoip_country(call, ip, ip_len, out, out_len, _r5):
    """zs_geoip_country(ip, ip_len, out, out_len): C-string country code, -1 for a non-address."""
    address = parse_address(call.read_text(ip, ip_len).strip())
    if address is None:
        return -1
    country = call.plugin_state(PLUGIN).country(address)
    return call.write_cstring(out, out_len, country.encode())


@hookimpl
def zeroserve_add_options(parser):
    parser.add_argument("--geoip-ranges", metavar="FILE",
                        help="CSV of network,country lines for zs_geoip_country (default: a built-in "
                             "table of documentation ranges)")


@hookimpl
def zeroserve_configure(config):
    path = config.options.geoip_ranges
    if path is not None:
        try:
            open(path, "rb").close()
        except OSError as error:
            raise ConfigError(f"--geoip-ranges {path}: {error.strerror}; give a readable CSV file") from None


@hookimpl
def zeroserve_known_helpers():
    return [HELPER]


@hookimpl
def zeroserve_register_helpers(config):
    return [HelperSpec(HELPER, function=geoip_country)]


@hookimpl
def zeroserve_world_state(config, site):
    path = config.options.geoip_ranges
    if path is None:
        return RangeTable.parse(resources.files(__name__).joinpath("ranges.csv").read_text(), "built-in ranges")
    try:
        # Read through the SDK: the supervisor reads it and hands it to the isolated workers on reloads.
        return RangeTable.parse(read_world_file(path).decode("utf-8"), path)
    except OSError as error:
        raise ConfigError(f"--geoip-ranges {path}: {error.strerror}") from None
