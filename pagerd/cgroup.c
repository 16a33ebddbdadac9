/* Memory cgroups: where a process's memory cgroup lives in the cgroup
 * filesystem (v1's memory hierarchy, or v2's unified one), and how much
 * room it has left: the smallest (limit - usage) along its path, since an
 * ancestor's limit binds too.
 *
 * The parsing works on text (the contents of /proc/PID/cgroup and of
 * /proc/self/mountinfo) and the reading on a directory, so both can be
 * tested on a tree laid out like a cgroup filesystem. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pagerd.h"

/* v1 prints "no limit" as a page-rounded LONG_MAX; anything this large is
 * no limit. */
#define NO_LIMIT_FLOOR ((uint64_t)1 << 62)

/* Does the comma-separated list contain word? */
static bool has_word(const char *list, size_t len, const char *word)
{
    size_t w = strlen(word);
    for (const char *p = list, *end = list + len; p < end;) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        size_t n = comma ? (size_t)(comma - p) : (size_t)(end - p);
        if (n == w && memcmp(p, word, w) == 0)
            return true;
        p += n + 1;
    }
    return false;
}

/* From /proc/PID/cgroup: the memory controller's path, v1 first (a line
 * "ID:...memory...:PATH"), else the unified one ("0::PATH"). */
bool cg_parse_proc(const char *text, int *version, char *path, size_t len)
{
    const char *v2 = NULL;
    size_t v2len = 0;
    for (const char *line = text; *line;) {
        const char *nl = strchr(line, '\n');
        size_t n = nl ? (size_t)(nl - line) : strlen(line);
        const char *c1 = memchr(line, ':', n);
        const char *c2 = c1 ? memchr(c1 + 1, ':', n - (size_t)(c1 + 1 - line)) : NULL;
        if (c2) {
            const char *p = c2 + 1;
            size_t plen = n - (size_t)(p - line);
            if (c2 == c1 + 1 && c1 - line == 1 && line[0] == '0') {
                v2 = p;
                v2len = plen;
            } else if (has_word(c1 + 1, (size_t)(c2 - c1 - 1), "memory")) {
                if (plen >= len || plen == 0 || p[0] != '/')
                    return false;
                memcpy(path, p, plen);
                path[plen] = 0;
                *version = 1;
                return true;
            }
        }
        line += n + (nl != NULL);
    }
    if (!v2 || v2len >= len || v2len == 0 || v2[0] != '/')
        return false;
    memcpy(path, v2, v2len);
    path[v2len] = 0;
    *version = 2;
    return true;
}

/* The n-th space-separated field of a mountinfo line, and its length. */
static const char *field_n(const char *line, size_t len, unsigned n, size_t *flen)
{
    const char *p = line, *end = line + len;
    for (unsigned i = 0; p < end; i++) {
        const char *sp = memchr(p, ' ', (size_t)(end - p));
        size_t fl = sp ? (size_t)(sp - p) : (size_t)(end - p);
        if (i == n) {
            *flen = fl;
            return p;
        }
        if (!sp)
            break;
        p = sp + 1;
    }
    return NULL;
}

/* One line of /proc/self/mountinfo: is it where the hierarchy of that
 * version (v1: the one with the memory controller) is mounted? Then its
 * mount point, and which of its paths the mount shows at its top (not "/"
 * inside a container). */
bool cg_parse_mount(const char *line, int version, char *mnt, size_t mlen, char *root, size_t rlen)
{
    size_t n = strcspn(line, "\n");
    const char *dash = strstr(line, " - ");
    if (!dash || (size_t)(dash - line) >= n)
        return false;
    size_t after = n - (size_t)(dash + 3 - line), tl = 0, ol = 0, rl = 0, ml = 0;
    const char *type = field_n(dash + 3, after, 0, &tl);
    const char *opts = field_n(dash + 3, after, 2, &ol);
    const char *r = field_n(line, (size_t)(dash - line), 3, &rl);
    const char *m = field_n(line, (size_t)(dash - line), 4, &ml);
    bool match = type && r && m &&
                 (version == 2 ? tl == 7 && memcmp(type, "cgroup2", 7) == 0
                               : tl == 6 && memcmp(type, "cgroup", 6) == 0 && opts && has_word(opts, ol, "memory"));
    if (!match || ml >= mlen || rl >= rlen)
        return false;
    memcpy(mnt, m, ml);
    mnt[ml] = 0;
    memcpy(root, r, rl);
    root[rl] = 0;
    return true;
}

