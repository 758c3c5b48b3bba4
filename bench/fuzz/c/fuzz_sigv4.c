/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fuzz_sigv4.c: libFuzzer target for SigV4 canonicalisation and signing (native/sigv4/sigv4.c).
 *
 * The input is split on 0x00 bytes into method, path, query, service, then
 * header name/value pairs: wire-shaped, hostile text as a script could hand
 * to zs_sigv4_sign / zs_sigv4_presign. Every call must succeed (these inputs
 * are all signable) or report -2 for a bad expiry; canonicalising is
 * deterministic; the Authorization value has the fixed shape.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sigv4.h"

#define MAX_HEADERS 16

static void check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_sigv4: %s\n", what);
        abort();
    }
}

/* The next 0x00-terminated field of [*p, end) (the rest when there is no 0x00). */
static const char *field(const uint8_t **p, const uint8_t *end, size_t *len)
{
    const uint8_t *start = *p;
    const uint8_t *stop = memchr(start, 0, (size_t)(end - start));
    if (!stop)
        stop = end;
    *len = (size_t)(stop - start);
    *p = stop < end ? stop + 1 : end;
    return (const char *)start;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    uint64_t expires = data[0] * 4000u;
    const uint8_t *p = data + 1, *end = data + size;
    struct zs_sigv4_request req = {0};
    req.method = field(&p, end, &req.method_len);
    req.path = field(&p, end, &req.path_len);
    req.query = field(&p, end, &req.query_len);
    req.service = field(&p, end, &req.service_len);
    struct zs_sigv4_header headers[MAX_HEADERS];
    size_t n = 0;
    while (p < end && n < MAX_HEADERS) {
        headers[n].name = field(&p, end, &headers[n].name_len);
        headers[n].value = field(&p, end, &headers[n].value_len);
        n++;
    }
    req.headers = headers;
    req.num_headers = n;
    req.payload_hash = "UNSIGNED-PAYLOAD";
    req.payload_hash_len = strlen(req.payload_hash);
    req.region = "us-east-1";
    req.region_len = strlen(req.region);
    req.timestamp = 1700000000 + data[0];
    struct zs_sigv4_creds creds = {"AKIDEXAMPLE", 11, "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", 40, NULL, 0};

    char *first = NULL, *second = NULL, *auth = NULL, *url = NULL;
    size_t first_len = 0, second_len = 0, auth_len = 0, url_len = 0;
    check(zs_sigv4_canonical_request(&req, &first, &first_len) == 0, "canonical request failed");
    check(zs_sigv4_canonical_request(&req, &second, &second_len) == 0, "canonical request failed twice");
    check(first_len == second_len && memcmp(first, second, first_len) == 0, "canonical request varies");
    check(zs_sigv4_authorization(&req, &creds, &auth, &auth_len) == 0, "authorization failed");
    static const char prefix[] = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/";
    check(auth_len > sizeof(prefix) + 64 && memcmp(auth, prefix, sizeof(prefix) - 1) == 0,
          "authorization has the wrong shape");
    int rc = zs_sigv4_presign(&req, &creds, expires, &url, &url_len);
    int expiry_ok = expires >= 1 && expires <= ZS_SIGV4_MAX_EXPIRES;
    check(expiry_ok ? rc == 0 : rc == -2, "presign gave the wrong result for its expiry");
    zs_sigv4_free(first);
    zs_sigv4_free(second);
    zs_sigv4_free(auth);
    if (rc == 0)
        zs_sigv4_free(url);
    return 0;
}
