/* A snapshot as text for people (a summary, a table of nodes, tables of
 * clients and of their memory cgroups, a table of uids) or as one JSON
 * object for programs, with the same numbers under the names of the
 * contract's fields (shm/hakmem_shm.h). */
#include <inttypes.h>

#include "hakctl.h"

/* 45s, 12m05s, 3h02m07s, 2d03h04m: short, and sortable by eye. */
static const char *duration(uint64_t ms, char *buf, size_t len)
{
    uint64_t s = ms / 1000, m = s / 60, h = m / 60, d = h / 24;
    if (d)
        snprintf(buf, len, "%" PRIu64 "d%02" PRIu64 "h%02" PRIu64 "m", d, h % 24, m % 60);
    else if (h)
        snprintf(buf, len, "%" PRIu64 "h%02" PRIu64 "m%02" PRIu64 "s", h, m % 60, s % 60);
    else if (m)
        snprintf(buf, len, "%" PRIu64 "m%02" PRIu64 "s", m, s % 60);
    else
        snprintf(buf, len, "%" PRIu64 "s", s);
    return buf;
}

static void text_daemon(FILE *f, const struct snapshot *s)
{
    const struct hak_status_daemon *d = &s->d;
    char up[32];
    fprintf(f, "hakmem-pagerd %s on %s: pid %u, up %s\n", d->version, s->socket, d->pid,
            duration(d->uptime_ms, up, sizeof up));
    fprintf(f, "nodes %u (NUMA: %s), clients %u, SuperSlabs charged %" PRIu64 " (limits: %" PRIu64
               " per client, %" PRIu64 " per uid, %" PRIu64 " in all; %u sessions per uid; %u status requests "
               "a second)\n",
            d->nnodes, d->numa ? "yes" : "no", d->nclients, d->ss_total, d->ss_limit_client, d->ss_limit_uid,
            d->ss_limit_total, d->sessions_uid, d->status_per_sec);
    if (d->pages == HAK_PAGES_HUGETLB)
        fprintf(f, "pages: 2 MiB from the host's pool (%u reserved, %u free) for clients in unlimited cgroups; "
                   "others: %s\n",
                d->hugetlb_total, d->hugetlb_free, d->thp ? "2 MiB shmem THP" : "4 KiB");
    else if (d->pages == HAK_PAGES_THP)
        fprintf(f, "pages: 2 MiB shmem THP (hugetlb: %s)\n", d->pages_why);
    else
        fprintf(f, "pages: 4 KiB (%s)\n", d->pages_why);
}

static void text_nodes(FILE *f, const struct snapshot *s)
{
    fprintf(f, "\n%4s %6s %6s %8s %11s %8s\n", "NODE", "READY", "DIRTY", "CLIENTS", "PREFAULTED", "PUNCHED");
    for (uint32_t i = 0; i < s->d.nnodes; i++) {
        const struct hak_status_node *n = &s->nodes[i];
        fprintf(f, "%4u %6u %6u %8u %11" PRIu64 " %8" PRIu64 "\n", n->node, n->ready, n->dirty, n->clients,
                n->prefaulted, n->punched);
    }
}

static void text_clients(FILE *f, const struct snapshot *s)
{
    if (s->d.nclients == 0) {
        fprintf(f, "\nno clients\n");
        return;
    }
    fprintf(f, "\n%8s %6s %4s %6s %5s %8s %9s %9s %10s %10s %8s %9s\n", "PID", "UID", "NODE", "HELD", "RING",
            "SERVED", "RETURNED", "RECLAIMED", "LIMIT-HITS", "PAGES", "SESSION", "CONNECTED");
    for (uint32_t i = 0; i < s->d.nclients; i++) {
        const struct hak_status_client *c = &s->clients[i];
        char up[32];
        fprintf(f, "%8d %6u %4u %6u %5u %8" PRIu64 " %9" PRIu64 " %9" PRIu64 " %10" PRIu64 " %10s %8" PRIu64 " %9s\n",
                c->pid, c->uid, c->node, c->held, c->ring_level, c->served, c->returned, c->reclaimed, c->limit_hits,
                hak_pages_name(c->pages), c->session, duration(c->connected_ms, up, sizeof up));
    }
}

/* MiB, or "-" for no limit (and for a cgroup never read). */
static const char *mib(uint64_t bytes, char *buf, size_t len)
{
    if (bytes == UINT64_MAX)
        snprintf(buf, len, "-");
    else
        snprintf(buf, len, "%" PRIu64, bytes >> 20);
    return buf;
}

/* Printable: a control byte becomes '?'. */
static void text_string(FILE *f, const char *str)
{
    for (const unsigned char *p = (const unsigned char *)str; *p; p++)
        fputc(*p < 0x20 || *p == 0x7f ? '?' : *p, f);
}

/* Where each client's memory is charged: the SuperSlabs it holds, has
 * waiting and returned, split by whose cgroup pays for their pages. */
static void text_cgroups(FILE *f, const struct snapshot *s)
{
    if (s->d.nclients == 0)
        return;
    fprintf(f, "\n%8s %6s %-7s %10s %10s %9s %9s %8s  %s\n", "PID", "UID", "CHARGE", "CGROUP-MIB", "DAEMON-MIB",
            "CG-LIMIT", "CG-USAGE", "CG-HITS", "CGROUP");
    for (uint32_t i = 0; i < s->d.nclients; i++) {
        const struct hak_status_client *c = &s->clients[i];
        uint64_t all = (uint64_t)c->held + c->ring_level + c->dirty;
        uint64_t daemon = c->daemon_held < all ? c->daemon_held : all;
        char lim[24], use[24];
        fprintf(f, "%8d %6u %-7s %10" PRIu64 " %10" PRIu64 " %9s %9s %8" PRIu64 "  ", c->pid, c->uid,
                hak_charge_name(c->charge), all - daemon, daemon, mib(c->cg_limit, lim, sizeof lim),
                mib(c->cg_usage, use, sizeof use), c->cgroup_hits);
        text_string(f, c->cgroup);
        fputc('\n', f);
    }
}

