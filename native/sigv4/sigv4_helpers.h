/* SPDX-License-Identifier: Apache-2.0 */
/*
 * sigv4_helpers.h: the sigv4 plugin's helper table (helpers_sigv4.c). Each
 * helper's cookie must be a struct zs_sigv4_creds from zs_sigv4_creds_new
 * that outlives the programs using it: the configured credentials, or empty
 * ones when there are none.
 */
#ifndef ZS_SIGV4_HELPERS_H
#define ZS_SIGV4_HELPERS_H

#include <stddef.h>

#include "include/zsvm.h"
#include "sigv4.h"

/* A cookie owning copies of the credentials (all lengths 0: none), or NULL
 * out of memory; free wipes them. */
struct zs_sigv4_creds *zs_sigv4_creds_new(const char *access_key, size_t access_key_len,
                                          const char *secret_key, size_t secret_key_len,
                                          const char *token, size_t token_len);
void zs_sigv4_creds_free(struct zs_sigv4_creds *creds);
/* zs_aws_v4_authorization_header, zs_aws_v4_presigned_url, zs_aws_sign_request. */
const struct zs_helper_def *zs_sigv4_helpers(size_t *count);

#endif
