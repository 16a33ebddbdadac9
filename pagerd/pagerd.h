/* hakmem-pagerd, the per-host page daemon: it gives each client process one
 * sealed memfd, keeps that file's per-node fill rings topped up with
 * pre-faulted SuperSlabs, takes emptied ones back from the return ring,
 * reuses them while they are warm and punches their pages out later.
 *
 * This header is the map of the program: the structures, then the
 * prototypes of each file under its name.
 *
 * Trust: everything a client writes (socket messages, ring indices and
 * slots, the whole shared file) is hostile. The daemon's own records (this
 * header's structures) are the only source of sizes, states and positions;
 * a value read from shared memory is checked against them before use, and
 * any disagreement drops that client, never the daemon. */
#ifndef PAGERD_H
#define PAGERD_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>
#include <sys/types.h>

#include "hakmem_shm.h"

#define PAGERD_VERSION "0.1.0"
#define PAGERD_CONFIG "/etc/hakmem/pagerd.conf"
/* Sessions are capped so that one STATUS datagram can list every client. */
#define PAGERD_MAX_SESSIONS HAK_STATUS_MAX_CLIENTS
/* Connections without a session (status requesters, slow handshakes). */
#define PAGERD_MAX_CONNS (2 * PAGERD_MAX_SESSIONS)
/* Idle words are looked at no more often than this. */
#define PAGERD_IDLE_SCAN_MS 100
/* A ring's watermark covers this many ticks of the client's pop rate. */
#define PAGERD_WM_TICKS 20
/* After a failed pre-fault (a dry huge page pool), none for this long. */
#define PAGERD_PREFAULT_RETRY_MS 1000
/* One limit or error line per client per this many ms at most. */
#define PAGERD_LOG_EVERY_MS 1000
#define SS_NIL UINT32_MAX

enum log_level { LOG_LEVEL_WARN, LOG_LEVEL_INFO, LOG_LEVEL_DEBUG };
/* Who pre-faults a client's pages: a charger in its cgroup when we can
 * move one there, else we (auto); always we (daemon). */
enum charge_setting { CHARGE_SET_AUTO, CHARGE_SET_DAEMON };
/* Huge pages for clients' files (pages.c): the best the host offers
 * (auto), only one kind (hugetlb, thp), never (off). */
enum huge_setting { HUGE_SET_AUTO, HUGE_SET_HUGETLB, HUGE_SET_THP, HUGE_SET_OFF };

#define PAGERD_NAME_MAX 33 /* a user name and its NUL */

/* ---- settings ----
 * Defaults, then the config file, then flags (which win). Every field but
 * the name is a uint32_t, so that config.c handles them through one table. */
struct settings {
    uint32_t tick_ms;          /* period of the refill and reclaim pass */
    uint32_t limit_client;     /* SuperSlabs charged to one client */
    uint32_t limit_total;      /* SuperSlabs charged to all clients */
    uint32_t max_capacity;     /* largest file a client may ask for */
    uint32_t reclaim_delay_ms; /* a returned SuperSlab stays warm this long */
    uint32_t min_watermark;    /* fill target per ring, lower bound */
    uint32_t max_watermark;    /* fill target per ring, upper bound */
    uint32_t fake_nodes;       /* 0: real topology; N: pretend N nodes */
    uint32_t log_level;        /* enum log_level */
    uint32_t limit_uid;        /* SuperSlabs charged to all sessions of one uid */
    uint32_t sessions_uid;     /* sessions of one uid */
    uint32_t connections_uid;  /* connections of one uid (sessions or not) */
    uint32_t status_per_sec;   /* status requests of one uid, and of one connection */
    uint32_t charge;           /* enum charge_setting */
    uint32_t cgroup_reserve_mb; /* room in a client's cgroup we never pre-fault into */
    uint32_t huge_pages;       /* enum huge_setting */
    char user[PAGERD_NAME_MAX]; /* started as root: the user to run as ("root": stay) */
};

/* What the command line said; kept so a reload can apply it again. */
struct config {
    const char *path;      /* config file */
    bool path_given;       /* --config: the file must exist */
    const char *socket;    /* listening socket path */
    bool foreground;
    struct settings flags; /* values given as flags */
    uint32_t flag_set;     /* bit i: setting i of config.c's table given */
};

