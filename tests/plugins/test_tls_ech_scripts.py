"""Scripts read the tls_ech plugin's connection facts: zs_tls_ja4 and zs_connection_info on real handshakes."""

import pytest

from harness import write_tree
from test_tls_ech import FactsServer, PKI, bssl_client, build_context, keygen
from zeroserve.core import pack
from zeroserve.core.chain import RESPOND, ChainOptions, ScriptChain
from zeroserve.core.compile import ScriptCompiler
from zeroserve.core.plugins import build_helper_table, build_plugin_manager
from zeroserve.core.site import Site

# Answers "<zs_tls_ja4>|<fingerprint.ja4>|<sni.inner>|<sni.outer>|<ech.accepted>" read through the helpers.
REPORT_SCRIPT = """#include "zeroserve.h"

static zs_s64 append_string(char *out, zs_s64 at, zs_s64 info, const char *a, zs_u64 a_len,
                            const char *b, zs_u64 b_len)
{
    zs_s64 node = zs_json_get(info, a, a_len);
    if (node >= 0 && b_len)
        node = zs_json_get(node, b, b_len);
    zs_s64 n = node >= 0 ? zs_json_read_string(node, out + at, 90) : 0;
    if (n < 0)
        n = 0;
    out[at + n] = '|';
    return at + n + 1;
}

ZS_ENTRY zs_u64 entry(void)
{
    char out[400];
    zs_s64 n = zs_tls_ja4(out, 90);
    out[n] = '|';
    zs_s64 at = n + 1;
    zs_s64 info = zs_connection_info();
    at = append_string(out, at, info, ZS_STR("fingerprint"), ZS_STR("ja4"));
    at = append_string(out, at, info, ZS_STR("sni"), ZS_STR("inner"));
    at = append_string(out, at, info, ZS_STR("sni"), ZS_STR("outer"));
    zs_s64 ech = zs_json_get(info, ZS_STR("ech"));
    zs_s64 accepted = ech >= 0 ? zs_json_get(ech, ZS_STR("accepted")) : -1;
    char flag = 0;
    if (accepted >= 0)
        zs_json_read_bool(accepted, &flag, 1);
    out[at++] = flag ? 'y' : 'n';
    zs_respond(200, out, at);
    return 0;
}
"""


class World:
    def __init__(self, chain):
        self.chain = chain
        self.site = None
        self.plugin_state = {}


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    base = tmp_path_factory.mktemp("scripts")
    write_tree(base / "src", {"index.html": "hi", ".zeroserve/scripts/report.c": REPORT_SCRIPT})
    pack.build(base / "src", base / "site.tar", compiler=ScriptCompiler.find(None))
    helpers = build_helper_table(build_plugin_manager(["tls_ech"]), None)
    return ScriptChain.load(Site.open(base / "site.tar"), helpers, ChainOptions())


def script_answer(chain, connection_info):
    result = chain.run(World(chain), "req-1", "GET", "/", "/", "", "https", "127.0.0.1:5000", (1, 1), True,
                       [("host", "x")], connection_info=connection_info)
    assert result.kind == RESPOND, result.kind
    return result.body.decode()


def test_tls_ech_scripts_read_ja4_and_ech_names_of_bssl_tool(chain, tmp_path):
    """A script reads the same JA4 through zs_tls_ja4 and zs_connection_info, with ECH and both names."""
    pki = PKI(tmp_path)
    ech_list, _ = keygen(tmp_path / "k.pem")
    context, names = build_context(pki, tmp_path, ech_key=str(tmp_path / "k.pem"))
    server = FactsServer(context, names)
    try:
        _, out = bssl_client(server.port, "secret.example", ech_list, pki.ca_path)
    finally:
        server.stop()
    (facts,) = server.handshakes
    ja4, via_info, inner, outer, accepted = script_answer(chain, facts.info_json).split("|")
    assert ja4 == via_info == facts.ja4
    assert (inner, outer, accepted) == ("secret.example", "public.example", "y")


def test_tls_ech_scripts_ja4_is_empty_on_plaintext(chain):
    """Over plaintext zs_tls_ja4 writes an empty string and the connection info has no JA4."""
    assert script_answer(chain, None) == "||||n"
