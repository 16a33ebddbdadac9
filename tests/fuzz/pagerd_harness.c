/* The daemon's fuzz harness (pagerd_harness.h): loop.c's and main.c's part,
 * the client's end of each connection, and the invariants. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include "pagerd_harness.h"

#define FZ_REQS 4096
#define FZ_MAX_CAPACITY 8 /* SuperSlabs per file: small files, whole-file checks */
#define FZ_NODES 4
#define FILL_MASK (HAK_SHM_FILL_SLOTS - 1)
#define RETURN_MASK (HAK_SHM_RETURN_SLOTS - 1)

struct fz_conn fz_conn[FZ_CONNS];

/* ---- main.c's part ---- */

struct pagerd pd = {
    .listen_fd = -1,
    .signal_fd = -1,
    .clients = TAILQ_HEAD_INITIALIZER(pd.clients),
    .zombies = TAILQ_HEAD_INITIALIZER(pd.zombies),
    .users = TAILQ_HEAD_INITIALIZER(pd.users),
    .memcgs = TAILQ_HEAD_INITIALIZER(pd.memcgs),
};

/* ---- cgroup.c's part: every client is in one cgroup, whose room the
 * input sets (fz_cgroup_room); no charger can be placed (charge.c then
 * pre-faults as the daemon, within that room) ---- */

static uint64_t cg_room = UINT64_MAX;

void fz_cgroup_room(uint8_t mib)
{
    cg_room = mib == 255 ? UINT64_MAX : (uint64_t)mib << 20;
    /* The next pre-fault reads it (the clock may not have moved). */
    struct memcg *cg;
    TAILQ_FOREACH(cg, &pd.memcgs, entry)
        cg->read_ms = 0;
}

bool cg_locate(pid_t pid, struct cg_where *w)
{
    (void)pid;
    memset(w, 0, sizeof *w);
    w->version = 2;
    snprintf(w->path, sizeof w->path, "/fuzz");
    snprintf(w->top, sizeof w->top, "/sys/fs/cgroup");
    snprintf(w->dir, sizeof w->dir, "/sys/fs/cgroup/fuzz");
    return true;
}

bool cg_read_room(const char *dir, const char *top, int version, uint64_t *room, uint64_t *limit, uint64_t *usage)
{
    (void)dir;
    (void)top;
    (void)version;
    *room = cg_room;
    *limit = cg_room;
    *usage = 0;
    return true;
}

/* Moved by fz_tick only, so that a run does not depend on the machine. */
static uint64_t clock_ms = 1000000;

uint64_t now_ms(void)
{
    return clock_ms;
}

/* ---- loop.c's part: requests wait here until fz_complete ---- */

static struct req *reqs[FZ_REQS];
static size_t nreqs;
static struct fz_conn *accepting; /* the connection session_accepted is taking */

static struct fz_conn *conn_of(const struct client *c)
{
    for (unsigned i = 0; i < FZ_CONNS; i++)
        if (fz_conn[i].c == c)
            return &fz_conn[i];
    return NULL;
}

struct req *req_new(enum req_kind kind, struct client *c, uint32_t ss)
{
    struct req *r = calloc(1, sizeof *r);
    FZ_ASSERT(r != NULL);
    *r = (struct req){.kind = kind, .client = c, .ss = ss};
    if (c)
        c->refs++;
    return r;
}

void req_done(struct req *r)
{
    session_unref(r->client);
    free(r);
}

void loop_recv_charger(struct memcg *cg)
{
    (void)cg;
    fz_fail("a charger was started", __FILE__, __LINE__);
}

void loop_recv(struct client *c)
{
    struct fz_conn *k = conn_of(c);
    if (!k && accepting && !accepting->c) {
        k = accepting;
        k->c = c;
    }
    FZ_ASSERT(k && !k->recv_pending && c->state != CL_DEAD);
    c->rreq = (struct req){.kind = REQ_RECV, .client = c};
    c->refs++;
    k->recv_pending = true;
}

/* Every SuperSlab of r's unit (one, or a huge page's pair) is in state. */
static bool unit_in(const struct client *c, const struct req *r, enum ss_state state)
{
    for (uint32_t i = r->ss; i < r->ss + c->unit; i++)
        if (c->ss[i].state != state || c->ss[i].pair_wait)
            return false;
    return true;
}

/* Whatever the client did, the daemon may only ask the kernel about one
 * whole SuperSlab of that client's own file (a whole huge page: both
 * SuperSlabs of a pair), in the state the request is for. */
