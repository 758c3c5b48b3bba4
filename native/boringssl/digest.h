/* openssl/digest.h: the hash the session-ticket HMAC uses. */
const EVP_MD *EVP_sha256(void);
