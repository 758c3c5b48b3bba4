/* openssl/err.h: the thread-local error queue, drained into TLSError by the wrapper. */
uint32_t ERR_get_error(void);
const char *ERR_lib_error_string(uint32_t packed_error);
const char *ERR_reason_error_string(uint32_t packed_error);
void ERR_clear_error(void);
