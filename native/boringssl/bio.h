/* openssl/bio.h: memory BIOs, the only I/O BoringSSL does here. */
const BIO_METHOD *BIO_s_mem(void);
BIO *BIO_new(const BIO_METHOD *method);
BIO *BIO_new_mem_buf(const void *buf, int len);
int BIO_free(BIO *bio);
int BIO_write(BIO *bio, const void *data, int len);
int BIO_read(BIO *bio, void *data, int len);
size_t BIO_pending(const BIO *bio);
int BIO_mem_contents(const BIO *bio, const uint8_t **out_contents, size_t *out_len);
