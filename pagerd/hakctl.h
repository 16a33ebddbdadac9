/* hakctl, the command-line view of a running hakmem-pagerd: it asks for
 * STATUS on the daemon's socket and prints the reply as a table or as one
 * JSON object.
 *
 * This header is the map of the program: the exit codes, the snapshot,
 * then the prototypes of each file under its name.
 *
 * Trust: the reply comes from whatever listens on the socket. It is taken
 * only if its size is exactly what its own counts say (hak_msg_check), its
 * strings are cut to their fields, and every string printed is escaped. */
#ifndef HAKCTL_H
#define HAKCTL_H

#include <stddef.h>
#include <stdio.h>

#include "hakmem_shm.h"

/* How long a daemon that accepted the connection may take to answer. */
#define HAKCTL_TIMEOUT_MS 5000

/* Exit codes; hakctl(1) documents them. */
enum hakctl_exit {
    HAKCTL_OK = 0,
    HAKCTL_UNREACHABLE = 1, /* no daemon at the socket, or no reply in time */
    HAKCTL_USAGE = 2,       /* bad command line */
    HAKCTL_BAD_REPLY = 3,   /* something answered, but not with a valid status */
    HAKCTL_REFUSED = 4,     /* the daemon refused the request (status rate limit) */
    HAKCTL_OUTPUT = 5,      /* --output FILE could not be written */
};

/* One STATUS reply, unpacked. Filled by hakctl_query.c only. */
struct snapshot {
    const char *socket;           /* where it was asked */
    struct hak_status_daemon d;   /* d.version is NUL-terminated */
    struct hak_status_node nodes[HAK_SHM_MAX_NODES];             /* [d.nnodes] */
    struct hak_status_client clients[HAK_STATUS_MAX_CLIENTS];   /* [d.nclients], cgroup NUL-terminated */
    struct hak_status_user users[HAK_STATUS_MAX_USERS];         /* [d.nusers] */
};

/* hakctl_query.c */
/* Returns HAKCTL_OK with *snap filled, or another exit code with a
 * one-line reason (without the socket's name) in err. */
enum hakctl_exit query_status(const char *socket, struct snapshot *snap, char *err, size_t errlen);

/* hakctl_print.c */
void print_text(FILE *f, const struct snapshot *s);
void print_json(FILE *f, const struct snapshot *s);

/* hakctl_metrics.c */
void print_metrics(FILE *f, const struct snapshot *s);

#endif /* HAKCTL_H */
