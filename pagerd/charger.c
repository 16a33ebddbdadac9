/* Whose memory cgroup pays for a client's pages.
 *
 * The kernel charges a page to the memory cgroup of the process that
 * allocates it, and pre-faulting allocates. Were we to pre-fault every
 * client's file ourselves, every client's heap would be charged to the
 * daemon's cgroup, escaping its own limit. So, per memory cgroup that
 * clients live in (struct memcg):
 *   CHARGE_OWN     it is our own cgroup: our charges are its charges;
 *   CHARGE_HELPER  a charger, a helper process of ours moved into that
 *                  cgroup (charger_proc.c), pre-faults its clients' files;
 *   CHARGE_DAEMON  no charger could be placed there (no permission, the
 *                  charge setting says so): we pre-fault, and count what we
 *                  allocated against the cgroup's room ourselves;
 *   CHARGE_NCG     the client's cgroup could not be found: we pre-fault,
 *                  unchecked (the pages show in hakctl as ours).
 * In every mode a pre-fault needs room in the cgroup: its smallest
 * (limit - usage) along its path, less cgroup_reserve_mb for what the
 * client allocates itself, less what we hold for it uncharged. Without
 * room the client's rings run dry and it allocates in-process, inside its
 * own limit. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "pagerd.h"

#define CHARGER_RETRY_MS 10000 /* after a charger could not be placed */
#define CHARGER_IDLE_MS 2000   /* a cgroup without sessions keeps its charger this long */

static const char *const mode_names[] = {
    [CHARGE_OWN] = "own", [CHARGE_HELPER] = "helper", [CHARGE_DAEMON] = "daemon", [CHARGE_NCG] = "unknown"};

const char *charge_mode_name(enum charge_mode m)
{
    return mode_names[m];
}

/* Our own executable, opened while the path to it was ours to read: a
 * daemon that changed user may not be able to reach it by its path. */
static int exe_fd = -1;

void charge_init(void)
{
    exe_fd = open("/proc/self/exe", O_PATH | O_CLOEXEC);
    pd.own_cg_known = cg_locate(getpid(), &pd.own_cg);
    if (pd.own_cg_known)
        log_info("memory cgroup %s (v%d)", pd.own_cg.path, pd.own_cg.version);
    else
        log_info("no memory cgroup found: clients' pages are charged to no cgroup");
    signal(SIGCHLD, SIG_IGN); /* chargers are reaped by the kernel */
}

/* ---- the charger process of a cgroup ---- */

/* Start a charger and move it into cg. On failure errno says why. */
static bool charger_start(struct memcg *cg)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
        return false;
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t at;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, sv[1], 3);
    posix_spawnattr_init(&at);
    sigset_t none;
    sigemptyset(&none);
    posix_spawnattr_setsigmask(&at, &none); /* ours blocks SIGTERM for the signalfd */
    posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK);
    char *argv[] = {"hakmem-pagerd", "--charger", NULL}, *envp[] = {NULL}, exe[32];
    snprintf(exe, sizeof exe, "/proc/self/fd/%d", exe_fd);
    pid_t pid;
    int e = exe_fd < 0 ? ENOENT : posix_spawn(&pid, exe, &fa, &at, argv, envp);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&at);
    close(sv[1]);
    if (e != 0) {
        close(sv[0]);
        errno = e;
        return false;
    }
    char path[sizeof cg->where.dir + 16], num[16];
    snprintf(path, sizeof path, "%s/cgroup.procs", cg->where.dir);
    int len = snprintf(num, sizeof num, "%d", (int)pid);
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    bool moved = fd >= 0 && write(fd, num, (size_t)len) == len;
    e = errno;
    if (fd >= 0)
        close(fd);
    if (!moved) {
        kill(pid, SIGKILL);
        close(sv[0]);
        errno = e;
        return false;
    }
    cg->ch.pid = pid;
    cg->ch.sock = sv[0];
    cg->ch.head = cg->ch.tail = NULL;
    loop_recv_charger(cg);
    log_info("charger pid=%d in cgroup %s", (int)pid, cg->where.path);
    return true;
}

