/* The pagerd provider: SuperSlabs pre-faulted by hakmem-pagerd in a shared
 * file, popped from the fill ring of the node the thread runs on.
 *
 * A pop is a CAS on the ring's head: no system call, no lock. Everything
 * slow (connecting, noticing a lost daemon, reconnecting with backoff,
 * pushing emptied SuperSlabs back) happens outside that path, and every
 * failure means the embedded provider serves the request instead.
 *
 * A session is one connection and its file. Its SuperSlab area is mapped
 * once, MAP_SHARED, into the arena. When the daemon goes away the session
 * stays mapped (the client's data lives there) but is no longer popped from;
 * its SuperSlabs are then recycled in-process like embedded ones.
 *
 * fork: MAP_SHARED memory would stay shared between parent and child. In
 * the prepare handler every session's SuperSlab area is remapped
 * MAP_PRIVATE | MAP_FIXED from the same file offsets: the file holds every
 * byte written so far, so nothing is lost, and from then on the area is
 * ordinary copy-on-write memory in both processes. Such a session is never
 * returned to the daemon; its pages written after the fork exist twice (the
 * file's copy and the private one) until the process exits. Both processes
 * get new SuperSlabs from a fresh session.
 *
 * A file of the host's huge page pool (hugetlbfs) is different: a private
 * mapping of it would take each copy from that pool at the first write
 * after the fork, and die of SIGBUS when the pool is dry. Its SuperSlabs
 * are copied into anonymous memory instead, a huge page at a time. Nor can
 * part of a huge page be given back: units of its SuperSlabs stay resident
 * until the SuperSlab goes back to the daemon. */
#include <fcntl.h>
#include <sched.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/un.h>
#include <unistd.h>

#include "internal.h"

#define MAX_SESSIONS HAK_PAGERD_MAX_SESSIONS
#define IO_TIMEOUT_MS 200
#define BACKOFF_MIN_NS (100ull * 1000000)
#define BACKOFF_MAX_NS (5000ull * 1000000)
#define LIVENESS_EVERY_NS (50ull * 1000000)
#define HEARTBEAT_STALE_NS (3000ull * 1000000)
#define HUGETLBFS_MAGIC 0x958458f6
/* An empty ring whose SuperSlabs are on their way is waited for this long
 * at most: a pre-faulted huge page is worth far more than fresh memory of
 * our own (a fault per 4 KiB), but a slow daemon must not stall us. With
 * nothing on its way, the daemon is told (HAK_MSG_DRY) and has DRY_GRACE_NS
 * to start a fill; if it does not (at a limit), it is not told again for
 * DRY_QUIET_NS. */
#define FILL_WAIT_NS (5000ull * 1000)
#define DRY_GRACE_NS (300ull * 1000)
#define DRY_QUIET_NS (100ull * 1000000)
/* Waiting pays while the daemon's deliveries come sooner than faulting in
 * a SuperSlab of our own would take. When they lately took longer on
 * average (2 MiB pages the host is slow to find, a daemon short of CPU),
 * fresh memory of our own fills the gap while the daemon's is still
 * popped as it arrives, and one wait in WAIT_PROBE_NS measures again. */
#define WAIT_WORTH_NS (1000ull * 1000)
#define WAIT_PROBE_NS (20ull * 1000000)

struct session {
    int sock;                    /* -1 once closed */
    int memfd;
    struct hak_shm_ctrl *ctrl;   /* control area, NULL once unmapped */
    size_t ctrl_len;             /* its mapping's length (whole huge pages for hugetlbfs) */
    bool hugetlb;                /* the file is of the host's huge page pool */
    bool huge;                   /* 2 MiB pages (the pool's, or THP): half of one is
                                    not ours to punch */
    struct hak_shm_layout layout;
    uint32_t base;               /* arena index of the file's first SuperSlab */
    uint32_t ncpus;              /* validated copy of ctrl->ncpus */
    uint64_t id;
    _Atomic uint64_t *held;      /* bitmap: SuperSlabs in our hands */
    _Atomic int live;            /* rings in use */
    bool private_copy;           /* remapped MAP_PRIVATE at a fork */
    uint64_t hb_value, hb_seen_ns, next_check_ns; /* liveness, under pd.lock */
    _Atomic uint64_t dry_quiet_ns; /* no HAK_MSG_DRY before this */
    _Atomic uint64_t wait_avg_ns;  /* recent waits for the ring (moving average) */
    _Atomic uint64_t probe_ns;     /* waits too long: the next one not before this */
};

