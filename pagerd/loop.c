/* The event loop: one io_uring for everything that waits. Each iteration
 * submits what the previous completions prepared, in one batch, waits for
 * at least one completion, and dispatches every completion on the kind of
 * the request its user_data points at. Nothing else in the daemon blocks:
 * replies are sent with MSG_DONTWAIT, and the only slow operations (page
 * allocation and punching) are fallocate requests on the ring. */
#include <errno.h>
#include <liburing.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "pagerd.h"

#define RING_ENTRIES 256u
#define CQ_ENTRIES 4096u

static struct io_uring ring;
static struct req accept_req = {.kind = REQ_ACCEPT};
static struct req tick_req = {.kind = REQ_TICK};
static struct req signal_req = {.kind = REQ_SIGNAL};
static struct __kernel_timespec tick_ts; /* read by the kernel at submission */
static struct signalfd_siginfo siginfo;
static struct req *req_pool; /* free requests */
/* Requests come in chunks, freed together at exit (after the ring is gone,
 * nothing can point at them). */
#define REQ_CHUNK 64
struct req_chunk {
    struct req_chunk *next;
    struct req r[REQ_CHUNK];
};
static struct req_chunk *req_chunks;
static uint64_t accept_logged_ms;

/* A submission entry; when the queue is full, what is in it is submitted
 * first (an early batch rather than a lost request). */
static struct io_uring_sqe *sqe_get(void)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
    if (sqe)
        return sqe;
    int e = io_uring_submit(&ring);
    if (e < 0)
        log_warnx("io_uring_submit: %s", strerror(-e));
    sqe = io_uring_get_sqe(&ring);
    if (!sqe)
        fatalx("io_uring: submission queue stuck full");
    return sqe;
}

static void req_put(struct req *r)
{
    r->next = req_pool;
    req_pool = r;
}

struct req *req_new(enum req_kind kind, struct client *c, uint32_t ss)
{
    if (!req_pool) {
        struct req_chunk *ch = malloc(sizeof *ch);
        if (!ch)
            fatal("malloc");
        ch->next = req_chunks;
        req_chunks = ch;
        for (int i = 0; i < REQ_CHUNK; i++)
            req_put(&ch->r[i]);
    }
    struct req *r = req_pool;
    req_pool = r->next;
    *r = (struct req){.kind = kind, .client = c, .ss = ss};
    if (c)
        c->refs++;
    return r;
}

void req_done(struct req *r)
{
    session_unref(r->client);
    req_put(r);
}

void loop_accept(void)
{
    struct io_uring_sqe *sqe = sqe_get();
    io_uring_prep_accept(sqe, pd.listen_fd, NULL, NULL, SOCK_CLOEXEC);
    io_uring_sqe_set_data(sqe, &accept_req);
}

void loop_recv(struct client *c)
{
    struct io_uring_sqe *sqe = sqe_get();
    c->rreq = (struct req){.kind = REQ_RECV, .client = c};
    c->refs++;
    io_uring_prep_recv(sqe, c->sock, c->rbuf.raw, sizeof c->rbuf.raw, 0);
    io_uring_sqe_set_data(sqe, &c->rreq);
}

void loop_recv_charger(struct memcg *cg)
{
    struct io_uring_sqe *sqe = sqe_get();
    cg->ch.rreq = (struct req){.kind = REQ_CHARGER, .cg = cg};
    io_uring_prep_recv(sqe, cg->ch.sock, &cg->ch.reply, sizeof cg->ch.reply, 0);
    io_uring_sqe_set_data(sqe, &cg->ch.rreq);
}

void loop_fallocate(struct req *r, int fd, int mode, uint64_t off, uint64_t len)
{
    struct io_uring_sqe *sqe = sqe_get();
    io_uring_prep_fallocate(sqe, fd, mode, (off_t)off, (off_t)len);
    io_uring_sqe_set_data(sqe, r);
}

void loop_madvise(struct req *r, void *addr, uint64_t len, int advice)
{
    struct io_uring_sqe *sqe = sqe_get();
    io_uring_prep_madvise(sqe, addr, (off_t)len, advice);
    io_uring_sqe_set_data(sqe, r);
}

static void arm_tick(void)
{
    struct io_uring_sqe *sqe = sqe_get();
    tick_ts.tv_sec = pd.set.tick_ms / 1000;
    tick_ts.tv_nsec = (long long)(pd.set.tick_ms % 1000) * 1000000;
    io_uring_prep_timeout(sqe, &tick_ts, 0, 0);
    io_uring_sqe_set_data(sqe, &tick_req);
}

static void arm_signal(void)
{
    struct io_uring_sqe *sqe = sqe_get();
    io_uring_prep_read(sqe, pd.signal_fd, &siginfo, sizeof siginfo, 0);
    io_uring_sqe_set_data(sqe, &signal_req);
}

