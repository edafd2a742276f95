/* The forked child of a normal-path exec (see spawn.h). A child that cannot start its program
 * ends as a shell would: 127 not found, 126 not executable (or anything else that failed). */
#include "spawn.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "limits.h"
#include "pty.h"
#include "util.h"

static const char *const base_env[] = {
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME=/root",
    "LANG=C.UTF-8",
};
#define BASE_ENV_LEN (sizeof base_env / sizeof base_env[0])

char **spawn_base_env(void)
{
    static char *env[BASE_ENV_LEN + 1];
    for (size_t i = 0; i < BASE_ENV_LEN; i++)
        env[i] = (char *)base_env[i];
    return env;
}

static bool has_nul(const struct tlv *t) { return memchr(t->val, 0, t->len) != NULL; }

const char *spawn_check(const struct frame *f, char *msg, size_t msglen)
{
    size_t nargv = 0, ncode = 0;
    struct tlv t;
    struct tlv_iter it;
    tlv_iter_init(&it, f);
    while (tlv_next(&it, &t)) {
        if (t.tag == 1 || t.tag == 2 || t.tag == 3 || t.tag == 4) {
            /* These become C strings for execve/chdir. */
            if (has_nul(&t)) {
                snprintf(msg, msglen, "EXEC field %s contains a NUL byte", t.spec->name);
                return E_BAD_PAYLOAD;
            }
        }
        nargv += t.tag == 1;
        ncode += t.tag == 2;
        if (t.tag == 3 && (t.len == 0 || t.val[0] == '=' || !memchr(t.val, '=', t.len))) {
            snprintf(msg, msglen, "EXEC env entries must be KEY=VALUE");
            return E_BAD_PAYLOAD;
        }
    }
    if ((nargv > 0) == (ncode > 0)) {
        snprintf(msg, msglen, "EXEC needs exactly one of argv and code");
        return E_BAD_PAYLOAD;
    }
    return NULL;
}

static char *dup_field(const struct tlv *t)
{
    char *s = malloc(t->len + 1);
    if (!s)
        _exit(126);
    memcpy(s, t->val, t->len);
    s[t->len] = 0;
    return s;
}

/* Runs in the forked child: builds argv/env from the checked EXEC payload, which the child has
 * its own copy of, and execs. Never returns. */
static void __attribute__((noreturn)) child(const struct frame *f, int in, int out, int err)
{
    setsid();
    /* Before anything of the exec runs: its processes count against the sandbox's limits. */
    if (limits_enter_exec() < 0) {
        dprintf(err, "emberd-init: cannot put the exec under the sandbox's limits: %s\n", strerror(errno));
        _exit(126);
    }
    if (dup2(in, 0) < 0 || dup2(out, 1) < 0 || dup2(err, 2) < 0)
        _exit(126);
    bool tty = pty_wanted(f, NULL, NULL);
    if (tty)
        pty_child_setup();
    /* Every other fd of ours is O_CLOEXEC. Undo PID 1's signal setup: masks and ignored
     * dispositions survive execve. */
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    signal(SIGPIPE, SIG_DFL);

    size_t nargs = 0, nenv = 0;
    struct tlv t;
    struct tlv_iter it;
    tlv_iter_init(&it, f);
    while (tlv_next(&it, &t)) {
        nargs += t.tag == 1 || t.tag == 2;
        nenv += t.tag == 3;
    }
    const char *cwd = NULL;
    char *code = NULL, *interp = NULL;
    char **argv = calloc(nargs + 64, sizeof *argv);
    char **env = calloc(nenv + BASE_ENV_LEN + 2, sizeof *env); /* + TERM on a tty */
    if (!argv || !env)
        _exit(126);
    for (size_t i = 0; i < BASE_ENV_LEN; i++)
        env[i] = (char *)base_env[i];
    size_t argc = 0, envc = BASE_ENV_LEN;
    tlv_iter_init(&it, f);
    while (tlv_next(&it, &t)) {
        if (t.tag == 1) {
            argv[argc++] = dup_field(&t);
        } else if (t.tag == 2) {
            code = dup_field(&t);
        } else if (t.tag == 4) {
            cwd = dup_field(&t);
        } else if (t.tag == 3) {
            char *kv = dup_field(&t);
            size_t klen = strchr(kv, '=') - kv + 1;
            size_t j = 0;
            while (j < envc && strncmp(env[j], kv, klen) != 0)
                j++;
            env[j] = kv; /* override a base entry or an earlier one, else append */
            envc += j == envc;
        }
    }
    if (tty) {
        size_t j = 0;
        while (j < envc && strncmp(env[j], "TERM=", 5) != 0)
            j++;
        if (j == envc)
            env[envc++] = PTY_TERM;
    }
    if (code) {
        /* The pack's interpreter: one argument per line, then the code as the last argument. */
        interp = read_file(opt.interp_file, 4096, NULL);
        if (!interp) {
            dprintf(2, "emberd-init: %s: %s\n", opt.interp_file, strerror(errno));
            _exit(127);
        }
        for (char *line = strtok(interp, "\n"); line && argc < 62; line = strtok(NULL, "\n"))
            argv[argc++] = line;
        if (argc == 0) {
            dprintf(2, "emberd-init: %s: no interpreter in the file\n", opt.interp_file);
            _exit(127);
        }
        argv[argc++] = code;
    }
    if (cwd ? chdir(cwd) < 0 : chdir("/root") < 0 && chdir("/") < 0) {
        dprintf(2, "emberd-init: cd %s: %s\n", cwd ? cwd : "/root", strerror(errno));
        _exit(126);
    }
    environ = env; /* execvp searches the PATH of the new environment */
    execvp(argv[0], argv);
    int e = errno;
    dprintf(2, "emberd-init: %s: %s\n", argv[0], strerror(e));
    _exit(e == ENOENT ? 127 : 126);
}

pid_t spawn_child(const struct frame *f, int cfd[3])
{
    pid_t pid = fork();
    if (pid == 0)
        child(f, cfd[0], cfd[1], cfd[2]);
    if (pid > 0) {
        for (int i = 0; i < 3; i++) {
            if (cfd[i] >= 0)
                close(cfd[i]);
            cfd[i] = -1;
        }
    }
    return pid;
}
