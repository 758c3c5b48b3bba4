/* openssl/evp.h: private and public keys. */
void EVP_PKEY_free(EVP_PKEY *pkey);
int EVP_PKEY_id(const EVP_PKEY *pkey);