/* ---- the event loop ----
 * Every submission's user_data points at one of these. The loop dispatches
 * on kind; the request names its owner, which it keeps alive (client refs)
 * until the completion has been handled. */
enum req_kind {
    REQ_ACCEPT,   /* the listening socket: a new connection */
    REQ_RECV,     /* one datagram from a client (embedded in the client) */
    REQ_TICK,     /* the periodic timeout */
    REQ_SIGNAL,   /* a read of the signalfd */
    REQ_PREFAULT, /* pre-fault of one SuperSlab (a pair with huge pages), by us or by a charger */
    REQ_PUNCH,    /* fallocate(PUNCH_HOLE) of one SuperSlab (a pair with huge pages) */
    REQ_CHARGER,  /* one reply from a charger (embedded in its memcg) */
};

struct client;
struct memcg;

struct req {
    enum req_kind kind;
    struct client *client; /* RECV, PREFAULT, PUNCH: the owner */
    struct memcg *cg;      /* CHARGER: the cgroup whose charger replies */
    uint32_t ss;           /* PREFAULT, PUNCH: SuperSlab index in its file (a pair's even one) */
    uint32_t seq;          /* PREFAULT sent to a charger: its number */
    struct req *next;      /* the loop's free list; a charger's queue */
};

/* ---- memory cgroups ----
 * Pages are charged to the memory cgroup of the process that allocates
 * them. So that a client's pages count against its own cgroup, a charger
 * (a helper process of ours, moved into that cgroup) pre-faults them.
 * Where that is impossible, we pre-fault them ourselves and count them
 * against the cgroup's room instead. */
struct cg_where {
    int version;         /* 1: v1 memory hierarchy; 2: unified */
    char path[256];      /* as /proc/PID/cgroup names it */
    char top[256];       /* the hierarchy's mount point */
    char dir[512];       /* its directory: top + path */
};

enum charge_mode {
    CHARGE_OWN,    /* the client shares our cgroup: our charges are its */
    CHARGE_HELPER, /* its charger allocates its pages */
    CHARGE_DAEMON, /* we allocate them, within the room its cgroup has */
    CHARGE_NCG,    /* its cgroup is unknown: we allocate them, unchecked */
};

/* Messages between the daemon and a charger, over a socketpair. */
enum charge_how {
    CHARGE_FALLOCATE,     /* fallocate(fd, 0, off, len) */
    CHARGE_POPULATE_HUGE, /* map, MADV_HUGEPAGE, MADV_POPULATE_WRITE (pages.c) */
};
struct charge_request {
    uint32_t seq;
    uint32_t how;      /* enum charge_how */
    uint64_t off, len; /* of the file passed as SCM_RIGHTS */
};
struct charge_reply {
    uint32_t seq;
    int32_t res; /* 0 or -errno */
};

struct charger {
    pid_t pid;             /* 0: none running */
    int sock;              /* our end of the socketpair; -1: none */
    uint64_t retry_ms;     /* a failed start is not tried again before */
    struct req rreq;       /* the receive of its next reply */
    struct charge_reply reply;
    struct req *head, *tail; /* requests sent, answered in this order */
    uint32_t seq;          /* number of the next request */
    bool stopping;         /* shut down by us: its end is no failure */
};

struct memcg {
    TAILQ_ENTRY(memcg) entry;
    struct cg_where where;
    enum charge_mode mode;
    unsigned sessions;     /* sessions in it; freed at 0, charger gone */
    uint32_t daemon_ss;    /* its sessions' SuperSlabs with pages we allocated */
    uint32_t inflight;     /* pre-faults sent to its charger, unanswered */
    uint32_t ahead;        /* its sessions' SuperSlabs pre-faulting or in fill rings */
    uint64_t limit, usage; /* bytes, its own, as last read */
    uint64_t room;         /* bytes, smallest limit - usage along its path, as last read */
    uint64_t granted;      /* bytes of pre-faults allowed since that reading */
    uint64_t read_ms;      /* when limit, usage and room were read; 0: never */
    uint64_t idle_ms;      /* when its last session ended */
    bool warned;           /* its charger failure was logged */
    struct charger ch;
};
TAILQ_HEAD(memcglist, memcg);

