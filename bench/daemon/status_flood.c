/* Does a flood of status requests from one user slow the daemon's service
 * of the others? A private hakmem-pagerd with IDLE idle sessions (each
 * status request walks them all) and one busy client that empties its
 * fill ring and times how long the daemon takes to put a SuperSlab back
 * (the refill latency; it gives each one back at once, so the daemon
 * reuses it warm). Measured three times: no flood; a flood from another
 * user (nobody, when run as root) asking for the status as fast as it
 * can, against the default status_per_sec; the same flood with the limit
 * lifted. Prints p50, p99 and max refill latency and the statuses the
 * flood got per second.
 *
 *   make bench-flood
 *   build/bench-daemon/status_flood build/hakmem-pagerd [IDLE [SAMPLES]] */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "hakmem_shm.h"

static char dir[] = "/tmp/hakflood-XXXXXX", sock[64];

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void die(const char *what)
{
    fprintf(stderr, "status_flood: %s: %s\n", what, strerror(errno));
    exit(1);
}

static int connect_daemon(void)
{
    int s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", sock);
    if (s >= 0 && connect(s, (struct sockaddr *)&sa, sizeof sa) == 0)
        return s;
    if (s >= 0)
        close(s);
    return -1;
}

struct session {
    int sock;
    void *ctrl;
    struct hak_shm_layout lay;
};

/* Hello, welcome with the file; the control area mapped. */
static void session_open(struct session *ss)
{
    ss->sock = connect_daemon();
    if (ss->sock < 0)
        die("connect");
    struct hak_msg_hello h;
    memset(&h, 0, sizeof h);
    hak_msg_init(&h.hdr, HAK_MSG_HELLO, sizeof h);
    h.capacity = 64;
    if (send(ss->sock, &h, sizeof h, 0) != (ssize_t)sizeof h)
        die("hello");
    struct hak_msg_welcome w;
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(sizeof(int))];
    } cm;
    struct iovec iov = {&w, sizeof w};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cm.buf, .msg_controllen = sizeof cm.buf};
    ssize_t n = recvmsg(ss->sock, &mh, MSG_CMSG_CLOEXEC);
    struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
    if (n <= 0 || hak_msg_check(&w, (size_t)n) != HAK_MSG_WELCOME || !c) {
        fprintf(stderr, "status_flood: the daemon did not welcome a session\n");
        exit(1);
    }
    int fd;
    memcpy(&fd, CMSG_DATA(c), sizeof fd);
    ss->lay = w.layout;
    ss->ctrl = mmap(NULL, w.layout.ctrl_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (ss->ctrl == MAP_FAILED)
        die("mmap");
}