void loop_fallocate(struct req *r, int fd, int mode, uint64_t off, uint64_t len)
{
    struct client *c = r->client;
    FZ_ASSERT(c && c->state == CL_SESSION && fd == c->memfd && r->ss % c->unit == 0 &&
              r->ss + c->unit <= c->layout.capacity);
    FZ_ASSERT(off == c->layout.ss_offset + ((uint64_t)r->ss << HAK_SHM_SS_SHIFT) && len == c->unit * HAK_SHM_SS_SIZE);
    if (r->kind == REQ_PREFAULT)
        FZ_ASSERT(mode == 0 && c->pages == HAK_PAGES_4K && unit_in(c, r, SS_PREFAULTING));
    else
        FZ_ASSERT(r->kind == REQ_PUNCH && mode == (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE) &&
                  unit_in(c, r, SS_PUNCHING));
    FZ_ASSERT(nreqs < FZ_REQS);
    reqs[nreqs++] = r;
}

/* A huge page's pre-fault: a populating write through our mapping. */
void loop_madvise(struct req *r, void *addr, uint64_t len, int advice)
{
    struct client *c = r->client;
    FZ_ASSERT(c && c->state == CL_SESSION && c->pages == HAK_PAGES_THP && c->unit == 2 && r->ss % 2 == 0 &&
              r->ss + 2 <= c->layout.capacity && r->kind == REQ_PREFAULT && advice == MADV_POPULATE_WRITE);
    FZ_ASSERT(addr == (char *)c->ss_area + ((uint64_t)r->ss << HAK_SHM_SS_SHIFT) && len == 2 * HAK_SHM_SS_SIZE);
    FZ_ASSERT(unit_in(c, r, SS_PREFAULTING));
    FZ_ASSERT(nreqs < FZ_REQS);
    reqs[nreqs++] = r;
}

static uint32_t reqs_of(const struct client *c, enum req_kind kind)
{
    uint32_t n = 0;
    for (size_t i = 0; i < nreqs; i++)
        n += reqs[i]->client == c && reqs[i]->kind == kind;
    return n;
}

/* ---- invariants ---- */

