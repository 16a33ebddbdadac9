/* Settings: one table of keys, read from `key = value` lines of the config
 * file and from flags of the same names (--tick-ms for tick_ms). Flags win
 * over the file, on start and on every reload, so a reload never undoes
 * what the command line said. */
#include <errno.h>
#include <getopt.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

#include "pagerd.h"

static const char *const level_names[] = {"warn", "info", "debug", NULL};
static const char *const charge_names[] = {"auto", "daemon", NULL};
static const char *const huge_names[] = {"auto", "hugetlb", "thp", "off", NULL};

/* A key is a number in [min, max], one of names (stored as its index), or
 * a name of fewer than PAGERD_NAME_MAX bytes (text: its default). */
static const struct key {
    const char *name; /* in the file */
    const char *flag; /* on the command line, without the dashes */
    size_t off;       /* in struct settings */
    uint32_t def, min, max;
    const char *const *names;
    const char *text;
} keys[] = {
    {"tick_ms", "tick-ms", offsetof(struct settings, tick_ms), 5, 1, 60000, NULL, NULL},
    {"limit_client", "limit-client", offsetof(struct settings, limit_client), 4096, 0, UINT32_MAX, NULL, NULL},
    {"limit_total", "limit-total", offsetof(struct settings, limit_total), 16384, 0, UINT32_MAX, NULL, NULL},
    {"max_capacity", "max-capacity", offsetof(struct settings, max_capacity), 65536, 1, HAK_SHM_MAX_CAPACITY, NULL,
     NULL},
    {"reclaim_delay_ms", "reclaim-delay-ms", offsetof(struct settings, reclaim_delay_ms), 2000, 0, 86400000, NULL,
     NULL},
    {"min_watermark", "min-watermark", offsetof(struct settings, min_watermark), 2, 0, HAK_SHM_FILL_SLOTS, NULL,
     NULL},
    {"max_watermark", "max-watermark", offsetof(struct settings, max_watermark), HAK_SHM_FILL_SLOTS, 1,
     HAK_SHM_FILL_SLOTS, NULL, NULL},
    {"fake_nodes", "fake-nodes", offsetof(struct settings, fake_nodes), 0, 0, HAK_SHM_MAX_NODES, NULL, NULL},
    {"log_level", "log-level", offsetof(struct settings, log_level), LOG_LEVEL_INFO, 0, 0, level_names, NULL},
    {"limit_uid", "limit-uid", offsetof(struct settings, limit_uid), 8192, 0, UINT32_MAX, NULL, NULL},
    {"sessions_uid", "sessions-uid", offsetof(struct settings, sessions_uid), 256, 0, PAGERD_MAX_SESSIONS, NULL,
     NULL},
    {"connections_uid", "connections-uid", offsetof(struct settings, connections_uid), 512, 1, PAGERD_MAX_CONNS,
     NULL, NULL},
    {"status_per_sec", "status-per-sec", offsetof(struct settings, status_per_sec), 20, 1, 100000, NULL, NULL},
    {"charge", "charge", offsetof(struct settings, charge), CHARGE_SET_AUTO, 0, 0, charge_names, NULL},
    {"cgroup_reserve_mb", "cgroup-reserve-mb", offsetof(struct settings, cgroup_reserve_mb), 16, 0, 1u << 20, NULL,
     NULL},
    {"huge_pages", "huge-pages", offsetof(struct settings, huge_pages), HUGE_SET_AUTO, 0, 0, huge_names, NULL},
    {"user", "user", offsetof(struct settings, user), 0, 0, 0, NULL, "nobody"},
};
#define NKEYS (sizeof keys / sizeof keys[0])

static void *field(struct settings *s, const struct key *k)
{
    return (char *)s + k->off;
}

static uint32_t value_of(const struct settings *s, const struct key *k)
{
    return *(const uint32_t *)((const char *)s + k->off);
}

static void copy_value(struct settings *to, const struct settings *from, const struct key *k)
{
    memcpy(field(to, k), (const char *)from + k->off, k->text ? PAGERD_NAME_MAX : sizeof(uint32_t));
}

void config_defaults(struct settings *s)
{
    memset(s, 0, sizeof *s);
    for (size_t i = 0; i < NKEYS; i++)
        if (keys[i].text)
            snprintf(field(s, &keys[i]), PAGERD_NAME_MAX, "%s", keys[i].text);
        else
            *(uint32_t *)field(s, &keys[i]) = keys[i].def;
}

