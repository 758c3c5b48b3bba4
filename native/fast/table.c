/* SPDX-License-Identifier: Apache-2.0 */
/* table.c: the fast path's per-World static table: request path -> preformatted answer (open addressing). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fast_int.h"
#include "zsfast.h"

struct slot {
    uint8_t *path; /* NULL: empty slot */
    size_t path_len;
    uint64_t hash;
    struct zs_fast_entry entry;
};

struct host {
    uint8_t *name;
    size_t len;
};

struct zs_fast_table {
    int fd;
    struct zs_chain *chain;
    uint64_t body_limit;
    uint8_t *status_lines[1000]; /* "HTTP/1.1 200 OK\r\n" by status, NUL-terminated; NULL: "Unknown" */
    struct slot *slots;
    size_t capacity; /* a power of two */
    size_t count;
    struct zs_fast_entry not_found;
    int has_not_found;
    struct host *hosts;
    size_t host_count;
};

static uint64_t hash_bytes(const uint8_t *data, size_t len)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < len; i++) {
        h ^= data[i];
        h *= 1099511628211ull;
    }
    return h;
}

struct zs_fast_table *zs_fast_table_new(int fd)
{
    struct zs_fast_table *table = calloc(1, sizeof *table);
    if (table == NULL)
        return NULL;
    table->fd = fd;
    table->capacity = 64;
    table->slots = calloc(table->capacity, sizeof *table->slots);
    if (table->slots == NULL) {
        free(table);
        return NULL;
    }
    return table;
}

static void free_entry(struct zs_fast_entry *entry)
{
    free((void *)entry->head);
    free((void *)entry->body);
    free((void *)entry->tmpl_head);
}

void zs_fast_table_free(struct zs_fast_table *table)
{
    if (table == NULL)
        return;
    for (size_t i = 0; i < table->capacity; i++) {
        if (table->slots[i].path != NULL) {
            free(table->slots[i].path);
            free_entry(&table->slots[i].entry);
        }
    }
    free(table->slots);
    if (table->has_not_found)
        free_entry(&table->not_found);
    for (size_t i = 0; i < table->host_count; i++)
        free(table->hosts[i].name);
    free(table->hosts);
    for (size_t i = 0; i < 1000; i++)
        free(table->status_lines[i]);
    free(table);
}

static uint8_t *copy(const uint8_t *data, size_t len)
{
    uint8_t *out = malloc(len ? len : 1);
    if (out != NULL && len)
        memcpy(out, data, len);
    return out;
}

static int fill_entry(struct zs_fast_entry *entry, const uint8_t *head, size_t head_len, const uint8_t *body,
                      uint64_t offset, uint64_t length, unsigned flags, const uint8_t *tmpl_head,
                      size_t tmpl_head_len, char *err, size_t errlen)
{
    memset(entry, 0, sizeof *entry);
    entry->head = copy(head, head_len);
    entry->body = body != NULL ? copy(body, length) : NULL;
    entry->tmpl_head = tmpl_head != NULL ? copy(tmpl_head, tmpl_head_len) : NULL;
    entry->tmpl_head_len = tmpl_head_len;
    if (entry->head == NULL || (body != NULL && entry->body == NULL)
        || (tmpl_head != NULL && entry->tmpl_head == NULL)) {
        free_entry(entry);
        snprintf(err, errlen, "fast path table: out of memory for a %zu-byte answer", head_len + (size_t)length);
        return -1;
    }
    entry->head_len = head_len;
    entry->offset = offset;
    entry->length = length;
    entry->flags = flags;
    return 0;
}

static struct slot *find_slot(struct slot *slots, size_t capacity, const uint8_t *path, size_t len, uint64_t hash)
{
    size_t mask = capacity - 1;
    for (size_t i = hash & mask;; i = (i + 1) & mask) {
        struct slot *slot = &slots[i];
        if (slot->path == NULL || (slot->hash == hash && slot->path_len == len && memcmp(slot->path, path, len) == 0))
            return slot;
    }
}

static int grow(struct zs_fast_table *table, char *err, size_t errlen)
{
    size_t capacity = table->capacity * 2;
    struct slot *slots = calloc(capacity, sizeof *slots);
    if (slots == NULL) {
        snprintf(err, errlen, "fast path table: out of memory for %zu paths", capacity);
        return -1;
    }
    for (size_t i = 0; i < table->capacity; i++) {
        struct slot *old = &table->slots[i];
        if (old->path != NULL)
            *find_slot(slots, capacity, old->path, old->path_len, old->hash) = *old;
    }
    free(table->slots);
    table->slots = slots;
    table->capacity = capacity;
    return 0;
}

