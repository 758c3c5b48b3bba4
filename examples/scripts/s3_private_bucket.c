/* A private S3 bucket served read-only: GET and HEAD of its objects.
 *
 * Needs --plugins sigv4 and AWS credentials where the AWS tools look for them
 * (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, ~/.aws/credentials, or
 * --aws-profile): never in the site. The bucket's endpoint comes from the
 * server's environment, ZS_S3_ENDPOINT, either virtual-hosted
 * ("https://my-bucket.s3.eu-west-3.amazonaws.com") or path style
 * ("http://127.0.0.1:9000/my-bucket"); the region from ZS_S3_REGION
 * (default us-east-1).
 *
 * The request path is the object key. Range and conditional headers go to
 * the bucket unchanged, so partial and cached downloads work; the bucket's
 * answer (200, 206, 304, 404, 403...) comes back as it is. Other methods get
 * 405, and "/" (the bucket listing) 404. */
#include "zeroserve.h"

static int is_method(const char *method, zs_s64 len, const char *want)
{
    return len == (zs_s64)zs_strlen(want) && zs_strncmp(method, want, (zs_u64)len) == 0;
}

ZS_ENTRY zs_u64 entry(void)
{
    char method[16];
    char path[8];
    char endpoint[256];
    char region[32];

    zs_s64 method_len = zs_req_method(method, sizeof method);
    if (!is_method(method, method_len, "GET") && !is_method(method, method_len, "HEAD")) {
        zs_meta_set(ZS_STR("zs.response.header.allow"), ZS_STR("GET, HEAD"));
        zs_respond(405, ZS_STR("Method Not Allowed\n"));
        return 0;
    }
    if (zs_req_path(path, sizeof path) == 1) {
        zs_respond(404, ZS_STR("Not Found\n"));
        return 0;
    }
    zs_s64 endpoint_len = zs_env_get(ZS_STR("ZS_S3_ENDPOINT"), endpoint, sizeof endpoint);
    zs_s64 region_len = zs_env_get(ZS_STR("ZS_S3_REGION"), region, sizeof region);
    if (region_len <= 0 || region_len >= (zs_s64)sizeof region) {
        zs_memcpy(region, "us-east-1", 10);
        region_len = 9;
    }
    if (endpoint_len <= 0 || endpoint_len >= (zs_s64)sizeof endpoint) {
        zs_log(ZS_STR("s3_private_bucket: set ZS_S3_ENDPOINT to the bucket's URL\n"));
        zs_respond(502, ZS_STR("Bad Gateway\n"));
        return 0;
    }
    /* Sign after choosing the target: the signature covers its host and path. */
    zs_reverse_proxy(endpoint, (zs_u64)endpoint_len);
    if (zs_aws_sign_request(ZS_STR("s3"), region, (zs_u64)region_len) < 0) {
        zs_log(ZS_STR("s3_private_bucket: no AWS credentials (start with --plugins sigv4 and set them)\n"));
        zs_respond(502, ZS_STR("Bad Gateway\n"));
    }
    return 0;
}
