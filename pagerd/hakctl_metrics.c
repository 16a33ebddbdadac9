/* A snapshot in the Prometheus text exposition format (version 0.0.4):
 * every family with its HELP and TYPE, names hakmem_pagerd_*, sizes in
 * bytes, counters ending in _total. SuperSlabs are 1 MiB, so the daemon's
 * counts become bytes here. Label values are escaped as the format asks
 * (backslash, quote, newline); a cgroup path is the client's to choose. */
#include <inttypes.h>

#include "hakctl.h"

#define SS_BYTES ((uint64_t)HAK_SHM_SS_SIZE)

enum kind { GAUGE, COUNTER };

static void family(FILE *f, const char *name, enum kind k, const char *help)
{
    fprintf(f, "# HELP hakmem_pagerd_%s %s\n# TYPE hakmem_pagerd_%s %s\n", name, help, name,
            k == GAUGE ? "gauge" : "counter");
}

static void label_value(FILE *f, const char *v)
{
    for (; *v; v++) {
        if (*v == '\\' || *v == '"')
            fprintf(f, "\\%c", *v);
        else if (*v == '\n')
            fputs("\\n", f);
        else
            fputc(*v, f);
    }
}

/* The labels of one client: enough to tell it apart and to group by. */
static void client_labels(FILE *f, const struct hak_status_client *c)
{
    fprintf(f, "{pid=\"%d\",uid=\"%u\",session=\"%" PRIu64 "\",pages=\"%s\",cgroup=\"", c->pid, c->uid, c->session,
            hak_pages_name(c->pages));
    label_value(f, c->cgroup);
    fputs("\"}", f);
}

static void daemon_metrics(FILE *f, const struct snapshot *s)
{
    const struct hak_status_daemon *d = &s->d;
    family(f, "info", GAUGE, "The daemon: version, and the pages new clients may get.");
    fputs("hakmem_pagerd_info{version=\"", f);
    label_value(f, d->version);
    fprintf(f, "\",pages=\"%s\",numa=\"%s\"} 1\n", hak_pages_name(d->pages), d->numa ? "yes" : "no");
    family(f, "page_size_bytes", GAUGE, "Size of the pages new clients' files are backed with, at best.");
    fprintf(f, "hakmem_pagerd_page_size_bytes %" PRIu64 "\n",
            d->pages == HAK_PAGES_4K ? (uint64_t)4096 : (uint64_t)HAK_SHM_HUGE_SIZE);
    family(f, "uptime_seconds", GAUGE, "Seconds since the daemon started.");
    fprintf(f, "hakmem_pagerd_uptime_seconds %.3f\n", (double)d->uptime_ms / 1000);
    family(f, "clients", GAUGE, "Client sessions.");
    fprintf(f, "hakmem_pagerd_clients %u\n", d->nclients);
    family(f, "charged_bytes", GAUGE, "Memory held by clients or waiting for them, over all clients.");
    fprintf(f, "hakmem_pagerd_charged_bytes %" PRIu64 "\n", d->ss_total * SS_BYTES);
    family(f, "limit_bytes", GAUGE, "Limits on what clients hold or have waiting: per client, per uid, in all.");
    fprintf(f, "hakmem_pagerd_limit_bytes{scope=\"client\"} %" PRIu64 "\n", d->ss_limit_client * SS_BYTES);
    fprintf(f, "hakmem_pagerd_limit_bytes{scope=\"uid\"} %" PRIu64 "\n", d->ss_limit_uid * SS_BYTES);
    fprintf(f, "hakmem_pagerd_limit_bytes{scope=\"total\"} %" PRIu64 "\n", d->ss_limit_total * SS_BYTES);
    family(f, "hugetlb_pages", GAUGE, "2 MiB pages of the host's huge page pool.");
    fprintf(f, "hakmem_pagerd_hugetlb_pages{state=\"reserved\"} %u\n", d->hugetlb_total);
    fprintf(f, "hakmem_pagerd_hugetlb_pages{state=\"free\"} %u\n", d->hugetlb_free);
}

static void node_metrics(FILE *f, const struct snapshot *s)
{
    static const struct {
        const char *name;
        enum kind k;
        const char *help;
    } fam[] = {
        {"node_ready_bytes", GAUGE, "Pre-faulted memory waiting in clients' fill rings."},
        {"node_dirty_bytes", GAUGE, "Returned memory kept warm for reuse, not yet punched."},
        {"node_clients", GAUGE, "Clients that last drew from this node."},
        {"node_prefaulted_bytes_total", COUNTER, "Memory pre-faulted on this node."},
        {"node_punched_bytes_total", COUNTER, "Memory punched back to the kernel on this node."},
    };
    for (size_t k = 0; k < sizeof fam / sizeof fam[0]; k++) {
        family(f, fam[k].name, fam[k].k, fam[k].help);
        for (uint32_t i = 0; i < s->d.nnodes; i++) {
            const struct hak_status_node *n = &s->nodes[i];
            uint64_t v[] = {n->ready * SS_BYTES, n->dirty * SS_BYTES, n->clients, n->prefaulted * SS_BYTES,
                            n->punched * SS_BYTES};
            fprintf(f, "hakmem_pagerd_%s{node=\"%u\"} %" PRIu64 "\n", fam[k].name, n->node, v[k]);
        }
    }
}