/* A user name as useradd allows them: letters, digits, '_', '-', '.'. */
static bool parse_name(const char *v, char *out)
{
    size_t n = strlen(v);
    if (n == 0 || n >= PAGERD_NAME_MAX || v[0] == '-' || strspn(v, "abcdefghijklmnopqrstuvwxyz"
                                                                  "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.") != n)
        return false;
    memcpy(out, v, n + 1);
    return true;
}

/* A whole decimal number in the key's range, one of its names, or a name;
 * into the key's field of s. */
static bool parse_value(const struct key *k, const char *v, struct settings *s)
{
    uint32_t *out = field(s, k);
    if (k->text)
        return parse_name(v, field(s, k));
    if (k->names) {
        for (uint32_t l = 0; k->names[l]; l++)
            if (strcmp(v, k->names[l]) == 0) {
                *out = l;
                return true;
            }
        return false;
    }
    if (*v < '0' || *v > '9')
        return false;
    errno = 0;
    char *end;
    unsigned long long n = strtoull(v, &end, 10);
    if (errno || *end || n < k->min || n > k->max)
        return false;
    *out = (uint32_t)n;
    return true;
}

static void range_text(const struct key *k, char *buf, size_t len)
{
    if (k->text) {
        snprintf(buf, len, "a user name");
        return;
    }
    if (!k->names) {
        snprintf(buf, len, "%u..%u", k->min, k->max);
        return;
    }
    size_t at = 0;
    buf[0] = 0;
    for (uint32_t l = 0; k->names[l] && at < len; l++)
        at += (size_t)snprintf(buf + at, len - at, "%s%s", l ? "|" : "", k->names[l]);
}

static const struct key *find_key(const char *name)
{
    for (size_t i = 0; i < NKEYS; i++)
        if (strcmp(name, keys[i].name) == 0)
            return &keys[i];
    return NULL;
}

static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    size_t n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\n' || s[n - 1] == '\r'))
        s[--n] = 0;
    return s;
}

/* One line; false with err set if it is not a known key with a good value. */
static bool parse_line(char *line, struct settings *s, char *err, size_t errlen)
{
    char *hash = strchr(line, '#');
    if (hash)
        *hash = 0;
    char *text = trim(line);
    if (*text == 0)
        return true;
    char *eq = strchr(text, '=');
    if (!eq) {
        snprintf(err, errlen, "expected key = value");
        return false;
    }
    *eq = 0;
    char *name = trim(text), *value = trim(eq + 1);
    const struct key *k = find_key(name);
    if (!k) {
        snprintf(err, errlen, "unknown key '%.64s'", name);
        return false;
    }
    if (!parse_value(k, value, s)) {
        char range[32];
        range_text(k, range, sizeof range);
        snprintf(err, errlen, "bad value '%.64s' for %s (%s)", value, k->name, range);
        return false;
    }
    return true;
}

static bool load_file(const struct config *cfg, struct settings *s, char *err, size_t errlen)
{
    FILE *f = fopen(cfg->path, "re");
    if (!f) {
        if (errno == ENOENT && !cfg->path_given)
            return true; /* the default file is optional */
        snprintf(err, errlen, "%s: %s", cfg->path, strerror(errno));
        return false;
    }
    char *line = NULL, why[160];
    size_t cap = 0;
    unsigned lineno = 0;
    bool ok = true;
    while (ok && getline(&line, &cap, f) >= 0) {
        lineno++;
        if (!parse_line(line, s, why, sizeof why)) {
            snprintf(err, errlen, "%s:%u: %s", cfg->path, lineno, why);
            ok = false;
        }
    }
    if (ok && ferror(f)) {
        snprintf(err, errlen, "%s: read error", cfg->path);
        ok = false;
    }
    free(line);
    fclose(f);
    return ok;
}

bool config_load(const struct config *cfg, struct settings *out, char *err, size_t errlen)
{
    struct settings s;
    config_defaults(&s);
    if (!load_file(cfg, &s, err, errlen))
        return false;
    for (size_t i = 0; i < NKEYS; i++)
        if (cfg->flag_set & (1u << i))
            copy_value(&s, &cfg->flags, &keys[i]);
    if (s.min_watermark > s.max_watermark) {
        snprintf(err, errlen, "%s: min_watermark %u is above max_watermark %u", cfg->path, s.min_watermark,
                 s.max_watermark);
        return false;
    }
    *out = s;
    return true;
}