/* ---- per client ----
 * The life of one SuperSlab of a client's file. Only the daemon's view: the
 * client never learns these states, and nothing it writes sets them. */
enum ss_state {
    SS_FREE,        /* no pages; on the free stack */
    SS_PREFAULTING, /* fallocate in flight; will go to a fill ring */
    SS_RING,        /* pushed to a fill ring, not popped yet */
    SS_CLIENT,      /* popped by the client */
    SS_DIRTY,       /* returned, pages resident, reusable until punched */
    SS_PUNCHING,    /* punch-hole in flight; FREE (or TAKEN) when it completes */
    SS_TAKEN,       /* taken back idle (its idle word) and punched: FREE once
                       the client pushes it on the return ring */
    SS_NSTATES,
};

struct ss {
    uint64_t dirty_ms; /* DIRTY: when it came back */
    uint32_t prev;     /* DIRTY: towards older in its node's deque */
    uint32_t next;     /* DIRTY: towards newer; FREE: next on the stack */
    uint8_t state;     /* enum ss_state */
    uint8_t node;      /* node its pages belong to (unless FREE) */
    uint8_t ours;      /* its pages were allocated by us (CHARGE_DAEMON) */
    uint8_t taken;     /* PUNCHING, TAKEN: taken back idle, the client has not
                          pushed it back yet */
    uint8_t pair_wait; /* PUNCHING, huge pages: no punch in flight; waits for
                          the other half of its page to be punched with it */
    uint8_t in_ring;   /* pushed to a fill ring, and the client's head not
                          past it yet (whatever its state since) */
    uint8_t due_now;   /* DIRTY: returned for its pages to go back at once */
};

/* One node of one client: the shadow of its fill ring and its warm
 * SuperSlabs. shadow[] holds what we pushed, by ring position, so that a
 * moving head tells us which SuperSlabs the client took without our reading
 * a slot back from shared memory. */
struct cnode {
    uint32_t head;        /* the client's head as last validated */
    uint32_t tail;        /* our pushes; the shared tail must equal it */
    uint32_t prefaulting; /* pre-faults in flight for this ring */
    uint32_t ndirty;
    uint32_t dirty_old;   /* deque of DIRTY SuperSlabs: oldest end */
    uint32_t dirty_new;   /* newest end (reused first: warmest) */
    uint32_t shadow[HAK_SHM_FILL_SLOTS];
};

/* A token bucket (users.c). */
struct rate {
    double tokens;
    uint64_t ms; /* when last filled */
};

/* One uid with connections. */
struct user {
    TAILQ_ENTRY(user) entry;
    uid_t uid;
    uint32_t conns;      /* connections open */
    uint32_t sessions;   /* of which sessions */
    uint32_t charged;    /* client_charge() summed over its sessions */
    uint64_t limit_hits; /* refills refused at limit_uid */
    uint64_t refused;    /* connections, sessions, status requests refused */
    uint64_t refused_logged_ms; /* refusals are logged once a second at most */
    struct rate status;  /* its status requests */
    uint64_t idle_ms;    /* when its last connection ended */
};
TAILQ_HEAD(userlist, user);

enum client_state {
    CL_NEW,     /* connected, no session (status requesters stay here) */
    CL_SESSION, /* welcomed: owns a file */
    CL_DEAD,    /* dropped; freed once no request names it */
};

