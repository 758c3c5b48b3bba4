/* SPDX-License-Identifier: Apache-2.0 */
/*
 * json.c: a small JSON tree: parse (strict RFC 8259, UTF-8 checked), build,
 * edit, deep-copy and serialise compactly.
 *
 * Objects keep their members sorted by key bytes and a repeated key keeps the
 * last value, so serialisation matches the original server's (serde_json
 * without preserve_order). Numbers keep their kind: int64, uint64 above
 * INT64_MAX, or double.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "script_int.h"

#define VALUE_COST 32

struct parser {
    const char *p;
    const char *end;
    int oom;
};

struct zs_json *zs_json_new(int type)
{
    struct zs_json *node = calloc(1, sizeof(*node));
    if (node)
        node->type = type;
    return node;
}

struct zs_json *zs_json_new_string(const char *p, size_t n)
{
    struct zs_json *node = zs_json_new(ZS_JT_STRING);
    if (!node)
        return NULL;
    node->str = malloc(n + 1);
    if (!node->str) {
        free(node);
        return NULL;
    }
    memcpy(node->str, p, n);
    node->str[n] = '\0';
    node->len = n;
    return node;
}

void zs_json_clear(struct zs_json *node)
{
    switch (node->type) {
    case ZS_JT_STRING:
        free(node->str);
        break;
    case ZS_JT_ARRAY:
        for (size_t i = 0; i < node->len; i++)
            zs_json_free(node->items[i]);
        free(node->items);
        break;
    case ZS_JT_OBJECT:
        for (size_t i = 0; i < node->len; i++) {
            free(node->members[i].key);
            zs_json_free(node->members[i].value);
        }
        free(node->members);
        break;
    default:
        break;
    }
    memset(node, 0, sizeof(*node));
    node->type = ZS_JT_NULL;
}

void zs_json_free(struct zs_json *node)
{
    if (!node)
        return;
    zs_json_clear(node);
    free(node);
}

size_t zs_json_cost(const struct zs_json *node)
{
    size_t cost = VALUE_COST;
    if (node->type == ZS_JT_STRING)
        cost += node->len;
    else if (node->type == ZS_JT_ARRAY)
        for (size_t i = 0; i < node->len; i++)
            cost += zs_json_cost(node->items[i]);
    else if (node->type == ZS_JT_OBJECT)
        for (size_t i = 0; i < node->len; i++)
            cost += node->members[i].key_len + zs_json_cost(node->members[i].value);
    return cost;
}

struct zs_json *zs_json_clone_node(const struct zs_json *node)
{
    if (node->type == ZS_JT_STRING)
        return zs_json_new_string(node->str, node->len);
    struct zs_json *copy = zs_json_new(node->type);
    if (!copy)
        return NULL;
    copy->num_kind = node->num_kind;
    copy->num = node->num;
    if (node->type == ZS_JT_ARRAY) {
        for (size_t i = 0; i < node->len; i++) {
            struct zs_json *item = zs_json_clone_node(node->items[i]);
            if (!item || zs_json_push(copy, item) < 0) {
                zs_json_free(item);
                zs_json_free(copy);
                return NULL;
            }
        }
    } else if (node->type == ZS_JT_OBJECT && node->len) {
        copy->members = calloc(node->len, sizeof(*copy->members));
        if (!copy->members) {
            zs_json_free(copy);
            return NULL;
        }
        copy->cap = node->len;
        for (size_t i = 0; i < node->len; i++) {
            const struct zs_json_member *m = &node->members[i];
            char *key = malloc(m->key_len + 1);
            struct zs_json *value = zs_json_clone_node(m->value);
            if (!key || !value) {
                free(key);
                zs_json_free(value);
                zs_json_free(copy);
                return NULL;
            }
            memcpy(key, m->key, m->key_len + 1);
            copy->members[i] = (struct zs_json_member){key, m->key_len, value};
            copy->len = i + 1;
        }
    }
    return copy;
}

/* ---- objects and arrays ---- */

static int key_cmp(const char *a, size_t alen, const char *b, size_t blen)
{
    int c = memcmp(a, b, alen < blen ? alen : blen);
    if (c)
        return c;
    return alen < blen ? -1 : alen > blen;
}

/* Index of key, or -(insertion point) - 1. */
static long member_find(const struct zs_json *obj, const char *key, size_t key_len)
{
    size_t lo = 0, hi = obj->len;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = key_cmp(obj->members[mid].key, obj->members[mid].key_len, key, key_len);
        if (c == 0)
            return (long)mid;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return -(long)lo - 1;
}

struct zs_json *zs_json_member_get(const struct zs_json *obj, const char *key, size_t key_len)
{
    if (obj->type != ZS_JT_OBJECT)
        return NULL;
    long i = member_find(obj, key, key_len);
    return i >= 0 ? obj->members[i].value : NULL;
}