/* One session's records; returns its charge. */
static uint32_t check_client(const struct client *c)
{
    const struct hak_shm_layout *l = &c->layout;
    uint32_t cap = l->capacity, count[SS_NSTATES] = {0};
    FZ_ASSERT(cap >= 1 && cap <= FZ_MAX_CAPACITY && l->nnodes == pd.nnodes);
    for (uint32_t i = 0; i < cap; i++) {
        FZ_ASSERT(c->ss[i].state < SS_NSTATES);
        FZ_ASSERT(c->ss[i].state == SS_FREE || c->ss[i].node < l->nnodes);
        count[c->ss[i].state]++;
    }
    FZ_ASSERT(memcmp(count, c->count, sizeof count) == 0);

    /* The free stack: whole units (a pair by its even index), both FREE;
     * a FREE half off it has its other half not yet FREE (taken back, not
     * acknowledged), or is an odd capacity's last, never used. */
    uint64_t seen = 0;
    uint32_t n = 0, waiting = 0;
    for (uint32_t i = c->free_top; i != SS_NIL; i = c->ss[i].next, n++) {
        FZ_ASSERT(i < cap && i % c->unit == 0 && i + c->unit <= cap && !(seen >> i & 1));
        for (uint32_t h = i; h < i + c->unit; h++)
            FZ_ASSERT(c->ss[h].state == SS_FREE);
        seen |= ((1ull << c->unit) - 1) << i;
    }
    for (uint32_t i = 0; i < cap; i++) {
        FZ_ASSERT(!c->ss[i].pair_wait || (c->unit == 2 && c->ss[i].state == SS_PUNCHING));
        FZ_ASSERT(!c->ss[i].due_now || c->ss[i].state == SS_DIRTY);
        waiting += c->ss[i].pair_wait;
        if (c->ss[i].state == SS_FREE && !(seen >> i & 1))
            FZ_ASSERT(c->unit == 2 && (i + 1 == cap || c->ss[i ^ 1].state != SS_FREE));
    }
    FZ_ASSERT(n * c->unit <= count[SS_FREE]);

    uint32_t ring = 0, prefaulting = 0, dirty = 0;
    for (uint32_t nd = 0; nd < l->nnodes; nd++) {
        const struct cnode *cn = &c->node[nd];
        FZ_ASSERT(cn->tail - cn->head <= HAK_SHM_FILL_SLOTS);
        for (uint32_t p = cn->head; p != cn->tail; p++) {
            uint32_t i = cn->shadow[p & FILL_MASK];
            /* Waiting, or taken back from the ring (until the client pops it
             * and pushes it back). */
            bool taken = c->ss[i].taken && (c->ss[i].state == SS_PUNCHING || c->ss[i].state == SS_TAKEN);
            FZ_ASSERT(i < cap && !(seen >> i & 1) && (c->ss[i].state == SS_RING || taken) && c->ss[i].node == nd &&
                      c->ss[i].in_ring);
            seen |= 1ull << i;
            ring += c->ss[i].state == SS_RING;
        }
        prefaulting += cn->prefaulting;
        uint32_t nd_dirty = 0, prev = SS_NIL;
        for (uint32_t i = cn->dirty_old; i != SS_NIL; prev = i, i = c->ss[i].next, nd_dirty++) {
            FZ_ASSERT(i < cap && !(seen >> i & 1) && c->ss[i].state == SS_DIRTY && c->ss[i].node == nd);
            FZ_ASSERT(c->ss[i].prev == prev && (prev == SS_NIL || c->ss[prev].dirty_ms <= c->ss[i].dirty_ms));
            seen |= 1ull << i;
        }
        FZ_ASSERT(cn->dirty_new == prev && nd_dirty == cn->ndirty);
        dirty += nd_dirty;
    }
    FZ_ASSERT(ring == count[SS_RING] && dirty == count[SS_DIRTY] && prefaulting == count[SS_PREFAULTING]);
    FZ_ASSERT(reqs_of(c, REQ_PREFAULT) * c->unit == prefaulting &&
              reqs_of(c, REQ_PUNCH) * c->unit + waiting == count[SS_PUNCHING]);
    FZ_ASSERT(c->watermark >= pd.set.min_watermark && c->watermark <= pd.set.max_watermark);
    FZ_ASSERT(c->last_node < l->nnodes);
    uint32_t charge = client_charge(c), ours = 0;
    FZ_ASSERT(charge <= pd.set.limit_client);
    for (uint32_t i = 0; i < cap; i++) {
        FZ_ASSERT(!c->ss[i].ours || c->ss[i].state != SS_FREE);
        FZ_ASSERT(c->ss[i].state != SS_TAKEN || c->ss[i].taken);
        FZ_ASSERT(!c->ss[i].taken || c->ss[i].state == SS_TAKEN || c->ss[i].state == SS_PUNCHING);
        ours += c->ss[i].ours;
    }
    FZ_ASSERT(ours == c->ours && c->cg && c->cg->mode == CHARGE_DAEMON && c->user && c->user->uid == c->uid);
    return charge;
}

/* The uids' and the cgroup's books against the sessions'. */
static void check_books(void)
{
    const struct user *u;
    uint32_t users = 0;
    TAILQ_FOREACH(u, &pd.users, entry) {
        uint32_t conns = 0, sessions = 0, charged = 0;
        const struct client *c;
        TAILQ_FOREACH(c, &pd.clients, entry) {
            if (c->user != u)
                continue;
            conns++;
            if (c->state == CL_SESSION) {
                sessions++;
                charged += client_charge(c);
            }
        }
        FZ_ASSERT(u->conns == conns && u->sessions == sessions && u->charged == charged);
        users++;
    }
    FZ_ASSERT(users == pd.nusers);
    const struct memcg *cg;
    TAILQ_FOREACH(cg, &pd.memcgs, entry) {
        uint32_t ours = 0, sessions = 0;
        const struct client *c;
        TAILQ_FOREACH(c, &pd.clients, entry)
            if (c->state == CL_SESSION && c->cg == cg) {
                ours += c->ours;
                sessions++;
            }
        uint32_t ahead = 0;
        TAILQ_FOREACH(c, &pd.clients, entry)
            if (c->state == CL_SESSION && c->cg == cg)
                ahead += c->count[SS_PREFAULTING] + c->count[SS_RING];
        FZ_ASSERT(cg->daemon_ss == ours && cg->sessions == sessions && cg->inflight == 0 && cg->ahead == ahead);
    }
}