static struct {
    hak_lock_t lock; /* connect, loss, return pushes, fork */
    struct session s[MAX_SESSIONS];
    _Atomic unsigned n;
    _Atomic(struct session *) cur; /* session popped from; NULL if none */
    uint64_t next_attempt_ns, backoff_ns;
    bool warned;
} pd = {.lock = HAK_LOCK_INIT};

/* Only HAKMEM_PAGERD=on asked for the daemon; in auto mode falling back
 * quietly is the expected behaviour, unless the daemon misbehaves. */
static void warn_once(const char *what, const char *detail)
{
    if (pd.warned)
        return;
    pd.warned = true;
    hak_write_str(2, "hakmem: pagerd: ");
    hak_write_str(2, what);
    if (detail) {
        hak_write_str(2, ": ");
        hak_write_str(2, detail);
    }
    hak_write_str(2, "; using in-process provisioning\n");
}

static struct hak_shm_fill_ring *fill_ring(struct session *s, unsigned node)
{
    return hak_shm_fill_ring(s->ctrl, node);
}

static struct hak_shm_return_ring *return_ring(struct session *s)
{
    return hak_shm_return_ring(s->ctrl, &s->layout);
}

/* ---- connecting ---- */

/* Send hello, receive welcome and the memfd. Returns the memfd or -1. */
int hak_pagerd_handshake(int sock, uint32_t capacity, struct hak_msg_welcome *w)
{
    struct hak_msg_hello hello;
    memset(&hello, 0, sizeof hello);
    hak_msg_init(&hello.hdr, HAK_MSG_HELLO, sizeof hello);
    hello.capacity = capacity;
    if (hak_os_send(sock, &hello, sizeof hello) != (long)sizeof hello) {
        warn_once("cannot send the hello to the daemon", NULL);
        return -1;
    }
    union {
        struct hak_msg_welcome welcome;
        struct hak_msg_refuse refuse;
        char raw[256];
    } buf;
    union { /* aligned for the struct cmsghdr the kernel writes at its start */
        struct cmsghdr align;
        char buf[CMSG_SPACE(4 * sizeof(int))];
    } cbuf;
    struct iovec iov = {&buf, sizeof buf};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf.buf, .msg_controllen = sizeof cbuf.buf};
    long n = hak_os_recvmsg(sock, &mh, MSG_CMSG_CLOEXEC);
    /* Exactly one descriptor is expected; any others are closed. */
    int memfd = -1, fds = 0;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS || c->cmsg_len < CMSG_LEN(0))
            continue;
        for (size_t k = 0; k < (c->cmsg_len - CMSG_LEN(0)) / sizeof(int); k++) {
            int fd;
            memcpy(&fd, CMSG_DATA(c) + k * sizeof(int), sizeof fd);
            if (fds++ == 0)
                memfd = fd;
            else
                close(fd);
        }
    }
    if (fds > 1) {
        close(memfd);
        memfd = -1;
    }
    unsigned type = n > 0 ? hak_msg_check(&buf, (size_t)n) : 0;
    if (type == HAK_MSG_WELCOME && memfd >= 0 && !(mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC))) {
        *w = buf.welcome;
        return memfd;
    }
    if (memfd >= 0)
        close(memfd);
    if (type == HAK_MSG_REFUSE) {
        buf.refuse.reason[sizeof buf.refuse.reason - 1] = 0;
        warn_once("the daemon refused the connection", buf.refuse.reason);
    } else {
        warn_once("bad or missing reply from the daemon", NULL);
    }
    return -1;
}

/* Check everything the daemon told us before we map or trust it. */
bool hak_pagerd_layout_ok(const struct hak_msg_welcome *w, uint32_t asked, int memfd)
{
    struct hak_shm_layout want;
    const struct hak_shm_layout *got = &w->layout;
    if (got->capacity > asked || !hak_shm_layout_compute(got->nnodes, got->capacity, &want) ||
        !hak_shm_layout_equal(&want, got))
        return false;
    struct stat st;
    int seals = fcntl(memfd, F_GET_SEALS);
    return fstat(memfd, &st) == 0 && (uint64_t)st.st_size >= got->file_size && seals >= 0 &&
           (seals & F_SEAL_SHRINK);
}

