/* chain.c: a request script as a site would write it: on /hello it greets the
 * "name" query parameter, records it in metadata, logs, and responds. */
#include <zeroserve.h>

ZS_ENTRY zs_u64 entry(void)
{
    char path[64], name[32], agent[32], body[64];
    zs_req_path(path, sizeof(path));
    if (zs_strcmp(path, "/hello") != 0)
        return 0;
    zs_s64 n = zs_req_query_param(ZS_STR("name"), name, sizeof(name));
    zs_req_header(ZS_STR("User-Agent"), agent, sizeof(agent));
    zs_meta_set(ZS_STR("greeted"), name, n);
    zs_meta_set(ZS_STR("zs.response.header.content-type"), ZS_STR("text/plain"));
    zs_log(ZS_STR("greeting "));
    zs_log(name, n);
    zs_log(ZS_STR(" from "));
    zs_log(agent, zs_strlen(agent));
    zs_log(ZS_STR("\n"));
    char *end = zs_stpcpy(body, "hello ");
    end = zs_stpcpy(end, name);
    zs_respond(200, body, end - body);
    return 0;
}
