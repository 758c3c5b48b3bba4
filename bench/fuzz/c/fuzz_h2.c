/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fuzz_h2.c: libFuzzer target for the HTTP/2 glue over nghttp2 (native/h2/zsh2.c).
 *
 * Input: as the Python `http2` target's, one byte whose value mod 17 is the piece
 * size (0: all at once), then the frames a client sends after its preface. They
 * are fed to zs_h2_receive piece by piece with a static table holding one path
 * (so C answers are fuzzed too); every request head gets an answer, alternately
 * a small in-memory body and a streamed body, and the output is drained after
 * each piece. Every event must point inside the arena, a head's blob must hold
 * its four pseudo-header fields, and the glue's own counters must stay sane.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "zsh2.h"

static const uint8_t PREFACE[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
static const char HEAD[] = "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 5\r\nserver: zeroserve\r\n";
static const char RESPONSE[] = ":status\0" "200\0" "content-length\0" "5\0" "date\0" "today";

static void check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_h2: %s\n", what);
        abort();
    }
}

static struct zs_fast_table *table(void)
{
    static struct zs_fast_table *t;
    if (!t) {
        char err[128];
        t = zs_fast_table_new(-1);
        check(t && zs_fast_table_add(t, (const uint8_t *)"/a", 2, (const uint8_t *)HEAD, sizeof HEAD - 1,
                                     (const uint8_t *)"alpha", 0, 5, 0, NULL, 0, err, sizeof err) == 0,
              "the static table could not be built");
    }
    return t;
}

/* Checks and answers one batch of events; the number of request heads answered. */
static unsigned take_events(struct zs_h2 *h, int count, unsigned answered)
{
    check(count >= 0 && (uint32_t)count == h->nevents, "the event count is off");
    for (int i = 0; i < count; i++) {
        const int64_t *e = h->events + (size_t)i * ZS_H2_EV_FIELDS;
        int kind = (int)(e[0] & 0xff);
        int32_t stream_id = (int32_t)e[1];
        check(kind >= ZS_H2_HEAD && kind <= ZS_H2_FAST, "an unknown event kind");
        check(stream_id > 0 && (stream_id & 1), "an event on a stream a client cannot open");
        check(e[2] >= 0 && e[3] >= 0 && (size_t)(e[2] + e[3]) <= h->arena_len, "an event outside the arena");
        if (kind != ZS_H2_HEAD)
            continue;
        if (e[4] != 0) {
            check(e[4] == 431 || e[4] == 414, "a refusal other than 431 or 414");
            check(zs_h2_respond(h, stream_id, RESPONSE, sizeof RESPONSE - 1, 3, NULL, 0, NULL, 0, -1,
                                ZS_H2_NO_BODY | ZS_H2_RESET_AFTER) >= 0, "a refusal failed");
            continue;
        }
        size_t nuls = 0;
        for (int64_t j = 0; j < e[3]; j++)
            nuls += h->arena[e[2] + j] == 0;
        check(nuls >= 3 && nuls % 2 == 1, "a head blob without its pseudo-header fields");
        int64_t segment[2] = {-1, 5};
        if (answered++ % 2 == 0) {
            check(zs_h2_respond(h, stream_id, RESPONSE, sizeof RESPONSE - 1, 3, (const uint8_t *)"hello", 5, segment, 1,
                                -1, 0) >= 0, "a response failed");
        } else if (zs_h2_respond(h, stream_id, RESPONSE, sizeof RESPONSE - 1, 3, NULL, 0, NULL, 0, -1,
                                 ZS_H2_STREAMED) == 0) {
            check(zs_h2_stream_data(h, stream_id, (const uint8_t *)"hel", 3) >= 0, "streamed data was refused");
            check(zs_h2_stream_data(h, stream_id, (const uint8_t *)"lo", 2) >= 0, "streamed data was refused");
            check(zs_h2_stream_end(h, stream_id) >= 0, "the streamed end failed");
        }
    }
    return answered;
}

/* What zs_fast_answer needs besides the table: a worker's scratch state and the connection's facts. */
static struct zs_fast_worker *worker(void)
{
    static struct zs_fast_worker *w;
    static struct zs_fast_ids ids;
    if (!w) {
        struct zs_fast_limits limits = {8192, 100, 8192};
        w = zs_fast_worker_new(&limits, &ids, ZS_FAST_LOG_NONE);
        check(w != NULL, "the fast worker could not be made");
    }
    return w;
}

static const struct zs_fast_conn CONN = {.fd = -1, .peer = "127.0.0.1:1", .peer_len = 11};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct zs_h2_limits limits = {8, 16, 256, 4096, 50, 50, 100, 1.0};
    struct zs_h2 *h;
    char err[160];
    check(zs_h2_new(&h, &limits, err, sizeof err) == 0, "the session could not be made");
    size_t step = size ? data[0] % 17 : 0;
    size_t body_len = size ? size - 1 : 0;
    uint8_t *input = malloc(sizeof PREFACE - 1 + body_len + 1);  /* a private copy: ASan sees reads past it */
    memcpy(input, PREFACE, sizeof PREFACE - 1);
    if (body_len)
        memcpy(input + sizeof PREFACE - 1, data + 1, body_len);
    size_t total = sizeof PREFACE - 1 + body_len;
    unsigned answered = 0;
    for (size_t at = 0; at < total && !h->closed;) {
        size_t piece = step ? (total - at < step ? total - at : step) : total - at;
        int count = zs_h2_receive(h, input + at, piece, (double)at, at % 2 ? table() : NULL, worker(), &CONN, 1);
        answered = take_events(h, count, answered);
        at += piece;
        for (int rounds = 0; rounds < 64; rounds++) {
            int sent = zs_h2_send(h, 64 * 1024);
            if (sent <= 0)
                break;
            take_events(h, (int)h->nevents, 0);
        }
        check(h->sources <= 2 * limits.max_concurrent_streams + answered, "the body source count ran away");
    }
    zs_h2_blocked(h);
    free(input);
    zs_h2_free(h);
    return 0;
}