void fz_check(void)
{
    uint64_t charged = 0;
    uint32_t nconns = 0, nsessions = 0;
    struct client *c;
    TAILQ_FOREACH(c, &pd.clients, entry) {
        struct fz_conn *k = conn_of(c);
        /* A live client always has its receive in flight. */
        FZ_ASSERT(k && k->recv_pending);
        FZ_ASSERT(c->refs == 1 + reqs_of(c, REQ_PREFAULT) + reqs_of(c, REQ_PUNCH));
        nconns++;
        if (c->state == CL_SESSION) {
            nsessions++;
            charged += check_client(c);
        } else {
            FZ_ASSERT(c->state == CL_NEW && c->refs == 1 && c->memfd < 0 && !c->ctrl);
        }
    }
    TAILQ_FOREACH(c, &pd.zombies, entry) {
        struct fz_conn *k = conn_of(c);
        FZ_ASSERT(c->state == CL_DEAD);
        /* Freed as soon as no request names it. */
        FZ_ASSERT(c->refs > 0 && c->refs == (k && k->recv_pending) + reqs_of(c, REQ_PREFAULT) + reqs_of(c, REQ_PUNCH));
    }
    FZ_ASSERT(nconns == pd.nconns && nsessions == pd.nsessions && charged == pd.charged);
    FZ_ASSERT(pd.charged <= pd.set.limit_total);
    check_books();
}

/* ---- the client's end ---- */

static union {
    struct hak_msg_hdr hdr;
    struct hak_msg_welcome welcome;
    struct hak_msg_refuse refuse;
    struct hak_msg_status status;
    unsigned char raw[HAK_STATUS_MAX_BYTES + 1];
} reply;

/* The welcome's file, checked and mapped as a client maps it. */
static void take_file(struct fz_conn *k, int fd)
{
    struct hak_shm_layout want;
    uint32_t cap = k->asked < pd.set.max_capacity ? k->asked : pd.set.max_capacity;
    FZ_ASSERT(k->memfd < 0 && hak_shm_layout_compute(pd.nnodes, cap, &want));
    FZ_ASSERT(hak_shm_layout_equal(&want, &reply.welcome.layout));
    struct stat st;
    int seals = fcntl(fd, F_GET_SEALS);
    FZ_ASSERT(fstat(fd, &st) == 0 && (uint64_t)st.st_size == want.file_size);
    FZ_ASSERT(seals == (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL));
    void *p = mmap(NULL, want.ctrl_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    FZ_ASSERT(p != MAP_FAILED);
    k->memfd = fd;
    k->layout = want;
    k->view = p;
    k->nheld = 0;
    const struct hak_shm_ctrl *ctrl = p;
    FZ_ASSERT(ctrl->magic == HAK_SHM_MAGIC && ctrl->version == HAK_SHM_VERSION && ctrl->ncpus == pd.ncpus);
    FZ_ASSERT(hak_shm_layout_equal(&ctrl->layout, &want));
    for (uint32_t cpu = 0; cpu < ctrl->ncpus; cpu++)
        FZ_ASSERT(ctrl->cpu_node[cpu] < want.nnodes);
}

static void check_status(size_t n)
{
    const struct hak_status_daemon *d = &reply.status.daemon;
    FZ_ASSERT(d->nnodes == pd.nnodes && d->nclients == pd.nsessions && d->ss_total == pd.charged);
    FZ_ASSERT(memchr(d->version, 0, sizeof d->version) != NULL);
    FZ_ASSERT(d->nusers == pd.nusers);
    FZ_ASSERT(n == sizeof reply.status + d->nnodes * sizeof(struct hak_status_node) +
                       d->nclients * sizeof(struct hak_status_client) + d->nusers * sizeof(struct hak_status_user));
    uint64_t ready = 0, ring = 0;
    for (uint32_t i = 0; i < d->nnodes; i++) {
        struct hak_status_node node;
        memcpy(&node, reply.raw + sizeof reply.status + i * sizeof node, sizeof node);
        FZ_ASSERT(node.node == i);
        ready += node.ready;
    }
    const struct client *c;
    TAILQ_FOREACH(c, &pd.clients, entry)
        if (c->state == CL_SESSION)
            ring += c->count[SS_RING];
    FZ_ASSERT(ready == ring);
}

/* Every datagram the daemon sent to k: a message the daemon sends, in
 * reply to what k asked, with a descriptor exactly when it is a welcome. */
static void reap(struct fz_conn *k)
{
    for (;;) {
        union {
            struct cmsghdr align;
            char buf[CMSG_SPACE(4 * sizeof(int))];
        } cm;
        struct iovec iov = {&reply, sizeof reply};
        struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cm.buf, .msg_controllen = sizeof cm.buf};
        ssize_t n = recvmsg(k->peer, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
        if (n <= 0) {
            FZ_ASSERT(n == 0 || errno == EAGAIN);
            return;
        }
        int fds[4], nfds = 0;
        for (struct cmsghdr *ch = CMSG_FIRSTHDR(&mh); ch; ch = CMSG_NXTHDR(&mh, ch))
            if (ch->cmsg_level == SOL_SOCKET && ch->cmsg_type == SCM_RIGHTS)
                for (size_t j = 0; j < (ch->cmsg_len - CMSG_LEN(0)) / sizeof(int) && nfds < 4; j++)
                    memcpy(&fds[nfds++], CMSG_DATA(ch) + j * sizeof(int), sizeof(int));
        FZ_ASSERT(!(mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC)));
        unsigned type = hak_msg_check(&reply, (size_t)n);
        FZ_ASSERT(nfds == (type == HAK_MSG_WELCOME));
        switch (type) {
        case HAK_MSG_WELCOME:
            FZ_ASSERT(k->sent == HAK_MSG_HELLO);
            take_file(k, fds[0]);
            break;
        case HAK_MSG_REFUSE:
            /* A hello refused, or a status request over the rate limit. */
            FZ_ASSERT((k->sent == HAK_MSG_HELLO && k->memfd < 0) || k->sent == HAK_MSG_STATUS_REQ);
            FZ_ASSERT(memchr(reply.refuse.reason, 0, sizeof reply.refuse.reason) != NULL);
            break;
        case HAK_MSG_STATUS:
            FZ_ASSERT(k->sent == HAK_MSG_STATUS_REQ);
            check_status((size_t)n);
            break;
        default:
            fz_fail("the daemon sent a message it does not send", __FILE__, __LINE__);
        }
    }
}