static void text_users(FILE *f, const struct snapshot *s)
{
    if (s->d.nusers == 0)
        return;
    fprintf(f, "\n%6s %6s %8s %8s %10s %8s\n", "UID", "CONNS", "SESSIONS", "CHARGED", "LIMIT-HITS", "REFUSED");
    for (uint32_t i = 0; i < s->d.nusers; i++) {
        const struct hak_status_user *u = &s->users[i];
        fprintf(f, "%6u %6u %8u %8u %10" PRIu64 " %8" PRIu64 "\n", u->uid, u->conns, u->sessions, u->charged,
                u->limit_hits, u->refused);
    }
}

void print_text(FILE *f, const struct snapshot *s)
{
    text_daemon(f, s);
    text_nodes(f, s);
    text_clients(f, s);
    text_cgroups(f, s);
    text_users(f, s);
}

/* A JSON string: quotes, backslashes and control bytes escaped; other
 * bytes as they are. */
static void json_string(FILE *f, const char *str)
{
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)str; *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf(f, "\\%c", *p);
        else if (*p < 0x20 || *p == 0x7f)
            fprintf(f, "\\u%04x", *p);
        else
            fputc(*p, f);
    }
    fputc('"', f);
}

static void json_node(FILE *f, const struct hak_status_node *n)
{
    fprintf(f,
            "{\"node\":%u,\"ready\":%u,\"dirty\":%u,\"clients\":%u,\"prefaulted\":%" PRIu64
            ",\"punched\":%" PRIu64 "}",
            n->node, n->ready, n->dirty, n->clients, n->prefaulted, n->punched);
}

/* A byte count, or null for none (no limit, never read). */
static void json_bytes(FILE *f, const char *name, uint64_t v)
{
    if (v == UINT64_MAX)
        fprintf(f, ",\"%s\":null", name);
    else
        fprintf(f, ",\"%s\":%" PRIu64, name, v);
}

static void json_client(FILE *f, const struct hak_status_client *c)
{
    fprintf(f,
            "{\"pid\":%d,\"uid\":%u,\"node\":%u,\"session\":%" PRIu64 ",\"capacity\":%u,\"held\":%u,"
            "\"ring_level\":%u,\"dirty\":%u,\"watermark\":%u,\"served\":%" PRIu64 ",\"returned\":%" PRIu64
            ",\"limit_hits\":%" PRIu64 ",\"connected_ms\":%" PRIu64 ",\"charge\":\"%s\",\"daemon_held\":%u"
            ",\"cgroup_hits\":%" PRIu64 ",\"reclaimed\":%" PRIu64 ",\"pages\":\"%s\"",
            c->pid, c->uid, c->node, c->session, c->capacity, c->held, c->ring_level, c->dirty, c->watermark,
            c->served, c->returned, c->limit_hits, c->connected_ms, hak_charge_name(c->charge), c->daemon_held,
            c->cgroup_hits, c->reclaimed, hak_pages_name(c->pages));
    json_bytes(f, "cg_limit", c->cg_limit);
    json_bytes(f, "cg_usage", c->cg_usage);
    fputs(",\"cgroup\":", f);
    json_string(f, c->cgroup);
    fputc('}', f);
}

static void json_user(FILE *f, const struct hak_status_user *u)
{
    fprintf(f,
            "{\"uid\":%u,\"conns\":%u,\"sessions\":%u,\"charged\":%u,\"limit_hits\":%" PRIu64
            ",\"refused\":%" PRIu64 "}",
            u->uid, u->conns, u->sessions, u->charged, u->limit_hits, u->refused);
}

void print_json(FILE *f, const struct snapshot *s)
{
    const struct hak_status_daemon *d = &s->d;
    fputs("{\"socket\":", f);
    json_string(f, s->socket);
    fputs(",\"version\":", f);
    json_string(f, d->version);
    fprintf(f,
            ",\"pid\":%u,\"uptime_ms\":%" PRIu64 ",\"numa\":%s,\"ss_total\":%" PRIu64
            ",\"ss_limit_client\":%" PRIu64 ",\"ss_limit_uid\":%" PRIu64 ",\"ss_limit_total\":%" PRIu64
            ",\"sessions_uid\":%u,\"status_per_sec\":%u,\"pages\":\"%s\",\"thp\":%s,\"hugetlb_total\":%u"
            ",\"hugetlb_free\":%u,\"pages_why\":",
            d->pid, d->uptime_ms, d->numa ? "true" : "false", d->ss_total, d->ss_limit_client, d->ss_limit_uid,
            d->ss_limit_total, d->sessions_uid, d->status_per_sec, hak_pages_name(d->pages),
            d->thp ? "true" : "false", d->hugetlb_total, d->hugetlb_free);
    json_string(f, d->pages_why);
    fputs(",\"nodes\":[", f);
    for (uint32_t i = 0; i < d->nnodes; i++) {
        if (i)
            fputc(',', f);
        json_node(f, &s->nodes[i]);
    }
    fputs("],\"clients\":[", f);
    for (uint32_t i = 0; i < d->nclients; i++) {
        if (i)
            fputc(',', f);
        json_client(f, &s->clients[i]);
    }
    fputs("],\"users\":[", f);
    for (uint32_t i = 0; i < d->nusers; i++) {
        if (i)
            fputc(',', f);
        json_user(f, &s->users[i]);
    }
    fputs("]}\n", f);
}
