/* Every HAKMEM_* environment option, in one table. Read once at start-up;
 * a bad value is reported in one line and the default is used. The README
 * carries the same table. */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

struct hak_options hak_opt;

struct option_def {
    const char *name;
    uint64_t *value;
    uint64_t def, min, max;
    const char *unit;
};

static const struct option_def options[] = {
    /* address space reserved for SuperSlabs; 0 = max(64, 4 x RAM) GiB */
    {"HAKMEM_ARENA_GB", &hak_opt.arena_gib, 0, 0, 1u << 20, "GiB"},
    /* idle time before an empty SuperSlab or cached large mapping goes back to the OS */
    {"HAKMEM_DECAY_MS", &hak_opt.decay_ms, 1000, 0, 3600000, "ms"},
    /* bytes of freed large mappings kept for reuse */
    {"HAKMEM_LARGE_CACHE_MB", &hak_opt.large_cache_mb, 64, 0, 1u << 20, "MiB"},
    /* 1 = print statistics at exit */
    {"HAKMEM_STATS", &hak_opt.stats, 0, 0, 1, "0/1"},
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

static void warn_bad(const struct option_def *o, const char *text)
{
    char min[24], max[24], def[24];
    hak_fmt_u64(min, o->min);
    hak_fmt_u64(max, o->max);
    hak_fmt_u64(def, o->def);
    hak_write_str(2, "hakmem: warning: ");
    hak_write_str(2, o->name);
    hak_write_str(2, "='");
    hak_write_str(2, text);
    hak_write_str(2, "' is not a whole number from ");
    hak_write_str(2, min);
    hak_write_str(2, " to ");
    hak_write_str(2, max);
    hak_write_str(2, " (");
    hak_write_str(2, o->unit);
    hak_write_str(2, "); using ");
    hak_write_str(2, def);
    hak_write_str(2, "\n");
}

void hak_options_init(void)
{
    for (size_t i = 0; i < sizeof options / sizeof options[0]; i++) {
        const struct option_def *o = &options[i];
        const char *text = getenv(o->name);
        uint64_t v;
        *o->value = o->def;
        if (!text)
            continue;
        if (parse_u64(text, &v) && v >= o->min && v <= o->max)
            *o->value = v;
        else
            warn_bad(o, text);
    }
}