static void client_metrics(FILE *f, const struct snapshot *s)
{
    static const struct {
        const char *name;
        enum kind k;
        const char *help;
    } fam[] = {
        {"client_held_bytes", GAUGE, "Memory in the client's hands."},
        {"client_ring_bytes", GAUGE, "Pre-faulted memory waiting in the client's fill rings."},
        {"client_dirty_bytes", GAUGE, "Memory the client returned, kept warm, not yet punched."},
        {"client_served_bytes_total", COUNTER, "Memory the client took from its rings."},
        {"client_returned_bytes_total", COUNTER, "Memory the client gave back."},
        {"client_reclaimed_bytes_total", COUNTER, "Idle memory the daemon took back from the client."},
        {"client_limit_hits_total", COUNTER, "Refills refused at a limit."},
        {"client_cgroup_limit_hits_total", COUNTER, "Of which for want of room in its memory cgroup."},
        {"client_daemon_charged_bytes", GAUGE, "Of its memory, what the daemon's own cgroup pays for."},
        {"client_connected_seconds", GAUGE, "Seconds since the client connected."},
    };
    for (size_t k = 0; k < sizeof fam / sizeof fam[0]; k++) {
        family(f, fam[k].name, fam[k].k, fam[k].help);
        for (uint32_t i = 0; i < s->d.nclients; i++) {
            const struct hak_status_client *c = &s->clients[i];
            uint64_t v[] = {c->held * SS_BYTES,     c->ring_level * SS_BYTES, c->dirty * SS_BYTES,
                            c->served * SS_BYTES,   c->returned * SS_BYTES,   c->reclaimed * SS_BYTES,
                            c->limit_hits,          c->cgroup_hits,           c->daemon_held * SS_BYTES,
                            c->connected_ms / 1000};
            fprintf(f, "hakmem_pagerd_%s", fam[k].name);
            client_labels(f, c);
            fprintf(f, " %" PRIu64 "\n", v[k]);
        }
    }
    family(f, "client_charge_info", GAUGE, "Whose memory cgroup pays for the client's pages.");
    for (uint32_t i = 0; i < s->d.nclients; i++) {
        const struct hak_status_client *c = &s->clients[i];
        fprintf(f, "hakmem_pagerd_client_charge_info{pid=\"%d\",session=\"%" PRIu64 "\",charge=\"%s\"} 1\n", c->pid,
                c->session, hak_charge_name(c->charge));
    }
    family(f, "client_cgroup_limit_bytes", GAUGE, "The client's memory cgroup limit (+Inf: none).");
    for (uint32_t i = 0; i < s->d.nclients; i++) {
        const struct hak_status_client *c = &s->clients[i];
        fputs("hakmem_pagerd_client_cgroup_limit_bytes", f);
        client_labels(f, c);
        if (c->cg_limit == UINT64_MAX)
            fputs(" +Inf\n", f);
        else
            fprintf(f, " %" PRIu64 "\n", c->cg_limit);
    }
    family(f, "client_cgroup_usage_bytes", GAUGE, "The client's memory cgroup usage, as last read.");
    for (uint32_t i = 0; i < s->d.nclients; i++) {
        fputs("hakmem_pagerd_client_cgroup_usage_bytes", f);
        client_labels(f, &s->clients[i]);
        fprintf(f, " %" PRIu64 "\n", s->clients[i].cg_usage);
    }
}

static void user_metrics(FILE *f, const struct snapshot *s)
{
    static const struct {
        const char *name;
        enum kind k;
        const char *help;
    } fam[] = {
        {"user_connections", GAUGE, "Connections of the uid."},
        {"user_sessions", GAUGE, "Client sessions of the uid."},
        {"user_charged_bytes", GAUGE, "Memory the uid's sessions hold or have waiting."},
        {"user_limit_hits_total", COUNTER, "Refills refused at the per-uid limit."},
        {"user_refused_total", COUNTER, "Connections, sessions and status requests refused."},
    };
    for (size_t k = 0; k < sizeof fam / sizeof fam[0]; k++) {
        family(f, fam[k].name, fam[k].k, fam[k].help);
        for (uint32_t i = 0; i < s->d.nusers; i++) {
            const struct hak_status_user *u = &s->users[i];
            uint64_t v[] = {u->conns, u->sessions, u->charged * SS_BYTES, u->limit_hits, u->refused};
            fprintf(f, "hakmem_pagerd_%s{uid=\"%u\"} %" PRIu64 "\n", fam[k].name, u->uid, v[k]);
        }
    }
}

void print_metrics(FILE *f, const struct snapshot *s)
{
    daemon_metrics(f, s);
    node_metrics(f, s);
    client_metrics(f, s);
    user_metrics(f, s);
}
