/* Puts the whole site behind OpenID Connect single sign-on, except /public/.
 *
 * /callback finishes a login, /logout ends the session (through the
 * provider's end-session page when it has one); any other page needs a
 * session: without one the user is sent to the provider and back here. With
 * one, the user's email and subject are put in the metadata, where the pages'
 * <zs-meta>user.email</zs-meta> placeholders show them (a proxying script
 * would forward them as headers instead).
 *
 * The provider and client settings are in .zeroserve/oidc.json (see the
 * README). Needs --plugins oidc. */
#include "zeroserve.h"

#define CONFIG_PATH ".zeroserve/oidc.json"

static void meta_from_claim(zs_s64 claims, const char *claim, zs_u64 claim_len, const char *key, zs_u64 key_len)
{
    char value[128];
    zs_s64 node = zs_json_get(claims, claim, claim_len);
    if (node < 0)
        return;
    zs_s64 len = zs_json_read_string(node, value, sizeof value);
    if (len > 0 && len < (zs_s64)sizeof value)
        zs_meta_set(key, key_len, value, (zs_u64)len);
}

static void misconfigured(void)
{
    static const char body[] = "single sign-on is not configured: check .zeroserve/oidc.json\n";
    zs_respond(500, body, sizeof body - 1);
}

ZS_ENTRY zs_u64 entry(void)
{
    char path[128];
    zs_s64 path_len = zs_req_path(path, sizeof path);
    if (path_len >= 8 && zs_strncmp(path, ZS_STR("/public/")) == 0)
        return 0;

    zs_s64 config = zs_load_static_json(ZS_STR(CONFIG_PATH));
    if (config < 0) {
        misconfigured();
        return 0;
    }
    if (zs_strcmp(path, "/callback") == 0) {
        if (zs_oidc_handle_callback(config) < 0)
            misconfigured();
        return 0;
    }
    if (zs_strcmp(path, "/logout") == 0) {
        if (zs_oidc_logout(config, "", 0) < 0)
            misconfigured();
        return 0;
    }

    zs_s64 claims = zs_oidc_session_verify(config);
    if (claims < 0) {
        misconfigured();
        return 0;
    }
    if (claims == 0) {
        char uri[320];
        zs_s64 uri_len = zs_req_uri(uri, sizeof uri);
        if (uri_len >= (zs_s64)sizeof uri)
            uri_len = 1; /* too long to come back to: start at "/" */
        if (zs_oidc_begin_login(config, uri, (zs_u64)uri_len) < 0)
            misconfigured();
        return 0;
    }
    meta_from_claim(claims, ZS_STR("email"), ZS_STR("user.email"));
    meta_from_claim(claims, ZS_STR("sub"), ZS_STR("user.sub"));
    return 0;
}
