/* SPDX-License-Identifier: Apache-2.0 */
/*
 * loader.c: turns a relocatable BPF ELF object (clang or zig, -target bpf)
 * into a program: code sections concatenated as entry points, data sections
 * laid out as the arena image, relocations applied, helpers bound by name.
 * Every offset read from the file is bounds-checked: a malformed object is an
 * error message, never a crash.
 */
#include <elf.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "zsvm_int.h"

/* Globals beyond this are refused rather than allocated (a fuzzed .bss can
 * claim any size). */
#define ZS_MAX_IMAGE (16u << 20)

enum sec_kind { SEC_OTHER, SEC_CODE, SEC_RODATA, SEC_DATA };

struct sec {
    const Elf64_Shdr *hdr;
    const char *name;
    enum sec_kind kind;
    uint64_t place; /* SEC_CODE: first instruction; data: arena offset */
};

struct elf {
    const uint8_t *base;
    size_t len;
    const Elf64_Shdr *shdrs;
    unsigned nsec;
    struct sec *secs;
    const Elf64_Sym *syms;
    size_t nsyms;
    const Elf64_Shdr *strtab; /* of the symbol table */
    char **errmsg;
};

static int fail(struct elf *e, char *msg)
{
    if (e->errmsg)
        *e->errmsg = msg;
    else
        free(msg);
    return -1;
}

/* Does [off, off+size) lie within the file? */
static int in_file(const struct elf *e, uint64_t off, uint64_t size)
{
    return off <= e->len && size <= e->len - off;
}

/* NUL-terminated string at `off` of string table section `tab`, or NULL. */
static const char *elf_str(const struct elf *e, const Elf64_Shdr *tab, uint64_t off)
{
    if (tab->sh_type != SHT_STRTAB || off >= tab->sh_size)
        return NULL;
    const char *s = (const char *)e->base + tab->sh_offset + off;
    if (!memchr(s, '\0', tab->sh_size - off))
        return NULL;
    return s;
}

static const char *sym_name(const struct elf *e, const Elf64_Sym *sym)
{
    const char *n = elf_str(e, e->strtab, sym->st_name);
    return n ? n : "";
}

/* zig emits unwind tables; nothing in the guest unwinds, so they stay unloaded. */
static int is_unwind_table(const char *name)
{
    return strcmp(name, ".eh_frame") == 0 || strcmp(name, ".eh_frame_hdr") == 0 ||
           strcmp(name, ".gcc_except_table") == 0;
}

