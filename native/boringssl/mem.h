/* openssl/mem.h: freeing buffers BoringSSL allocates for us. */
void OPENSSL_free(void *ptr);