/* The daemon is done with k's client (it may be freed already). */
static void forget(struct fz_conn *k)
{
    reap(k);
    close(k->peer);
    if (k->view)
        munmap(k->view, k->layout.ctrl_size);
    if (k->memfd >= 0)
        close(k->memfd);
    *k = (struct fz_conn){.peer = -1, .memfd = -1};
}

/* The receive in flight completes with res, as the loop dispatches it. */
static void complete_recv(struct fz_conn *k, int res)
{
    struct client *c = k->c;
    FZ_ASSERT(k->recv_pending);
    k->recv_pending = false;
    session_received(c, res);
    bool dead = c->state == CL_DEAD;
    /* Alive: a new receive is in flight; dead: none ever again. */
    FZ_ASSERT(k->recv_pending == !dead);
    session_unref(c);
    if (dead)
        forget(k);
    else
        reap(k);
}

/* A dropped client's socket was shut down: its receive ends with 0. */
static void settle(void)
{
    for (unsigned i = 0; i < FZ_CONNS; i++)
        if (fz_conn[i].c && fz_conn[i].c->state == CL_DEAD)
            complete_recv(&fz_conn[i], 0);
    fz_check();
}

static int lowest_free_fd(void)
{
    int fd = dup(0);
    FZ_ASSERT(fd >= 0);
    close(fd);
    return fd;
}

static int fd_mark;

void fz_reset(uint8_t config)
{
    static bool once;
    if (!once) {
        once = true;
        signal(SIGPIPE, SIG_IGN);
        for (unsigned i = 0; i < FZ_CONNS; i++)
            fz_conn[i] = (struct fz_conn){.peer = -1, .memfd = -1};
    }
    FZ_ASSERT(TAILQ_EMPTY(&pd.clients) && TAILQ_EMPTY(&pd.zombies) && nreqs == 0);
    config_defaults(&pd.set);
    pd.set.fake_nodes = 1 + (config & 3);
    pd.set.max_capacity = FZ_MAX_CAPACITY;
    pd.set.limit_client = 2 + (config >> 2 & 7);
    pd.set.limit_total = 4 + (config >> 5 & 3) * 3;
    pd.set.min_watermark = config & 0x80 ? 2 : 1;
    pd.set.max_watermark = config & 0x80 ? 8 : 4;
    pd.set.reclaim_delay_ms = 20;
    pd.set.cgroup_reserve_mb = 4;
    cg_room = UINT64_MAX;
    pd.set.log_level = LOG_LEVEL_WARN;
    log_setlevel(pd.set.log_level);
    /* Half the inputs have huge pages (THP): units of a pair. */
    pd.thp = __builtin_parity(config);
    pd.pages = pd.thp ? HAK_PAGES_THP : HAK_PAGES_4K;
    pool_topology(pd.set.fake_nodes);
    FZ_ASSERT(pd.nnodes <= FZ_NODES);
    memset(pd.nodes, 0, sizeof pd.nodes);
    fd_mark = lowest_free_fd();
}