static int read_sections(struct elf *e)
{
    const Elf64_Ehdr *eh = (const Elf64_Ehdr *)e->base;
    if (e->len < sizeof(*eh) || memcmp(eh->e_ident, ELFMAG, SELFMAG) != 0)
        return fail(e, zs_errmsg("not an ELF file"));
    if (eh->e_ident[EI_CLASS] != ELFCLASS64 || eh->e_ident[EI_DATA] != ELFDATA2LSB)
        return fail(e, zs_errmsg("not a 64-bit little-endian ELF object (compile with -target bpfel)"));
    if (eh->e_type != ET_REL)
        return fail(e, zs_errmsg("ELF type %u is not a relocatable object (compile with -c)", eh->e_type));
    if (eh->e_machine != EM_BPF_MACHINE)
        return fail(e, zs_errmsg("ELF machine %u is not BPF (compile with -target bpf)", eh->e_machine));
    if (eh->e_shnum == 0 || eh->e_shentsize != sizeof(Elf64_Shdr) ||
        !in_file(e, eh->e_shoff, (uint64_t)eh->e_shnum * sizeof(Elf64_Shdr)) ||
        eh->e_shoff % 8 != 0)
        return fail(e, zs_errmsg("ELF section header table is missing or outside the file"));
    if (eh->e_shstrndx >= eh->e_shnum)
        return fail(e, zs_errmsg("ELF section name table index %u is out of range", eh->e_shstrndx));
    e->shdrs = (const Elf64_Shdr *)(e->base + eh->e_shoff);
    e->nsec = eh->e_shnum;
    e->secs = calloc(e->nsec, sizeof(*e->secs));
    if (!e->secs)
        return fail(e, zs_errmsg("out of memory reading ELF sections"));
    for (unsigned i = 0; i < e->nsec; i++) {
        const Elf64_Shdr *sh = &e->shdrs[i];
        if (sh->sh_type != SHT_NOBITS && sh->sh_type != SHT_NULL && !in_file(e, sh->sh_offset, sh->sh_size))
            return fail(e, zs_errmsg("ELF section #%u lies outside the file", i));
    }
    const Elf64_Shdr *shstr = &e->shdrs[eh->e_shstrndx];
    for (unsigned i = 0; i < e->nsec; i++) {
        const Elf64_Shdr *sh = &e->shdrs[i];
        struct sec *s = &e->secs[i];
        s->hdr = sh;
        s->name = elf_str(e, shstr, sh->sh_name);
        if (!s->name)
            return fail(e, zs_errmsg("ELF section #%u has an invalid name", i));
        uint64_t want = SHF_ALLOC | SHF_EXECINSTR;
        if (is_unwind_table(s->name))
            continue;
        if (sh->sh_type == SHT_PROGBITS && (sh->sh_flags & want) == want && sh->sh_size > 0) {
            s->kind = SEC_CODE;
            if (sh->sh_size % sizeof(struct ebpf_inst) != 0)
                return fail(e, zs_errmsg("code section %s is %llu bytes, not a multiple of 8",
                                         s->name, (unsigned long long)sh->sh_size));
        } else if ((sh->sh_type == SHT_PROGBITS || sh->sh_type == SHT_NOBITS) &&
                   (sh->sh_flags & SHF_ALLOC) && !(sh->sh_flags & SHF_EXECINSTR)) {
            s->kind = (sh->sh_flags & SHF_WRITE) ? SEC_DATA : SEC_RODATA;
        }
        if (sh->sh_type == SHT_SYMTAB) {
            if (e->syms)
                return fail(e, zs_errmsg("ELF object has more than one symbol table"));
            if (sh->sh_entsize != sizeof(Elf64_Sym) || sh->sh_size % sizeof(Elf64_Sym) != 0 ||
                sh->sh_offset % 8 != 0 || sh->sh_link >= e->nsec ||
                e->shdrs[sh->sh_link].sh_type != SHT_STRTAB)
                return fail(e, zs_errmsg("ELF symbol table %s is malformed", s->name));
            e->syms = (const Elf64_Sym *)(e->base + sh->sh_offset);
            e->nsyms = sh->sh_size / sizeof(Elf64_Sym);
            e->strtab = &e->shdrs[sh->sh_link];
        }
    }
    if (!e->syms)
        return fail(e, zs_errmsg("ELF object has no symbol table"));
    return 0;
}

static int layout_code(struct elf *e, struct zs_program *prog)
{
    uint64_t total = 0;
    unsigned nentries = 0;
    for (unsigned i = 0; i < e->nsec; i++) {
        if (e->secs[i].kind != SEC_CODE)
            continue;
        e->secs[i].place = total;
        total += e->secs[i].hdr->sh_size / sizeof(struct ebpf_inst);
        nentries++;
        if (total > ZS_MAX_INSTS)
            return fail(e, zs_errmsg("program has more than the limit of %u instructions", ZS_MAX_INSTS));
    }
    if (nentries == 0)
        return fail(e, zs_errmsg("ELF object has no code section (no function was compiled?)"));
    prog->insts = malloc(total * sizeof(struct ebpf_inst));
    prog->entries = calloc(nentries, sizeof(*prog->entries));
    if (!prog->insts || !prog->entries)
        return fail(e, zs_errmsg("out of memory loading code"));
    prog->num_insts = (uint32_t)total;
    for (unsigned i = 0; i < e->nsec; i++) {
        const struct sec *s = &e->secs[i];
        if (s->kind != SEC_CODE)
            continue;
        memcpy(prog->insts + s->place, e->base + s->hdr->sh_offset, s->hdr->sh_size);
        struct zs_entry *en = &prog->entries[prog->num_entries++];
        en->start = (uint32_t)s->place;
        en->end = (uint32_t)(s->place + s->hdr->sh_size / sizeof(struct ebpf_inst));
        if (!(en->name = strdup(s->name)))
            return fail(e, zs_errmsg("out of memory loading code"));
    }
    return 0;
}