static pid_t start_daemon(const char *bin, const char *per_sec)
{
    unlink(sock);
    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int null = open("/dev/null", O_WRONLY);
        dup2(null, 1);
        dup2(null, 2);
        execl(bin, bin, "--foreground", "--socket", sock, "--config", "/dev/null", "--tick-ms", "5",
              "--min-watermark", "1", "--sessions-uid", "1024", "--connections-uid", "2048", "--status-per-sec",
              per_sec, (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 500; i++) {
        int s = connect_daemon();
        if (s >= 0) {
            close(s);
            return pid;
        }
        usleep(10000);
    }
    fprintf(stderr, "status_flood: the daemon at %s did not start\n", bin);
    exit(1);
}

/* As fast as it can: ask, read the reply; a refusal ends the connection,
 * so connect again. Counts the statuses it got in *got (shared). */
static pid_t start_flood(volatile uint64_t *got)
{
    pid_t pid = fork();
    if (pid != 0)
        return pid;
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (geteuid() == 0 && (setgid(65534) < 0 || setuid(65534) < 0))
        _exit(2);
    static unsigned char buf[HAK_STATUS_MAX_BYTES];
    struct hak_msg_hdr h;
    hak_msg_init(&h, HAK_MSG_STATUS_REQ, sizeof h);
    for (;;) {
        int s = connect_daemon();
        if (s < 0)
            continue;
        for (;;) {
            if (send(s, &h, sizeof h, MSG_NOSIGNAL) != (ssize_t)sizeof h)
                break;
            ssize_t n = recv(s, buf, sizeof buf, 0);
            if (n <= 0 || hak_msg_check(buf, (size_t)n) != HAK_MSG_STATUS)
                break;
            __atomic_add_fetch(got, 1, __ATOMIC_RELAXED);
        }
        close(s);
    }
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Empty ring 0, give the SuperSlabs back, time until one is there again. */
static void measure(struct session *busy, uint64_t *lat, int samples)
{
    struct hak_shm_fill_ring *fill = hak_shm_fill_ring(busy->ctrl, 0);
    struct hak_shm_return_ring *ret = hak_shm_return_ring(busy->ctrl, &busy->lay);
    for (int i = 0; i < samples; i++) {
        uint64_t off;
        while (hak_fill_ring_pop(fill, &off) == 1)
            while (!hak_return_ring_push(ret, off))
                usleep(100);
        uint64_t t0 = now_ns();
        while (atomic_load(&fill->tail.v) == atomic_load(&fill->head.v))
            ;
        lat[i] = now_ns() - t0;
    }
    qsort(lat, (size_t)samples, sizeof lat[0], cmp_u64);
}

static void phase(const char *bin, const char *name, const char *per_sec, bool flood, int idle, int samples,
                  volatile uint64_t *got)
{
    pid_t d = start_daemon(bin, per_sec);
    struct session *s = calloc((size_t)idle + 1, sizeof *s);
    for (int i = 0; i <= idle; i++)
        session_open(&s[i]);
    uint64_t *lat = calloc((size_t)samples, sizeof *lat);
    *got = 0;
    pid_t f = flood ? start_flood(got) : 0;
    usleep(200000);
    uint64_t got0 = *got, t0 = now_ns();
    measure(&s[idle], lat, samples);
    double secs = (double)(now_ns() - t0) * 1e-9;
    uint64_t got1 = *got;
    if (f) {
        kill(f, SIGKILL);
        waitpid(f, NULL, 0);
    }
    printf("%-34s %9.0f %9.0f %9.0f %12.0f\n", name, lat[samples / 2] * 1e-3, lat[samples * 99 / 100] * 1e-3,
           lat[samples - 1] * 1e-3, (double)(got1 - got0) / secs);
    fflush(stdout);
    for (int i = 0; i <= idle; i++) {
        close(s[i].sock);
        munmap(s[i].ctrl, s[i].lay.ctrl_size);
    }
    free(s);
    free(lat);
    kill(d, SIGTERM);
    waitpid(d, NULL, 0);
}

int main(int argc, char **argv)
{
    if (argc < 2 || argc > 4) {
        fprintf(stderr, "usage: status_flood DAEMON [IDLE_SESSIONS (200)] [SAMPLES (2000)]\n");
        return 2;
    }
    int idle = argc > 2 ? atoi(argv[2]) : 200, samples = argc > 3 ? atoi(argv[3]) : 2000;
    if (idle < 0 || idle > 1000 || samples < 100) {
        fprintf(stderr, "status_flood: IDLE_SESSIONS 0..1000, SAMPLES 100 or more\n");
        return 2;
    }
    if (!mkdtemp(dir) || chmod(dir, 0777) < 0)
        die("mkdtemp");
    snprintf(sock, sizeof sock, "%s/pagerd.sock", dir);
    volatile uint64_t *got = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    printf("refill latency of a busy client, %d idle sessions, %d samples, tick 5 ms (microseconds)\n", idle,
           samples);
    printf("%-34s %9s %9s %9s %12s\n", "", "p50", "p99", "max", "flood st/s");
    phase(argv[1], "no flood", "20", false, idle, samples, got);
    phase(argv[1], "flood, status_per_sec = 20", "20", true, idle, samples, got);
    phase(argv[1], "flood, status_per_sec = 100000", "100000", true, idle, samples, got);
    rmdir(dir);
    return 0;
}