struct fz_conn *fz_connect(unsigned i)
{
    struct fz_conn *k = &fz_conn[i];
    if (k->c)
        return k;
    int sv[2];
    FZ_ASSERT(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) == 0);
    k->peer = sv[1];
    accepting = k;
    session_accepted(sv[0]);
    accepting = NULL;
    FZ_ASSERT(k->c && k->c->sock == sv[0] && k->c->state == CL_NEW && k->recv_pending);
    fz_check();
    return k;
}

void fz_deliver(unsigned i, const void *buf, size_t len)
{
    struct fz_conn *k = fz_connect(i);
    /* A longer datagram arrives cut to the buffer. */
    if (len > sizeof k->c->rbuf.raw)
        len = sizeof k->c->rbuf.raw;
    memcpy(k->c->rbuf.raw, buf, len);
    struct hak_msg_hdr h = {0};
    memcpy(&h, buf, len < sizeof h ? len : sizeof h);
    k->sent = h.type;
    if (len == sizeof(struct hak_msg_hello))
        memcpy(&k->asked, (const char *)buf + offsetof(struct hak_msg_hello, capacity), sizeof k->asked);
    complete_recv(k, (int)len);
    settle();
}

void fz_deliver_hello(unsigned i, uint32_t capacity)
{
    struct hak_msg_hello m;
    memset(&m, 0, sizeof m);
    hak_msg_init(&m.hdr, HAK_MSG_HELLO, sizeof m);
    m.capacity = capacity;
    fz_deliver(i, &m, sizeof m);
}

void fz_deliver_hdr(unsigned i, enum hak_msg_type type)
{
    struct hak_msg_hdr m;
    hak_msg_init(&m, type, sizeof m);
    fz_deliver(i, &m, sizeof m);
}

void fz_deliver_error(unsigned i, int err)
{
    struct fz_conn *k = fz_connect(i);
    k->sent = 0;
    complete_recv(k, -err);
    settle();
}

void fz_stop_reading(unsigned i)
{
    struct fz_conn *k = fz_connect(i);
    reap(k);
    FZ_ASSERT(shutdown(k->peer, SHUT_RD) == 0);
}

/* ---- the periodic pass, and what it took back ---- */

/* A session's records and shared ring contents before a tick. */
static struct snap {
    const struct client *c;
    uint8_t state[FZ_MAX_CAPACITY], node[FZ_MAX_CAPACITY], taken[FZ_MAX_CAPACITY];
    uint32_t word[FZ_MAX_CAPACITY];
    uint64_t acked;
    uint32_t head[FZ_NODES], tail[FZ_NODES], shared_head[FZ_NODES], shared_tail[FZ_NODES];
    uint32_t shadow[FZ_NODES][HAK_SHM_FILL_SLOTS];
    uint32_t ret_head;
    uint64_t returned, served;
    uint64_t slot[HAK_SHM_RETURN_SLOTS];
} snaps[FZ_CONNS];

static void take_snap(struct snap *s, const struct client *c)
{
    s->c = c;
    _Atomic uint32_t *words = hak_shm_idle_words(c->ctrl, &c->layout);
    for (uint32_t i = 0; i < c->layout.capacity; i++) {
        s->state[i] = c->ss[i].state;
        s->node[i] = c->ss[i].node;
        s->taken[i] = c->ss[i].taken;
        s->word[i] = atomic_load(&words[i]);
    }
    s->acked = c->acked;
    for (uint32_t nd = 0; nd < c->layout.nnodes; nd++) {
        const struct hak_shm_fill_ring *r =
            (const void *)((const char *)c->ctrl + hak_shm_fill_ring_offset(nd));
        s->head[nd] = c->node[nd].head;
        s->tail[nd] = c->node[nd].tail;
        s->shared_head[nd] = atomic_load(&r->head.v);
        s->shared_tail[nd] = atomic_load(&r->tail.v);
        memcpy(s->shadow[nd], c->node[nd].shadow, sizeof s->shadow[nd]);
    }
    const struct hak_shm_return_ring *rr =
        (const void *)((const char *)c->ctrl + hak_shm_return_ring_offset(c->layout.nnodes));
    for (uint32_t i = 0; i < HAK_SHM_RETURN_SLOTS; i++)
        s->slot[i] = atomic_load(&rr->slot[i]);
    s->ret_head = c->ret_head;
    s->returned = c->returned;
    s->served = c->served;
}

