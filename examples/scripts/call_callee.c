/* A library script: no request entry, one function other scripts call with
 * zs_call("call_callee", "greet", input).
 *
 * greet takes {"name": "<string>"} and returns {"greeting": "hello, <name>"},
 * or -1 when the input has no string "name". */
#include "zeroserve.h"

ZS_CALL_ENTRY(greet, input)
{
    char name[64];
    char greeting[80];

    zs_s64 name_handle = zs_json_get((zs_u64)input, ZS_STR("name"));
    if (name_handle < 0)
        return -1;
    if (zs_json_read_string((zs_u64)name_handle, name, sizeof name) < 0)
        return -1;
    zs_strncpy(zs_stpcpy(greeting, "hello, "), name, sizeof greeting - 8);
    greeting[sizeof greeting - 1] = '\0';

    zs_s64 reply = zs_json_new_object();
    zs_s64 value = zs_json_new_object();
    zs_json_set_string((zs_u64)value, ZS_STR(greeting));
    zs_json_set((zs_u64)reply, ZS_STR("greeting"), (zs_u64)value);
    return reply;
}