/* Read-only sections first (they end at ro_end), then writable ones. */
static int layout_data(struct elf *e, struct zs_program *prog)
{
    uint64_t top = 0;
    for (int pass = 0; pass < 2; pass++) {
        enum sec_kind kind = pass == 0 ? SEC_RODATA : SEC_DATA;
        for (unsigned i = 0; i < e->nsec; i++) {
            struct sec *s = &e->secs[i];
            if (s->kind != kind)
                continue;
            uint64_t align = s->hdr->sh_addralign ? s->hdr->sh_addralign : 1;
            if (align & (align - 1) || align > 4096)
                return fail(e, zs_errmsg("data section %s has an invalid alignment %llu", s->name,
                                         (unsigned long long)align));
            top = (top + align - 1) & ~(align - 1);
            if (s->hdr->sh_size > ZS_MAX_IMAGE || top + s->hdr->sh_size > ZS_MAX_IMAGE)
                return fail(e, zs_errmsg("global data exceeds the limit of %u MiB (section %s)",
                                         ZS_MAX_IMAGE >> 20, s->name));
            s->place = top;
            top += s->hdr->sh_size;
        }
        if (pass == 0)
            prog->ro_size = top;
    }
    prog->data_size = top - prog->ro_size;
    if (top == 0)
        return 0;
    prog->image = calloc(1, top);
    if (!prog->image)
        return fail(e, zs_errmsg("out of memory loading global data"));
    for (unsigned i = 0; i < e->nsec; i++) {
        const struct sec *s = &e->secs[i];
        if ((s->kind == SEC_RODATA || s->kind == SEC_DATA) && s->hdr->sh_type == SHT_PROGBITS)
            memcpy(prog->image + s->place, e->base + s->hdr->sh_offset, s->hdr->sh_size);
    }
    return 0;
}

/* Guest address of symbol + addend, which must lie in a data section. */
static int data_address(struct elf *e, const Elf64_Sym *sym, uint64_t addend, const char *where,
                        uint64_t *out)
{
    if (sym->st_shndx == SHN_COMMON)
        return fail(e, zs_errmsg("%s: common symbol %s is not supported (compile with -fno-common)",
                                 where, sym_name(e, sym)));
    if (sym->st_shndx == SHN_UNDEF || sym->st_shndx >= e->nsec)
        return fail(e, zs_errmsg("%s: reference to undefined symbol '%s'", where, sym_name(e, sym)));
    const struct sec *t = &e->secs[sym->st_shndx];
    if (t->kind != SEC_RODATA && t->kind != SEC_DATA)
        return fail(e, zs_errmsg("%s: reference to '%s' in section %s, which is not global data",
                                 where, sym_name(e, sym), t->name));
    *out = ZS_GUEST_BASE + t->place + sym->st_value + addend;
    return 0;
}

static int find_helper(const struct zs_program *prog, const char *name)
{
    for (uint32_t i = 0; i < prog->num_helpers; i++)
        if (prog->helpers[i].name && prog->helpers[i].fn && strcmp(prog->helpers[i].name, name) == 0)
            return (int)i;
    return -1;
}