/* Was idx in the client's hands at the tick: popped before (ours), or
 * popped since, behind a head the daemon accepts. */
static bool was_held(const struct snap *s, uint32_t idx)
{
    if (s->state[idx] == SS_CLIENT)
        return true;
    if (s->state[idx] != SS_RING)
        return false;
    uint32_t nd = s->node[idx], moved = s->shared_head[nd] - s->head[nd];
    if (s->shared_tail[nd] != s->tail[nd] || moved > s->tail[nd] - s->head[nd])
        return false;
    for (uint32_t p = s->head[nd]; p != s->head[nd] + moved; p++)
        if (s->shadow[nd][p & FILL_MASK] == idx)
            return true;
    return false;
}

/* Every offset the daemon took back in the tick was in range, aligned,
 * held by this client, and taken once. */
static void check_returns(const struct snap *s, uint32_t now)
{
    const struct client *c = s->c;
    const struct hak_shm_layout *l = &c->layout;
    uint32_t consumed = c->ret_head - s->ret_head;
    uint64_t accepted = c->returned - s->returned + c->acked - s->acked, popped = 0, taken = 0;
    FZ_ASSERT(accepted <= consumed && consumed - accepted <= (c->state == CL_DEAD ? 1u : 0u));
    for (uint32_t k = 0; k < accepted; k++) {
        /* Bit 0 asks for the pages to go at once (HAK_SHM_RETURN_NOW). */
        uint64_t off = s->slot[(s->ret_head + k) & RETURN_MASK] & ~HAK_SHM_RETURN_NOW;
        FZ_ASSERT(off >= l->ss_offset && off < l->file_size && ((off - l->ss_offset) & (HAK_SHM_SS_SIZE - 1)) == 0);
        uint32_t idx = (uint32_t)((off - l->ss_offset) >> HAK_SHM_SS_SHIFT);
        /* Given back while in its hands, or pushed back after we took it. */
        FZ_ASSERT(!(taken >> idx & 1) && (was_held(s, idx) || s->taken[idx]));
        taken |= 1ull << idx;
    }
    /* Served: what was popped and still waiting, not what we took back. */
    for (uint32_t nd = 0; nd < l->nnodes; nd++)
        for (uint32_t p = s->head[nd]; p != c->node[nd].head; p++)
            popped += s->state[s->shadow[nd][p & FILL_MASK]] == SS_RING;
    FZ_ASSERT(c->served - s->served == popped);
    /* What the client held and did not give back stays its own, unless its
     * idle word said it was idle past its deadline. */
    for (uint32_t idx = 0; c->state == CL_SESSION && idx < l->capacity; idx++)
        if (!(taken >> idx & 1) && was_held(s, idx))
            FZ_ASSERT(c->ss[idx].state == SS_CLIENT ||
                      (c->ss[idx].taken && c->ss[idx].state == SS_PUNCHING && hak_idle_due(s->word[idx], now)));
}

/* Pages the daemon allocated for the cgroup (all of ours: one cgroup). */
static uint32_t daemon_ss(void)
{
    const struct memcg *cg = TAILQ_FIRST(&pd.memcgs);
    return cg ? cg->daemon_ss : 0;
}

void fz_tick(uint32_t ms)
{
    clock_ms += ms;
    const struct client *c;
    unsigned n = 0;
    TAILQ_FOREACH(c, &pd.clients, entry)
        if (c->state == CL_SESSION)
            take_snap(&snaps[n++], c);
    uint32_t before = daemon_ss();
    pool_tick(clock_ms);
    /* New pages only while the cgroup had room for them, reserve kept. */
    uint64_t after = daemon_ss();
    if (after > before && cg_room != UINT64_MAX)
        FZ_ASSERT(after * HAK_SHM_SS_SIZE + ((uint64_t)pd.set.cgroup_reserve_mb << 20) <= cg_room);
    /* A client dropped meanwhile is still allocated: its receive holds it. */
    for (unsigned i = 0; i < n; i++)
        check_returns(&snaps[i], (uint32_t)clock_ms);
    settle();
}