static void accepted(int res)
{
    if (res >= 0) {
        session_accepted(res);
        loop_accept();
        return;
    }
    if (res == -EMFILE || res == -ENFILE || res == -ENOBUFS || res == -ENOMEM) {
        /* Re-arming at once would spin; the tick tries again. */
        uint64_t now = now_ms();
        if (now - accept_logged_ms >= PAGERD_LOG_EVERY_MS) {
            accept_logged_ms = now;
            log_warnx("accept: %s", strerror(-res));
        }
        pd.accept_paused = true;
        return;
    }
    if (res != -ECANCELED)
        loop_accept(); /* the peer gave up (ECONNABORTED) and the like */
}

static void ticked(void)
{
    pool_tick(now_ms());
    if (pd.accept_paused) {
        pd.accept_paused = false;
        loop_accept();
    }
    arm_tick();
}

static void signalled(int res)
{
    if (res != (int)sizeof siginfo) {
        log_warnx("signalfd read: %s", res < 0 ? strerror(-res) : "short read");
    } else if (siginfo.ssi_signo == SIGHUP) {
        config_reload();
    } else {
        log_info("signal %u: shutting down", siginfo.ssi_signo);
        pd.quit = true;
        return;
    }
    arm_signal();
}

static void dispatch(struct req *r, int res)
{
    switch (r->kind) {
    case REQ_ACCEPT:
        accepted(res);
        break;
    case REQ_RECV:
        session_received(r->client, res);
        session_unref(r->client);
        break;
    case REQ_TICK:
        ticked();
        break;
    case REQ_SIGNAL:
        signalled(res);
        break;
    case REQ_PREFAULT:
        pool_prefault_done(r, res);
        req_done(r);
        break;
    case REQ_PUNCH:
        reclaim_punch_done(r, res);
        req_done(r);
        break;
    case REQ_CHARGER:
        charge_replied(r, res);
        break;
    }
}

static void signal_set(sigset_t *set)
{
    sigemptyset(set);
    sigaddset(set, SIGTERM);
    sigaddset(set, SIGINT);
    sigaddset(set, SIGHUP);
}

/* From the start: a SIGTERM that arrives while the daemon is still
 * starting waits for the loop, which then stops cleanly. */
void loop_block_signals(void)
{
    sigset_t set;
    signal_set(&set);
    if (sigprocmask(SIG_BLOCK, &set, NULL) < 0)
        fatal("sigprocmask");
}

/* Signals arrive as reads of a signalfd, like any other completion. */
static void signals_init(void)
{
    sigset_t set;
    signal_set(&set);
    pd.signal_fd = signalfd(-1, &set, SFD_CLOEXEC);
    if (pd.signal_fd < 0)
        fatal("signalfd");
    signal(SIGPIPE, SIG_IGN);
}

void loop_init(void)
{
    signals_init();
    struct io_uring_params p;
    memset(&p, 0, sizeof p);
    p.flags = IORING_SETUP_CQSIZE;
    p.cq_entries = CQ_ENTRIES;
    int e = io_uring_queue_init_params(RING_ENTRIES, &ring, &p);
    if (e < 0) {
        errno = -e;
        fatal("io_uring_queue_init");
    }
    /* Without NODROP a burst of completions could be lost, and with it the
     * request structs and client references they carry. */
    if (!(p.features & IORING_FEAT_NODROP))
        fatalx("io_uring: kernel lacks IORING_FEAT_NODROP (need Linux 5.5 or later)");
    /* Pre-faults and punches run in the kernel's io_uring workers. Left
     * alone it starts one per request in flight: a ring's worth of huge
     * pages zeroed at once would be hundreds of threads. One per CPU keeps
     * every CPU zeroing when clients grow fast, and no more. */
    unsigned workers[2] = {pd.ncpus, pd.ncpus};
    e = io_uring_register_iowq_max_workers(&ring, workers);
    if (e < 0)
        log_warnx("io_uring: no limit on its workers: %s", strerror(-e));
    loop_accept();
    arm_tick();
    arm_signal();
}

void loop_run(void)
{
    while (!pd.quit) {
        int e = io_uring_submit_and_wait(&ring, 1);
        if (e < 0 && e != -EINTR && e != -EAGAIN && e != -EBUSY) {
            errno = -e;
            fatal("io_uring_submit_and_wait");
        }
        struct io_uring_cqe *cqe;
        while (io_uring_peek_cqe(&ring, &cqe) == 0) {
            struct req *r = io_uring_cqe_get_data(cqe);
            int res = cqe->res;
            io_uring_cqe_seen(&ring, cqe);
            dispatch(r, res);
        }
    }
}

/* In-flight requests are cancelled by the kernel; fallocates already
 * running finish on their own. */
void loop_fini(void)
{
    io_uring_queue_exit(&ring);
    close(pd.signal_fd);
    while (req_chunks) {
        struct req_chunk *ch = req_chunks;
        req_chunks = ch->next;
        free(ch);
    }
    req_pool = NULL;
}
