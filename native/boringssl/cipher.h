/* openssl/cipher.h: the cipher the session-ticket key callback configures. */
const EVP_CIPHER *EVP_aes_128_cbc(void);
int EVP_EncryptInit_ex(EVP_CIPHER_CTX *ctx, const EVP_CIPHER *cipher, ENGINE *engine,
                       const uint8_t *key, const uint8_t *iv);
int EVP_DecryptInit_ex(EVP_CIPHER_CTX *ctx, const EVP_CIPHER *cipher, ENGINE *engine,
                       const uint8_t *key, const uint8_t *iv);
