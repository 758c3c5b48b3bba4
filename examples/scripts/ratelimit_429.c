/* Limits every client address to 5 requests a second with bursts of 10; over
 * the limit the answer is 429 with Retry-After (whole seconds, rounded up).
 * zs_rate_limit_ex answers 0 (allowed), 1 (limited, retry_after_ms set),
 * 4 (no room for a new address: answered 429 too) or -1 (bad arguments: let
 * the request through). Needs the ratelimit plugin (--plugins ratelimit). */
#include "zeroserve.h"

#define RATE_PER_SEC_MILLI 5000
#define BURST 10

ZS_ENTRY zs_u64 entry(void)
{
    char peer[64];
    char retry_after[16];
    zs_u64 retry_after_ms = 0;

    zs_req_peer(peer, sizeof peer);
    char *port = zs_strrchr(peer, ':');
    if (port)
        *port = '\0';

    zs_s64 verdict = zs_rate_limit_ex(ZS_STR(peer), RATE_PER_SEC_MILLI, BURST, &retry_after_ms);
    if (verdict == ZS_RATE_LIMIT_ALLOWED || verdict < 0)
        return 0;

    unsigned seconds = (unsigned)((retry_after_ms + 999) / 1000);
    int digits = zs_utoa10(seconds ? seconds : 1, retry_after, sizeof retry_after);
    zs_meta_set(ZS_STR("zs.response.header.retry-after"), retry_after, (zs_u64)digits);
    zs_meta_set(ZS_STR("zs.response.header.content-type"), ZS_STR("text/plain; charset=utf-8"));
    zs_respond(429, ZS_STR("Too Many Requests\n"));
    return 0;
}