int zs_json_member_set(struct zs_json *obj, const char *key, size_t key_len, struct zs_json *value)
{
    long i = member_find(obj, key, key_len);
    if (i >= 0) {
        zs_json_free(obj->members[i].value);
        obj->members[i].value = value;
        return 0;
    }
    size_t at = (size_t)(-i - 1);
    if (obj->len == obj->cap) {
        size_t cap = obj->cap ? obj->cap * 2 : 4;
        struct zs_json_member *m = realloc(obj->members, cap * sizeof(*m));
        if (!m)
            return -2;
        obj->members = m;
        obj->cap = cap;
    }
    char *copy = malloc(key_len + 1);
    if (!copy)
        return -2;
    memcpy(copy, key, key_len);
    copy[key_len] = '\0';
    memmove(&obj->members[at + 1], &obj->members[at], (obj->len - at) * sizeof(*obj->members));
    obj->members[at] = (struct zs_json_member){copy, key_len, value};
    obj->len++;
    return 0;
}

int64_t zs_json_member_remove(struct zs_json *obj, const char *key, size_t key_len)
{
    long i = member_find(obj, key, key_len);
    if (i < 0)
        return -1;
    struct zs_json_member *m = &obj->members[i];
    int64_t cost = (int64_t)(m->key_len + zs_json_cost(m->value));
    free(m->key);
    zs_json_free(m->value);
    memmove(m, m + 1, (obj->len - (size_t)i - 1) * sizeof(*m));
    obj->len--;
    return cost;
}

int zs_json_push(struct zs_json *arr, struct zs_json *value)
{
    if (arr->len == arr->cap) {
        size_t cap = arr->cap ? arr->cap * 2 : 4;
        struct zs_json **items = realloc(arr->items, cap * sizeof(*items));
        if (!items)
            return -2;
        arr->items = items;
        arr->cap = cap;
    }
    arr->items[arr->len++] = value;
    return 0;
}

/* ---- parsing ---- */

static void skip_ws(struct parser *ps)
{
    while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r'))
        ps->p++;
}

static int hex4(const char *p, unsigned *out)
{
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            v |= (unsigned)(c - 'A' + 10);
        else
            return -1;
    }
    *out = v;
    return 0;
}