/* The mode for cg now: a failed charger is tried again after a while. */
static enum charge_mode choose_mode(struct memcg *cg, uint64_t now)
{
    if (cg->mode == CHARGE_NCG || cg->mode == CHARGE_OWN)
        return cg->mode;
    if (pd.set.charge == CHARGE_SET_DAEMON)
        return CHARGE_DAEMON;
    if (cg->ch.sock >= 0)
        return cg->ch.stopping ? CHARGE_DAEMON : CHARGE_HELPER;
    if (now < cg->ch.retry_ms)
        return CHARGE_DAEMON;
    if (charger_start(cg))
        return CHARGE_HELPER;
    cg->ch.retry_ms = now + CHARGER_RETRY_MS;
    if (!cg->warned) {
        cg->warned = true;
        log_warnx("cannot place a charger in cgroup %s (%s): the daemon allocates its clients' pages, "
                  "within the cgroup's room",
                  cg->where.path, strerror(errno));
    }
    return CHARGE_DAEMON;
}

static void memcg_free(struct memcg *cg)
{
    TAILQ_REMOVE(&pd.memcgs, cg, entry);
    free(cg);
}

/* The charger is gone (it exited, was killed, broke the protocol, or we
 * stopped it): what it had not answered failed. */
static void charger_lost(struct memcg *cg, const char *why)
{
    if (!cg->ch.stopping)
        log_warnx("charger pid=%d of cgroup %s: %s", (int)cg->ch.pid, cg->where.path, why);
    close(cg->ch.sock);
    cg->ch.sock = -1;
    cg->ch.pid = 0;
    cg->ch.retry_ms = now_ms() + (cg->ch.stopping ? 0 : CHARGER_RETRY_MS);
    cg->ch.stopping = false;
    struct req *r;
    while ((r = cg->ch.head)) {
        cg->ch.head = r->next;
        cg->inflight--;
        pool_prefault_done(r, -EPIPE);
        req_done(r);
    }
    cg->ch.tail = NULL;
    if (cg->mode == CHARGE_HELPER)
        cg->mode = CHARGE_DAEMON;
    if (!cg->sessions)
        memcg_free(cg);
}

void charge_replied(struct req *r, int res)
{
    struct memcg *cg = r->cg;
    struct req *q = cg->ch.head;
    if (res != (int)sizeof cg->ch.reply || !q || q->seq != cg->ch.reply.seq)
        return charger_lost(cg, res == 0 ? "exited" : res < 0 ? strerror(-res) : "reply out of order");
    cg->ch.head = q->next;
    if (!cg->ch.head)
        cg->ch.tail = NULL;
    cg->inflight--;
    pool_prefault_done(q, cg->ch.reply.res);
    req_done(q);
    loop_recv_charger(cg);
}

/* Send one pre-fault; false if the charger cannot take it now. */
static bool charger_send(struct memcg *cg, struct client *c, struct req *r, enum charge_how how, uint64_t off,
                         uint64_t len)
{
    struct charge_request m = {.seq = cg->ch.seq, .how = how, .off = off, .len = len};
    if (!send_with_fd(cg->ch.sock, &m, sizeof m, c->memfd))
        return false;
    r->seq = cg->ch.seq++;
    r->next = NULL;
    if (cg->ch.tail)
        cg->ch.tail->next = r;
    else
        cg->ch.head = r;
    cg->ch.tail = r;
    cg->inflight++;
    return true;
}

/* ---- sessions ---- */

static struct memcg *memcg_get(const struct cg_where *w, bool known)
{
    struct memcg *cg;
    TAILQ_FOREACH(cg, &pd.memcgs, entry)
        if ((cg->mode == CHARGE_NCG) == !known && (!known || strcmp(cg->where.dir, w->dir) == 0))
            return cg;
    cg = calloc(1, sizeof *cg);
    if (!cg)
        return NULL;
    if (known)
        cg->where = *w;
    else
        snprintf(cg->where.path, sizeof cg->where.path, "?");
    cg->ch.sock = -1;
    cg->mode = !known ? CHARGE_NCG
               : pd.own_cg_known && strcmp(w->dir, pd.own_cg.dir) == 0 ? CHARGE_OWN
                                                                       : CHARGE_DAEMON;
    TAILQ_INSERT_TAIL(&pd.memcgs, cg, entry);
    return cg;
}

bool charge_session_start(struct client *c)
{
    struct cg_where w;
    bool known = cg_locate(c->pid, &w);
    c->cg = memcg_get(&w, known);
    if (!c->cg)
        return false;
    c->cg->sessions++;
    c->cg->mode = choose_mode(c->cg, now_ms());
    return true;
}

void charge_session_end(struct client *c)
{
    struct memcg *cg = c->cg;
    if (!cg)
        return;
    cg->daemon_ss -= c->ours;
    cg->ahead -= c->count[SS_PREFAULTING] + c->count[SS_RING];
    c->ours = 0;
    c->cg = NULL;
    if (--cg->sessions == 0)
        cg->idle_ms = now_ms();
}

