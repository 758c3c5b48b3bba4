/* SPDX-License-Identifier: Apache-2.0 */
/*
 * zsfast.h: the HTTP/1.1 fast path: a strict request-head parser, a per-World
 * static table, and a connection pump that answers the common GET/HEAD of a
 * keep-alive connection in one C call per socket read.
 *
 * The Python path (core/http1.py, core/handler.py, core/static.py) is the
 * reference: everything here either answers a request byte for byte as it
 * would (Date aside, which is the current second either way) or hands the
 * request, and every byte after it, back to Python.
 *
 * The static table (built by core/fastpath.py when a World loads):
 *
 *     struct zs_fast_table *t = zs_fast_table_new(tar_fd);
 *     zs_fast_table_add(t, "/a.css", ...);     one per request path that resolves
 *     zs_fast_table_set_not_found(t, ...);     what a clean path outside the table gets
 *     zs_fast_table_allow_host(t, "example.com", ...);   --validate-hostnames, if any
 *     const struct zs_fast_entry *e = zs_fast_table_find(t, path, path_len);
 *     zs_fast_table_free(t);                   when the World goes
 *
 * Every entry holds the response head up to (not including) `date:`, so a
 * caller adds `date: ...\r\n`, its connection header and the blank line, then
 * the body: `body` when held in memory, else `length` bytes at `offset` of the
 * tar fd. The table never closes the fd; its World does.
 *
 * Functions that can fail return -1 and write a message to `err` (errlen bytes).
 * Single-threaded: one worker, one event loop.
 */
#ifndef ZSFAST_H
#define ZSFAST_H

#include <stddef.h>
#include <stdint.h>

/* ---- the head parser ---- */

enum zs_fast_method { ZS_FAST_GET = 0, ZS_FAST_HEAD = 1 };

/* Request headers that change the answer of some entries. */
#define ZS_FAST_HAS_ACCEPT_ENCODING 1u /* matters for entries with precompressed siblings */
#define ZS_FAST_HAS_CONDITIONAL 2u     /* If-None-Match, If-Modified-Since, Range */

struct zs_fast_limits {
    size_t max_head_bytes; /* --max-head-bytes */
    size_t max_headers;    /* --max-headers */
    size_t max_uri_bytes;  /* --max-uri-bytes */
};

/* One parsed head; pointers into the parsed buffer. */
struct zs_fast_head {
    int method;              /* enum zs_fast_method */
    int minor;               /* HTTP/1.<minor>: 0 or 1 */
    int keep_alive;          /* the connection stays open after the answer */
    unsigned flags;          /* ZS_FAST_HAS_* */
    const uint8_t *target;   /* the request-target as sent */
    size_t target_len;
    size_t path_len;         /* the target up to '?' */
    const uint8_t *host;     /* Host without its port, as sent (any case) */
    size_t host_len;
};

/* The length of the complete head at buf (> 0) when it is one the fast path
 * takes: GET or HEAD, HTTP/1.0 or 1.1, an origin-form target whose path needs
 * no normalising, a plain Host, no body, no Upgrade/Expect, a Connection header
 * (if any) of exactly `close` or `keep-alive`, no header value ending in
 * whitespace, and within the limits.
 * 0: the head is not complete yet. -1: Python's (anything else, errors included). */
long zs_fast_parse_head(const uint8_t *buf, size_t len, const struct zs_fast_limits *limits,
                        struct zs_fast_head *head);

/* ---- the static table ---- */

#define ZS_FAST_VARIES 1u   /* precompressed siblings: Python answers a request with Accept-Encoding */
#define ZS_FAST_PYTHON 2u   /* Python answers this path (a body too big to send from one call) */
#define ZS_FAST_TEMPLATE 4u /* HTML/XML: when scripts set metadata, the answer is the template pass's
                             * (tmpl_head), whose output is the file unchanged (no <zs-meta> tag) */
#define ZS_FAST_TEMPLATE_PYTHON 8u /* HTML/XML with <zs-meta> tags: with metadata, Python renders it */

struct zs_fast_entry {
    const uint8_t *head;  /* "HTTP/1.1 200 OK\r\n" + header lines, no date, no blank line */
    size_t head_len;
    const uint8_t *body;  /* the body in memory, or NULL: read `length` bytes at `offset` */
    uint64_t offset;
    uint64_t length;      /* body bytes of a GET (HEAD sends none) */
    unsigned flags;       /* ZS_FAST_* */
    const uint8_t *tmpl_head; /* ZS_FAST_TEMPLATE: the head of the template pass's answer, or NULL */
    size_t tmpl_head_len;
};

struct zs_fast_table;