void fz_complete(uint32_t fail)
{
    static struct req *batch[FZ_REQS];
    size_t n = nreqs;
    memcpy(batch, reqs, n * sizeof batch[0]);
    nreqs = 0;
    /* A failed pre-fault queues a punch: it waits for the next call. */
    for (size_t i = 0; i < n; i++) {
        struct req *r = batch[i];
        int res = i < 32 && (fail >> i & 1) ? -ENOSPC : 0;
        if (r->kind == REQ_PREFAULT)
            pool_prefault_done(r, res);
        else
            reclaim_punch_done(r, res);
        req_done(r);
    }
    settle();
}

/* ---- a well-behaved client ---- */

struct hak_shm_fill_ring *fz_fill_ring(struct fz_conn *k, uint32_t node)
{
    if (!k->view || node >= k->layout.nnodes)
        return NULL;
    return (struct hak_shm_fill_ring *)((char *)k->view + hak_shm_fill_ring_offset(node));
}

struct hak_shm_return_ring *fz_return_ring(struct fz_conn *k)
{
    if (!k->view)
        return NULL;
    return (struct hak_shm_return_ring *)((char *)k->view + hak_shm_return_ring_offset(k->layout.nnodes));
}

/* Popped: ours by a CAS of its idle word (RING -> BUSY); one the daemon
 * took back from the ring is pushed back to it, as the client does. */
unsigned fz_client_pop(struct fz_conn *k, uint32_t node, unsigned n)
{
    struct hak_shm_fill_ring *r = fz_fill_ring(k, node);
    unsigned got = 0;
    uint64_t off;
    uint32_t idx;
    while (r && got < n && k->nheld < FZ_HELD && hak_fill_ring_pop(r, &off) == 1) {
        if (hak_shm_ss_index(&k->layout, off, &idx) != HAK_SHM_OFF_OK)
            continue;
        uint32_t w = HAK_IDLE_RING;
        if (atomic_compare_exchange_strong(&hak_shm_idle_words(k->view, &k->layout)[idx], &w, HAK_IDLE_BUSY)) {
            k->held[k->nheld++] = off;
            got++;
        } else if (w == HAK_IDLE_TAKEN) {
            hak_return_ring_push(fz_return_ring(k), off);
        }
    }
    return got;
}

/* One it holds waits idle from now on, with a deadline d ms away; or,
 * with reuse, is taken back into use (CAS: the daemon may have won). */
void fz_client_idle(struct fz_conn *k, unsigned which, uint8_t d, bool reuse)
{
    uint32_t idx;
    if (!k->view || k->nheld == 0)
        return;
    which %= k->nheld;
    if (hak_shm_ss_index(&k->layout, k->held[which], &idx) != HAK_SHM_OFF_OK)
        return;
    _Atomic uint32_t *w = &hak_shm_idle_words(k->view, &k->layout)[idx];
    if (!reuse) {
        uint32_t now = atomic_load(&k->view->now_ms);
        atomic_store(w, hak_idle_deadline(now + d));
        atomic_fetch_add(&k->view->c_idle, 1);
        return;
    }
    uint32_t v = atomic_load(w);
    if (v > HAK_IDLE_RING && !atomic_compare_exchange_strong(w, &v, HAK_IDLE_BUSY))
        v = atomic_load(w);
    if (v == HAK_IDLE_TAKEN && hak_return_ring_push(fz_return_ring(k), k->held[which]))
        k->held[which] = k->held[--k->nheld]; /* the daemon's now */
}

bool fz_client_return(struct fz_conn *k, unsigned which)
{
    struct hak_shm_return_ring *r = fz_return_ring(k);
    if (!r || k->nheld == 0)
        return false;
    which %= k->nheld;
    if (!hak_return_ring_push(r, k->held[which]))
        return false;
    k->held[which] = k->held[--k->nheld];
    return true;
}

void fz_finish(void)
{
    /* Each client closes its end: the daemon's receive reads 0. */
    for (unsigned i = 0; i < FZ_CONNS; i++)
        if (fz_conn[i].c)
            complete_recv(&fz_conn[i], 0);
    while (nreqs)
        fz_complete(0);
    settle();
    FZ_ASSERT(TAILQ_EMPTY(&pd.clients) && TAILQ_EMPTY(&pd.zombies));
    FZ_ASSERT(pd.nconns == 0 && pd.nsessions == 0 && pd.charged == 0);
    /* The uids' records go a second after their last connection, the
     * cgroups' two. */
    fz_tick(2000);
    FZ_ASSERT(pd.nusers == 0 && TAILQ_EMPTY(&pd.users) && TAILQ_EMPTY(&pd.memcgs));
    /* Every socket, memfd and mapping went with its client. */
    FZ_ASSERT(lowest_free_fd() == fd_mark);
}
