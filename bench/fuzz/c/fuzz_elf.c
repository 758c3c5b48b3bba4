/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fuzz_elf.c: libFuzzer target for the BPF ELF loader and the verifier.
 *
 * The input is an ELF object as a site tar would carry it. Loading must either
 * fail with a message or give a program whose every entry starts and runs
 * (briefly, with a budget) on the interpreter; both engines must agree on
 * whether it loads and on the entries' names. ASan/UBSan catch any read past
 * the input, overflow or use after free in the parser.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "include/zsvm.h"

static uint64_t helper_any(struct zs_run *run, void *cookie, uint64_t r1, uint64_t r2, uint64_t r3,
                           uint64_t r4, uint64_t r5)
{
    return r1;
}

/* Every helper the SDK declares (helper_names.h is generated from sdk/zeroserve.h
 * by native_build.py), so real scripts' relocations resolve and loading goes on
 * to the verifier. */
#define HELPER(name) {name, helper_any, NULL},
static const struct zs_helper_def HELPERS[] = {
#include "helper_names.h"
};
#define NUM_HELPERS (sizeof(HELPERS) / sizeof(HELPERS[0]))

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *err_interp = NULL, *err_jit = NULL;
    struct zs_program *prog = zs_program_load_elf(data, size, HELPERS, NUM_HELPERS, ZS_ENGINE_INTERP, &err_interp);
    struct zs_program *jit = zs_program_load_elf(data, size, HELPERS, NUM_HELPERS, ZS_ENGINE_JIT, &err_jit);
    if (!prog != !jit) {
        fprintf(stderr, "fuzz_elf: loads on one engine only: %s\n", err_interp ? err_interp : err_jit);
        abort();
    }
    if (!prog) {
        if (!err_interp || !*err_interp || !err_jit || !*err_jit) {
            fprintf(stderr, "fuzz_elf: a failed load gave no message\n");
            abort();
        }
        free(err_interp);
        free(err_jit);
        return 0;
    }
    int entries = zs_program_num_entries(prog);
    if (entries != zs_program_num_entries(jit))
        abort();
    for (int i = 0; i < entries; i++) {
        const char *name = zs_program_entry_name(prog, i);
        if (strcmp(name, zs_program_entry_name(jit, i)) != 0 || zs_program_find_entry(prog, name) < 0)
            abort();
        struct zs_run *run = zs_run_new(prog, 64 * 1024, NULL, NULL);
        if (run) {
            zs_run_start(run, i, NULL, 64);
            zs_run_free(run);
        }
    }
    zs_program_free(prog);
    zs_program_free(jit);
    return 0;
}
