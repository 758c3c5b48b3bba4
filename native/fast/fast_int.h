/* SPDX-License-Identifier: Apache-2.0 */
/* fast_int.h: what the fast path's C files share and nobody else uses. */
#ifndef ZS_FAST_INT_H
#define ZS_FAST_INT_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "zschain.h"
#include "zsfast.h"

/* 1 when the `len` bytes at `any`, ASCII letters lowercased, are the `len` bytes at `lower`. */
int zs_fast_lower_equal(const uint8_t *any, const uint8_t *lower, size_t len);

/* A growable byte buffer (pump.c). */
struct zs_fast_buf {
    uint8_t *data;
    size_t len;
    size_t cap;
};

/* Room for `more` bytes after len; -1 when memory ran out. */
int zs_fast_buf_reserve(struct zs_fast_buf *b, size_t more);
int zs_fast_buf_append(struct zs_fast_buf *b, const void *data, size_t len);

struct zs_fast_worker {
    struct zs_fast_limits limits;
    struct zs_fast_ids *ids;
    int log_format;
    struct zs_fast_buf in;      /* TLS: the plaintext of this call */
    struct zs_fast_buf out;     /* bytes for the socket */
    struct zs_fast_buf answer;  /* TLS: one answer's plaintext before SSL_write */
    struct zs_fast_buf head;    /* an answer's head with the scripts' headers (answer.c) */
    struct zs_fast_buf request; /* the chain's request block (answer.c) */
    struct zs_fast_buf headers; /* an HTTP/1 head's headers, packed (answer.c) */
    struct zs_fast_buf meta;    /* the scripts' metadata headers, packed (answer.c) */
    struct zs_chain_req req;    /* the request the chain runs on; handed to Python on adopt */
    struct zs_chain *held;      /* the chain req's run belongs to while req is held, else NULL */
    struct zs_fast_buf log;     /* access-log lines not yet taken */
    time_t date_second;
    char date[40];   /* "Sun, 06 Nov 1994 08:49:37 GMT" */
    time_t stamp_second;
    char stamp[24];  /* "1994-11-06T08:49:37Z" */
};

#endif