/* The mapped control area against the welcome; *ncpus is read once, then
 * checked: the daemon could change it meanwhile. */
bool hak_pagerd_ctrl_ok(const struct hak_shm_ctrl *c, const struct hak_shm_layout *l, uint32_t *ncpus)
{
    if (c->magic != HAK_SHM_MAGIC || c->version != HAK_SHM_VERSION || !hak_shm_layout_equal(&c->layout, l))
        return false;
    uint32_t n = __atomic_load_n(&c->ncpus, __ATOMIC_RELAXED);
    if (n < 1 || n > HAK_SHM_MAX_CPUS)
        return false;
    *ncpus = n;
    return true;
}

/* The node of a cpu, from the daemon's map; 0 for anything out of range. */
unsigned hak_pagerd_node_of(const struct hak_shm_ctrl *c, uint32_t ncpus, uint32_t nnodes, int cpu)
{
    if (cpu < 0 || (unsigned)cpu >= ncpus)
        return 0;
    unsigned node = __atomic_load_n(&c->cpu_node[cpu], __ATOMIC_RELAXED);
    return node < nnodes ? node : 0;
}

/* Map the file: control area anywhere, SuperSlab area into the arena. */
static bool map_session(struct session *s)
{
    const struct hak_shm_layout *l = &s->layout;
    struct statfs fs;
    s->hugetlb = fstatfs(s->memfd, &fs) == 0 && fs.f_type == HUGETLBFS_MAGIC;
    s->ctrl_len = s->hugetlb ? (l->ctrl_size + HAK_SHM_HUGE_SIZE - 1) & ~(HAK_SHM_HUGE_SIZE - 1) : l->ctrl_size;
    if (s->hugetlb && (l->capacity & 1))
        return false; /* whole huge pages only */
    s->ctrl = hak_os_map_file(NULL, s->ctrl_len, s->memfd, 0, true);
    if (!s->ctrl)
        return false;
    if (!hak_pagerd_ctrl_ok(s->ctrl, l, &s->ncpus))
        return false;
    s->huge = s->hugetlb || __atomic_load_n(&s->ctrl->pages, __ATOMIC_RELAXED) == HAK_PAGES_THP;
    /* Never let sessions take more than half of the arena: embedded
     * provisioning must always find room. */
    uint32_t cursor = __atomic_load_n(&hak_arena.cursor, __ATOMIC_ACQUIRE);
    if ((uint64_t)cursor + l->capacity > hak_arena.nss_max / 2)
        return false;
    s->base = hak_arena_extend(l->capacity);
    if (s->base == HAK_NO_SS)
        return false;
    void *at = hak_ss_addr(s->base);
    size_t len = (size_t)l->capacity << HAK_SS_SHIFT;
    if (hak_os_map_file(at, len, s->memfd, l->ss_offset, true) != at)
        return false; /* the range stays reserved and unused */
    s->held = hak_os_map(((size_t)l->capacity + 63) / 64 * 8);
    return s->held != NULL;
}

static void close_socket(struct session *s)
{
    if (s->sock >= 0) {
        close(s->sock);
        s->sock = -1;
    }
}

/* Only where no other thread can be using the session: a failed connect,
 * or a fork, when every heap is stopped. */
static void close_session_io(struct session *s)
{
    close_socket(s);
    if (s->ctrl) {
        munmap(s->ctrl, s->ctrl_len);
        s->ctrl = NULL;
    }
}

