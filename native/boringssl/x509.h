/* openssl/x509.h: certificates, key checks and the client's verification parameters. */
void X509_free(X509 *x509);
int X509_check_private_key(X509 *x509, const EVP_PKEY *pkey);
const char *X509_verify_cert_error_string(long err);
int X509_VERIFY_PARAM_set1_host(X509_VERIFY_PARAM *param, const char *name, size_t name_len);
int X509_VERIFY_PARAM_set1_ip_asc(X509_VERIFY_PARAM *param, const char *ipasc);
#define X509_V_OK 0
