/* Adds security and identification headers to every response.
 *
 * Metadata keys "zs.response.header.<name>" become response headers on static
 * files, script responses and error pages alike. */
#include "zeroserve.h"

ZS_ENTRY zs_u64 entry(void)
{
    zs_meta_set(ZS_STR("zs.response.header.x-served-by"), ZS_STR("zeroserve"));
    zs_meta_set(ZS_STR("zs.response.header.x-content-type-options"), ZS_STR("nosniff"));
    zs_meta_set(ZS_STR("zs.response.header.referrer-policy"), ZS_STR("same-origin"));
    return 0;
}
