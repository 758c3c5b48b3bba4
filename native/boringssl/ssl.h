/* openssl/ssl.h: contexts, connections over memory BIOs, ALPN, tickets, ECH and ClientHello access. */
#define TLS1_2_VERSION 0x0303
#define TLS1_3_VERSION 0x0304
#define SSL_ERROR_NONE 0
#define SSL_ERROR_SSL 1
#define SSL_ERROR_WANT_READ 2
#define SSL_ERROR_WANT_WRITE 3
#define SSL_ERROR_SYSCALL 5
#define SSL_ERROR_ZERO_RETURN 6
#define SSL_ERROR_PENDING_CERTIFICATE 12
#define SSL_VERIFY_NONE 0x00
#define SSL_VERIFY_PEER 0x01
#define SSL_TLSEXT_ERR_OK 0
#define SSL_TLSEXT_ERR_NOACK 3
#define OPENSSL_NPN_NEGOTIATED 1
#define SSL_SESS_CACHE_OFF 0x0000
#define SSL_SESS_CACHE_CLIENT 0x0001
#define SSL_SESS_CACHE_SERVER 0x0002
#define SSL_SESS_CACHE_NO_INTERNAL 0x0300
#define TLSEXT_NAMETYPE_host_name 0
#define SSL_TICKET_KEY_NAME_LEN 16
#define SSL_SENT_SHUTDOWN 1
#define SSL_RECEIVED_SHUTDOWN 2

/* Contexts. */
const SSL_METHOD *TLS_method(void);
SSL_CTX *SSL_CTX_new(const SSL_METHOD *method);
void SSL_CTX_free(SSL_CTX *ctx);
int SSL_CTX_set_min_proto_version(SSL_CTX *ctx, uint16_t version);
int SSL_CTX_set_max_proto_version(SSL_CTX *ctx, uint16_t version);
int SSL_CTX_use_certificate(SSL_CTX *ctx, X509 *x509);
int SSL_CTX_use_PrivateKey(SSL_CTX *ctx, EVP_PKEY *pkey);
int SSL_CTX_add1_chain_cert(SSL_CTX *ctx, X509 *x509);
int SSL_CTX_check_private_key(const SSL_CTX *ctx);
void SSL_CTX_set_early_data_enabled(SSL_CTX *ctx, int enabled);
int SSL_CTX_set_session_cache_mode(SSL_CTX *ctx, int mode);
void SSL_CTX_set_session_psk_dhe_timeout(SSL_CTX *ctx, uint32_t timeout);
int SSL_CTX_set_num_tickets(SSL_CTX *ctx, size_t num_tickets);
int SSL_CTX_set_ex_data(SSL_CTX *ctx, int idx, void *data);
void *SSL_CTX_get_ex_data(const SSL_CTX *ctx, int idx);
int SSL_CTX_get_ex_new_index(long argl, void *argp, CRYPTO_EX_unused *unused,
                             CRYPTO_EX_dup *dup_unused, CRYPTO_EX_free *free_func);

/* Verification (the client side). */
void SSL_CTX_set_verify(SSL_CTX *ctx, int mode, int (*callback)(int ok, X509_STORE_CTX *store_ctx));
int SSL_CTX_load_verify_locations(SSL_CTX *ctx, const char *ca_file, const char *ca_dir);
X509_VERIFY_PARAM *SSL_get0_param(SSL *ssl);
long SSL_get_verify_result(const SSL *ssl);

/* Connections. */
SSL *SSL_new(SSL_CTX *ctx);
void SSL_free(SSL *ssl);
SSL_CTX *SSL_get_SSL_CTX(const SSL *ssl);
void SSL_set_accept_state(SSL *ssl);
void SSL_set_connect_state(SSL *ssl);
void SSL_set0_rbio(SSL *ssl, BIO *rbio);
void SSL_set0_wbio(SSL *ssl, BIO *wbio);
BIO *SSL_get_rbio(const SSL *ssl);
BIO *SSL_get_wbio(const SSL *ssl);
int SSL_do_handshake(SSL *ssl);
int SSL_in_init(const SSL *ssl);
int SSL_read(SSL *ssl, void *buf, int num);
int SSL_write(SSL *ssl, const void *buf, int num);
int SSL_pending(const SSL *ssl);
int SSL_shutdown(SSL *ssl);
int SSL_get_shutdown(const SSL *ssl);
int SSL_get_error(const SSL *ssl, int ret_code);
int SSL_set_ex_data(SSL *ssl, int idx, void *data);
void *SSL_get_ex_data(const SSL *ssl, int idx);
int SSL_get_ex_new_index(long argl, void *argp, CRYPTO_EX_unused *unused,
                         CRYPTO_EX_dup *dup_unused, CRYPTO_EX_free *free_func);