static size_t put_utf8(char *out, unsigned cp)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xc0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xe0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        out[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    out[0] = (char)(0xf0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
    out[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

/* Parses a string at ps->p (at the opening quote) into a malloc'd buffer. */
static char *parse_string(struct parser *ps, size_t *out_len)
{
    const char *p = ps->p + 1;
    const char *start = p;
    while (p < ps->end && *p != '"') {
        if (*p == '\\')
            p++;
        p++;
    }
    if (p >= ps->end)
        return NULL;
    /* decoded text is never longer than the escaped text */
    char *out = malloc((size_t)(p - start) + 1);
    if (!out) {
        ps->oom = 1;
        return NULL;
    }
    size_t n = 0;
    const char *end = p;
    p = start;
    while (p < end) {
        unsigned char c = (unsigned char)*p;
        if (c < 0x20)
            goto bad;
        if (c != '\\') {
            out[n++] = (char)c;
            p++;
            continue;
        }
        p++;
        switch (*p) {
        case '"': out[n++] = '"'; p++; break;
        case '\\': out[n++] = '\\'; p++; break;
        case '/': out[n++] = '/'; p++; break;
        case 'b': out[n++] = '\b'; p++; break;
        case 'f': out[n++] = '\f'; p++; break;
        case 'n': out[n++] = '\n'; p++; break;
        case 'r': out[n++] = '\r'; p++; break;
        case 't': out[n++] = '\t'; p++; break;
        case 'u': {
            unsigned cp, low;
            if (end - p < 5 || hex4(p + 1, &cp) < 0)
                goto bad;
            p += 5;
            if (cp >= 0xdc00 && cp <= 0xdfff)
                goto bad;
            if (cp >= 0xd800 && cp <= 0xdbff) {
                if (end - p < 6 || p[0] != '\\' || p[1] != 'u' || hex4(p + 2, &low) < 0 ||
                    low < 0xdc00 || low > 0xdfff)
                    goto bad;
                p += 6;
                cp = 0x10000 + ((cp - 0xd800) << 10) + (low - 0xdc00);
            }
            n += put_utf8(out + n, cp);
            break;
        }
        default:
            goto bad;
        }
    }
    if (!zs_is_utf8((const unsigned char *)out, n))
        goto bad;
    out[n] = '\0';
    ps->p = end + 1;
    *out_len = n;
    return out;
bad:
    free(out);
    return NULL;
}

static struct zs_json *parse_number(struct parser *ps)
{
    const char *p = ps->p, *start = p;
    int is_float = 0;
    if (p < ps->end && *p == '-')
        p++;
    if (p >= ps->end)
        return NULL;
    if (*p == '0')
        p++;
    else if (*p >= '1' && *p <= '9')
        while (p < ps->end && *p >= '0' && *p <= '9')
            p++;
    else
        return NULL;
    if (p < ps->end && *p == '.') {
        is_float = 1;
        p++;
        if (p >= ps->end || *p < '0' || *p > '9')
            return NULL;
        while (p < ps->end && *p >= '0' && *p <= '9')
            p++;
    }
    if (p < ps->end && (*p == 'e' || *p == 'E')) {
        is_float = 1;
        p++;
        if (p < ps->end && (*p == '+' || *p == '-'))
            p++;
        if (p >= ps->end || *p < '0' || *p > '9')
            return NULL;
        while (p < ps->end && *p >= '0' && *p <= '9')
            p++;
    }
    char text[400];
    size_t n = (size_t)(p - start);
    if (n >= sizeof(text))
        return NULL;
    memcpy(text, start, n);
    text[n] = '\0';
    struct zs_json *node = zs_json_new(ZS_JT_NUMBER);
    if (!node) {
        ps->oom = 1;
        return NULL;
    }
    errno = 0;
    if (!is_float && text[0] == '-') {
        long long v = strtoll(text, NULL, 10);
        if (errno == 0) {
            node->num_kind = ZS_JN_INT;
            node->num.i = v;
            ps->p = p;
            return node;
        }
    } else if (!is_float) {
        unsigned long long v = strtoull(text, NULL, 10);
        if (errno == 0) {
            node->num_kind = v > INT64_MAX ? ZS_JN_UINT : ZS_JN_INT;
            node->num.u = v;
            ps->p = p;
            return node;
        }
    }
    errno = 0;
    double d = strtod(text, NULL);
    if (!isfinite(d)) {
        free(node);
        return NULL;
    }
    node->num_kind = ZS_JN_FLOAT;
    node->num.d = d;
    ps->p = p;
    return node;
}

static struct zs_json *parse_value(struct parser *ps, int depth)
{
    skip_ws(ps);
    if (ps->p >= ps->end || depth > ZS_JSON_MAX_DEPTH)
        return NULL;
    char c = *ps->p;
    if (c == '{' || c == '[') {
        int is_obj = c == '{';
        struct zs_json *node = zs_json_new(is_obj ? ZS_JT_OBJECT : ZS_JT_ARRAY);
        if (!node) {
            ps->oom = 1;
            return NULL;
        }
        ps->p++;
        skip_ws(ps);
        if (ps->p < ps->end && *ps->p == (is_obj ? '}' : ']')) {
            ps->p++;
            return node;
        }
        for (;;) {
            char *key = NULL;
            size_t key_len = 0;
            if (is_obj) {
                skip_ws(ps);
                if (ps->p >= ps->end || *ps->p != '"' || !(key = parse_string(ps, &key_len)))
                    goto fail;
                skip_ws(ps);
                if (ps->p >= ps->end || *ps->p != ':') {
                    free(key);
                    goto fail;
                }
                ps->p++;
            }
            struct zs_json *value = parse_value(ps, depth + 1);
            if (!value) {
                free(key);
                goto fail;
            }
            int rc = is_obj ? zs_json_member_set(node, key, key_len, value) : zs_json_push(node, value);
            free(key);
            if (rc < 0) {
                zs_json_free(value);
                ps->oom = 1;
                goto fail;
            }
            skip_ws(ps);
            if (ps->p >= ps->end)
                goto fail;
            if (*ps->p == ',') {
                ps->p++;
                continue;
            }
            if (*ps->p == (is_obj ? '}' : ']')) {
                ps->p++;
                return node;
            }
            goto fail;
        }
    fail:
        zs_json_free(node);
        return NULL;
    }
    if (c == '"') {
        size_t n;
        char *s = parse_string(ps, &n);
        if (!s)
            return NULL;
        struct zs_json *node = zs_json_new(ZS_JT_STRING);
        if (!node) {
            free(s);
            ps->oom = 1;
            return NULL;
        }
        node->str = s;
        node->len = n;
        return node;
    }
    static const struct {
        const char *word;
        int type, b;
    } words[] = {{"null", ZS_JT_NULL, 0}, {"true", ZS_JT_BOOL, 1}, {"false", ZS_JT_BOOL, 0}};
    for (size_t i = 0; i < 3; i++) {
        size_t n = strlen(words[i].word);
        if ((size_t)(ps->end - ps->p) >= n && memcmp(ps->p, words[i].word, n) == 0) {
            struct zs_json *node = zs_json_new(words[i].type);
            if (!node) {
                ps->oom = 1;
                return NULL;
            }
            node->num.b = words[i].b;
            ps->p += n;
            return node;
        }
    }
    return parse_number(ps);
}

int zs_json_parse_text(const char *text, size_t len, struct zs_json **out)
{
    struct parser ps = {text, text + len, 0};
    struct zs_json *root = parse_value(&ps, 0);
    if (root) {
        skip_ws(&ps);
        if (ps.p == ps.end) {
            *out = root;
            return 0;
        }
        zs_json_free(root);
        return -1;
    }
    return ps.oom ? -2 : -1;
}

/* ---- serialisation ---- */

static int put_string(struct zs_buf *out, const char *s, size_t n)
{
    if (zs_buf_reserve(out, n + 2) < 0)
        return -2;
    out->p[out->len++] = '"';
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        char esc[8];
        size_t en = 0;
        switch (c) {
        case '"': esc[0] = '\\'; esc[1] = '"'; en = 2; break;
        case '\\': esc[0] = '\\'; esc[1] = '\\'; en = 2; break;
        case '\b': esc[0] = '\\'; esc[1] = 'b'; en = 2; break;
        case '\f': esc[0] = '\\'; esc[1] = 'f'; en = 2; break;
        case '\n': esc[0] = '\\'; esc[1] = 'n'; en = 2; break;
        case '\r': esc[0] = '\\'; esc[1] = 'r'; en = 2; break;
        case '\t': esc[0] = '\\'; esc[1] = 't'; en = 2; break;
        default:
            if (c < 0x20)
                en = (size_t)snprintf(esc, sizeof(esc), "\\u%04x", c);
        }
        if (en) {
            if (zs_buf_append(out, esc, en) < 0)
                return -2;
        } else if (zs_buf_append(out, &s[i], 1) < 0) {
            return -2;
        }
    }
    return zs_buf_append(out, "\"", 1) < 0 ? -2 : 0;
}

/* The shortest text that reads back as d, with ".0" for integral values. */
static size_t format_double(double d, char *out, size_t size)
{
    int n = 0;
    for (int prec = 1; prec <= 17; prec++) {
        n = snprintf(out, size, "%.*g", prec, d);
        if (strtod(out, NULL) == d)
            break;
    }
    char *e = strchr(out, 'e');
    if (e) {
        /* "1e+300" -> "1e300", "1e-07" -> "1e-7", as serde_json writes them */
        char *src = e + 1, *dst = e + 1;
        if (*src == '+')
            src++;
        else if (*src == '-')
            *dst++ = *src++;
        while (*src == '0' && src[1])
            src++;
        memmove(dst, src, strlen(src) + 1);
        return strlen(out);
    }
    if (!strchr(out, '.'))
        n += snprintf(out + n, size - (size_t)n, ".0");
    return (size_t)n;
}

int zs_json_serialize(const struct zs_json *node, struct zs_buf *out)
{
    char num[64];
    size_t n;
    switch (node->type) {
    case ZS_JT_NULL:
        return zs_buf_append(out, "null", 4) < 0 ? -2 : 0;
    case ZS_JT_BOOL:
        return zs_buf_append(out, node->num.b ? "true" : "false", node->num.b ? 4 : 5) < 0 ? -2 : 0;
    case ZS_JT_NUMBER:
        if (node->num_kind == ZS_JN_INT)
            n = (size_t)snprintf(num, sizeof(num), "%lld", (long long)node->num.i);
        else if (node->num_kind == ZS_JN_UINT)
            n = (size_t)snprintf(num, sizeof(num), "%llu", (unsigned long long)node->num.u);
        else
            n = format_double(node->num.d, num, sizeof(num));
        return zs_buf_append(out, num, n) < 0 ? -2 : 0;
    case ZS_JT_STRING:
        return put_string(out, node->str, node->len);
    case ZS_JT_ARRAY:
        if (zs_buf_append(out, "[", 1) < 0)
            return -2;
        for (size_t i = 0; i < node->len; i++) {
            if ((i && zs_buf_append(out, ",", 1) < 0) || zs_json_serialize(node->items[i], out) < 0)
                return -2;
        }
        return zs_buf_append(out, "]", 1) < 0 ? -2 : 0;
    default:
        if (zs_buf_append(out, "{", 1) < 0)
            return -2;
        for (size_t i = 0; i < node->len; i++) {
            const struct zs_json_member *m = &node->members[i];
            if ((i && zs_buf_append(out, ",", 1) < 0) || put_string(out, m->key, m->key_len) < 0 ||
                zs_buf_append(out, ":", 1) < 0 || zs_json_serialize(m->value, out) < 0)
                return -2;
        }
        return zs_buf_append(out, "}", 1) < 0 ? -2 : 0;
    }
}