/* pd.lock held */
static void try_connect(void)
{
    unsigned n = atomic_load(&pd.n);
    if (n == MAX_SESSIONS)
        return;
    if (access(hak_opt.pagerd_socket, F_OK) != 0) {
        if (hak_opt.pagerd == HAK_PAGERD_ON)
            warn_once("no daemon socket at", hak_opt.pagerd_socket);
        return;
    }
    struct session *s = &pd.s[n];
    memset(s, 0, sizeof *s);
    s->sock = hak_os_connect_unix(hak_opt.pagerd_socket, IO_TIMEOUT_MS);
    s->memfd = -1;
    if (s->sock < 0) {
        warn_once("cannot connect to", hak_opt.pagerd_socket);
        return;
    }
    uint32_t asked = (uint32_t)hak_opt.pagerd_capacity_mb;
    struct hak_msg_welcome w;
    s->memfd = hak_pagerd_handshake(s->sock, asked, &w);
    if (s->memfd >= 0) {
        s->layout = w.layout;
        s->id = w.session;
        if (!hak_pagerd_layout_ok(&w, asked, s->memfd)) {
            warn_once("the daemon sent a layout that does not check out", NULL);
        } else if (!map_session(s)) {
            warn_once("cannot map the daemon's file (or its control area does not check out)", NULL);
        } else {
            s->hb_value = atomic_load_explicit(&s->ctrl->heartbeat, HAK_RELAXED);
            s->hb_seen_ns = hak_now_ns();
            atomic_store(&s->live, 1);
            atomic_store(&pd.n, n + 1);
            atomic_store(&pd.cur, s);
            pd.warned = false;
            return;
        }
    }
    close_session_io(s);
    if (s->memfd >= 0)
        close(s->memfd);
}

static void maybe_connect(void)
{
    if (hak_opt.pagerd == HAK_PAGERD_OFF || !hak_lock_try(&pd.lock))
        return;
    uint64_t now = hak_now_ns();
    if (!atomic_load(&pd.cur) && now >= pd.next_attempt_ns) {
        try_connect();
        if (atomic_load(&pd.cur)) {
            pd.backoff_ns = 0;
        } else {
            pd.backoff_ns = pd.backoff_ns ? pd.backoff_ns * 2 : BACKOFF_MIN_NS;
            if (pd.backoff_ns > BACKOFF_MAX_NS)
                pd.backoff_ns = BACKOFF_MAX_NS;
            pd.next_attempt_ns = now + pd.backoff_ns;
        }
    }
    hak_unlock(&pd.lock);
}

/* ---- losing the daemon ---- */

/* pd.lock held. The file stays mapped (our data lives in it) and so does
 * the control area (other threads may be reading it right now). SuperSlabs
 * still waiting in the rings are punched, since nobody will pop them, but
 * only those never handed to us: a lying daemon may list ours again. They
 * are marked held, so they are never taken. */
static void lose_session(struct session *s, const char *why)
{
    if (!atomic_exchange(&s->live, 0))
        return;
    struct session *expected = s;
    atomic_compare_exchange_strong(&pd.cur, &expected, NULL);
    const struct hak_shm_layout *l = &s->layout;
    for (unsigned node = 0; node < l->nnodes; node++) {
        uint64_t off;
        uint32_t i;
        while (hak_fill_ring_pop(fill_ring(s, node), &off) == 1) {
            if (hak_shm_ss_index(l, off, &i) != HAK_SHM_OFF_OK)
                continue;
            uint64_t bit = 1ull << (i & 63);
            if (!(atomic_fetch_or(&s->held[i / 64], bit) & bit))
                hak_os_decommit_file(hak_ss_addr(s->base + i), HAK_SS_SIZE, true);
        }
    }
    close_socket(s);
    pd.next_attempt_ns = hak_now_ns() + BACKOFF_MIN_NS;
    pd.backoff_ns = BACKOFF_MIN_NS;
    if (hak_opt.pagerd == HAK_PAGERD_ON)
        warn_once("lost the daemon", why);
}

/* After an empty ring: is the daemon still there? Cheap checks first, at
 * most every LIVENESS_EVERY_NS. */
