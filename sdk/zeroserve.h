/* SPDX-License-Identifier: Apache-2.0 */
/*
 * zeroserve.h: everything a zeroserve script needs: types, entry-point
 * macros, constants, the host helpers, and a few inline string functions.
 *
 * A script is one freestanding C file under .zeroserve/scripts/ of a site.
 * `zeroserve pack` compiles it to a BPF object with this header on the include
 * path (clang -O2 -target bpf -fno-builtin ...); `zeroserve sdk` prints this
 * file. Do not include libc headers: scripts are freestanding.
 *
 * Entry points are functions placed in named sections:
 *   ZS_ENTRY                runs for every request, in script-name order;
 *                           its return value is ignored.
 *   ZS_CALL_ENTRY(f, in)    a function other scripts reach with zs_call (and
 *                           response hooks with zs_res_hook): gets a JSON
 *                           handle, returns a JSON handle or a negative value.
 *   ZS_INIT_ENTRY(f)        runs once when the script is loaded; returns a
 *                           JSON handle (configuration read by the host).
 *   ZS_TLS_ENTRY            runs during the TLS handshake pause.
 *
 * Helpers are extern functions called by symbol name: the loader binds each
 * call to the helper registered under that name, and a script that calls an
 * unknown name fails to load. Every argument and the result are 64-bit.
 * Results are zs_s64 (negative: soft failure) except where noted.
 * A helper that "faults" ends the script run with a fault, and the request
 * with a 500 (empty body).
 *
 * Memory: a pointer given to a helper must lie wholly inside the script's own
 * memory (stack, globals, read-only data); output buffers must be writable
 * (stack or writable globals), and an output may not overlap another buffer of
 * the same call. Anything else faults.
 *
 * The C-string rule ("C-string" below): a helper writing a string to
 * (out, out_len) writes at most out_len - 1 bytes plus a NUL and returns
 * min(full length, out_len): 0 when out_len is 0, out_len when the value was
 * truncated. A missing value (header, parameter, key) writes "" and returns 0.
 *
 * Compiler limits: a function's stack frame holds at most 4096 bytes (512 with
 * a clang that lacks -bpf-stack-size, such as clang 14: move big buffers into
 * a noinline function or use `zeroserve pack --compiler zig`), and signed
 * division or modulo needs BPF v4 (zig's clang; clang 14 stops at v3).
 *
 * The compiler never calls memcpy/memset for BPF: it inlines small copies and
 * rejects big ones ("A call to built-in function 'memcpy' is not supported").
 * Copy big or variable-sized blocks with zs_memcpy / zs_memset; the host also
 * answers to the bare names memcpy and memset if a script declares and calls
 * them itself.
 */
#ifndef ZEROSERVE_H
#define ZEROSERVE_H

/* ---------------------------------------------------------------- types */

/* Built on the compiler's own type macros, so a script may also include the
 * compiler's freestanding <stdint.h> / <stddef.h> without conflicts. */
typedef __UINT64_TYPE__ uint64_t;
typedef __INT64_TYPE__ int64_t;
typedef __UINT32_TYPE__ uint32_t;
typedef __INT32_TYPE__ int32_t;
typedef __UINT16_TYPE__ uint16_t;
typedef __INT16_TYPE__ int16_t;
typedef __UINT8_TYPE__ uint8_t;
typedef __INT8_TYPE__ int8_t;
typedef __SIZE_TYPE__ size_t;
typedef __PTRDIFF_TYPE__ ssize_t;

typedef uint64_t zs_u64;
typedef int64_t zs_s64;
typedef uint32_t zs_u32;
typedef int32_t zs_s32;
typedef uint16_t zs_u16;
typedef int16_t zs_s16;
typedef uint8_t zs_u8;
typedef int8_t zs_s8;

#ifndef NULL
#define NULL ((void *)0)
#endif

/* ------------------------------------------------------ attribute macros */

#define ZS_SECTION(name) __attribute__((section(name)))
#define ZS_INLINE __inline__ __attribute__((always_inline))
#define ZS_MAYBE_UNUSED __attribute__((unused))

#define ZS_MIN(a, b) ((a) < (b) ? (a) : (b))
#define ZS_MAX(a, b) ((a) > (b) ? (a) : (b))

