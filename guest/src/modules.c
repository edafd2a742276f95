/* Loads the initramfs's kernel modules (virtio, virtio-serial, block, squashfs, overlay, vsock)
 * in dependency order. There is no modules.dep: each module's own .modinfo says depends=. */
#include "modules.h"

#include <dirent.h>
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "util.h"

#define MAX_MODULES 64

struct module {
    char name[64];
    char path[320];
    char deps[256]; /* comma-separated module names */
    bool loaded;
};

static struct module mods[MAX_MODULES];
static int nmods;

/* Module names use '_'; file names may use '-'. */
static void normalize(char *s)
{
    for (; *s; s++)
        if (*s == '-')
            *s = '_';
}

/* Copies the depends= value out of the module's .modinfo section (an ELF64 relocatable). */
static void read_depends(const char *path, char *out, size_t outlen)
{
    out[0] = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0 || (size_t)st.st_size < sizeof(Elf64_Ehdr)) {
        if (fd >= 0)
            close(fd);
        return;
    }
    size_t size = (size_t)st.st_size;
    const uint8_t *m = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (m == MAP_FAILED)
        return;
    const Elf64_Ehdr *eh = (const void *)m;
    if (memcmp(eh->e_ident, ELFMAG, SELFMAG) != 0 || eh->e_ident[EI_CLASS] != ELFCLASS64 ||
        eh->e_shentsize != sizeof(Elf64_Shdr) || eh->e_shoff > size ||
        (size - eh->e_shoff) / sizeof(Elf64_Shdr) < eh->e_shnum || eh->e_shstrndx >= eh->e_shnum)
        goto out;
    const Elf64_Shdr *sh = (const void *)(m + eh->e_shoff);
    const Elf64_Shdr *strs = &sh[eh->e_shstrndx];
    if (strs->sh_offset > size || strs->sh_size > size - strs->sh_offset)
        goto out;
    for (int i = 0; i < eh->e_shnum; i++) {
        if (sh[i].sh_name >= strs->sh_size || sh[i].sh_offset > size || sh[i].sh_size > size - sh[i].sh_offset)
            continue;
        const char *secname = (const char *)m + strs->sh_offset + sh[i].sh_name;
        if (strncmp(secname, ".modinfo", strs->sh_size - sh[i].sh_name) != 0)
            continue;
        /* NUL-separated "key=value" strings. */
        const char *p = (const char *)m + sh[i].sh_offset, *end = p + sh[i].sh_size;
        while (p < end) {
            size_t len = strnlen(p, (size_t)(end - p));
            if (len > 8 && memcmp(p, "depends=", 8) == 0 && len - 8 < outlen) {
                memcpy(out, p + 8, len - 8);
                out[len - 8] = 0;
            }
            p += len + 1;
        }
        break;
    }
out:
    munmap((void *)m, size);
}

static bool deps_loaded(const struct module *mod)
{
    char deps[sizeof mod->deps];
    strcpy(deps, mod->deps);
    char *save = NULL;
    for (char *d = strtok_r(deps, ",", &save); d; d = strtok_r(NULL, ",", &save)) {
        normalize(d);
        for (int i = 0; i < nmods; i++)
            if (strcmp(mods[i].name, d) == 0 && !mods[i].loaded)
                return false; /* a dependency we have and have not loaded yet */
    }
    return true; /* (a dependency we do not have is assumed built in) */
}

static void load(struct module *mod)
{
    mod->loaded = true;
    int fd = open(mod->path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || (syscall(SYS_finit_module, fd, "", 0) < 0 && errno != EEXIST))
        say("module %s: %s", mod->name, strerror(errno));
    if (fd >= 0)
        close(fd);
}

void load_modules(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *de;
    while ((de = readdir(d)) && nmods < MAX_MODULES) {
        size_t len = strlen(de->d_name);
        if (len < 4 || strcmp(de->d_name + len - 3, ".ko") != 0 || len - 3 >= sizeof mods[0].name)
            continue;
        struct module *mod = &mods[nmods++];
        memcpy(mod->name, de->d_name, len - 3);
        mod->name[len - 3] = 0;
        normalize(mod->name);
        snprintf(mod->path, sizeof mod->path, "%s/%s", dir, de->d_name);
        read_depends(mod->path, mod->deps, sizeof mod->deps);
    }
    closedir(d);

    /* Topological order by repeated passes (a handful of modules: simplicity wins). */
    for (bool progress = true; progress;) {
        progress = false;
        for (int i = 0; i < nmods; i++) {
            if (!mods[i].loaded && deps_loaded(&mods[i])) {
                load(&mods[i]);
                progress = true;
            }
        }
    }
    for (int i = 0; i < nmods; i++) { /* a dependency cycle: try anyway, the kernel decides */
        if (!mods[i].loaded) {
            say("module %s: dependency cycle", mods[i].name);
            load(&mods[i]);
        }
    }
}