struct client {
    TAILQ_ENTRY(client) entry; /* pd.clients, or pd.zombies once DEAD */
    struct req rreq;           /* the receive in flight */
    int sock;
    int memfd;                 /* -1 until the session */
    enum client_state state;
    unsigned refs;             /* requests in flight that name us */
    pid_t pid;                 /* SO_PEERCRED */
    uid_t uid;
    struct user *user;            /* its uid's record */
    struct rate status;           /* its status requests */
    struct memcg *cg;             /* SESSION: its memory cgroup */
    uint32_t ours;                /* its SuperSlabs with ss.ours set */
    uint64_t session;
    uint64_t connected_ms;
    struct hak_shm_layout layout; /* ours: computed, never read back */
    struct hak_shm_ctrl *ctrl;    /* our mapping of the control area */
    void *ss_area;                /* our mapping of the SuperSlab area, 2 MiB aligned */
    enum hak_pages pages;         /* what backs its file */
    uint32_t unit;                /* SuperSlabs per pre-fault and punch: 1, or 2 (a huge page) */
    struct ss *ss;                /* [layout.capacity] */
    uint32_t free_top;            /* free stack of SS_FREE, SS_NIL if empty */
    struct cnode *node;           /* [layout.nnodes] */
    uint32_t count[SS_NSTATES];   /* SuperSlabs per state */
    uint32_t ret_head;            /* our return ring head */
    uint32_t last_node;           /* node it popped from last */
    uint32_t watermark;           /* fill target per ring */
    uint32_t pops_tick;           /* pops seen this tick */
    double pop_rate;              /* pops per tick, smoothed */
    uint64_t dry_seen;            /* ctrl->c_fallbacks as last seen */
    uint64_t served;
    uint64_t returned;
    uint64_t reclaimed;           /* SuperSlabs taken back idle (warm or in a ring) */
    uint64_t last_pop_ms;         /* when it last popped from a ring */
    uint64_t acked;               /* of those taken back, pushed back by the client */
    uint64_t idle_hint;           /* ctrl->c_idle at the last idle scan */
    uint64_t idle_next_ms;        /* no idle scan before this */
    bool idle_pending;            /* the last scan saw a deadline not yet due */
    uint64_t fresh_after_ms;      /* no fresh pre-fault before (one failed) */
    bool trimmed;                 /* returned with HAK_SHM_RETURN_NOW since it last popped */
    uint64_t blocks_next_ms;      /* huge page pool: its file's size looked at next */
    uint64_t limit_hits;
    uint64_t cgroup_hits;         /* of which for want of room in its cgroup */
    uint64_t limit_logged_ms;
    uint64_t error_logged_ms;
    /* One datagram; larger than any valid message, so an oversized one
     * arrives truncated and fails the size check. */
    union {
        struct hak_msg_hdr hdr;
        struct hak_msg_hello hello;
        unsigned char raw[256];
    } rbuf;
};
TAILQ_HEAD(clientlist, client);

/* ---- the daemon ---- */
struct node_stats {
    uint64_t prefaulted; /* SuperSlabs pre-faulted on this node */
    uint64_t punched;    /* SuperSlabs punched on this node */
};

struct pagerd {
    struct config cfg;
    struct settings set;    /* in force */
    int listen_fd;
    int signal_fd;
    bool quit;
    bool accept_paused;     /* accept failed (no fds): retry on the tick */
    uint32_t nnodes;
    uint32_t ncpus;         /* entries of cpu_node in use */
    bool numa;              /* libnuma in use: mbind each SuperSlab */
    uint8_t cpu_node[HAK_SHM_MAX_CPUS];
    struct node_stats nodes[HAK_SHM_MAX_NODES];
    struct clientlist clients; /* NEW and SESSION clients */
    struct clientlist zombies; /* DEAD, waiting for their requests */
    struct memcglist memcgs;   /* the cgroups of sessions, and chargers finishing */
    struct userlist users;     /* uids with a connection, or one until a second ago */
    uint32_t nusers;
    struct cg_where own_cg;    /* ours; own_cg_known if it could be read */
    bool own_cg_known;
    uint32_t nconns;        /* clients in the list */
    uint32_t nsessions;     /* of which SESSION */
    uint64_t charged;       /* sum of client_charge() over sessions */
    enum hak_pages pages;   /* the best new sessions' files may get (pages.c) */
    bool thp;               /* shmem THP available */
    char pages_why[128];    /* why not huge pages, or not hugetlb ones */
    uint64_t next_session;
    uint64_t start_ms;
};
extern struct pagerd pd;

/* main.c */
uint64_t now_ms(void);
void notify_service(const char *state);