int zs_fast_table_add(struct zs_fast_table *table, const uint8_t *path, size_t path_len, const uint8_t *head,
                      size_t head_len, const uint8_t *body, uint64_t offset, uint64_t length, unsigned flags,
                      const uint8_t *tmpl_head, size_t tmpl_head_len, char *err, size_t errlen)
{
    if ((table->count + 1) * 4 > table->capacity * 3 && grow(table, err, errlen) != 0)
        return -1;
    uint64_t hash = hash_bytes(path, path_len);
    struct slot *slot = find_slot(table->slots, table->capacity, path, path_len, hash);
    if (slot->path != NULL) {
        snprintf(err, errlen, "fast path table: path '%.*s' added twice", (int)path_len, (const char *)path);
        return -1;
    }
    struct zs_fast_entry entry;
    if (fill_entry(&entry, head, head_len, body, offset, length, flags, tmpl_head, tmpl_head_len, err, errlen) != 0)
        return -1;
    slot->path = copy(path, path_len);
    if (slot->path == NULL) {
        free_entry(&entry);
        snprintf(err, errlen, "fast path table: out of memory for a path");
        return -1;
    }
    slot->path_len = path_len;
    slot->hash = hash;
    slot->entry = entry;
    table->count++;
    return 0;
}

int zs_fast_table_set_not_found(struct zs_fast_table *table, const uint8_t *head, size_t head_len,
                                const uint8_t *body, uint64_t offset, uint64_t length, unsigned flags,
                                char *err, size_t errlen)
{
    struct zs_fast_entry entry;
    if (fill_entry(&entry, head, head_len, body, offset, length, flags, NULL, 0, err, errlen) != 0)
        return -1;
    if (table->has_not_found)
        free_entry(&table->not_found);
    table->not_found = entry;
    table->has_not_found = 1;
    return 0;
}

int zs_fast_table_allow_host(struct zs_fast_table *table, const uint8_t *name, size_t len, char *err,
                             size_t errlen)
{
    struct host *hosts = realloc(table->hosts, (table->host_count + 1) * sizeof *hosts);
    uint8_t *copied = copy(name, len);
    if (hosts != NULL)
        table->hosts = hosts;
    if (hosts == NULL || copied == NULL) {
        free(copied);
        snprintf(err, errlen, "fast path table: out of memory for a host name");
        return -1;
    }
    hosts[table->host_count].name = copied;
    hosts[table->host_count].len = len;
    table->host_count++;
    return 0;
}

const struct zs_fast_entry *zs_fast_table_find(const struct zs_fast_table *table, const uint8_t *path,
                                               size_t path_len)
{
    struct slot *slot = find_slot(table->slots, table->capacity, path, path_len, hash_bytes(path, path_len));
    if (slot->path != NULL)
        return &slot->entry;
    return table->has_not_found ? &table->not_found : NULL;
}

int zs_fast_table_host_allowed(const struct zs_fast_table *table, const uint8_t *host, size_t len)
{
    if (table->host_count == 0)
        return 1;
    for (size_t i = 0; i < table->host_count; i++)
        if (table->hosts[i].len == len && zs_fast_lower_equal(host, table->hosts[i].name, len))
            return 1;
    return 0;
}

int zs_fast_table_fd(const struct zs_fast_table *table)
{
    return table->fd;
}

void zs_fast_table_set_chain(struct zs_fast_table *table, struct zs_chain *chain, uint64_t body_limit)
{
    table->chain = chain;
    table->body_limit = body_limit;
}

struct zs_chain *zs_fast_table_chain(const struct zs_fast_table *table, uint64_t *body_limit)
{
    *body_limit = table->body_limit;
    return table->chain;
}

int zs_fast_table_set_status_line(struct zs_fast_table *table, unsigned status, const uint8_t *line, size_t len,
                                  char *err, size_t errlen)
{
    if (status >= 1000 || len == 0 || len > 60) {
        snprintf(err, errlen, "fast path table: status line of %u has %zu bytes (at most 60)", status, len);
        return -1;
    }
    uint8_t *copied = malloc(len + 1);
    if (copied == NULL) {
        snprintf(err, errlen, "fast path table: out of memory for a status line");
        return -1;
    }
    memcpy(copied, line, len);
    copied[len] = 0;
    free(table->status_lines[status]);
    table->status_lines[status] = copied;
    return 0;
}

size_t zs_fast_table_status_line(const struct zs_fast_table *table, unsigned status, char *out)
{
    if (status < 1000 && table->status_lines[status] != NULL) {
        size_t len = strlen((const char *)table->status_lines[status]);
        memcpy(out, table->status_lines[status], len);
        return len;
    }
    return (size_t)sprintf(out, "HTTP/1.1 %u Unknown\r\n", status % 1000);
}