const char *SSL_get_version(const SSL *ssl);
const SSL_CIPHER *SSL_get_current_cipher(const SSL *ssl);
const char *SSL_CIPHER_standard_name(const SSL_CIPHER *cipher);

/* SNI and ALPN. */
int SSL_set_tlsext_host_name(SSL *ssl, const char *name);
const char *SSL_get_servername(const SSL *ssl, const int type);
int SSL_CTX_set_alpn_protos(SSL_CTX *ctx, const uint8_t *protos, unsigned protos_len);
void SSL_CTX_set_alpn_select_cb(SSL_CTX *ctx,
    int (*cb)(SSL *ssl, const uint8_t **out, uint8_t *out_len, const uint8_t *in, unsigned in_len, void *arg),
    void *arg);
void SSL_get0_alpn_selected(const SSL *ssl, const uint8_t **out_data, unsigned *out_len);
int SSL_select_next_proto(uint8_t **out, uint8_t *out_len, const uint8_t *peer, unsigned peer_len,
                          const uint8_t *supported, unsigned supported_len);

/* Sessions and tickets. */
int SSL_set_session(SSL *ssl, SSL_SESSION *session);
void SSL_SESSION_free(SSL_SESSION *session);
int SSL_session_reused(const SSL *ssl);
void SSL_CTX_sess_set_new_cb(SSL_CTX *ctx, int (*new_session_cb)(SSL *ssl, SSL_SESSION *session));
int SSL_CTX_set_tlsext_ticket_key_cb(SSL_CTX *ctx,
    int (*callback)(SSL *ssl, uint8_t *key_name, uint8_t *iv, EVP_CIPHER_CTX *ctx, HMAC_CTX *hmac_ctx, int encrypt));

/* The early ClientHello callback (certificate selection, ECH decisions, JA4). */
struct ssl_early_callback_ctx {
    SSL *ssl;
    const uint8_t *client_hello;
    size_t client_hello_len;
    uint16_t version;
    const uint8_t *random;
    size_t random_len;
    const uint8_t *session_id;
    size_t session_id_len;
    const uint8_t *cipher_suites;
    size_t cipher_suites_len;
    const uint8_t *compression_methods;
    size_t compression_methods_len;
    const uint8_t *extensions;
    size_t extensions_len;
};
typedef struct ssl_early_callback_ctx SSL_CLIENT_HELLO;
enum ssl_select_cert_result_t {
    ssl_select_cert_success = 1,
    ssl_select_cert_retry = 0,
    ssl_select_cert_error = -1
};
void SSL_CTX_set_select_certificate_cb(SSL_CTX *ctx,
    enum ssl_select_cert_result_t (*cb)(const SSL_CLIENT_HELLO *));
int SSL_early_callback_ctx_extension_get(const SSL_CLIENT_HELLO *client_hello, uint16_t extension_type,
                                         const uint8_t **out_data, size_t *out_len);
SSL_CTX *SSL_set_SSL_CTX(SSL *ssl, SSL_CTX *ctx);

/* Encrypted ClientHello. */
int SSL_marshal_ech_config(uint8_t **out, size_t *out_len, uint8_t config_id, const EVP_HPKE_KEY *key,
                           const char *public_name, size_t max_name_len);
SSL_ECH_KEYS *SSL_ECH_KEYS_new(void);
void SSL_ECH_KEYS_free(SSL_ECH_KEYS *keys);
int SSL_ECH_KEYS_add(SSL_ECH_KEYS *keys, int is_retry_config, const uint8_t *ech_config,
                     size_t ech_config_len, const EVP_HPKE_KEY *key);
int SSL_ECH_KEYS_has_duplicate_config_id(const SSL_ECH_KEYS *keys);
int SSL_ECH_KEYS_marshal_retry_configs(const SSL_ECH_KEYS *keys, uint8_t **out, size_t *out_len);
int SSL_CTX_set1_ech_keys(SSL_CTX *ctx, SSL_ECH_KEYS *keys);
int SSL_ech_accepted(const SSL *ssl);
int SSL_set1_ech_config_list(SSL *ssl, const uint8_t *ech_config_list, size_t ech_config_list_len);
