/* openssl/hpke.h: HPKE keys, which ECH (the tls_ech plugin) installs on server contexts. */
#define EVP_HPKE_MAX_PUBLIC_KEY_LENGTH 32
#define EVP_HPKE_MAX_PRIVATE_KEY_LENGTH 32
const EVP_HPKE_KEM *EVP_hpke_x25519_hkdf_sha256(void);
const EVP_HPKE_KDF *EVP_hpke_hkdf_sha256(void);
const EVP_HPKE_AEAD *EVP_hpke_aes_128_gcm(void);
const EVP_HPKE_AEAD *EVP_hpke_chacha20_poly1305(void);
EVP_HPKE_KEY *EVP_HPKE_KEY_new(void);
void EVP_HPKE_KEY_free(EVP_HPKE_KEY *key);
int EVP_HPKE_KEY_init(EVP_HPKE_KEY *key, const EVP_HPKE_KEM *kem,
                      const uint8_t *priv_key, size_t priv_key_len);
int EVP_HPKE_KEY_generate(EVP_HPKE_KEY *key, const EVP_HPKE_KEM *kem);
int EVP_HPKE_KEY_public_key(const EVP_HPKE_KEY *key, uint8_t *out, size_t *out_len, size_t max_out);
int EVP_HPKE_KEY_private_key(const EVP_HPKE_KEY *key, uint8_t *out, size_t *out_len, size_t max_out);
