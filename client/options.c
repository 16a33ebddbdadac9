/* Every HAKMEM_* environment option, in one table. Read once at start-up;
 * a bad value is reported in one line and the default is used. The README
 * carries the same table. */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

struct hak_options hak_opt;

enum opt_kind { OPT_NUM, OPT_WORD, OPT_PATH };

struct option_def {
    const char *name;
    enum opt_kind kind;
    uint64_t *value;       /* OPT_NUM, OPT_WORD (index into words) */
    uint64_t def, min, max;
    const char *unit;      /* OPT_NUM: the unit; OPT_WORD: "a|b|c" */
    char *path;            /* OPT_PATH: buffer of HAK_PATH_MAX */
    const char *path_def;
};

static const char *const pagerd_words[] = {"auto", "on", "off"};

static const struct option_def options[] = {
    /* address space reserved for SuperSlabs; 0 = max(64, 4 x RAM) GiB */
    {"HAKMEM_ARENA_GB", OPT_NUM, &hak_opt.arena_gib, 0, 0, 1u << 20, "GiB", NULL, NULL},
    /* idle time before an empty SuperSlab or cached large mapping goes back to the OS */
    {"HAKMEM_DECAY_MS", OPT_NUM, &hak_opt.decay_ms, 1000, 0, 3600000, "ms", NULL, NULL},
    /* bytes of freed large mappings kept for reuse */
    {"HAKMEM_LARGE_CACHE_MB", OPT_NUM, &hak_opt.large_cache_mb, 64, 0, 1u << 20, "MiB", NULL, NULL},
    /* bytes of free blocks one thread's caches may hold before they shrink */
    {"HAKMEM_THREAD_CACHE_KB", OPT_NUM, &hak_opt.thread_cache_kb, 4096, 64, 1u << 20, "KiB", NULL, NULL},
    /* 1 = secure mode: encoded free-list links, double-free check on every free */
    {"HAKMEM_SECURE", OPT_NUM, &hak_opt.secure, 0, 0, 1, "0/1", NULL, NULL},
    /* 1 = a one-line report of a SIGSEGV or SIGBUS (always on in secure mode) */
    {"HAKMEM_CRASH_REPORT", OPT_NUM, &hak_opt.crash_report, 0, 0, 1, "0/1", NULL, NULL},
    /* 1 = print statistics at exit */
    {"HAKMEM_STATS", OPT_NUM, &hak_opt.stats, 0, 0, 1, "0/1", NULL, NULL},
    /* use the page daemon: auto (if its socket exists), on (and warn if not), off */
    {"HAKMEM_PAGERD", OPT_WORD, &hak_opt.pagerd, HAK_PAGERD_AUTO, 0, 2, "auto|on|off", NULL, NULL},
    /* the daemon's socket */
    {"HAKMEM_PAGERD_SOCKET", OPT_PATH, NULL, 0, 0, 0, "path", hak_opt.pagerd_socket, HAK_SHM_DEFAULT_SOCKET},
    /* 1 = a background thread gives back memory idle past the decay, with no allocator call */
    {"HAKMEM_BACKGROUND", OPT_NUM, &hak_opt.background, 0, 0, 1, "0/1", NULL, NULL},
    /* 1 = ask for transparent huge pages on in-process SuperSlab memory */
    {"HAKMEM_THP", OPT_NUM, &hak_opt.thp, 0, 0, 1, "0/1", NULL, NULL},
    /* 1 = the sampling heap profiler: a profile pprof reads, written at exit */
    {"HAKMEM_PROF", OPT_NUM, &hak_opt.prof, 0, 0, 1, "0/1", NULL, NULL},
    /* mean bytes allocated between two samples */
    {"HAKMEM_PROF_SAMPLE", OPT_NUM, &hak_opt.prof_sample, 524288, 1, 1ull << 40, "bytes", NULL, NULL},
    /* the profile goes to PREFIX.PID.heap */
    {"HAKMEM_PROF_PREFIX", OPT_PATH, NULL, 0, 0, 0, "path", hak_opt.prof_prefix, "hakmem"},
    /* size of the shared file asked of the daemon (address space, not memory) */
    {"HAKMEM_PAGERD_CAPACITY_MB", OPT_NUM, &hak_opt.pagerd_capacity_mb, 16384, 1, HAK_SHM_MAX_CAPACITY, "MiB", NULL, NULL},
};

static bool parse_u64(const char *s, uint64_t *out)
{
    if (!*s)
        return false;
    uint64_t v = 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9' || v > (UINT64_MAX - 9) / 10)
            return false;
        v = v * 10 + (uint64_t)(*s - '0');
    }
    *out = v;
    return true;
}

static bool parse(const struct option_def *o, const char *text)
{
    uint64_t v;
    switch (o->kind) {
    case OPT_NUM:
        if (!parse_u64(text, &v) || v < o->min || v > o->max)
            return false;
        *o->value = v;
        return true;
    case OPT_WORD:
        for (uint64_t i = o->min; i <= o->max; i++)
            if (strcmp(text, pagerd_words[i]) == 0) {
                *o->value = i;
                return true;
            }
        return false;
    case OPT_PATH:
        if (!*text || strlen(text) >= HAK_PATH_MAX)
            return false;
        strcpy(o->path, text);
        return true;
    }
    return false;
}

static void warn_bad(const struct option_def *o, const char *text)
{
    char min[24], max[24], def[24];
    hak_write_str(2, "hakmem: warning: ");
    hak_write_str(2, o->name);
    hak_write_str(2, "='");
    hak_write_str(2, text);
    if (o->kind == OPT_NUM) {
        hak_fmt_u64(min, o->min);
        hak_fmt_u64(max, o->max);
        hak_fmt_u64(def, o->def);
        hak_write_str(2, "' is not a whole number from ");
        hak_write_str(2, min);
        hak_write_str(2, " to ");
        hak_write_str(2, max);
        hak_write_str(2, " (");
        hak_write_str(2, o->unit);
        hak_write_str(2, "); using ");
        hak_write_str(2, def);
    } else if (o->kind == OPT_WORD) {
        hak_write_str(2, "' is not one of ");
        hak_write_str(2, o->unit);
        hak_write_str(2, "; using ");
        hak_write_str(2, pagerd_words[o->def]);
    } else {
        hak_write_str(2, "' is empty or too long; using ");
        hak_write_str(2, o->path_def);
    }
    hak_write_str(2, "\n");
}

void hak_options_init(void)
{
    for (size_t i = 0; i < sizeof options / sizeof options[0]; i++) {
        const struct option_def *o = &options[i];
        if (o->kind == OPT_PATH)
            strcpy(o->path, o->path_def);
        else
            *o->value = o->def;
        const char *text = getenv(o->name);
        if (text && !parse(o, text))
            warn_bad(o, text);
    }
}
