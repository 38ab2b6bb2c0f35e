/*
 * faultinject.c - syscall fault injection for riskaudit's tests, loaded with LD_PRELOAD.
 *
 * Why: the audit log must survive a disk that fails in the middle of a write, an fsync
 * that reports EIO after the data went out, a rename that never happens. Real broken
 * disks are hard to summon on demand; this library wraps the libc entry points the
 * writer (CPython, Rust std) actually calls and makes them fail, deterministically, on
 * files under configured directories only.
 *
 * Build: gcc -shared -fPIC -O2 -o faultinject.so faultinject.c -ldl -lpthread
 *
 * Wrapped (each resolved with dlsym(RTLD_NEXT, ...)), by call group:
 *   write     write
 *   pwrite    pwrite pwrite64
 *   pwritev   pwritev pwritev64
 *   pwritev2  pwritev2 pwritev64v2
 *   fsync     fsync
 *   fdatasync fdatasync
 *   ftruncate ftruncate ftruncate64
 *   rename    rename renameat renameat2
 *   openat    open open64 openat openat64   (only opens that create or write)
 *
 * Spec (RAFAULT_SPEC at load time, or rafault_configure() at run time): key=value pairs
 * separated by ';' (whitespace around keys and values is ignored, empty pairs skipped):
 *   seed=<u64>            decisions are splitmix64(seed, index of the eligible call)
 *   rate=<0..1>           probability that an eligible call starts a fault (default 1)
 *   burst=<n>             after a fault fires, the next n eligible calls fail too (0)
 *   after=<n>             the first n eligible calls never fail (0)
 *   max=<n>               at most n faults in all (-1 or absent: unlimited)
 *   calls=<g,g,...>       eligible groups, or "all" (default all)
 *   errnos=<E,E,...>      EIO ENOSPC EROFS EDQUOT EACCES EOPNOTSUPP (default EIO,ENOSPC,EROFS);
 *                         EOPNOTSUPP is what a file system that refuses RWF_DSYNC says
 *   modes=<m,m,...>       none part all (default all three)
 *   prefixes=<d:d:...>    absolute directories; required for any fault to fire
 *   enabled=<0|1>         default 1
 * An eligible call is a call of an eligible group, made while enabled, on a path under
 * a prefix (fd calls: readlink /proc/self/fd/N; path calls: resolved against the dirfd
 * or the cwd; rename: either path). Only eligible calls advance the index.
 *
 * Optional: RAFAULT_LOG=<path> appends "group errno mode path\n" per injected fault
 * (written with the real write; ignored if the path is under a prefix).
 */
#undef _FORTIFY_SOURCE
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

#ifndef IOV_MAX
#define IOV_MAX 1024
#endif

#define EXPORT __attribute__((visibility("default")))
#define MAX_PREFIXES 32

/* ---- call groups, errnos, modes, symbols ------------------------------------------ */

enum group {
    G_WRITE, G_PWRITE, G_PWRITEV, G_PWRITEV2, G_FSYNC, G_FDATASYNC, G_FTRUNCATE,
    G_RENAME, G_OPENAT, NGROUPS
};
static const char *const group_names[NGROUPS] = {
    "write", "pwrite", "pwritev", "pwritev2", "fsync", "fdatasync", "ftruncate",
    "rename", "openat",
};

#define NERRNOS 6
static const int errno_values[NERRNOS] = {EIO, ENOSPC, EROFS, EDQUOT, EACCES, EOPNOTSUPP};
static const char *const errno_names[NERRNOS] = {"EIO", "ENOSPC", "EROFS", "EDQUOT", "EACCES",
                                                 "EOPNOTSUPP"};

enum mode { M_NONE, M_PART, M_ALL, NMODES };
static const char *const mode_names[NMODES] = {"none", "part", "all"};

enum sym {
    S_WRITE, S_PWRITE, S_PWRITE64, S_PWRITEV, S_PWRITEV64, S_PWRITEV2, S_PWRITEV64V2,
    S_FSYNC, S_FDATASYNC, S_FTRUNCATE, S_FTRUNCATE64, S_RENAME, S_RENAMEAT, S_RENAMEAT2,
    S_OPEN, S_OPEN64, S_OPENAT, S_OPENAT64, NSYMS
};
static const char *const sym_names[NSYMS] = {
    "write", "pwrite", "pwrite64", "pwritev", "pwritev64", "pwritev2", "pwritev64v2",
    "fsync", "fdatasync", "ftruncate", "ftruncate64", "rename", "renameat", "renameat2",
    "open", "open64", "openat", "openat64",
};

