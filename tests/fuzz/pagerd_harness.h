/* The daemon without its io_uring loop, for the daemon's fuzz targets.
 *
 * session.c, pool.c, reclaim.c, status.c, charger.c, users.c, config.c and
 * log.c are linked as they are. pagerd_harness.c stands in for the files
 * that are not: loop.c (a receive, a pre-fault or a punch is queued here
 * and completed through the same handlers the loop dispatches to, with the
 * result the input picks), main.c (the daemon's state, and a clock the
 * input moves) and cgroup.c (one cgroup for every client, with the room
 * the input sets; no charger can be placed in it, so the daemon
 * pre-faults within that room). A client is a socketpair: the daemon gets one end through
 * session_accepted, as from accept; the harness holds the other, reads and
 * checks every reply there, and maps the memfd of a welcome as a client
 * does, so the input can write the control area as a client can.
 *
 * After every step fz_check() holds the daemon's records to their
 * invariants (every SuperSlab in exactly one state, counts, charge and
 * limits, free stack, warm deques, ring shadows, references, the uids' and
 * the cgroup's books); fz_tick() checks that new pages fit the cgroup's
 * room, and
 * also checks every SuperSlab the daemon took back against what the
 * client really held. */
#ifndef PAGERD_HARNESS_H
#define PAGERD_HARNESS_H

#include "fuzz.h"
#include "pagerd.h"

#define FZ_CONNS 3 /* connections at once */
#define FZ_HELD 64 /* offsets a client keeps track of */

struct fz_conn {
    struct client *c;     /* the daemon's record; NULL when closed */
    int peer;             /* the client's end of the socketpair */
    bool recv_pending;    /* the daemon's receive is "in flight" */
    unsigned sent;        /* type of the last message sent, for the reply */
    uint32_t asked;       /* capacity of the last hello */
    int memfd;            /* from the welcome, or -1 */
    struct hak_shm_layout layout; /* from the welcome */
    struct hak_shm_ctrl *view;    /* the client's mapping of the control area */
    uint64_t held[FZ_HELD];       /* offsets popped and not yet returned */
    unsigned nheld;
};

extern struct fz_conn fz_conn[FZ_CONNS];

/* Settings from one byte of input (nodes, limits, watermarks). */
void fz_reset(uint8_t config);
/* Open connection i if it is closed. */
struct fz_conn *fz_connect(unsigned i);
/* One datagram of len bytes (0: a hang-up); opens the connection first. */
void fz_deliver(unsigned i, const void *buf, size_t len);
void fz_deliver_hello(unsigned i, uint32_t capacity);
void fz_deliver_hdr(unsigned i, enum hak_msg_type type);
/* The receive fails with -err. */
void fz_deliver_error(unsigned i, int err);
/* The client stops reading: the daemon's replies to it fail from now on. */
void fz_stop_reading(unsigned i);
/* The room of the clients' cgroup from now on, in MiB (255: no limit). */
void fz_cgroup_room(uint8_t mib);
/* Time passes by ms, then the daemon's periodic pass runs. */
void fz_tick(uint32_t ms);
/* Every queued pre-fault and punch completes, in order; bit k of fail set:
 * the k-th fails. */
void fz_complete(uint32_t fail);
/* The client's rings in its own mapping (NULL without a session). */
struct hak_shm_fill_ring *fz_fill_ring(struct fz_conn *k, uint32_t node);
struct hak_shm_return_ring *fz_return_ring(struct fz_conn *k);
/* A well-behaved client: pop up to n from a node's ring, give back one. */
unsigned fz_client_pop(struct fz_conn *k, uint32_t node, unsigned n);
bool fz_client_return(struct fz_conn *k, unsigned which);
void fz_client_idle(struct fz_conn *k, unsigned which, uint8_t deadline_ms, bool reuse);
void fz_check(void);
/* Every client hangs up, every request completes; nothing may be left. */
void fz_finish(void);

#endif /* PAGERD_HARNESS_H */
