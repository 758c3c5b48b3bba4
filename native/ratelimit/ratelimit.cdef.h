/* cffi declarations of the shared rate-limit table (zsratelimit.h). */
#define ZS_RL_KEY_MAX 256
#define ZS_RL_LIMITS 3

enum zs_rl_result {
    ZS_RL_BAD_ARGS = -1,
    ZS_RL_ALLOWED = 0,
    ZS_RL_LIMITED = 1,
    ZS_RL_EXCEEDED_MINUTE = 2,
    ZS_RL_EXCEEDED_HOUR = 3,
    ZS_RL_TABLE_FULL = 4,
};
enum zs_rl_kind { ZS_RL_KIND_WINDOWS = 0, ZS_RL_KIND_EX = 1 };

struct zs_rl_entry {
    uint32_t kind;
    uint32_t key_len;
    uint8_t key[256];
    int64_t ahead_ns[3];
};
struct zs_rl_stats {
    uint64_t live;
    uint64_t max_buckets;
    uint64_t slots;
    uint64_t reclaimed;
    uint64_t refused;
};
struct zs_rl_table;

struct zs_rl_table *zs_rl_create(uint64_t max_buckets, char **errmsg);
void zs_rl_destroy(struct zs_rl_table *table);
int64_t zs_rl_check(struct zs_rl_table *table, const void *key, size_t key_len, uint64_t per_second,
                    uint64_t per_minute, uint64_t per_hour);
int64_t zs_rl_check_ex(struct zs_rl_table *table, const void *key, size_t key_len,
                       uint64_t rate_milli, uint64_t burst, uint64_t *retry_after_ms);
void zs_rl_set_clock(struct zs_rl_table *table, int64_t now_ns);
int64_t zs_rl_now(struct zs_rl_table *table);
int zs_rl_export(struct zs_rl_table *table, uint64_t *cursor, struct zs_rl_entry *entry);
int zs_rl_import(struct zs_rl_table *table, const struct zs_rl_entry *entry, char **errmsg);
void zs_rl_stats(struct zs_rl_table *table, struct zs_rl_stats *stats);
uint64_t zs_rl_helper_rate_limit(struct zs_run *run, void *cookie, uint64_t key, uint64_t key_len,
                                 uint64_t per_second, uint64_t per_minute, uint64_t per_hour);
uint64_t zs_rl_helper_rate_limit_ex(struct zs_run *run, void *cookie, uint64_t key,
                                    uint64_t key_len, uint64_t rate_milli, uint64_t burst,
                                    uint64_t out_retry_after_ms);