/* ---- the real functions ------------------------------------------------------------ */

typedef ssize_t (*write_fn)(int, const void *, size_t);
typedef ssize_t (*pwrite_fn)(int, const void *, size_t, off_t);
typedef ssize_t (*pwritev_fn)(int, const struct iovec *, int, off_t);
typedef ssize_t (*pwritev2_fn)(int, const struct iovec *, int, off_t, int);
typedef int (*fsync_fn)(int);
typedef int (*ftruncate_fn)(int, off_t);
typedef int (*rename_fn)(const char *, const char *);
typedef int (*renameat_fn)(int, const char *, int, const char *);
typedef int (*renameat2_fn)(int, const char *, int, const char *, unsigned int);
typedef int (*open_fn)(const char *, int, ...);
typedef int (*openat_fn)(int, const char *, int, ...);

static void *real_fn[NSYMS];
static pthread_once_t resolve_once = PTHREAD_ONCE_INIT;

static void resolve_all(void) {
    for (int i = 0; i < NSYMS; i++) real_fn[i] = dlsym(RTLD_NEXT, sym_names[i]);
}

static inline void *real(enum sym s) {
    pthread_once(&resolve_once, resolve_all);
    return real_fn[s];
}

/* Missing in this libc (renameat2 before glibc 2.28, say): fail like the kernel would. */
#define REAL_OR_ENOSYS(type, s, var)                                                   \
    type var = (type)real(s);                                                          \
    if (var == NULL) {                                                                 \
        errno = ENOSYS;                                                                \
        return -1;                                                                     \
    }

/* ---- configuration ------------------------------------------------------------------ */

struct config {
    uint64_t seed;
    double rate;
    long burst;
    long after;
    long max; /* -1: unlimited */
    unsigned calls_mask;
    int n_errnos;
    int errnos[NERRNOS]; /* indexes into errno_values */
    int n_modes;
    int modes[NMODES];
    int n_prefixes;
    char *prefix[MAX_PREFIXES];
    size_t prefix_len[MAX_PREFIXES];
    int enabled;
};

/* Published configs are immutable and never freed: a wrapper in another thread may still
 * read the previous one. One small leak per rafault_configure() call, fine for tests. */
static _Atomic(struct config *) g_cfg;
static atomic_int g_enabled;

/* The decision sequence: under g_mu so that after/burst/max hold across threads. */
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static uint64_t g_index;
static long g_faults;
static long g_burst_left;

/* Counters, zeroed by rafault_reset_stats() only. */
static atomic_ulong g_eligible;
static atomic_ulong g_stats[NGROUPS][NERRNOS];
static atomic_ulong g_symcalls[NSYMS];

static __thread int in_wrapper __attribute__((tls_model("initial-exec")));

/* ---- fault log (optional) ----------------------------------------------------------- */

static char g_log_path[PATH_MAX];
static int g_log_fd = -1;
static pthread_mutex_t g_log_mu = PTHREAD_MUTEX_INITIALIZER;

/* ---- hashing ------------------------------------------------------------------------ */