static int relocate_code(struct elf *e, struct zs_program *prog, const struct sec *target,
                         const Elf64_Rel *rel, uint8_t *named_call)
{
    uint32_t type = ELF64_R_TYPE(rel->r_info);
    uint64_t symi = ELF64_R_SYM(rel->r_info);
    uint64_t nslots = target->hdr->sh_size / sizeof(struct ebpf_inst);
    char where[128];
    snprintf(where, sizeof(where), "%s+%llu", target->name, (unsigned long long)rel->r_offset);
    if (rel->r_offset % 8 != 0 || rel->r_offset / 8 >= nslots)
        return fail(e, zs_errmsg("%s: relocation outside its code section", where));
    if (symi == 0 || symi >= e->nsyms)
        return fail(e, zs_errmsg("%s: relocation names invalid symbol #%llu", where, (unsigned long long)symi));
    const Elf64_Sym *sym = &e->syms[symi];
    uint32_t pc = (uint32_t)(target->place + rel->r_offset / 8);
    struct ebpf_inst *in = &prog->insts[pc];

    if (type == R_BPF_64_64) {
        if (in->opcode != EBPF_OP_LDDW || rel->r_offset / 8 + 1 >= nslots)
            return fail(e, zs_errmsg("%s: R_BPF_64_64 relocation on an instruction that is not lddw", where));
        uint64_t addend = (uint32_t)in[0].imm | ((uint64_t)(uint32_t)in[1].imm << 32);
        uint64_t addr;
        if (data_address(e, sym, addend, where, &addr) != 0)
            return -1;
        in[0].imm = (int32_t)(uint32_t)addr;
        in[1].imm = (int32_t)(uint32_t)(addr >> 32);
        in[0].src = 0;
        return 0;
    }
    if (type == R_BPF_64_32) {
        if (in->opcode != EBPF_OP_CALL)
            return fail(e, zs_errmsg("%s: R_BPF_64_32 relocation on an instruction that is not a call", where));
        const char *name = sym_name(e, sym);
        if (sym->st_shndx == SHN_UNDEF) {
            int h = name[0] ? find_helper(prog, name) : -1;
            if (h < 0)
                return fail(e, zs_errmsg("%s: call to unknown helper '%s'", where, name));
            in->src = EBPF_CALL_HELPER;
            in->imm = h;
            named_call[pc] = 1;
            return 0;
        }
        if (sym->st_shndx >= e->nsec || e->secs[sym->st_shndx].kind != SEC_CODE || sym->st_value % 8)
            return fail(e, zs_errmsg("%s: call to '%s', which is not a function", where, name));
        const struct sec *callee = &e->secs[sym->st_shndx];
        /* The callee is symbol + (imm + 1) instructions (imm is -1 for a
         * function symbol, the offset for a section symbol). */
        int64_t index = (int64_t)(sym->st_value / 8) + (int64_t)in->imm + 1;
        if (index < 0 || (uint64_t)index >= callee->hdr->sh_size / 8)
            return fail(e, zs_errmsg("%s: call to '%s' lands outside its section", where, name));
        int64_t dest = (int64_t)callee->place + index;
        in->src = EBPF_CALL_LOCAL;
        in->imm = (int32_t)(dest - (int64_t)pc - 1);
        return 0;
    }
    return fail(e, zs_errmsg("%s: unsupported relocation type %u", where, type));
}

static int relocate_data(struct elf *e, struct zs_program *prog, const struct sec *target,
                         const Elf64_Rel *rel)
{
    uint32_t type = ELF64_R_TYPE(rel->r_info);
    uint64_t symi = ELF64_R_SYM(rel->r_info);
    char where[128];
    snprintf(where, sizeof(where), "%s+%llu", target->name, (unsigned long long)rel->r_offset);
    if (type != R_BPF_64_ABS64)
        return fail(e, zs_errmsg("%s: unsupported relocation type %u in global data", where, type));
    if (target->hdr->sh_type != SHT_PROGBITS || rel->r_offset > target->hdr->sh_size ||
        target->hdr->sh_size - rel->r_offset < 8)
        return fail(e, zs_errmsg("%s: relocation outside its data section", where));
    if (symi == 0 || symi >= e->nsyms)
        return fail(e, zs_errmsg("%s: relocation names invalid symbol #%llu", where, (unsigned long long)symi));
    uint8_t *p = prog->image + target->place + rel->r_offset;
    uint64_t addend, addr;
    memcpy(&addend, p, 8);
    if (data_address(e, &e->syms[symi], addend, where, &addr) != 0)
        return -1;
    memcpy(p, &addr, 8);
    return 0;
}