struct zs_fast_table *zs_fast_table_new(int fd);
void zs_fast_table_free(struct zs_fast_table *table);
/* The answer for request path `path` (as sent, before '?'); heads and body are copied. */
int zs_fast_table_add(struct zs_fast_table *table, const uint8_t *path, size_t path_len, const uint8_t *head,
                      size_t head_len, const uint8_t *body, uint64_t offset, uint64_t length, unsigned flags,
                      const uint8_t *tmpl_head, size_t tmpl_head_len, char *err, size_t errlen);
/* The answer for a clean path the table does not hold (the 404). */
int zs_fast_table_set_not_found(struct zs_fast_table *table, const uint8_t *head, size_t head_len,
                                const uint8_t *body, uint64_t offset, uint64_t length, unsigned flags,
                                char *err, size_t errlen);
/* A name --validate-hostnames allows (lowercase); with none, any Host is served. */
int zs_fast_table_allow_host(struct zs_fast_table *table, const uint8_t *name, size_t len, char *err,
                             size_t errlen);
/* The entry of `path` (table or not-found answer), or NULL when Python must answer. */
const struct zs_fast_entry *zs_fast_table_find(const struct zs_fast_table *table, const uint8_t *path,
                                               size_t path_len);
/* 1 when `host` (any case, no port) may be served. */
int zs_fast_table_host_allowed(const struct zs_fast_table *table, const uint8_t *host, size_t len);
/* The tar fd bodies not held in memory are read from. */
int zs_fast_table_fd(const struct zs_fast_table *table);

struct zs_chain;
struct zs_chain_req;
/* The World's C request chain (zschain.h; NULL: none). Each request the table
 * could answer runs it first (zs_fast_answer). body_limit: what
 * zs_reqctx_begin is given (core/script_abi.DEFAULT_BODY_LIMIT). */
void zs_fast_table_set_chain(struct zs_fast_table *table, struct zs_chain *chain, uint64_t body_limit);
struct zs_chain *zs_fast_table_chain(const struct zs_fast_table *table, uint64_t *body_limit);
/* The status line of a script's response status ("HTTP/1.1 404 Not Found\r\n"); others get "Unknown". */
int zs_fast_table_set_status_line(struct zs_fast_table *table, unsigned status, const uint8_t *line, size_t len,
                                  char *err, size_t errlen);
/* The status line of `status`, written to out (room for 64 bytes); its length. */
size_t zs_fast_table_status_line(const struct zs_fast_table *table, unsigned status, char *out);

/* One connection, as its Python Connection (or H2Connection) fills it once. */
struct zs_fast_conn {
    void *ssl;             /* the TLS session's SSL * (memory BIOs), or NULL for plaintext */
    int fd;                /* the socket: send(2) goes here when the caller allows it */
    const char *sni;       /* TLS: the host every request must name (lowercase), or NULL */
    size_t sni_len;
    const char *client;    /* "ip:port" for the access log */
    size_t client_len;
    const char *ja4;       /* the access log's ja4 field, or NULL */
    size_t ja4_len;
    const char *peer;      /* the scripts' peer: "ip:port" or "[v6]:port" */
    size_t peer_len;
    const char *info_json; /* TLS: the scripts' zs_connection_info JSON, or NULL */
    size_t info_json_len;
};

struct zs_fast_worker;

/* ---- one request's answer, for HTTP/1.1 (the pump) and HTTP/2 (native/h2) ---- */

/* A GET/HEAD its protocol's parser took: a clean path, a plain host, no body. */
struct zs_fast_request {
    int method;             /* enum zs_fast_method */
    int major, minor;       /* the protocol version the scripts see: 1.0, 1.1 or 2.0 */
    unsigned flags;         /* ZS_FAST_HAS_* */
    const uint8_t *target;  /* the request-target (path, then '?' and the query, if any) */
    size_t target_len;
    size_t path_len;        /* the target up to '?' */
    const uint8_t *host;    /* Host or :authority without its port (any case) */
    size_t host_len;
    const uint8_t *raw;     /* HTTP/1: the head as sent (the parser's), whose header lines the scripts see */
    size_t raw_len;
    const char *headers;    /* else (raw NULL): the header fields packed "name\0value\0...", lowercase names */
    size_t headers_len;
};

/* A complete answer: the head up to (not including) `date:`, as HTTP/1.1 text whatever the protocol
 * ("HTTP/1.1 200 OK\r\n" then "name: value\r\n" lines), and the body of a GET: `body` when in memory,
 * else `length` bytes at `offset` of zs_fast_table_fd. */
struct zs_fast_answer {
    const uint8_t *head;
    size_t head_len;
    const uint8_t *body;
    uint64_t offset;
    uint64_t length;
    unsigned status;
};

enum zs_fast_verdict {
    ZS_FAST_ANSWERED = 0,  /* `answer` is complete; call zs_fast_answer_done once it is copied out */
    ZS_FAST_TO_PYTHON = 1, /* nothing ran: Python answers the request whole */
    ZS_FAST_TO_ADOPT = 2   /* the chain ran and stopped where only Python goes on: hand
                            * zs_fast_worker_chain_req to ScriptChain.adopt before the next zs_fast_answer */
};

