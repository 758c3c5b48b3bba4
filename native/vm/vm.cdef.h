/* cffi declarations of the VM's public API (include/zsvm.h), plus the one
 * dispatcher through which Python callables serve as helpers. */
struct zs_program;
struct zs_run;

enum zs_status { ZS_DONE = 0, ZS_FAULT = 1, ZS_PREEMPTED = 2, ZS_SUSPENDED = 3 };
enum zs_engine { ZS_ENGINE_INTERP = 0, ZS_ENGINE_JIT = 1 };
enum zs_fault {
    ZS_FAULT_KIND_NONE = 0,
    ZS_FAULT_KIND_MEMORY = 1,
    ZS_FAULT_KIND_HELPER = 2,
    ZS_FAULT_KIND_TRAP = 3,
};

typedef uint64_t (*zs_helper_fn)(struct zs_run *run, void *cookie, uint64_t r1, uint64_t r2,
                                 uint64_t r3, uint64_t r4, uint64_t r5);

struct zs_helper_def {
    const char *name;
    zs_helper_fn fn;
    void *cookie;
};

struct zs_program *zs_program_load_elf(const void *elf, size_t len,
                                       const struct zs_helper_def *helpers, size_t num_helpers,
                                       int engine, char **errmsg);
struct zs_program *zs_program_load_raw(const void *code, size_t len,
                                       const struct zs_helper_def *helpers, size_t num_helpers,
                                       int engine, char **errmsg);
void zs_program_free(struct zs_program *prog);
int zs_jit_available(void);
int zs_program_engine(const struct zs_program *prog);
int zs_program_find_entry(const struct zs_program *prog, const char *section);
int zs_program_num_entries(const struct zs_program *prog);
const char *zs_program_entry_name(const struct zs_program *prog, int index);
size_t zs_program_called_helpers(const struct zs_program *prog, const char **names, size_t max);

struct zs_run *zs_run_new(const struct zs_program *prog, size_t arena_size, void *host,
                          char **errmsg);
void zs_run_free(struct zs_run *run);
uint64_t zs_run_alloc(struct zs_run *run, size_t size);
void zs_run_reset(struct zs_run *run);
void *zs_run_host_ptr(struct zs_run *run, uint64_t addr, uint64_t len);
int zs_run_start(struct zs_run *run, int entry, const uint64_t args[5], int64_t budget);
int zs_run_resume(struct zs_run *run, uint64_t r0, int64_t budget);
int zs_run_status(const struct zs_run *run);
uint64_t zs_run_result(const struct zs_run *run);
const uint64_t *zs_run_regs(const struct zs_run *run);
void *zs_run_host(const struct zs_run *run);
const char *zs_run_fault_message(const struct zs_run *run);
uint32_t zs_run_fault_pc(const struct zs_run *run);
uint64_t zs_run_fault_addr(const struct zs_run *run);
int zs_run_fault_kind(const struct zs_run *run);

void *zs_guest_ptr(struct zs_run *run, uint64_t addr, uint64_t len, int writable);
void zs_helper_fault(struct zs_run *run, const char *fmt, ...);
void zs_helper_pend(struct zs_run *run);
void zs_helper_exit(struct zs_run *run, uint64_t r0);
int zs_run_charge(struct zs_run *run, size_t bytes);
void zs_run_uncharge(struct zs_run *run, size_t bytes);
uint64_t zs_helper_unwind(struct zs_run *run, void *cookie, uint64_t r1, uint64_t r2, uint64_t r3,
                          uint64_t r4, uint64_t r5);

void free(void *ptr);

extern "Python" uint64_t zs_py_helper(struct zs_run *run, void *cookie, uint64_t r1, uint64_t r2,
                                      uint64_t r3, uint64_t r4, uint64_t r5);
