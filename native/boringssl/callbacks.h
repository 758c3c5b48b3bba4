/* zeroserve's own callbacks, implemented in Python (core/tls.py) and handed to BoringSSL. */
extern "Python" int zs_alpn_select(SSL *ssl, const uint8_t **out, uint8_t *out_len,
                                   const uint8_t *in, unsigned in_len, void *arg);
extern "Python" int zs_ticket_key(SSL *ssl, uint8_t *key_name, uint8_t *iv,
                                  EVP_CIPHER_CTX *ctx, HMAC_CTX *hmac_ctx, int encrypt);
extern "Python" enum ssl_select_cert_result_t zs_select_certificate(const SSL_CLIENT_HELLO *client_hello);

extern "Python" int zs_new_session(SSL *ssl, SSL_SESSION *session);
