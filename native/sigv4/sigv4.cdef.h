/* cffi declarations of AWS SigV4 signing and the sigv4 helpers (sigv4.h, sigv4_helpers.h). */
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
#define ZS_SIGV4_MAX_EXPIRES 604800
int zs_sigv4_authorization(const struct zs_sigv4_request *req, const struct zs_sigv4_creds *creds,
                           char **out, size_t *out_len);
int zs_sigv4_presign(const struct zs_sigv4_request *req, const struct zs_sigv4_creds *creds,
                     uint64_t expires, char **out, size_t *out_len);
int zs_sigv4_canonical_request(const struct zs_sigv4_request *req, char **out, size_t *out_len);
void zs_sigv4_free(char *p);
struct zs_sigv4_creds *zs_sigv4_creds_new(const char *access_key, size_t access_key_len,
                                          const char *secret_key, size_t secret_key_len,
                                          const char *token, size_t token_len);
void zs_sigv4_creds_free(struct zs_sigv4_creds *creds);
const struct zs_helper_def *zs_sigv4_helpers(size_t *count);
