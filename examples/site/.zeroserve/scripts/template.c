/* Fills the <zs-meta> placeholders of the pages under /welcome: an HTML page
 * containing <zs-meta>page.client</zs-meta> gets the client's address, and
 * likewise page.path, page.method, page.scheme and page.year.
 *
 * Setting any metadata turns the template pass on for HTML, which drops the
 * page's ETag and Last-Modified, so only the templated pages get it. */
#include "zeroserve.h"

#define TEMPLATED_PREFIX "/welcome"
#define SECONDS_PER_DAY 86400u

/* The Gregorian year of a Unix day number (civil-from-days, years only). */
static unsigned year_of_day(unsigned days)
{
    unsigned z = days + 719468u;
    unsigned era = z / 146097u;
    unsigned doe = z - era * 146097u;
    unsigned yoe = (doe - doe / 1460u + doe / 36524u - doe / 146096u) / 365u;
    unsigned doy = doe - (365u * yoe + yoe / 4u - yoe / 100u);
    unsigned mp = (5u * doy + 2u) / 153u;
    return yoe + era * 400u + (mp >= 10u ? 1u : 0u);
}

ZS_ENTRY zs_u64 entry(void)
{
    char value[128];
    zs_s64 len;

    len = zs_req_path(value, sizeof value);
    if (zs_strncmp(value, ZS_STR(TEMPLATED_PREFIX)) != 0)
        return 0;
    zs_meta_set(ZS_STR("page.path"), value, (zs_u64)ZS_MIN(len, (zs_s64)sizeof value - 1));

    len = zs_req_method(value, sizeof value);
    zs_meta_set(ZS_STR("page.method"), value, (zs_u64)ZS_MIN(len, (zs_s64)sizeof value - 1));

    len = zs_req_scheme(value, sizeof value);
    zs_meta_set(ZS_STR("page.scheme"), value, (zs_u64)ZS_MIN(len, (zs_s64)sizeof value - 1));

    len = zs_req_peer(value, sizeof value);
    char *port = zs_strrchr(value, ':');
    if (port)
        *port = '\0';
    zs_meta_set(ZS_STR("page.client"), ZS_STR(value));

    unsigned days = (unsigned)(zs_now_ms() / 1000 / SECONDS_PER_DAY);
    len = zs_utoa10(year_of_day(days), value, sizeof value);
    zs_meta_set(ZS_STR("page.year"), value, (zs_u64)len);
    return 0;
}
