/* A snapshot as text for people (a summary, a table of nodes, a table of
 * clients) or as one JSON object for programs, with the same numbers under
 * the names of the contract's fields (shm/hakmem_shm.h). */
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
               " per client, %" PRIu64 " in all)\n",
            d->nnodes, d->numa ? "yes" : "no", d->nclients, d->ss_total, d->ss_limit_client, d->ss_limit_total);
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
    fprintf(f, "\n%8s %6s %4s %6s %5s %8s %9s %10s %8s %9s\n", "PID", "UID", "NODE", "HELD", "RING", "SERVED",
            "RETURNED", "LIMIT-HITS", "SESSION", "CONNECTED");
    for (uint32_t i = 0; i < s->d.nclients; i++) {
        const struct hak_status_client *c = &s->clients[i];
        char up[32];
        fprintf(f, "%8d %6u %4u %6u %5u %8" PRIu64 " %9" PRIu64 " %10" PRIu64 " %8" PRIu64 " %9s\n", c->pid,
                c->uid, c->node, c->held, c->ring_level, c->served, c->returned, c->limit_hits, c->session,
                duration(c->connected_ms, up, sizeof up));
    }
}

void print_text(FILE *f, const struct snapshot *s)
{
    text_daemon(f, s);
    text_nodes(f, s);
    text_clients(f, s);
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

static void json_client(FILE *f, const struct hak_status_client *c)
{
    fprintf(f,
            "{\"pid\":%d,\"uid\":%u,\"node\":%u,\"session\":%" PRIu64 ",\"capacity\":%u,\"held\":%u,"
            "\"ring_level\":%u,\"dirty\":%u,\"watermark\":%u,\"served\":%" PRIu64 ",\"returned\":%" PRIu64
            ",\"limit_hits\":%" PRIu64 ",\"connected_ms\":%" PRIu64 "}",
            c->pid, c->uid, c->node, c->session, c->capacity, c->held, c->ring_level, c->dirty, c->watermark,
            c->served, c->returned, c->limit_hits, c->connected_ms);
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
            ",\"ss_limit_client\":%" PRIu64 ",\"ss_limit_total\":%" PRIu64 ",\"nodes\":[",
            d->pid, d->uptime_ms, d->numa ? "true" : "false", d->ss_total, d->ss_limit_client, d->ss_limit_total);
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
    fputs("]}\n", f);
}
