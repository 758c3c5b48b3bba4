/* SPDX-License-Identifier: Apache-2.0 */
/*
 * sigv4.h: AWS Signature Version 4, the pure part: canonical request, string
 * to sign, signing key, the Authorization header and presigned query strings.
 *
 * Everything here works on host memory and knows nothing of scripts; the
 * helpers scripts call (helpers_sigv4.c) read guest memory and the request
 * and then call these. The rules follow the AWS SigV4 specification as
 * botocore implements it:
 *   - path: bytes that cannot be on the wire (spaces, non-ASCII) are first
 *     percent-encoded (a script may pass them raw), the rest kept; then S3
 *     signs that wire path as it is, and other services sign it with dot
 *     segments and repeated slashes removed and percent-encoded again ('%'
 *     too);
 *   - query: each key and value decoded and re-encoded (unreserved bytes
 *     kept), "k" signed as "k=", empty pieces ("a&&b") skipped, sorted by key
 *     then value;
 *   - headers: names lowercased, values with inner whitespace runs folded to
 *     one space and trimmed, repeats joined with ',', expect,
 *     transfer-encoding, user-agent and x-amzn-trace-id never signed.
 * Functions return 0, or -1 out of memory, or -2 when the input cannot be
 * signed (bad expiry). Nothing prints or aborts.
 */
#ifndef ZS_SIGV4_H
#define ZS_SIGV4_H

#include <stddef.h>
#include <stdint.h>

/* Credentials; token_len 0 means no session token. */
struct zs_sigv4_creds {
    const char *access_key;
    size_t access_key_len;
    const char *secret_key;
    size_t secret_key_len;
    const char *token;
    size_t token_len;
};

struct zs_sigv4_header {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
};

/* One request to sign. path and query are as on the wire (query without '?');
 * headers are the ones to sign (any case, in order); payload_hash is the hex
 * SHA-256 of the body or "UNSIGNED-PAYLOAD" (presigning signs an
 * X-Amz-Content-SHA256 header's value if there is one, else UNSIGNED-PAYLOAD
 * for S3, else payload_hash or, when empty, the empty body's hash);
 * timestamp is Unix seconds. */
struct zs_sigv4_request {
    const char *method;
    size_t method_len;
    const char *path;
    size_t path_len;
    const char *query;
    size_t query_len;
    const struct zs_sigv4_header *headers;
    size_t num_headers;
    const char *payload_hash;
    size_t payload_hash_len;
    const char *region;
    size_t region_len;
    const char *service;
    size_t service_len;
    int64_t timestamp;
};

/* The longest X-Amz-Expires AWS accepts: seven days. */
#define ZS_SIGV4_MAX_EXPIRES 604800

/* The Authorization header value; *out is malloc'ed (free with zs_sigv4_free). */
int zs_sigv4_authorization(const struct zs_sigv4_request *req, const struct zs_sigv4_creds *creds,
                           char **out, size_t *out_len);
/* "path?query" (the wire path) with the X-Amz-* parameters and the signature
 * appended in botocore's order; expires in 1..ZS_SIGV4_MAX_EXPIRES, else -2. */
int zs_sigv4_presign(const struct zs_sigv4_request *req, const struct zs_sigv4_creds *creds,
                     uint64_t expires, char **out, size_t *out_len);
/* The canonical request header mode signs (for diagnosing a mismatch). */
int zs_sigv4_canonical_request(const struct zs_sigv4_request *req, char **out, size_t *out_len);
/* Formats Unix seconds as the 16 characters of X-Amz-Date plus a NUL. */
void zs_sigv4_amz_date(int64_t timestamp, char out[17]);
/* Hex SHA-256 of data: 64 characters plus a NUL. */
void zs_sigv4_sha256_hex(const void *data, size_t len, char out[65]);
void zs_sigv4_free(char *p);

#endif
