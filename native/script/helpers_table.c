/* SPDX-License-Identifier: Apache-2.0 */
/* helpers_table.c: the one table of core helpers the loader gets, joined once from each helper file. */
#include <string.h>

#include "script_int.h"

const struct zs_helper_def *zs_core_helpers(size_t *count)
{
    static struct zs_helper_def table[128];
    static size_t n;
    if (n == 0) {
        const struct {
            const struct zs_helper_def *defs;
            size_t count;
        } parts[] = {{zs_util_helpers, zs_util_helpers_count},
                     {zs_json_helpers, zs_json_helpers_count},
                     {zs_request_helpers, zs_request_helpers_count},
                     {zs_rewrite_helpers, zs_rewrite_helpers_count},
                     {zs_hook_helpers, zs_hook_helpers_count}};
        size_t total = 0;
        for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++) {
            if (total + parts[i].count > sizeof(table) / sizeof(table[0]))
                break; /* cannot happen: the table is sized for every helper file */
            memcpy(table + total, parts[i].defs, parts[i].count * sizeof(*table));
            total += parts[i].count;
        }
        n = total;
    }
    *count = n;
    return table;
}
