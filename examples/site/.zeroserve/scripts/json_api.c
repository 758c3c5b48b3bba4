/* A small JSON API under /api/: GET /api/hello?name=Ada answers
 * {"greeting":"hello, Ada","path":"/api/hello","method":"GET","now_ms":...}.
 * Other methods get 405 with a JSON error; other paths fall through. */
#include "zeroserve.h"

#define API_PREFIX "/api/"

/* Sets obj[key] to a string, reusing one scratch handle for the value. */
static void put_string(zs_s64 obj, const char *key, zs_s64 scratch, const char *value,
                       zs_u64 value_len)
{
    zs_json_set_string(scratch, value, value_len);
    zs_json_set(obj, key, zs_strlen(key), scratch);
}

ZS_ENTRY zs_u64 entry(void)
{
    char path[128];
    char method[16];
    char name[64];
    char greeting[80];

    zs_s64 path_len = zs_req_path(path, sizeof path);
    if (path_len >= (zs_s64)sizeof path || zs_strncmp(path, ZS_STR(API_PREFIX)) != 0)
        return 0;

    zs_s64 reply = zs_json_new_object();
    zs_s64 scratch = zs_json_new_object();
    zs_s64 method_len = zs_req_method(method, sizeof method);
    if (zs_strcmp(method, "GET") != 0) {
        put_string(reply, "error", scratch, ZS_STR("method not allowed"));
        zs_meta_set(ZS_STR("zs.response.header.allow"), ZS_STR("GET"));
        zs_json_respond(405, reply);
        return 0;
    }

    if (zs_req_query_param(ZS_STR("name"), name, sizeof name) == 0)
        zs_strcpy(name, "world");
    char *end = zs_stpcpy(greeting, "hello, ");
    zs_strncpy(end, name, sizeof greeting - (zs_u64)(end - greeting) - 1);
    greeting[sizeof greeting - 1] = '\0';

    put_string(reply, "greeting", scratch, ZS_STR(greeting));
    put_string(reply, "path", scratch, path, (zs_u64)path_len);
    put_string(reply, "method", scratch, method, (zs_u64)method_len);
    zs_json_set_i64(scratch, zs_now_ms());
    zs_json_set(reply, ZS_STR("now_ms"), scratch);
    zs_json_respond(200, reply);
    return 0;
}
