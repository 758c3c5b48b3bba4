/* GET /call/greet?name=Ada asks the script call_callee for a greeting with
 * zs_call and answers its JSON result, or 502 when the call fails. */
#include "zeroserve.h"

ZS_ENTRY zs_u64 entry(void)
{
    char path[64];
    char name[64];

    zs_req_path(path, sizeof path);
    if (zs_strcmp(path, "/call/greet") != 0)
        return 0;
    if (zs_req_query_param(ZS_STR("name"), name, sizeof name) == 0)
        zs_strcpy(name, "world");

    zs_s64 input = zs_json_new_object();
    zs_s64 value = zs_json_new_object();
    zs_json_set_string((zs_u64)value, ZS_STR(name));
    zs_json_set((zs_u64)input, ZS_STR("name"), (zs_u64)value);

    zs_s64 reply = zs_call(ZS_STR("call_callee"), ZS_STR("greet"), input);
    if (reply < 0) {
        zs_meta_set(ZS_STR("zs.response.header.content-type"), ZS_STR("application/json"));
        zs_respond(502, ZS_STR("{\"error\":\"call_callee.greet failed\"}"));
        return 0;
    }
    zs_json_respond(200, (zs_u64)reply);
    return 0;
}