/* Cgroups without sessions: their chargers stop after a while (a program
 * that starts processes one after another keeps its charger meanwhile). */
void charge_tick(uint64_t now)
{
    struct memcg *cg, *next;
    for (cg = TAILQ_FIRST(&pd.memcgs); cg; cg = next) {
        next = TAILQ_NEXT(cg, entry);
        if (cg->sessions || now - cg->idle_ms < CHARGER_IDLE_MS || cg->ch.stopping)
            continue;
        if (cg->ch.sock < 0) {
            memcg_free(cg);
        } else {
            cg->ch.stopping = true; /* its receive ends; charger_lost frees */
            shutdown(cg->ch.sock, SHUT_RDWR);
        }
    }
}

/* ---- pre-faulting ---- */

/* Room for one more pre-fault (c->unit SuperSlabs) in the client's cgroup? Its room (limit -
 * usage along its path) is read at most once a millisecond; from it go
 * what we granted since, what we hold for it uncharged, and the reserve
 * for what it allocates itself. And what waits unused in its rings stays
 * within a quarter of the room it would have without them: pre-faulted
 * memory counts against the client, so the nearer its limit, the less we
 * take ahead of its need. */
bool charge_room(struct client *c, uint64_t now)
{
    struct memcg *cg = c->cg;
    if (cg->mode == CHARGE_NCG)
        return true;
    if (cg->read_ms != now) {
        cg->read_ms = now;
        cg->granted = 0;
        if (!cg_read_room(cg->where.dir, cg->where.top, cg->where.version, &cg->room, &cg->limit, &cg->usage))
            cg->room = 0; /* gone, or unreadable now: nothing more from us */
    }
    if (cg->room == UINT64_MAX)
        return true;
    const uint64_t ss = HAK_SHM_SS_SIZE, want = c->unit * ss;
    uint64_t taken =
        cg->granted + cg->daemon_ss * ss + cg->inflight * want + ((uint64_t)pd.set.cgroup_reserve_mb << 20);
    uint64_t left = cg->room > taken ? cg->room - taken : 0;
    if (left < want || ((uint64_t)cg->ahead * ss + want) * 4 > left + (uint64_t)cg->ahead * ss)
        return false;
    cg->granted += want;
    return true;
}

/* Pre-fault r's SuperSlabs (c->unit from r->ss) of c's file, charged as
 * c's cgroup's mode says: fallocate for 4 KiB pages; for THP a populating
 * write through a mapping marked for them (pages.c says why). Pool pages
 * are no cgroup's memory (pages.c gives them only to clients without a
 * limit): we fallocate them. False if it cannot be done now (try again on
 * a later tick). */
bool charge_prefault(struct client *c, struct req *r)
{
    struct memcg *cg = c->cg;
    uint64_t off = hak_shm_ss_offset(&c->layout, r->ss), len = c->unit * HAK_SHM_SS_SIZE;
    bool huge = c->pages == HAK_PAGES_THP;
    if (c->pages == HAK_PAGES_HUGETLB) {
        /* Not fallocate: it holds the file's lock, one page at a time. */
        loop_madvise(r, (char *)c->ss_area + ((uint64_t)r->ss << HAK_SHM_SS_SHIFT), len, MADV_POPULATE_WRITE);
        return true;
    }
    cg->mode = choose_mode(cg, now_ms());
    if (cg->mode == CHARGE_HELPER)
        return charger_send(cg, c, r, huge ? CHARGE_POPULATE_HUGE : CHARGE_FALLOCATE, off, len);
    if (cg->mode != CHARGE_OWN)
        for (uint32_t i = r->ss; i < r->ss + c->unit; i++) {
            c->ss[i].ours = 1;
            c->ours++;
            cg->daemon_ss++;
        }
    if (huge)
        loop_madvise(r, (char *)c->ss_area + ((uint64_t)r->ss << HAK_SHM_SS_SHIFT), len, MADV_POPULATE_WRITE);
    else
        loop_fallocate(r, c->memfd, 0, off, len);
    return true;
}

/* A SuperSlab's pages are gone (punched): no longer ours to count. */
void charge_ss_freed(struct client *c, uint32_t idx)
{
    if (!c->ss[idx].ours)
        return;
    c->ss[idx].ours = 0;
    c->ours--;
    if (c->cg)
        c->cg->daemon_ss--;
}
