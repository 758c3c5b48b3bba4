/* HTTP Basic authentication in front of /private/.
 *
 * Without valid credentials the answer is 401 with a WWW-Authenticate
 * challenge; with them, the request goes on (to the static files) and the
 * user name is left in metadata "auth.user" for later scripts and templates.
 * Only the SHA-256 of "user:password" is stored (here: admin:zeroserve). */
#include "zeroserve.h"

#define PROTECTED_PREFIX "/private/"

static const char credentials_sha256_hex[] =
    "3debd5ccaf451670326e025603823a10ea46e318d0cc685534f8163ef049d2f0";

/* Equal-length comparison whose time does not depend on where bytes differ. */
static int same_bytes(const char *a, const char *b, zs_u64 n)
{
    unsigned char diff = 0;
    for (zs_u64 i = 0; i < n; i++)
        diff |= (unsigned char)(a[i] ^ b[i]);
    return diff == 0;
}

static int has_basic_scheme(const char *value)
{
    static const char scheme[] = "basic ";
    for (int i = 0; i < 6; i++) {
        char c = value[i];
        if (c >= 'A' && c <= 'Z')
            c = (char)(c - 'A' + 'a');
        if (c != scheme[i])
            return 0;
    }
    return 1;
}

/* The user name when the Authorization header holds the right credentials.
 * Not inlined, so its buffers live in a stack frame of their own. */
static __attribute__((noinline)) int check_credentials(char *user, zs_u64 user_size)
{
    char header[256];
    unsigned char digest[32];
    char digest_hex[64];

    zs_s64 len = zs_req_header(ZS_STR("authorization"), header, sizeof header);
    if (len < 7 || len >= (zs_s64)sizeof header || !has_basic_scheme(header))
        return 0;
    char *encoded = header + 6;
    zs_s64 decoded_len = zs_base64_decode_in_place(encoded, (zs_u64)len - 6, ZS_BASE64_STANDARD);
    if (decoded_len < 0)
        return 0;
    zs_sha256(encoded, (zs_u64)decoded_len, digest, sizeof digest);
    zs_hex_encode(digest, sizeof digest, digest_hex, sizeof digest_hex, ZS_HEX_LOWERCASE);
    if (!same_bytes(digest_hex, credentials_sha256_hex, sizeof digest_hex))
        return 0;
    zs_u64 i = 0;
    for (; i < (zs_u64)decoded_len && i + 1 < user_size && encoded[i] != ':'; i++)
        user[i] = encoded[i];
    user[i] = '\0';
    return 1;
}

ZS_ENTRY zs_u64 entry(void)
{
    char path[128];
    char user[64];

    zs_s64 path_len = zs_req_path(path, sizeof path);
    if (path_len < (zs_s64)sizeof path &&
        zs_strncmp(path, ZS_STR(PROTECTED_PREFIX)) != 0)
        return 0;

    if (check_credentials(user, sizeof user)) {
        zs_meta_set(ZS_STR("auth.user"), ZS_STR(user));
        return 0;
    }
    zs_meta_set(ZS_STR("zs.response.header.www-authenticate"),
                ZS_STR("Basic realm=\"private\", charset=\"UTF-8\""));
    zs_meta_set(ZS_STR("zs.response.header.content-type"), ZS_STR("text/plain; charset=utf-8"));
    zs_respond(401, ZS_STR("Unauthorized\n"));
    return 0;
}