/* The answer the Python path (core/handler.py) would give `request` on `conn`: the table's entry, run
 * through the table's C chain when it has one. A finished chain with no log line, no response hook and no
 * change to the request is answered when its outcome is none (the entry with the `zs.response.header.*`
 * headers set over it, or the template pass's head) or zs_respond (status >= 200); every other end is
 * ZS_FAST_TO_ADOPT. A enum zs_fast_verdict, or -1 (message in err). */
int zs_fast_answer(struct zs_fast_worker *worker, const struct zs_fast_table *table, const struct zs_fast_conn *conn,
                   const struct zs_fast_request *request, struct zs_fast_answer *answer, char *err, size_t errlen);
/* Gives back the chain run behind the last answer (ANSWERED, or an adopt Python did not take); the
 * answer's head and body are gone then. */
void zs_fast_answer_done(struct zs_fast_worker *worker);

/* ---- the connection pump ---- */

/* The process's request ids: "<prefix>-<counter in hex>", shared with Python. */
struct zs_fast_ids {
    char prefix[16];
    uint64_t counter; /* the last id given */
};


enum zs_fast_log { ZS_FAST_LOG_NONE = 0, ZS_FAST_LOG_TEXT = 1, ZS_FAST_LOG_JSON = 2 };

struct zs_fast_worker *zs_fast_worker_new(const struct zs_fast_limits *limits, struct zs_fast_ids *ids,
                                          int log_format);
void zs_fast_worker_free(struct zs_fast_worker *worker);
/* The access-log lines written since the last call (each ending in '\n'); the buffer is then empty. */
const char *zs_fast_worker_take_log(struct zs_fast_worker *worker, size_t *len);

/* zs_fast_pump's answer bits: which fields of the result the caller has to look at. */
#define ZS_FAST_DID_LOG 1u    /* access-log lines were written (zs_fast_worker_take_log) */
#define ZS_FAST_DID_UNSENT 2u /* unsent bytes */
#define ZS_FAST_DID_REST 4u   /* plaintext for Python (rest), or close / tls_event / adopt */


/* What one pump call did. */
struct zs_fast_result {
    size_t rest_offset;      /* plaintext from here on is Python's (plaintext: offset into data) */
    size_t rest_len;
    const uint8_t *rest;     /* TLS: the plaintext for Python (in the worker's buffer) */
    const uint8_t *unsent;   /* bytes for the socket that send(2) did not take: transport.write them */
    size_t unsent_len;
    int close;               /* an answer ended the connection (Connection: close / HTTP/1.0) */
    int tls_event;           /* SSL_read stopped on something other than want-read: let the TLS session see it */
    unsigned served;         /* requests answered */
    int adopt;               /* the request at rest (its head: the first adopt_len bytes) ran its scripts
                              * in C and goes to Python with zs_fast_worker_chain_req (ScriptChain.adopt);
                              * the plaintext after its head is Python's too */
    size_t adopt_len;
};

/* The chain request a result's `adopt` hands over (emptied by ScriptChain.adopt). */
struct zs_chain_req *zs_fast_worker_chain_req(struct zs_fast_worker *worker);

/* Takes bytes read from the socket (ciphertext with conn->ssl), answers every
 * complete fast head from the front, sends the answers with send(2) when
 * `can_send` (else returns them all as unsent), and hands the rest back.
 * On success, the ZS_FAST_DID_* bits of what the result holds (0: every byte
 * was answered and sent, nothing more to do); -1 on an error (message in err)
 * and -2 when the peer has gone (the socket refused with EPIPE/ECONNRESET):
 * either way the connection is to be dropped. */
int zs_fast_pump(struct zs_fast_worker *worker, const struct zs_fast_table *table, const struct zs_fast_conn *conn,
                 const uint8_t *data, size_t len, int can_send, struct zs_fast_result *result, char *err,
                 size_t errlen);

/* Sends one response part the Python path built (HTTP/1.1 head and body, HTTP/2 frames): encrypted
 * with conn->ssl when set, `head` then `body` (the records fall as they would for head + body written as one),
 * then send(2) (sendmsg of both, in plaintext) as far as the socket takes. Only when `can_send` is
 * false or the socket fills does a byte stay: result->unsent, for the transport's buffer. Resets the
 * worker's output buffer, as zs_fast_pump does. ZS_FAST_DID_UNSENT or 0; -1 on a TLS error (message in
 * err), -2 when the peer has gone. */
int zs_fast_send(struct zs_fast_worker *worker, const struct zs_fast_conn *conn, const uint8_t *head,
                 size_t head_len, const uint8_t *body, size_t body_len, int can_send,
                 struct zs_fast_result *result, char *err, size_t errlen);

#endif