/* log.c */
void log_init(bool to_stderr);
void log_setlevel(uint32_t level);
void log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_warnx(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
void fatalx(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

/* config.c */
void config_defaults(struct settings *s);
int config_flags(struct config *cfg, int argc, char **argv);
bool config_load(const struct config *cfg, struct settings *out, char *err, size_t errlen);
void config_log(const struct settings *s);
void config_reload(void);

/* loop.c */
void loop_block_signals(void);
void loop_init(void);
void loop_run(void);
void loop_fini(void);
struct req *req_new(enum req_kind kind, struct client *c, uint32_t ss);
void req_done(struct req *r); /* its client reference dropped, back to the pool */
void loop_recv_charger(struct memcg *cg);
void loop_accept(void);
void loop_recv(struct client *c);
void loop_fallocate(struct req *r, int fd, int mode, uint64_t off, uint64_t len);
void loop_madvise(struct req *r, void *addr, uint64_t len, int advice);

/* session.c */
const char *session_listen(const char *path);
void session_unlisten(const char *path);
void session_accepted(int fd);
void session_received(struct client *c, int res);
void session_drop(struct client *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void session_unref(struct client *c);
void session_close_all(void);
void session_free_all(void);
bool session_reply(struct client *c, const void *msg, size_t len);
bool send_with_fd(int sock, const void *buf, size_t len, int fd);

/* pool.c */
void pool_topology(uint32_t fake_nodes);
bool pool_client_init(struct client *c);
void pool_client_free(struct client *c);
uint32_t client_charge(const struct client *c);
void ss_set_state(struct client *c, uint32_t idx, enum ss_state st);
void ss_freed(struct client *c, uint32_t idx);
void client_error(struct client *c, const char *what, int err);
bool pool_account_pops(struct client *c, uint32_t n);
void pool_client_start(struct client *c);
void pool_client_dry(struct client *c);
void pool_tick(uint64_t now);
void pool_prefault_done(struct req *r, int res);

/* reclaim.c */
bool reclaim_drain(struct client *c, uint64_t now);
void reclaim_idle(struct client *c, uint64_t now);
void reclaim_ring(struct client *c, uint64_t now);
uint32_t reclaim_take_warm(struct client *c, uint32_t node);
void reclaim_punch_old(struct client *c, uint64_t now);
void reclaim_punch(struct client *c, uint32_t idx);
void reclaim_punch_done(struct req *r, int res);

/* cgroup.c */
bool cg_parse_proc(const char *text, int *version, char *path, size_t len);
bool cg_parse_mount(const char *line, int version, char *mnt, size_t mlen, char *root, size_t rlen);
bool cg_dir_of(const char *mnt, const char *root, const char *path, char *dir, size_t len);
bool cg_read_room(const char *dir, const char *top, int version, uint64_t *room, uint64_t *limit, uint64_t *usage);
bool cg_locate(pid_t pid, struct cg_where *w);

/* charger.c */
void charge_init(void);
bool charge_session_start(struct client *c);
void charge_session_end(struct client *c);
bool charge_room(struct client *c, uint64_t now);
void charge_tick(uint64_t now);
bool charge_prefault(struct client *c, struct req *r);
void charge_replied(struct req *r, int res);
void charge_ss_freed(struct client *c, uint32_t idx);
const char *charge_mode_name(enum charge_mode m);
int charger_main(void);

/* pages.c */
void pages_detect(void);
enum hak_pages pages_choose(struct client *c, uint32_t *capacity);
bool pages_hugetlb_count(uint32_t *total, uint32_t *free_pages);
uint64_t pages_map_len(enum hak_pages p, uint64_t len);
void *pages_map_aligned(int fd, uint64_t off, uint64_t len);
int pages_populate_huge(int fd, uint64_t off, uint64_t len);

/* privs.c */
void privs_drop(const char *user);
void privs_drop_all(void);

/* users.c */
struct user *user_connect(uid_t uid);
void user_disconnect(struct user *u);
void users_tick(uint64_t now);
bool user_may_open_session(struct user *u);
bool rate_take(struct rate *r, uint64_t now);

/* status.c */
void status_reply(struct client *c);

#endif /* PAGERD_H */
