/* Permanent redirects for moved sections: /old/... -> /new/... and
 * /blog/... -> /posts/..., keeping the rest of the path and the query. */
#include "zeroserve.h"

struct move {
    const char *from;
    const char *to;
};

static const struct move moves[] = {
    {"/old/", "/new/"},
    {"/blog/", "/posts/"},
};

ZS_ENTRY zs_u64 entry(void)
{
    char uri[200];
    char location[200];

    zs_s64 uri_len = zs_req_uri(uri, sizeof uri);
    if (uri_len >= (zs_s64)sizeof uri)
        return 0;
    for (unsigned i = 0; i < sizeof moves / sizeof moves[0]; i++) {
        zs_u64 from_len = zs_strlen(moves[i].from);
        if (zs_strncmp(uri, moves[i].from, from_len) != 0)
            continue;
        zs_u64 to_len = zs_strlen(moves[i].to);
        zs_u64 rest_len = (zs_u64)uri_len - from_len;
        if (to_len + rest_len >= sizeof location)
            return 0;
        zs_strcpy(zs_stpcpy(location, moves[i].to), uri + from_len);
        zs_meta_set(ZS_STR("zs.response.header.location"), location, to_len + rest_len);
        zs_respond(301, 0, 0);
        return 0;
    }
    return 0;
}