/* The directory of cgroup path in a hierarchy mounted at mnt showing root
 * at its top. False if the path lies outside what the mount shows, or
 * climbs ("..") out of it. */
bool cg_dir_of(const char *mnt, const char *root, const char *path, char *dir, size_t len)
{
    size_t rl = strcmp(root, "/") == 0 ? 0 : strlen(root);
    if (strncmp(path, root, rl) != 0 || (path[rl] != '/' && path[rl] != 0) || strstr(path, "/.."))
        return false;
    int n = snprintf(dir, len, "%s%s", mnt, path + rl);
    if (n < 0 || (size_t)n >= len)
        return false;
    size_t dl = (size_t)n;
    while (dl > 1 && dir[dl - 1] == '/')
        dir[--dl] = 0;
    return true;
}

static bool read_text(const char *path, char *buf, size_t len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    size_t got = 0;
    ssize_t r;
    while (got + 1 < len && (r = read(fd, buf + got, len - 1 - got)) > 0)
        got += (size_t)r;
    close(fd);
    buf[got] = 0;
    return got > 0 && got + 1 < len;
}

/* One number from a cgroup file: "max" is no limit (UINT64_MAX). */
static bool read_bytes(const char *dir, const char *name, uint64_t *out)
{
    char path[PATH_MAX], buf[64];
    if (snprintf(path, sizeof path, "%s/%s", dir, name) >= (int)sizeof path || !read_text(path, buf, sizeof buf))
        return false;
    if (strncmp(buf, "max", 3) == 0 && (buf[3] == '\n' || buf[3] == 0)) {
        *out = UINT64_MAX;
        return true;
    }
    char *end;
    errno = 0;
    unsigned long long v = strtoull(buf, &end, 10);
    if (errno || end == buf || (*end != '\n' && *end != 0))
        return false;
    *out = v >= NO_LIMIT_FLOOR ? UINT64_MAX : v;
    return true;
}

/* The room left for memory in the cgroup at dir: min(limit - usage) over
 * it and its ancestors up to the mount point top (not above). UINT64_MAX
 * when nothing along the path is limited. False if dir's own files cannot
 * be read. */
bool cg_read_room(const char *dir, const char *top, int version, uint64_t *room, uint64_t *limit, uint64_t *usage)
{
    const char *lim_name = version == 2 ? "memory.max" : "memory.limit_in_bytes";
    const char *use_name = version == 2 ? "memory.current" : "memory.usage_in_bytes";
    char d[PATH_MAX];
    if (snprintf(d, sizeof d, "%s", dir) >= (int)sizeof d)
        return false;
    size_t tl = strlen(top);
    uint64_t best = UINT64_MAX;
    bool first = true;
    for (;;) {
        uint64_t l, u;
        bool ok = read_bytes(d, lim_name, &l) && read_bytes(d, use_name, &u);
        if (first) {
            if (!ok)
                return false;
            *limit = l;
            *usage = u;
            first = false;
        }
        /* v2's root has no memory.max: nothing to bind there. */
        if (ok && l != UINT64_MAX) {
            uint64_t r = l > u ? l - u : 0;
            if (r < best)
                best = r;
        }
        char *slash = strrchr(d, '/');
        if (strlen(d) <= tl || !slash || (size_t)(slash - d) < tl)
            break;
        *slash = 0;
    }
    *room = best;
    return true;
}

static bool find_mount(int version, char *mnt, size_t mlen, char *root, size_t rlen)
{
    FILE *f = fopen("/proc/self/mountinfo", "re");
    if (!f)
        return false;
    char *line = NULL;
    size_t cap = 0;
    bool found = false;
    while (!found && getline(&line, &cap, f) > 0)
        found = cg_parse_mount(line, version, mnt, mlen, root, rlen);
    free(line);
    fclose(f);
    return found;
}

/* Where pid's memory cgroup is: its directory, the path as the kernel
 * names it (for logs and status), the hierarchy's mount point and the
 * version. */
bool cg_locate(pid_t pid, struct cg_where *w)
{
    char path[64], text[4096], mroot[PATH_MAX];
    snprintf(path, sizeof path, "/proc/%d/cgroup", (int)pid);
    return read_text(path, text, sizeof text) && cg_parse_proc(text, &w->version, w->path, sizeof w->path) &&
           find_mount(w->version, w->top, sizeof w->top, mroot, sizeof mroot) &&
           cg_dir_of(w->top, mroot, w->path, w->dir, sizeof w->dir);
}