static int relocate(struct elf *e, struct zs_program *prog, uint8_t *named_call)
{
    for (unsigned i = 0; i < e->nsec; i++) {
        const Elf64_Shdr *sh = &e->shdrs[i];
        if (sh->sh_type != SHT_REL && sh->sh_type != SHT_RELA)
            continue;
        if (sh->sh_info >= e->nsec)
            return fail(e, zs_errmsg("relocation section %s targets section #%u, which does not exist",
                                     e->secs[i].name, sh->sh_info));
        const struct sec *target = &e->secs[sh->sh_info];
        if (target->kind == SEC_OTHER)
            continue; /* debug info, BTF: not loaded */
        if (sh->sh_type == SHT_RELA)
            return fail(e, zs_errmsg("relocation section %s uses RELA, which BPF objects do not", e->secs[i].name));
        if (sh->sh_entsize != sizeof(Elf64_Rel) || sh->sh_size % sizeof(Elf64_Rel) != 0 ||
            sh->sh_offset % 8 != 0)
            return fail(e, zs_errmsg("relocation section %s is malformed", e->secs[i].name));
        const Elf64_Rel *rels = (const Elf64_Rel *)(e->base + sh->sh_offset);
        size_t n = sh->sh_size / sizeof(Elf64_Rel);
        for (size_t r = 0; r < n; r++) {
            int rc = target->kind == SEC_CODE ? relocate_code(e, prog, target, &rels[r], named_call)
                                              : relocate_data(e, prog, target, &rels[r]);
            if (rc != 0)
                return -1;
        }
    }
    return 0;
}

/* Helpers are bound by name only: a helper call the relocations did not name
 * would index the host's table blindly. */
static int check_unnamed_calls(struct elf *e, const struct zs_program *prog, const uint8_t *named_call)
{
    for (uint32_t pc = 0; pc < prog->num_insts; pc++) {
        const struct ebpf_inst *in = &prog->insts[pc];
        if (in->opcode == EBPF_OP_CALL && in->src == EBPF_CALL_HELPER && !named_call[pc])
            return fail(e, zs_errmsg("instruction %u calls helper number %d without naming it: "
                                     "declare helpers as extern functions",
                                     pc, in->imm));
        if (in->opcode == EBPF_OP_LDDW)
            pc++; /* the second slot is data */
    }
    return 0;
}

int zs_load_elf(struct zs_program *prog, const void *elf, size_t len, char **errmsg)
{
    struct elf e = {.len = len, .errmsg = errmsg};
    uint8_t *named_call = NULL;
    int rc = -1;
    /* Tables are read in place, so work on an aligned copy of the file. */
    uint8_t *copy = malloc(len ? len : 1);
    if (!copy) {
        fail(&e, zs_errmsg("out of memory loading an ELF object of %zu bytes", len));
        return -1;
    }
    if (len)
        memcpy(copy, elf, len);
    e.base = copy;
    if (read_sections(&e) != 0 || layout_code(&e, prog) != 0 || layout_data(&e, prog) != 0)
        goto out;
    named_call = calloc(prog->num_insts, 1);
    if (!named_call) {
        fail(&e, zs_errmsg("out of memory loading code"));
        goto out;
    }
    if (relocate(&e, prog, named_call) != 0 || check_unnamed_calls(&e, prog, named_call) != 0)
        goto out;
    rc = 0;
out:
    free(named_call);
    free(e.secs);
    free(copy);
    return rc;
}