static inline uint64_t splitmix64(uint64_t x) {
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

static inline uint64_t hash3(uint64_t seed, uint64_t index, uint64_t salt) {
    return splitmix64(splitmix64(seed ^ splitmix64(salt)) ^ index);
}

static inline double unit(uint64_t h) { return (double)(h >> 11) * 0x1.0p-53; }

/* ---- spec parsing ------------------------------------------------------------------- */

static char *trim(char *s) {
    while (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r') s++;
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\n' || s[n - 1] == '\r'))
        s[--n] = '\0';
    return s;
}

static int parse_long(const char *v, long min, long *out) {
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno != 0 || end == v || *trim(end) != '\0' || x < min) return -1;
    *out = x;
    return 0;
}

static int index_of(const char *const *names, int n, const char *name) {
    for (int i = 0; i < n; i++)
        if (strcmp(names[i], name) == 0) return i;
    return -1;
}

/* Add a prefix without trailing slashes ("/" stays "/"). */
static int add_prefix(struct config *c, const char *p) {
    size_t n = strlen(p);
    while (n > 1 && p[n - 1] == '/') n--;
    for (int i = 0; i < c->n_prefixes; i++)
        if (c->prefix_len[i] == n && memcmp(c->prefix[i], p, n) == 0) return 0;
    if (c->n_prefixes >= MAX_PREFIXES) return -1;
    char *copy = strndup(p, n);
    if (copy == NULL) return -1;
    c->prefix[c->n_prefixes] = copy;
    c->prefix_len[c->n_prefixes] = n;
    c->n_prefixes++;
    return 0;
}

static int parse_list(char *v, const char *const *names, int n, int *out, int *count,
                      unsigned *mask) {
    int k = 0;
    char *save = NULL;
    for (char *tok = strtok_r(v, ",", &save); tok != NULL; tok = strtok_r(NULL, ",", &save)) {
        tok = trim(tok);
        if (*tok == '\0') continue;
        if (mask != NULL && strcmp(tok, "all") == 0) {
            *mask = (1u << n) - 1;
            k = n;
            continue;
        }
        int i = index_of(names, n, tok);
        if (i < 0) return -1;
        if (mask != NULL) {
            *mask |= 1u << i;
        } else {
            int dup = 0;
            for (int j = 0; j < k; j++) dup |= out[j] == i;
            if (!dup) out[k++] = i;
        }
        if (mask != NULL) k++;
    }
    if (k == 0) return -1;
    if (count != NULL) *count = k;
    return 0;
}

static void free_config(struct config *c) {
    for (int i = 0; i < c->n_prefixes; i++) free(c->prefix[i]);
    free(c);
}

static struct config *parse_spec(const char *spec) {
    struct config *c = calloc(1, sizeof *c);
    if (c == NULL) return NULL;
    c->rate = 1.0;
    c->max = -1;
    c->calls_mask = (1u << NGROUPS) - 1;
    c->n_errnos = 3;
    for (int i = 0; i < 3; i++) c->errnos[i] = i;
    c->n_modes = NMODES;
    for (int i = 0; i < NMODES; i++) c->modes[i] = i;
    c->enabled = 1;
    if (spec == NULL) return c;

    char *copy = strdup(spec);
    if (copy == NULL) goto bad;
    char *save = NULL;
    for (char *pair = strtok_r(copy, ";", &save); pair != NULL;
         pair = strtok_r(NULL, ";", &save)) {
        pair = trim(pair);
        if (*pair == '\0') continue;
        char *eq = strchr(pair, '=');
        if (eq == NULL) goto bad_copy;
        *eq = '\0';
        char *key = trim(pair);
        char *val = trim(eq + 1);
        if (strcmp(key, "seed") == 0) {
            char *end;
            errno = 0;
            if (*val == '-') goto bad_copy;
            unsigned long long s = strtoull(val, &end, 0);
            if (errno != 0 || end == val || *end != '\0') goto bad_copy;
            c->seed = (uint64_t)s;
        } else if (strcmp(key, "rate") == 0) {
            char *end;
            double r = strtod(val, &end);
            if (end == val || *end != '\0' || !(r >= 0.0 && r <= 1.0)) goto bad_copy;
            c->rate = r;
        } else if (strcmp(key, "burst") == 0) {
            if (parse_long(val, 0, &c->burst) != 0) goto bad_copy;
        } else if (strcmp(key, "after") == 0) {
            if (parse_long(val, 0, &c->after) != 0) goto bad_copy;
        } else if (strcmp(key, "max") == 0) {
            if (parse_long(val, -1, &c->max) != 0) goto bad_copy;
        } else if (strcmp(key, "calls") == 0) {
            c->calls_mask = 0;
            if (parse_list(val, group_names, NGROUPS, NULL, NULL, &c->calls_mask) != 0)
                goto bad_copy;
        } else if (strcmp(key, "errnos") == 0) {
            if (parse_list(val, errno_names, NERRNOS, c->errnos, &c->n_errnos, NULL) != 0)
                goto bad_copy;
        } else if (strcmp(key, "modes") == 0) {
            if (parse_list(val, mode_names, NMODES, c->modes, &c->n_modes, NULL) != 0)
                goto bad_copy;
        } else if (strcmp(key, "prefixes") == 0) {
            char *psave = NULL;
            for (char *p = strtok_r(val, ":", &psave); p != NULL;
                 p = strtok_r(NULL, ":", &psave)) {
                p = trim(p);
                if (*p == '\0') continue;
                if (*p != '/') goto bad_copy;
                if (add_prefix(c, p) != 0) goto bad_copy;
                /* Also the canonical form, so that /tmp symlinks and the like match the
                 * /proc/self/fd paths, which are always canonical. */
                char canon[PATH_MAX];
                if (realpath(p, canon) != NULL && add_prefix(c, canon) != 0) goto bad_copy;
            }
        } else if (strcmp(key, "enabled") == 0) {
            if (strcmp(val, "0") == 0) {
                c->enabled = 0;
            } else if (strcmp(val, "1") == 0) {
                c->enabled = 1;
            } else {
                goto bad_copy;
            }
        } else {
            goto bad_copy;
        }
    }
    free(copy);
    return c;
bad_copy:
    free(copy);
bad:
    free_config(c);
    return NULL;
}

/* ---- path resolution ---------------------------------------------------------------- */

static int under_prefix(const struct config *c, const char *path) {
    size_t n = strlen(path);
    for (int i = 0; i < c->n_prefixes; i++) {
        size_t l = c->prefix_len[i];
        if (n >= l && memcmp(path, c->prefix[i], l) == 0 &&
            (n == l || path[l] == '/' || (l == 1 && c->prefix[i][0] == '/')))
            return 1;
    }
    return 0;
}

static int fd_path(int fd, char *out, size_t size) {
    if (fd < 0) return -1;
    char link[32] = "/proc/self/fd/";
    char digits[16];
    int nd = 0;
    unsigned v = (unsigned)fd;
    do {
        digits[nd++] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    size_t at = strlen(link);
    while (nd > 0) link[at++] = digits[--nd];
    link[at] = '\0';
    ssize_t n = readlink(link, out, size - 1);
    if (n < 0) return -1;
    out[n] = '\0';
    return 0;
}

/* Collapse "//", "." and ".." in an absolute path, in place. */
static void normalize(char *p) {
    size_t out = 0;
    const char *s = p;
    while (*s != '\0') {
        while (*s == '/') s++;
        if (*s == '\0') break;
        const char *e = s;
        while (*e != '\0' && *e != '/') e++;
        size_t len = (size_t)(e - s);
        if (len == 1 && s[0] == '.') {
            /* skip */
        } else if (len == 2 && s[0] == '.' && s[1] == '.') {
            while (out > 0 && p[out - 1] != '/') out--;
            if (out > 0) out--; /* drop the slash */
        } else {
            p[out++] = '/';
            memmove(p + out, s, len);
            out += len;
        }
        s = e;
    }
    if (out == 0) p[out++] = '/';
    p[out] = '\0';
}

/* Absolute, lexically normalised form of (dirfd, path). */
static int abs_path(int dirfd, const char *path, char *out, size_t size) {
    if (path == NULL) return -1;
    size_t plen = strlen(path);
    if (path[0] == '/') {
        if (plen >= size) return -1;
        memcpy(out, path, plen + 1);
    } else {
        if (dirfd == AT_FDCWD) {
            if (getcwd(out, size) == NULL) return -1;
        } else if (fd_path(dirfd, out, size) != 0) {
            return -1;
        }
        if (out[0] != '/') return -1;
        size_t blen = strlen(out);
        if (blen + 1 + plen >= size) return -1;
        out[blen] = '/';
        memcpy(out + blen + 1, path, plen + 1);
    }
    normalize(out);
    return 0;
}

/* Is (dirfd, path) under a prefix? out receives the path that matched. */
static int path_targeted(const struct config *c, int dirfd, const char *path, char *out,
                         size_t size) {
    if (abs_path(dirfd, path, out, size) != 0) return 0;
    if (under_prefix(c, out)) return 1;
    /* Not lexically under a prefix: try the canonical parent directory (symlinks). */
    char *slash = strrchr(out, '/');
    if (slash == NULL || slash == out) return 0;
    char base[NAME_MAX + 1];
    size_t blen = strlen(slash + 1);
    if (blen > NAME_MAX) return 0;
    memcpy(base, slash + 1, blen + 1);
    *slash = '\0';
    char canon[PATH_MAX];
    if (realpath(out, canon) == NULL) return 0;
    size_t clen = strlen(canon);
    if (clen + 1 + blen >= size) return 0;
    memcpy(out, canon, clen);
    out[clen] = '/';
    memcpy(out + clen + 1, base, blen + 1);
    normalize(out);
    return under_prefix(c, out);
}

/* ---- decisions ---------------------------------------------------------------------- */

struct fault {
    const struct config *cfg;
    int group;
    int fire;
    int err;  /* index into errno_values */
    int mode; /* enum mode, as chosen; the wrapper may weaken it */
    uint64_t h; /* for the partial length */
    char path[PATH_MAX];
};

static void decide(struct fault *f) {
    const struct config *c = f->cfg;
    pthread_mutex_lock(&g_mu);
    uint64_t idx = g_index++;
    int fire = 0;
    if (idx < (uint64_t)c->after) {
        fire = 0;
    } else if (c->max >= 0 && g_faults >= c->max) {
        fire = 0;
    } else if (g_burst_left > 0) {
        fire = 1;
        g_burst_left--;
    } else if (unit(hash3(c->seed, idx, 0)) < c->rate) {
        fire = 1;
        g_burst_left = c->burst;
    }
    if (fire) g_faults++;
    pthread_mutex_unlock(&g_mu);
    atomic_fetch_add(&g_eligible, 1);
    f->fire = fire;
    if (fire) {
        f->err = c->errnos[hash3(c->seed, idx, 1) % (uint64_t)c->n_errnos];
        f->mode = c->modes[hash3(c->seed, idx, 2) % (uint64_t)c->n_modes];
        f->h = hash3(c->seed, idx, 3);
    }
}

/* Common gate: enabled (the spec's enabled= only sets the initial state, rafault_enable
 * overrides it), group eligible, there are prefixes. */
static const struct config *active(int group) {
    if (in_wrapper || !atomic_load_explicit(&g_enabled, memory_order_acquire)) return NULL;
    const struct config *c = atomic_load_explicit(&g_cfg, memory_order_acquire);
    if (c == NULL || c->n_prefixes == 0 || !(c->calls_mask & (1u << group)))
        return NULL;
    return c;
}

static int check_fd(int group, int sym, int fd, struct fault *f) {
    f->fire = 0;
    const struct config *c = active(group);
    if (c == NULL) return 0;
    int saved = errno;
    in_wrapper = 1;
    f->cfg = c;
    f->group = group;
    if (fd_path(fd, f->path, sizeof f->path) == 0 && under_prefix(c, f->path)) {
        atomic_fetch_add(&g_symcalls[sym], 1);
        decide(f);
    }
    in_wrapper = 0;
    errno = saved;
    return f->fire;
}

static int check_paths(int group, int sym, int dirfd1, const char *p1, int dirfd2,
                       const char *p2, struct fault *f) {
    f->fire = 0;
    const struct config *c = active(group);
    if (c == NULL) return 0;
    int saved = errno;
    in_wrapper = 1;
    f->cfg = c;
    f->group = group;
    int hit = path_targeted(c, dirfd1, p1, f->path, sizeof f->path);
    if (!hit && p2 != NULL) hit = path_targeted(c, dirfd2, p2, f->path, sizeof f->path);
    if (hit) {
        atomic_fetch_add(&g_symcalls[sym], 1);
        decide(f);
    }
    in_wrapper = 0;
    errno = saved;
    return f->fire;
}

static void log_fault(const struct fault *f, int mode) {
    if (g_log_path[0] == '\0' || under_prefix(f->cfg, g_log_path)) return;
    write_fn w = (write_fn)real(S_WRITE);
    open_fn o = (open_fn)real(S_OPEN);
    if (w == NULL || o == NULL) return;
    char line[PATH_MAX + 64];
    int n = snprintf(line, sizeof line, "%s %s %s %s\n", group_names[f->group],
                     errno_names[f->err], mode_names[mode], f->path);
    if (n <= 0) return;
    if ((size_t)n >= sizeof line) n = (int)sizeof line - 1;
    pthread_mutex_lock(&g_log_mu);
    if (g_log_fd < 0) g_log_fd = o(g_log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (g_log_fd >= 0) {
        ssize_t r = w(g_log_fd, line, (size_t)n);
        (void)r;
    }
    pthread_mutex_unlock(&g_log_mu);
}

/* Count and log the fault, set errno, return -1. */
static int inject(const struct fault *f, int mode) {
    int saved_guard = in_wrapper;
    in_wrapper = 1;
    atomic_fetch_add(&g_stats[f->group][f->err], 1);
    log_fault(f, mode);
    in_wrapper = saved_guard;
    errno = errno_values[f->err];
    return -1;
}

/* Bytes of a partial write: at least 1, fewer than n; 0 when that is impossible. */
static size_t part_len(const struct fault *f, size_t n) {
    if (n < 2) return 0;
    return 1 + (size_t)(f->h % (uint64_t)(n - 1));
}

static size_t iov_total(const struct iovec *iov, int cnt) {
    size_t t = 0;
    for (int i = 0; i < cnt; i++) {
        if (iov[i].iov_len > SIZE_MAX - t) return SIZE_MAX;
        t += iov[i].iov_len;
    }
    return t;
}

static int iov_prefix(const struct iovec *iov, int cnt, size_t k, struct iovec *out) {
    int n = 0;
    for (int i = 0; i < cnt && k > 0; i++) {
        size_t l = iov[i].iov_len < k ? iov[i].iov_len : k;
        if (l == 0) continue;
        out[n].iov_base = iov[i].iov_base;
        out[n].iov_len = l;
        n++;
        k -= l;
    }
    return n;
}

/* ---- wrappers: write family ----------------------------------------------------------- */

EXPORT ssize_t write(int fd, const void *buf, size_t n) {
    REAL_OR_ENOSYS(write_fn, S_WRITE, fn);
    struct fault f;
    if (!check_fd(G_WRITE, S_WRITE, fd, &f)) return fn(fd, buf, n);
    int mode = f.mode;
    if (mode == M_PART) {
        size_t k = part_len(&f, n);
        if (k == 0) mode = M_NONE;
        else (void)fn(fd, buf, k);
    } else if (mode == M_ALL) {
        (void)fn(fd, buf, n);
    }
    return inject(&f, mode);
}

static ssize_t do_pwrite(enum sym s, int fd, const void *buf, size_t n, off_t off) {
    REAL_OR_ENOSYS(pwrite_fn, s, fn);
    struct fault f;
    if (!check_fd(G_PWRITE, s, fd, &f)) return fn(fd, buf, n, off);
    int mode = f.mode;
    if (mode == M_PART) {
        size_t k = part_len(&f, n);
        if (k == 0) mode = M_NONE;
        else (void)fn(fd, buf, k, off);
    } else if (mode == M_ALL) {
        (void)fn(fd, buf, n, off);
    }
    return inject(&f, mode);
}

EXPORT ssize_t pwrite(int fd, const void *buf, size_t n, off_t off) {
    return do_pwrite(S_PWRITE, fd, buf, n, off);
}

EXPORT ssize_t pwrite64(int fd, const void *buf, size_t n, off64_t off) {
    return do_pwrite(S_PWRITE64, fd, buf, n, (off_t)off);
}

/* pwritev (has_flags 0) and pwritev2 (has_flags 1) share one body. */
static ssize_t do_pwritev(enum sym s, int has_flags, int fd, const struct iovec *iov, int cnt,
                          off_t off, int flags) {
    void *p = real(s);
    if (p == NULL) {
        errno = ENOSYS;
        return -1;
    }
    int group = has_flags ? G_PWRITEV2 : G_PWRITEV;
#define CALL(v, c) (has_flags ? ((pwritev2_fn)p)(fd, v, c, off, flags) : ((pwritev_fn)p)(fd, v, c, off))
    struct fault f;
    if (!check_fd(group, s, fd, &f)) return CALL(iov, cnt);
    int mode = f.mode;
    if (mode == M_PART) {
        size_t k = (cnt > 0 && cnt <= IOV_MAX) ? part_len(&f, iov_total(iov, cnt)) : 0;
        if (k == 0) {
            mode = M_NONE;
        } else {
            struct iovec part[IOV_MAX];
            int pc = iov_prefix(iov, cnt, k, part);
            (void)CALL(part, pc);
        }
    } else if (mode == M_ALL) {
        (void)CALL(iov, cnt);
    }
#undef CALL
    return inject(&f, mode);
}

EXPORT ssize_t pwritev(int fd, const struct iovec *iov, int cnt, off_t off) {
    return do_pwritev(S_PWRITEV, 0, fd, iov, cnt, off, 0);
}

EXPORT ssize_t pwritev64(int fd, const struct iovec *iov, int cnt, off64_t off) {
    return do_pwritev(S_PWRITEV64, 0, fd, iov, cnt, (off_t)off, 0);
}

EXPORT ssize_t pwritev2(int fd, const struct iovec *iov, int cnt, off_t off, int flags) {
    return do_pwritev(S_PWRITEV2, 1, fd, iov, cnt, off, flags);
}

EXPORT ssize_t pwritev64v2(int fd, const struct iovec *iov, int cnt, off64_t off, int flags) {
    return do_pwritev(S_PWRITEV64V2, 1, fd, iov, cnt, (off_t)off, flags);
}

/* ---- wrappers: sync, truncate ------------------------------------------------------- */

static int do_sync(enum sym s, int group, int fd) {
    REAL_OR_ENOSYS(fsync_fn, s, fn);
    struct fault f;
    if (!check_fd(group, s, fd, &f)) return fn(fd);
    int mode = M_NONE;
    if (f.mode == M_ALL) {
        (void)fn(fd);
        mode = M_ALL;
    }
    return inject(&f, mode);
}

EXPORT int fsync(int fd) { return do_sync(S_FSYNC, G_FSYNC, fd); }

EXPORT int fdatasync(int fd) { return do_sync(S_FDATASYNC, G_FDATASYNC, fd); }

static int do_ftruncate(enum sym s, int fd, off_t len) {
    REAL_OR_ENOSYS(ftruncate_fn, s, fn);
    struct fault f;
    if (!check_fd(G_FTRUNCATE, s, fd, &f)) return fn(fd, len);
    return inject(&f, M_NONE);
}

EXPORT int ftruncate(int fd, off_t len) { return do_ftruncate(S_FTRUNCATE, fd, len); }

EXPORT int ftruncate64(int fd, off64_t len) { return do_ftruncate(S_FTRUNCATE64, fd, (off_t)len); }

/* ---- wrappers: rename --------------------------------------------------------------- */

EXPORT int rename(const char *old, const char *new) {
    REAL_OR_ENOSYS(rename_fn, S_RENAME, fn);
    struct fault f;
    if (!check_paths(G_RENAME, S_RENAME, AT_FDCWD, old, AT_FDCWD, new, &f)) return fn(old, new);
    return inject(&f, M_NONE);
}

EXPORT int renameat(int olddirfd, const char *old, int newdirfd, const char *new) {
    REAL_OR_ENOSYS(renameat_fn, S_RENAMEAT, fn);
    struct fault f;
    if (!check_paths(G_RENAME, S_RENAMEAT, olddirfd, old, newdirfd, new, &f))
        return fn(olddirfd, old, newdirfd, new);
    return inject(&f, M_NONE);
}

EXPORT int renameat2(int olddirfd, const char *old, int newdirfd, const char *new,
                     unsigned int flags) {
    REAL_OR_ENOSYS(renameat2_fn, S_RENAMEAT2, fn);
    struct fault f;
    if (!check_paths(G_RENAME, S_RENAMEAT2, olddirfd, old, newdirfd, new, &f))
        return fn(olddirfd, old, newdirfd, new, flags);
    return inject(&f, M_NONE);
}

/* ---- wrappers: open family ---------------------------------------------------------- */

static inline int needs_mode(int flags) {
    return (flags & O_CREAT) != 0 || (flags & O_TMPFILE) == O_TMPFILE;
}

static inline int writes(int flags) {
    return (flags & O_ACCMODE) != O_RDONLY || (flags & (O_CREAT | O_TRUNC | O_APPEND)) != 0;
}

static int do_open(enum sym s, int at, int dirfd, const char *path, int flags, mode_t mode) {
    void *p = real(s);
    if (p == NULL) {
        errno = ENOSYS;
        return -1;
    }
    struct fault f;
    if (writes(flags) && check_paths(G_OPENAT, s, at ? dirfd : AT_FDCWD, path, 0, NULL, &f))
        return inject(&f, M_NONE);
    if (at) return ((openat_fn)p)(dirfd, path, flags, mode);
    return ((open_fn)p)(path, flags, mode);
}

#define MODE_ARG(flags, last)                                                          \
    mode_t mode = 0;                                                                   \
    if (needs_mode(flags)) {                                                           \
        va_list ap;                                                                    \
        va_start(ap, last);                                                            \
        mode = va_arg(ap, mode_t);                                                     \
        va_end(ap);                                                                    \
    }

EXPORT int open(const char *path, int flags, ...) {
    MODE_ARG(flags, flags);
    return do_open(S_OPEN, 0, AT_FDCWD, path, flags, mode);
}

EXPORT int open64(const char *path, int flags, ...) {
    MODE_ARG(flags, flags);
    return do_open(S_OPEN64, 0, AT_FDCWD, path, flags, mode);
}

EXPORT int openat(int dirfd, const char *path, int flags, ...) {
    MODE_ARG(flags, flags);
    return do_open(S_OPENAT, 1, dirfd, path, flags, mode);
}

EXPORT int openat64(int dirfd, const char *path, int flags, ...) {
    MODE_ARG(flags, flags);
    return do_open(S_OPENAT64, 1, dirfd, path, flags, mode);
}

/* ---- control API -------------------------------------------------------------------- */

EXPORT int rafault_configure(const char *spec) {
    struct config *c = parse_spec(spec);
    if (c == NULL) return -1;
    pthread_mutex_lock(&g_mu);
    g_index = 0;
    g_faults = 0;
    g_burst_left = 0;
    atomic_store_explicit(&g_cfg, c, memory_order_release);
    atomic_store_explicit(&g_enabled, c->enabled, memory_order_release);
    pthread_mutex_unlock(&g_mu);
    return 0;
}

EXPORT void rafault_enable(int on) {
    atomic_store_explicit(&g_enabled, on ? 1 : 0, memory_order_release);
}

static long emit(char *buf, long size, const char *text, long len) {
    if (buf != NULL && size > 0) {
        long n = len < size - 1 ? len : size - 1;
        memcpy(buf, text, (size_t)n);
        buf[n] = '\0';
    }
    return len;
}

EXPORT long rafault_stats(char *buf, long size) {
    char text[NGROUPS * NERRNOS * 48 + 64];
    long len = 0;
    for (int g = 0; g < NGROUPS; g++)
        for (int e = 0; e < NERRNOS; e++) {
            unsigned long n = atomic_load(&g_stats[g][e]);
            if (n != 0)
                len += snprintf(text + len, sizeof text - (size_t)len, "%s %s %lu\n",
                                group_names[g], errno_names[e], n);
        }
    len += snprintf(text + len, sizeof text - (size_t)len, "eligible %lu\n",
                    (unsigned long)atomic_load(&g_eligible));
    return emit(buf, size, text, len);
}

/* Extra (diagnostics): eligible calls per wrapped symbol, "<symbol> <count>\n". */
EXPORT long rafault_calls(char *buf, long size) {
    char text[NSYMS * 40];
    long len = 0;
    for (int s = 0; s < NSYMS; s++) {
        unsigned long n = atomic_load(&g_symcalls[s]);
        if (n != 0)
            len += snprintf(text + len, sizeof text - (size_t)len, "%s %lu\n", sym_names[s], n);
    }
    return emit(buf, size, text, len);
}

EXPORT void rafault_reset_stats(void) {
    for (int g = 0; g < NGROUPS; g++)
        for (int e = 0; e < NERRNOS; e++) atomic_store(&g_stats[g][e], 0);
    for (int s = 0; s < NSYMS; s++) atomic_store(&g_symcalls[s], 0);
    atomic_store(&g_eligible, 0);
}

/* ---- load time ---------------------------------------------------------------------- */

static void atfork_prepare(void) { pthread_mutex_lock(&g_mu); }
static void atfork_release(void) { pthread_mutex_unlock(&g_mu); }

static void warn(const char *a, const char *b) {
    write_fn w = (write_fn)real(S_WRITE);
    if (w == NULL) return;
    ssize_t r = w(2, a, strlen(a));
    r = w(2, b, strlen(b));
    r = w(2, "\n", 1);
    (void)r;
}

__attribute__((constructor)) static void faultinject_init(void) {
    pthread_once(&resolve_once, resolve_all);
    pthread_atfork(atfork_prepare, atfork_release, atfork_release);
    const char *log = getenv("RAFAULT_LOG");
    if (log != NULL && *log != '\0') {
        if (abs_path(AT_FDCWD, log, g_log_path, sizeof g_log_path) != 0) g_log_path[0] = '\0';
    }
    const char *spec = getenv("RAFAULT_SPEC");
    if (spec != NULL && rafault_configure(spec) != 0)
        warn("faultinject: bad RAFAULT_SPEC, no faults will be injected: ", spec);
}
