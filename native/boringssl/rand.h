/* openssl/rand.h: ticket IVs. */
int RAND_bytes(uint8_t *buf, size_t len);