static void check_liveness(struct session *s)
{
    if (!hak_lock_try(&pd.lock))
        return;
    uint64_t now = hak_now_ns();
    if (atomic_load(&s->live) && now >= s->next_check_ns) {
        s->next_check_ns = now + LIVENESS_EVERY_NS;
        uint64_t hb = atomic_load_explicit(&s->ctrl->heartbeat, HAK_RELAXED);
        char c;
        ssize_t r = recv(s->sock, &c, 1, MSG_PEEK | MSG_DONTWAIT);
        if (r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
            lose_session(s, "connection closed");
        else if (hb != s->hb_value) {
            s->hb_value = hb;
            s->hb_seen_ns = now;
        } else if (now - s->hb_seen_ns > HEARTBEAT_STALE_NS) {
            lose_session(s, "no heartbeat");
        }
    }
    hak_unlock(&pd.lock);
}

/* ---- the provider ---- */

static struct session *session_of(uint32_t idx)
{
    unsigned n = atomic_load(&pd.n);
    for (unsigned i = 0; i < n; i++) {
        struct session *s = &pd.s[i];
        if (idx - s->base < s->layout.capacity)
            return s;
    }
    return NULL;
}

static unsigned current_node(struct session *s)
{
    return hak_pagerd_node_of(s->ctrl, s->ncpus, s->layout.nnodes, sched_getcpu());
}

static bool push_back(uint32_t idx, bool now);

/* Validate a popped offset and make the SuperSlab ours: a CAS on its idle
 * word, which the daemon taking it back from the ring races. 1: ours; 0:
 * the daemon took it (pushed back to it); -1: the daemon lied. */
static int take(struct session *s, uint64_t off, uint32_t *idx)
{
    uint32_t i;
    if (hak_shm_ss_index(&s->layout, off, &i) != HAK_SHM_OFF_OK)
        return -1;
    uint64_t bit = 1ull << (i & 63);
    if (atomic_fetch_or(&s->held[i / 64], bit) & bit)
        return -1; /* handed to us twice */
    *idx = s->base + i;
    if (hak_cold(*idx)->state == HAK_SS_UNUSED)
        hak_arena_ss_init(*idx);
    struct hak_ss *ss = hak_cold(*idx);
    uint32_t w = HAK_IDLE_RING;
    if (!atomic_compare_exchange_strong_explicit(&hak_shm_idle_words(s->ctrl, &s->layout)[i], &w, HAK_IDLE_BUSY,
                                                 memory_order_acquire, memory_order_relaxed)) {
        if (w != HAK_IDLE_TAKEN)
            return -1;
        if (!push_back(*idx, false))
            ss->state = HAK_SS_UNUSED;
        return 0;
    }
    ss->state = HAK_SS_OWNED;
    ss->idle_word = HAK_IDLE_BUSY;
    ss->dirty_units = 0; /* the daemon's pre-faulted pages: its business until used */
    return 1;
}

/* Tell the daemon a ring ran dry; under the lock, which a lost session's
 * close of the socket takes (a send to a closed descriptor could reach a
 * file that reused its number). */
static bool send_dry(struct session *s)
{
    if (!hak_lock_try(&pd.lock))
        return false;
    struct hak_msg_hdr h;
    hak_msg_init(&h, HAK_MSG_DRY, sizeof h);
    bool sent = atomic_load(&s->live) && s->sock >= 0 &&
                send(s->sock, &h, sizeof h, MSG_NOSIGNAL | MSG_DONTWAIT) == (long)sizeof h;
    hak_unlock(&pd.lock);
    return sent;
}

static void note_wait(struct session *s, uint64_t ns)
{
    uint64_t avg = atomic_load_explicit(&s->wait_avg_ns, HAK_RELAXED);
    atomic_store_explicit(&s->wait_avg_ns, avg - avg / 8 + ns / 8, HAK_RELAXED);
}

/* The ring is empty: wait for the first SuperSlab on its way (FILL_WAIT_NS
 * at most), yielding the CPU (the daemon may need it); with none on its
 * way, tell the daemon first. True if the ring has something now. */
static bool wait_fill(struct session *s, struct hak_shm_fill_ring *r)
{
    uint64_t start = hak_now_ns();
    if (atomic_load_explicit(&s->wait_avg_ns, HAK_RELAXED) > WAIT_WORTH_NS) {
        if (start < atomic_load_explicit(&s->probe_ns, HAK_RELAXED))
            return false;
        atomic_store_explicit(&s->probe_ns, start + WAIT_PROBE_NS, HAK_RELAXED);
    }
    bool told = false;
    for (;;) {
        uint32_t level;
        uint64_t now = hak_now_ns();
        if (hak_fill_ring_level(r, &level) && level) {
            note_wait(s, now - start);
            return true;
        }
        if (now - start >= FILL_WAIT_NS) {
            note_wait(s, FILL_WAIT_NS);
            return false;
        }
        if (!atomic_load_explicit(&r->coming.v, memory_order_acquire)) {
            if (!told) {
                if (now < atomic_load_explicit(&s->dry_quiet_ns, HAK_RELAXED) || !send_dry(s))
                    return false;
                told = true;
            } else if (now - start >= DRY_GRACE_NS) {
                atomic_store_explicit(&s->dry_quiet_ns, now + DRY_QUIET_NS, HAK_RELAXED);
                return false;
            }
        }
        sched_yield();
    }
}

static unsigned pd_acquire(uint32_t *out, unsigned want, bool *tried)
{
    *tried = false;
    if (hak_opt.pagerd == HAK_PAGERD_OFF)
        return 0;
    struct session *s = atomic_load(&pd.cur);
    if (!s) {
        maybe_connect();
        if (!(s = atomic_load(&pd.cur)))
            return 0;
    }
    *tried = true;
    struct hak_shm_fill_ring *r = fill_ring(s, current_node(s));
    unsigned got = 0, popped = 0;
    bool waited = false;
    while (got < want) {
        uint64_t off;
        int rc = hak_fill_ring_pop(r, &off), took = rc > 0 ? take(s, off, &out[got]) : 0;
        if (rc == 0 && !got && !waited) {
            waited = true;
            if (wait_fill(s, r))
                continue;
        }
        if (rc == 0)
            break;
        if (rc < 0 || took < 0) {
            hak_lock(&pd.lock);
            lose_session(s, "the daemon broke the fill ring");
            hak_unlock(&pd.lock);
            break;
        }
        popped++;
        got += (unsigned)took;
    }
    if (popped)
        atomic_fetch_add_explicit(&s->ctrl->c_pops, popped, HAK_RELAXED);
    if (got < want && atomic_load(&s->live)) {
        atomic_fetch_add_explicit(&s->ctrl->c_fallbacks, 1, HAK_RELAXED);
        check_liveness(s);
    }
    return got;
}

/* ---- idle SuperSlabs (shm/: idle words) ---- */

/* The session of idx if it is live, with its control area mapped. */
static struct session *live_session_of(uint32_t idx)
{
    struct session *s = session_of(idx);
    return s && atomic_load(&s->live) && s->ctrl ? s : NULL;
}

static _Atomic uint32_t *idle_word(struct session *s, uint32_t idx)
{
    return &hak_shm_idle_words(s->ctrl, &s->layout)[idx - s->base];
}

/* Waiting warm: the daemon may take it from the deadline on (its clock). */
static void pd_idle(uint32_t idx, uint32_t decay_ms)
{
    struct session *s = live_session_of(idx);
    struct hak_ss *ss = hak_cold(idx);
    ss->idle_word = HAK_IDLE_BUSY;
    if (!s)
        return;
    uint32_t now = atomic_load_explicit(&s->ctrl->now_ms, HAK_RELAXED);
    ss->idle_word = hak_idle_deadline(now + decay_ms);
    atomic_store_explicit(idle_word(s, idx), ss->idle_word, memory_order_release);
    atomic_fetch_add_explicit(&s->ctrl->c_idle, 1, HAK_RELAXED);
}

/* Ours again, unless the daemon took it first (its CAS won). */
static bool claim(uint32_t idx)
{
    struct hak_ss *ss = hak_cold(idx);
    uint32_t w = ss->idle_word;
    ss->idle_word = HAK_IDLE_BUSY;
    struct session *s = live_session_of(idx);
    if (w == HAK_IDLE_BUSY || !s)
        return true; /* never published, or no daemon to take it any more */
    return atomic_compare_exchange_strong_explicit(idle_word(s, idx), &w, HAK_IDLE_BUSY, memory_order_acquire,
                                                   memory_order_relaxed);
}

/* Not ours any more, and the daemon told so: off our books, and back on
 * its return ring, which is how it learns that we know. */
static bool push_back(uint32_t idx, bool now)
{
    struct session *s = session_of(idx);
    if (!s)
        return false;
    uint32_t i = idx - s->base;
    bool pushed = false;
    hak_lock(&pd.lock);
    if (atomic_load(&s->live)) {
        /* Ours no longer before the daemon can see it: it may hand the
         * SuperSlab out again as soon as the push lands. */
        uint64_t bit = 1ull << (i & 63);
        hak_cold(idx)->state = HAK_SS_CLEAN;
        atomic_fetch_and(&s->held[i / 64], ~bit);
        uint64_t flag = now ? HAK_SHM_RETURN_NOW : 0;
        pushed = hak_return_ring_push(return_ring(s), hak_shm_ss_offset(&s->layout, i) | flag);
        if (pushed) {
            atomic_fetch_add_explicit(&s->ctrl->c_returns, 1, HAK_RELAXED);
        } else {
            atomic_fetch_or(&s->held[i / 64], bit);
            hak_cold(idx)->state = HAK_SS_OWNED;
        }
    }
    hak_unlock(&pd.lock);
    return pushed;
}

static bool pd_reuse(uint32_t idx)
{
    if (claim(idx))
        return true;
    /* Taken: acknowledged on the return ring. A full ring only delays the
     * daemon's reuse of it (it stays taken on its books). */
    if (!push_back(idx, false))
        hak_cold(idx)->state = HAK_SS_UNUSED;
    return false;
}

/* Release the pages of units: punch them out of a shared file, or drop
 * the private copies of a session detached at fork. Not part of a huge
 * page of the pool: false, nothing released. */
static bool pd_decommit(uint32_t idx, unsigned unit, unsigned n)
{
    struct session *s = session_of(idx);
    if (s && s->hugetlb && !s->private_copy)
        return false;
    char *at = (char *)hak_ss_addr(idx) + ((size_t)unit << HAK_UNIT_SHIFT);
    hak_os_decommit_file(at, (size_t)n << HAK_UNIT_SHIFT, s && !s->private_copy);
    return true;
}

/* Back to the daemon, its pages at once if now: we punch them, or with 2
 * MiB pages the daemon does, once the other half of the page is free too. */
static bool give_back(uint32_t idx, bool now)
{
    struct session *s = session_of(idx);
    if (now && s && !s->huge)
        pd_decommit(idx, 0, HAK_UNITS);
    return push_back(idx, now && s && s->huge);
}

/* Back to a live daemon, its pages at once if now (else the daemon keeps
 * them warm for its own reuse, then punches them). */
static enum hak_retire pd_retire(uint32_t idx, bool now)
{
    if (!live_session_of(idx))
        return HAK_RETIRE_REFUSED;
    if (!claim(idx)) {
        if (!push_back(idx, false))
            hak_cold(idx)->state = HAK_SS_UNUSED;
        return HAK_RETIRE_TAKEN;
    }
    return give_back(idx, now) ? HAK_RETIRED : HAK_RETIRE_REFUSED;
}

/* What waits in the current session's rings goes back too, its pages
 * punched now (malloc_trim): as much as the return ring has room for. */
static void pd_trim(void)
{
    struct session *s = atomic_load(&pd.cur);
    if (!s || !atomic_load(&s->live))
        return;
    struct hak_shm_return_ring *rr = return_ring(s);
    uint32_t room = HAK_SHM_RETURN_SLOTS - (atomic_load_explicit(&rr->tail.v, HAK_RELAXED) -
                                            atomic_load_explicit(&rr->head.v, memory_order_acquire));
    for (unsigned node = 0; node < s->layout.nnodes && room <= HAK_SHM_RETURN_SLOTS; node++) {
        uint64_t off;
        uint32_t idx;
        while (room > 0 && hak_fill_ring_pop(fill_ring(s, node), &off) == 1) {
            room--;
            int took = take(s, off, &idx);
            if (took < 0) {
                hak_lock(&pd.lock);
                lose_session(s, "the daemon broke the fill ring");
                hak_unlock(&pd.lock);
                return;
            }
            if (took > 0 && !give_back(idx, true))
                hak_cold(idx)->state = HAK_SS_UNUSED;
        }
    }
}

bool hak_pagerd_live(void)
{
    return atomic_load_explicit(&pd.cur, HAK_RELAXED) != NULL;
}

const struct hak_backend hak_pagerd_backend = {
    .name = "pagerd",
    .acquire = pd_acquire,
    .idle = pd_idle,
    .reuse = pd_reuse,
    .retire = pd_retire,
    .decommit = pd_decommit,
    .trim = pd_trim,
};

/* A live session's memory is its file's allocated blocks: those the daemon
 * pre-faulted and nobody wrote yet are memory too, and mincore does not see
 * them. A session made private at a fork: what its mapping shows (the
 * file's written pages and the private copies). */
size_t hak_pagerd_resident(uint32_t (*span)[2], unsigned *nspan)
{
    size_t bytes = 0;
    hak_lock(&pd.lock);
    unsigned n = atomic_load(&pd.n);
    for (unsigned i = 0; i < n; i++) {
        struct session *s = &pd.s[i];
        size_t len = (size_t)s->layout.capacity << HAK_SS_SHIFT;
        struct stat st;
        if (!s->private_copy && fstat(s->memfd, &st) == 0)
            bytes += (size_t)st.st_blocks * 512; /* SuperSlab and control areas */
        else
            bytes += hak_os_resident(hak_ss_addr(s->base), len) +
                     (s->ctrl ? hak_os_resident(s->ctrl, s->ctrl_len) : 0);
        bytes += hak_os_resident(s->held, ((size_t)s->layout.capacity + 63) / 64 * 8);
        span[i][0] = s->base;
        span[i][1] = s->base + s->layout.capacity;
    }
    *nspan = n;
    hak_unlock(&pd.lock);
    return bytes;
}

/* ---- fork ---- */

/* A pool file's SuperSlab area becomes anonymous memory: the huge pages
 * holding a SuperSlab of ours are copied aside, the area is mapped
 * anonymous at once, and the copies are moved into place (no second
 * copy). False if memory ran out (the area is then unusable). */
static bool copy_to_anonymous(struct session *s)
{
    char *base = hak_ss_addr(s->base);
    size_t pages = s->layout.capacity / 2, n = 0, list_len = pages * sizeof(void *);
    void **copy = hak_os_map(list_len);
    if (!copy)
        return false;
    bool ok = true;
    for (size_t i = 0; i < pages && ok; i++) {
        uint64_t word = atomic_load(&s->held[i * 2 / 64]), pair = 3ull << (i * 2 % 64);
        copy[i] = NULL;
        if (!(word & pair))
            continue;
        copy[i] = hak_os_map(HAK_SHM_HUGE_SIZE);
        if (!copy[i])
            ok = false;
        else
            memcpy(copy[i], base + i * HAK_SHM_HUGE_SIZE, HAK_SHM_HUGE_SIZE);
        n = i + 1;
    }
    size_t len = pages * HAK_SHM_HUGE_SIZE;
    if (ok && mmap(base, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1,
                   0) == MAP_FAILED)
        ok = false;
    for (size_t i = 0; i < n; i++) {
        if (!copy[i])
            continue;
        if (ok && mremap(copy[i], HAK_SHM_HUGE_SIZE, HAK_SHM_HUGE_SIZE, MREMAP_MAYMOVE | MREMAP_FIXED,
                         base + i * HAK_SHM_HUGE_SIZE) == MAP_FAILED)
            ok = false;
        if (!ok)
            munmap(copy[i], HAK_SHM_HUGE_SIZE);
    }
    munmap(copy, list_len);
    return ok;
}

void hak_pagerd_fork_prepare(void)
{
    hak_lock(&pd.lock);
    unsigned n = atomic_load(&pd.n);
    for (unsigned i = 0; i < n; i++) {
        struct session *s = &pd.s[i];
        if (s->private_copy || !s->held)
            continue;
        void *at = hak_ss_addr(s->base);
        size_t len = (size_t)s->layout.capacity << HAK_SS_SHIFT;
        if (s->hugetlb ? !copy_to_anonymous(s) : hak_os_map_file(at, len, s->memfd, s->layout.ss_offset, false) != at)
            hak_fatal("fork: cannot make the daemon's shared memory private");
        s->private_copy = true;
        atomic_store(&s->live, 0);
    }
    atomic_store(&pd.cur, NULL);
}

/* Both sides: the detached sessions stop talking to the daemon (closing
 * the parent's socket tells it to release its books); a SuperSlab needed
 * later opens a fresh session, but not at once: a process that forks in a
 * loop (a shell) would otherwise pay a handshake per fork. */
static void after_fork(void)
{
    unsigned n = atomic_load(&pd.n);
    for (unsigned i = 0; i < n; i++)
        close_session_io(&pd.s[i]);
    pd.backoff_ns = BACKOFF_MIN_NS;
    pd.next_attempt_ns = hak_now_ns() + pd.backoff_ns;
}

void hak_pagerd_fork_parent(void)
{
    after_fork();
    hak_unlock(&pd.lock);
}

void hak_pagerd_fork_child(void)
{
    after_fork();
    hak_lock_reset(&pd.lock);
}
