/* Loads the initramfs's kernel modules (virtio, virtio-serial, block, squashfs, overlay, vsock)
 * in the order the image builder wrote to DIR/load-order: one module name a line, its file
 * DIR/NAME.ko, dependencies first (the format: src/images/load-order.ts and docs/images.md). The
 * builder resolves the order from each module's .modinfo depends=, so PID 1 parses no ELF. */
#include "modules.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "util.h"

#define MAX_ORDER_FILE 4096
#define MAX_NAME 55 /* the kernel's MODULE_NAME_LEN, without its NUL */

/* 1 to 55 characters of [A-Za-z0-9_], as the builder writes them: never a path. */
static bool module_name(const char *s)
{
    size_t n = strlen(s);
    return n >= 1 && n <= MAX_NAME &&
           strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_") == n;
}

static void load(const char *dir, const char *name)
{
    char path[320];
    snprintf(path, sizeof path, "%s/%s.ko", dir, name);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || (syscall(SYS_finit_module, fd, "", 0) < 0 && errno != EEXIST))
        say("module %s: %s", name, strerror(errno));
    if (fd >= 0)
        close(fd);
}

void load_modules(const char *dir)
{
    char order[320];
    snprintf(order, sizeof order, "%s/load-order", dir);
    char *list = read_file(order, MAX_ORDER_FILE, NULL);
    if (!list) {
        say("%s: %s: no kernel modules loaded (the initramfs must list them, dependencies first; "
            "rebuild it with emberd images build)", order, strerror(errno));
        return;
    }
    char *save = NULL;
    for (char *name = strtok_r(list, "\n", &save); name; name = strtok_r(NULL, "\n", &save)) {
        if (module_name(name))
            load(dir, name);
        else
            say("%s: \"%.64s\" is not a module name; skipped", order, name);
    }
    free(list);
}