/* A string and its length as two arguments: zs_log(ZS_STR("hi\n")). */
#define ZS_STR(s) (s), zs_strlen((s))
/* The same, with the terminating NUL counted in the length. */
#define ZS_STR_WITH_NULL(s) (s), (zs_strlen((s)) + 1)

/* ------------------------------------------------------------ entry points */

/* The per-request entry: `ZS_ENTRY zs_u64 entry(void) { ... }`. */
#define ZS_ENTRY ZS_SECTION("zeroserve.request")

/* The TLS-handshake entry (section zeroserve.tls). */
#define ZS_TLS_ENTRY ZS_SECTION("zeroserve.tls")

/*
 * A callable function in section "zeroserve.call.<name>":
 *
 *   ZS_CALL_ENTRY(greet, input) {
 *       zs_s64 reply = zs_json_new_object();
 *       ...
 *       return reply;
 *   }
 *
 * The host passes 8 bytes of call data, the input JSON handle as a
 * little-endian u64, with r1 pointing at them; the body receives the handle as
 * `input`. Return a JSON handle on success, a negative value on failure.
 */
#define ZS_CALL_ENTRY(name, input)                                                \
    static zs_s64 zs_call_body_##name(zs_s64 input);                              \
    ZS_SECTION("zeroserve.call." #name)                                           \
    zs_s64 zs_call_entry_##name(const zs_s64 *zs_call_data)                       \
    {                                                                             \
        return zs_call_body_##name(*zs_call_data);                                \
    }                                                                             \
    static zs_s64 zs_call_body_##name(zs_s64 input)

/*
 * A load-time function in section "zeroserve.init.<name>": runs once when the
 * script is loaded, takes nothing, returns a JSON handle (negative: failure).
 */
#define ZS_INIT_ENTRY(name)                                                       \
    static zs_s64 zs_init_body_##name(void);                                      \
    ZS_SECTION("zeroserve.init." #name)                                           \
    zs_s64 zs_init_entry_##name(void)                                             \
    {                                                                             \
        return zs_init_body_##name();                                             \
    }                                                                             \
    static zs_s64 zs_init_body_##name(void)

/* ---------------------------------------------------------------- constants */

/* zs_base64_encode / zs_base64_decode_in_place alphabets. */
#define ZS_BASE64_STANDARD 0
#define ZS_BASE64_STANDARD_NO_PAD 1
#define ZS_BASE64_URL 2
#define ZS_BASE64_URL_NO_PAD 3

/* zs_hex_encode letter case. */
#define ZS_HEX_LOWERCASE 0
#define ZS_HEX_UPPERCASE 1

/* zs_json_type results. */
#define ZS_JSON_NULL 0
#define ZS_JSON_BOOL 1
#define ZS_JSON_NUMBER 2
#define ZS_JSON_STRING 3
#define ZS_JSON_ARRAY 4
#define ZS_JSON_OBJECT 5

/* zs_rate_limit results (ratelimit plugin). */
#define ZS_RATE_LIMIT_ALLOWED 0
#define ZS_RATE_LIMIT_EXCEEDED_SECOND 1
#define ZS_RATE_LIMIT_EXCEEDED_MINUTE 2
#define ZS_RATE_LIMIT_EXCEEDED_HOUR 3
#define ZS_RATE_LIMIT_EXCEEDED_BUCKET_LIMIT 4

/* ======================================================== core helpers */

/* ---- logging, time, environment */

/* Appends to this script's log line, printed at '\n' or at 512 bytes. 0. */
extern zs_s64 zs_log(const char *msg, zs_u64 len);
/* The current Unix time in milliseconds (unsigned: BPF before v4 has no
 * signed division, so `zs_now_ms() / 1000` must stay unsigned). */
extern zs_u64 zs_now_ms(void);
/* The zeroserve version string. C-string. */
extern zs_s64 zs_version(char *out, zs_u64 out_len);
/* The server process's environment variable (name trimmed). C-string. */
extern zs_s64 zs_env_get(const char *name, zs_u64 name_len, char *out, zs_u64 out_len);

/* ---- memory */

/* Copies n bytes (regions must not overlap); returns dst. */
extern void *zs_memcpy(void *dst, const void *src, size_t n);
/* Compares n bytes; returns the difference of the first unequal bytes, or 0. */
extern int zs_memcmp(const void *a, const void *b, size_t n);
/* Fills n bytes with (unsigned char)c; returns dst. */
extern void *zs_memset(void *dst, int c, size_t n);

/* ---- crypto and encoding */

/* Fills out_len random bytes; returns out_len. */
extern zs_s64 zs_getrandom(void *out, zs_u64 out_len);
/* SHA-256 of data into out; out_len must be 32 (faults otherwise). Returns 32. */
extern zs_s64 zs_sha256(const void *data, zs_u64 data_len, void *out, zs_u64 out_len);
/* HMAC-SHA-256 of msg under key into 32 bytes at out. Returns 32. */
extern zs_s64 zs_hmac_sha256(const void *key, zs_u64 key_len, const void *msg, zs_u64 msg_len,
                             void *out);
/* Base64 of data (ZS_BASE64_*), no NUL. Returns the length written; with
 * out_len 0, the length needed. A short buffer or unknown alphabet faults. */
extern zs_s64 zs_base64_encode(const void *data, zs_u64 data_len, void *out, zs_u64 out_len,
                               zs_u64 encoding);
/* Decodes base64 in place (exclude any NUL from buf_len). Returns the decoded
 * length, or -1 on bad input. */
extern zs_s64 zs_base64_decode_in_place(void *buf, zs_u64 buf_len, zs_u64 encoding);
/* Hex of data (ZS_HEX_*), no NUL. Returns 2 * data_len (also when out_len is
 * 0). A short buffer or unknown case flag faults. */
extern zs_s64 zs_hex_encode(const void *data, zs_u64 data_len, void *out, zs_u64 out_len,
                            zs_u64 case_flag);
/* Decodes hex in place. Returns buf_len / 2, or -1 on odd length or bad digit. */
extern zs_s64 zs_hex_decode_in_place(void *buf, zs_u64 buf_len);

/* ---- JSON
 * Handles index a table private to one script run (at most 32 live handles).
 * A mutation through one handle makes every other handle into the same tree
 * stale, and using a stale handle faults; zs_json_reset revalidates one. */

/* Parses JSON text. Returns a new handle, or -1 if it is not valid JSON. */
extern zs_s64 zs_json_parse(const void *data, zs_u64 data_len);
/* Parses the site file at path (verbatim tar path, no leading '/'; works for
 * .zeroserve/...). Returns a new handle, or -1 if missing or not JSON. */
extern zs_s64 zs_load_static_json(const char *path, zs_u64 path_len);
/* {"size", "etag", "mtime"} of the site file at path. Handle, or -1. */
extern zs_s64 zs_load_file_metadata(const char *path, zs_u64 path_len);
/* Rebinds json to the root of its tree at the newest version. 0. */
extern zs_s64 zs_json_reset(zs_u64 json);
/* A new handle to member key of an object, or -1 (missing, not an object). */
extern zs_s64 zs_json_get(zs_u64 json, const char *key, zs_u64 key_len);
/* A new handle to element array_index of an array, or -1. */
extern zs_s64 zs_json_array_get(zs_u64 json, zs_u64 array_index);
/* The string value. C-string; -1 if the value is not a string. */
extern zs_s64 zs_json_read_string(zs_u64 json, char *out, zs_u64 out_len);
/* Writes the integer value as an int64 at out; out_len must be 8 (faults
 * otherwise). Returns 8, or -1 if the value is not an integer. */
extern zs_s64 zs_json_read_i64(zs_u64 json, void *out, zs_u64 out_len);
/* Writes the boolean value as one byte 0/1; out_len must be 1. Returns 1,
 * or -1 if the value is not a boolean. */
extern zs_s64 zs_json_read_bool(zs_u64 json, void *out, zs_u64 out_len);
/* Frees a handle. 0; an unknown handle faults. */
extern zs_s64 zs_object_free(zs_u64 idx);
/* A new empty object. Handle. */
extern zs_s64 zs_json_new_object(void);
/* A new empty array. Handle. */
extern zs_s64 zs_json_new_array(void);
/* A deep copy into a new, independent tree. Handle. */
extern zs_s64 zs_json_clone(zs_u64 json);
/* Element count of an array or object, byte length of a string; else -1. */
extern zs_s64 zs_json_len(zs_u64 json);
/* The value's type, ZS_JSON_*. */
extern zs_s64 zs_json_type(zs_u64 json);
/* Sets member key of an object to a copy of value_json. 0, or -1 if not an object. */
extern zs_s64 zs_json_set(zs_u64 json, const char *key, zs_u64 key_len, zs_u64 value_json);
/* Removes member key. 0, or -1 if missing. */
extern zs_s64 zs_json_remove(zs_u64 json, const char *key, zs_u64 key_len);
/* Appends a copy of value_json to an array. The new length, or -1. */
extern zs_s64 zs_json_array_push(zs_u64 json, zs_u64 value_json);
/* Replaces element index of an array with a copy of value_json. 0, or -1 if out of range. */
extern zs_s64 zs_json_array_set(zs_u64 json, zs_u64 index, zs_u64 value_json);
/* Replaces the value json points at with a string. 0. */
extern zs_s64 zs_json_set_string(zs_u64 json, const char *value, zs_u64 value_len);
/* Replaces the value json points at with an integer. 0. */
extern zs_s64 zs_json_set_i64(zs_u64 json, zs_s64 value);
/* Replaces the value json points at with a boolean (value != 0). 0. */
extern zs_s64 zs_json_set_bool(zs_u64 json, zs_u64 value);
/* Replaces the value json points at with null. 0. */
extern zs_s64 zs_json_set_null(zs_u64 json);
/* Responds with status and json serialised compactly, content-type
 * application/json (also stored as metadata zs.response.header.content-type). 0. */
extern zs_s64 zs_json_respond(zs_u64 status, zs_u64 json);

/* ---- inter-script calls and response hooks */

/* Runs section zeroserve.call.<func> of the loaded script named script (".o"
 * optional) with a copy of json_handle. Returns a new handle to a copy of its
 * result, or -1 (unknown script/function, callee fault or negative result,
 * depth limit 8). The callee shares the request and metadata, not the
 * response: its zs_respond is discarded. An invalid json_handle faults. */
extern zs_s64 zs_call(const char *script, zs_u64 script_len, const char *func, zs_u64 func_len,
                      zs_s64 json_handle);
/* Registers ZS_CALL_ENTRY func of script ("" = this script) as a response
 * hook, run with a copy of json_handle after the response head is known and
 * before it is written. An empty func faults. 0. */
extern zs_s64 zs_res_hook(const char *script, zs_u64 script_len, const char *func,
                          zs_u64 func_len, zs_s64 json_handle);
/* Drops the response hooks registered so far. 0. */
extern zs_s64 zs_res_hooks_clear(void);
/* In a hook only (faults elsewhere): the response status. */
extern zs_s64 zs_res_status(void);
/* In a hook only: sets the response status; must be 100..999 (faults otherwise). 0. */
extern zs_s64 zs_res_set_status(zs_u64 status);
/* In a hook only: a response header's value (empty name faults). C-string. */
extern zs_s64 zs_res_header(const char *name, zs_u64 name_len, char *out, zs_u64 out_len);
/* In a hook only: edits a response header with {"name", "search" |
 * "search_regexp", "replace"}. 0. */
extern zs_s64 zs_res_replace_header(const char *op_json, zs_u64 op_json_len);
/* In a hook only: drops the response and reruns the request scripts with the
 * same request and metadata. 0. */
extern zs_s64 zs_res_continue_request(void);

/* ---- request inspection (strings follow the C-string rule) */

/* The method as sent, e.g. "GET". C-string. */
extern zs_s64 zs_req_method(char *out, zs_u64 out_len);
/* The normalised path, still percent-encoded, trailing slash kept. C-string. */
extern zs_s64 zs_req_path(char *out, zs_u64 out_len);
/* "/" + the decoded normalised path, no trailing slash. C-string. */
extern zs_s64 zs_req_normalized_path(char *out, zs_u64 out_len);
/* The encoded path plus "?" and the raw query when there is one. C-string. */
extern zs_s64 zs_req_uri(char *out, zs_u64 out_len);
/* The raw query string without "?". C-string. */
extern zs_s64 zs_req_query(char *out, zs_u64 out_len);
/* "http" or "https". C-string. */
extern zs_s64 zs_req_scheme(char *out, zs_u64 out_len);
/* The client address "ip:port" ("[v6]:port"). C-string. */
extern zs_s64 zs_req_peer(char *out, zs_u64 out_len);
/* HTTP major version: 1 or 2. */
extern zs_s64 zs_req_proto_major(void);
/* HTTP minor version: 0 or 1 (0 for HTTP/2). */
extern zs_s64 zs_req_proto_minor(void);
/* 1 on a TLS connection, else 0. */
extern zs_s64 zs_req_is_tls(void);
/* 1 once the TLS handshake is complete, else 0. */
extern zs_s64 zs_req_tls_handshake_complete(void);
/* The last value of a request header (name case-insensitive; repeated Cookie
 * headers joined with "; "). C-string. */
extern zs_s64 zs_req_header(const char *name, zs_u64 name_len, char *out, zs_u64 out_len);
/* The first decoded value of a query parameter ('+' is a space). C-string. */
extern zs_s64 zs_req_query_param(const char *name, zs_u64 name_len, char *out, zs_u64 out_len);
/* 1 if any decoded value of parameter name equals value (or value is "*" and
 * the parameter is present), else 0. */
extern zs_s64 zs_req_query_param_matches(const char *name, zs_u64 name_len, const char *value,
                                         zs_u64 value_len);
/* 1 if the peer address is in a JSON array of IP / CIDR strings, else 0. */
extern zs_s64 zs_req_remote_ip_matches(const char *ranges_json, zs_u64 ranges_json_len);
/* Buffers and parses the request body (cached). Handle, or -1 when the body
 * is empty, too large or not JSON. */
extern zs_s64 zs_req_body_json(void);
/* Lowers the body size limit (buffered and proxied; a proxied body over it
 * gets 413). 1 if Content-Length already exceeds max_size, else 0. */
extern zs_s64 zs_req_body_limit(zs_u64 max_size);
/* A handle to {"tls", "tls_handshake_complete", "alpn", "sni": {"inner",
 * "outer"}, "ech": null | {"accepted"}, "fingerprint": {"ja4"},
 * "tls_client": {"certificate", "chain_fingerprints_sha256"}}. */
extern zs_s64 zs_connection_info(void);

/* ---- request mutation (applied before the static lookup or the proxy) */

/* Sets the method; an invalid token faults. 0. */
extern zs_s64 zs_req_set_method(const char *method, zs_u64 method_len);
/* Sets path and query from "path[?query]" or an absolute URI, then
 * renormalises (escaping the root gives 400); unparseable faults. 0. */
extern zs_s64 zs_req_set_uri(const char *uri, zs_u64 uri_len);
/* Replaces every value of a header; value_len 0 removes it. Invalid name or
 * value faults. 0. */
extern zs_s64 zs_req_set_header(const char *name, zs_u64 name_len, const char *value,
                                zs_u64 value_len);
/* Adds a header value (for Host: sets it). Invalid name or value faults. 0. */
extern zs_s64 zs_req_append_header(const char *name, zs_u64 name_len, const char *value,
                                   zs_u64 value_len);
/* Deletes headers matching "Name", "Pre*", "*suf", "*mid*" or "*"
 * (case-insensitive); an empty pattern faults. 0. */
extern zs_s64 zs_req_delete_header(const char *pattern, zs_u64 pattern_len);
/* Edits a request header with {"name", "search" | "search_regexp", "replace"}. 0. */
extern zs_s64 zs_req_replace_header(const char *op_json, zs_u64 op_json_len);
/* Rewrites the URI with {"strip_path_prefix" | "strip_path_suffix" |
 * "uri_substring" | "path_regexp"} operations. 0. */
extern zs_s64 zs_req_rewrite_uri(const char *ops_json, zs_u64 ops_json_len);
/* Rewrites the query with {"rename" | "set" | "add" | "replace" | "delete"}
 * operations. 0. */
extern zs_s64 zs_req_rewrite_query(const char *ops_json, zs_u64 ops_json_len);

/* ---- metadata: a per-request string map shared by the whole chain.
 * "zs.response.header.<name>" sets that response header; any key at all turns
 * on the <zs-meta>KEY</zs-meta> template pass for HTML pages. */

/* The value of key (trimmed). C-string. */
extern zs_s64 zs_meta_get(const char *key, zs_u64 key_len, char *out, zs_u64 out_len);
/* Sets key (trimmed; empty faults) to a UTF-8 value. 0. */
extern zs_s64 zs_meta_set(const char *key, zs_u64 key_len, const char *value, zs_u64 value_len);

/* ---- response */

/* Records the response (a later call replaces it); the chain stops after
 * this script returns. Only Content-Length and metadata headers are added.
 * A status over 65535 faults; one outside 100..999 is sent as 500. 0. */
extern zs_s64 zs_respond(zs_u64 status, const void *body, zs_u64 body_len);
/* Closes the connection without a response once the script returns; faults
 * inside a response hook. 0. */
extern zs_s64 zs_abort(void);
/* 1 if this script has recorded a response, else 0. */
extern zs_s64 zs_response_pending(void);
/* Forgets the response this script recorded. 0. */
extern zs_s64 zs_response_clear(void);

/* ===================================== helpers provided by the proxy */

/* Proxies the request to url (trimmed; empty faults; faults if this script
 * already set a response or proxy). The chain stops after this script. 0. */
extern zs_s64 zs_reverse_proxy(const char *url, zs_u64 url_len);

/* ========================== helpers provided by the ratelimit plugin */

/* Token buckets (GCRA) for key (1..256 bytes): per-second, per-minute and
 * per-hour limits, each refilling at its rate with a burst equal to the limit
 * (0 = unlimited). Returns ZS_RATE_LIMIT_* (the first limit exceeded, checked
 * second, minute, hour), -1 on a bad key. Denied calls take nothing. */
extern zs_s64 zs_rate_limit(const void *key, zs_u64 key_len, zs_u64 per_second,
                            zs_u64 per_minute, zs_u64 per_hour);
/* Token bucket for key (1..256 bytes): refills rate_per_sec_milli / 1000
 * tokens a second up to burst. Returns 0 when a token was taken, 1 when
 * limited (then *out_retry_after_ms = milliseconds until the next token),
 * ZS_RATE_LIMIT_EXCEEDED_BUCKET_LIMIT when no new key fits, -1 on bad arguments. */
extern zs_s64 zs_rate_limit_ex(const void *key, zs_u64 key_len, zs_u64 rate_per_sec_milli,
                               zs_u64 burst, zs_u64 *out_retry_after_ms);

/* ============================== helpers provided by the sigv4 plugin */

/* The request to sign, 18 eight-byte fields (144 bytes), passed by pointer
 * with its size. Pointers are (pointer, length) pairs; headers_json is a JSON
 * object handle (0 = none); the result is a C-string at (out, out_len). */
typedef struct zs_aws_v4_sign_params {
    const void *access_key;
    zs_u64 access_key_len;
    const void *secret_key;
    zs_u64 secret_key_len;
    const void *region;
    zs_u64 region_len;
    const void *service;
    zs_u64 service_len;
    const void *method;
    zs_u64 method_len;
    const void *uri;
    zs_u64 uri_len;
    zs_u64 headers_json;
    const void *body_hash; /* hex SHA-256 of the body or "UNSIGNED-PAYLOAD" */
    zs_u64 body_hash_len;
    zs_s64 timestamp_ms;
    void *out;
    zs_u64 out_len;
} zs_aws_v4_sign_params;

_Static_assert(sizeof(zs_aws_v4_sign_params) == 144, "zs_aws_v4_sign_params is 144 bytes");

/* The Authorization header value for params. C-string at params->out; -1 when
 * a field is too long, -2 when signing fails. A misaligned pointer or
 * params_len != 144 faults. */
extern zs_s64 zs_aws_v4_authorization_header(const zs_aws_v4_sign_params *params,
                                             zs_u64 params_len);
/* A presigned "path?query" valid for expires_secs. Same returns as above. */
extern zs_s64 zs_aws_v4_presigned_url(const zs_aws_v4_sign_params *params, zs_u64 params_len,
                                      zs_u64 expires_secs);
/* Signs the request about to be proxied for service and region with the
 * credentials configured in the sigv4 plugin. 0, or -1 on error. */
extern zs_s64 zs_aws_sign_request(const char *service, zs_u64 service_len, const char *region,
                                  zs_u64 region_len);

/* =============================== helpers provided by the oidc plugin
 * cfg is a JSON object handle: client_id, client_secret, redirect_uri,
 * cookie_secret (>= 16 bytes), and issuer or authorization_endpoint +
 * token_endpoint; optional scope, session_ttl_secs. All four return -1 on a
 * configuration error (a normal return, not a fault). */

/* Responds 302 to the identity provider (state cookie set); the user comes
 * back to return_to ("" = "/"). Terminal: return right after. 0. */
extern zs_s64 zs_oidc_begin_login(zs_s64 cfg, const char *return_to, zs_u64 return_to_len);
/* Completes the login on the redirect_uri path: 302 to return_to with the
 * session cookie, 400 on a bad state, 502 on a failed token exchange.
 * Terminal. 0. */
extern zs_s64 zs_oidc_handle_callback(zs_s64 cfg);
/* A handle to the session's id_token claims, or 0 without a valid session. */
extern zs_s64 zs_oidc_session_verify(zs_s64 cfg);
/* Clears the session; 302 to end_session_url, or 200 "logged out" when it is
 * empty. Terminal. 0. */
extern zs_s64 zs_oidc_logout(zs_s64 cfg, const char *end_session_url,
                             zs_u64 end_session_url_len);

/* ============================= helpers provided by the tls_ech plugin */

/* The JA4 fingerprint of the client's ClientHello; "" on plaintext. C-string. */
extern zs_s64 zs_tls_ja4(char *out, zs_u64 out_len);

/* ================================================ inline string functions */

/* Length of a NUL-terminated string. */
static ZS_INLINE ZS_MAYBE_UNUSED size_t zs_strlen(const char *s)
{
    size_t n = 0;
    while (s[n] != '\0')
        n++;
    return n;
}

/* <0, 0 or >0 as a sorts before, equal to or after b (bytes unsigned). */
static ZS_INLINE ZS_MAYBE_UNUSED int zs_strcmp(const char *a, const char *b)
{
    const unsigned char *x = (const unsigned char *)a;
    const unsigned char *y = (const unsigned char *)b;
    while (*x != '\0' && *x == *y) {
        x++;
        y++;
    }
    return (int)*x - (int)*y;
}

/* zs_strcmp over at most n bytes. */
static ZS_INLINE ZS_MAYBE_UNUSED int zs_strncmp(const char *a, const char *b, size_t n)
{
    const unsigned char *x = (const unsigned char *)a;
    const unsigned char *y = (const unsigned char *)b;
    for (; n > 0; n--, x++, y++) {
        if (*x != *y)
            return (int)*x - (int)*y;
        if (*x == '\0')
            break;
    }
    return 0;
}

/* Copies src with its NUL to dst; returns dst. */
static ZS_INLINE ZS_MAYBE_UNUSED char *zs_strcpy(char *dst, const char *src)
{
    size_t i = 0;
    do
        dst[i] = src[i];
    while (src[i++] != '\0');
    return dst;
}

/* Copies at most n bytes of src and NUL-pads dst to n bytes (no NUL is added
 * when src is n bytes or longer); returns dst. */
static ZS_INLINE ZS_MAYBE_UNUSED char *zs_strncpy(char *dst, const char *src, size_t n)
{
    size_t i = 0;
    for (; i < n && src[i] != '\0'; i++)
        dst[i] = src[i];
    for (; i < n; i++)
        dst[i] = '\0';
    return dst;
}

/* Copies src with its NUL to dst; returns a pointer to the NUL in dst. */
static ZS_INLINE ZS_MAYBE_UNUSED char *zs_stpcpy(char *dst, const char *src)
{
    while ((*dst = *src) != '\0') {
        dst++;
        src++;
    }
    return dst;
}

/* The last occurrence of (char)c in s (c may be '\0'), or NULL. */
static ZS_INLINE ZS_MAYBE_UNUSED char *zs_strrchr(const char *s, int c)
{
    const char *found = NULL;
    for (;; s++) {
        if (*s == (char)c)
            found = s;
        if (*s == '\0')
            return (char *)found;
    }
}

/* Writes value in decimal with a NUL; returns the digit count, or -1 when
 * out is NULL or out_size cannot hold the digits and the NUL. */
static ZS_INLINE ZS_MAYBE_UNUSED int zs_utoa10(unsigned int value, char *out, size_t out_size)
{
    int digits = 1;
    for (unsigned int rest = value / 10; rest != 0; rest /= 10)
        digits++;
    if (out == NULL || (size_t)digits + 1 > out_size)
        return -1;
    out[digits] = '\0';
    for (int i = digits - 1; i >= 0; i--) {
        out[i] = (char)('0' + value % 10);
        value /= 10;
    }
    return digits;
}

#endif /* ZEROSERVE_H */
