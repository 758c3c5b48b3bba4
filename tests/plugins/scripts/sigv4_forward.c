/* sigv4_forward.c: one section per helper the sigv4 tests call, passing r1..r5
 * straight through, so the tests call each from a real script. */
#include <zeroserve.h>

#define P(x) ((void *)(x))
#define FWD(helper, call)                                                              \
    ZS_SECTION("fwd/" #helper)                                                         \
    zs_s64 fwd_##helper(zs_u64 a, zs_u64 b, zs_u64 c, zs_u64 d, zs_u64 e)              \
    {                                                                                  \
        return (zs_s64)(call);                                                         \
    }

FWD(zs_aws_v4_authorization_header, zs_aws_v4_authorization_header(P(a), b))
FWD(zs_aws_v4_presigned_url, zs_aws_v4_presigned_url(P(a), b, c))
FWD(zs_aws_sign_request, zs_aws_sign_request(P(a), b, P(c), d))
FWD(zs_reverse_proxy, zs_reverse_proxy(P(a), b))
FWD(zs_json_parse, zs_json_parse(P(a), b))