void config_log(const struct settings *s)
{
    char line[512];
    size_t at = 0;
    for (size_t i = 0; i < NKEYS && at < sizeof line; i++) {
        uint32_t v = keys[i].text ? 0 : value_of(s, &keys[i]);
        if (keys[i].text)
            at += (size_t)snprintf(line + at, sizeof line - at, " %s=%s", keys[i].name,
                                   (const char *)s + keys[i].off);
        else if (keys[i].names)
            at += (size_t)snprintf(line + at, sizeof line - at, " %s=%s", keys[i].name, keys[i].names[v]);
        else
            at += (size_t)snprintf(line + at, sizeof line - at, " %s=%u", keys[i].name, v);
    }
    log_info("settings:%s", line);
}

static void usage(FILE *f)
{
    fprintf(f, "usage: hakmem-pagerd [--foreground] [--socket PATH] [--config FILE]");
    for (size_t i = 0; i < NKEYS; i++) {
        char range[64];
        range_text(&keys[i], range, sizeof range);
        fprintf(f, " [--%s %s]", keys[i].flag, keys[i].names ? range : keys[i].text ? "USER" : "N");
    }
    fprintf(f, "\n");
}

enum { OPT_SOCKET = 256, OPT_FOREGROUND, OPT_CONFIG, OPT_HELP, OPT_VERSION, OPT_KEY };

/* Returns 0 to run, 1 when done (help, version), -1 on a bad command line
 * (the message is printed). */
int config_flags(struct config *cfg, int argc, char **argv)
{
    struct option opts[NKEYS + 6];
    const struct option fixed[] = {
        {"socket", required_argument, NULL, OPT_SOCKET}, {"foreground", no_argument, NULL, OPT_FOREGROUND},
        {"config", required_argument, NULL, OPT_CONFIG}, {"help", no_argument, NULL, OPT_HELP},
        {"version", no_argument, NULL, OPT_VERSION},
    };
    size_t n = 0;
    for (; n < sizeof fixed / sizeof fixed[0]; n++)
        opts[n] = fixed[n];
    for (size_t i = 0; i < NKEYS; i++, n++)
        opts[n] = (struct option){keys[i].flag, required_argument, NULL, OPT_KEY + (int)i};
    opts[n] = (struct option){0};

    cfg->path = PAGERD_CONFIG;
    cfg->socket = HAK_SHM_DEFAULT_SOCKET;
    int ch;
    while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (ch) {
        case OPT_SOCKET:
            cfg->socket = optarg;
            break;
        case OPT_FOREGROUND:
            cfg->foreground = true;
            break;
        case OPT_CONFIG:
            cfg->path = optarg;
            cfg->path_given = true;
            break;
        case OPT_HELP:
            usage(stdout);
            return 1;
        case OPT_VERSION:
            printf("hakmem-pagerd %s\n", PAGERD_VERSION);
            return 1;
        default:
            if (ch < OPT_KEY || ch >= OPT_KEY + (int)NKEYS) {
                usage(stderr);
                return -1;
            }
            const struct key *k = &keys[ch - OPT_KEY];
            if (!parse_value(k, optarg, &cfg->flags)) {
                char range[32];
                range_text(k, range, sizeof range);
                fprintf(stderr, "hakmem-pagerd: --%s: bad value '%s' (%s)\n", k->flag, optarg, range);
                return -1;
            }
            cfg->flag_set |= 1u << (ch - OPT_KEY);
        }
    }
    if (optind != argc) {
        fprintf(stderr, "hakmem-pagerd: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return -1;
    }
    if (strlen(cfg->socket) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
        fprintf(stderr, "hakmem-pagerd: --socket: path too long\n");
        return -1;
    }
    return 0;
}

/* SIGHUP: the file again, then the flags again. A bad file changes
 * nothing. The topology is fixed for the daemon's life: every client's
 * layout depends on it. */
void config_reload(void)
{
    struct settings s;
    char err[512];
    if (!config_load(&pd.cfg, &s, err, sizeof err)) {
        log_warnx("reload: keeping the old settings: %s", err);
        return;
    }
    if (s.fake_nodes != pd.set.fake_nodes) {
        log_warnx("reload: fake_nodes changes need a restart; keeping %u", pd.set.fake_nodes);
        s.fake_nodes = pd.set.fake_nodes;
    }
    if (strcmp(s.user, pd.set.user) != 0) {
        log_warnx("reload: user changes need a restart; keeping %s", pd.set.user);
        memcpy(s.user, pd.set.user, sizeof s.user);
    }
    pd.set = s;
    log_setlevel(s.log_level);
    log_info("reloaded %s", pd.cfg.path);
    config_log(&s);
    pages_detect();
}
