/* openssl/hmac.h: the session-ticket MAC. */
int HMAC_Init_ex(HMAC_CTX *ctx, const void *key, size_t key_len, const EVP_MD *md, ENGINE *impl);
