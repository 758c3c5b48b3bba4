/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fuzz_json.c: libFuzzer target for the scripts' JSON parser (native/script/json.c).
 *
 * Any input either fails to parse or parses to a tree whose compact
 * serialisation parses again to a tree that serialises to the same bytes
 * (serialisation is a fixed point), and whose deep copy serialises alike.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "script_int.h"

static void check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_json: %s\n", what);
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct zs_json *tree = NULL;
    if (zs_json_parse_text((const char *)data, size, &tree) != 0)
        return 0;
    struct zs_buf first = {0}, second = {0}, copied = {0};
    check(zs_json_serialize(tree, &first) == 0, "serialising a parsed tree failed");
    struct zs_json *again = NULL;
    check(zs_json_parse_text(first.p, first.len, &again) == 0, "the serialisation does not parse");
    check(zs_json_serialize(again, &second) == 0, "serialising the reparsed tree failed");
    check(first.len == second.len && memcmp(first.p, second.p, first.len) == 0,
          "serialisation is not a fixed point");
    struct zs_json *copy = zs_json_clone_node(tree);
    check(copy != NULL, "deep copy failed");
    check(zs_json_serialize(copy, &copied) == 0, "serialising the copy failed");
    check(copied.len == first.len && memcmp(copied.p, first.p, first.len) == 0,
          "the deep copy serialises differently");
    zs_json_free(tree);
    zs_json_free(again);
    zs_json_free(copy);
    zs_buf_free(&first);
    zs_buf_free(&second);
    zs_buf_free(&copied);
    return 0;
}
