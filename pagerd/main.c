/* hakmem-pagerd: start (flags, settings, topology, socket, detach), run the
 * loop, stop. Errors before the loop runs are fatal and reach the terminal;
 * a bad command line or config file exits 2, other start failures 1. */
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "pagerd.h"

struct pagerd pd = {
    .listen_fd = -1,
    .signal_fd = -1,
    .clients = TAILQ_HEAD_INITIALIZER(pd.clients),
    .zombies = TAILQ_HEAD_INITIALIZER(pd.zombies),
    .users = TAILQ_HEAD_INITIALIZER(pd.users),
    .memcgs = TAILQ_HEAD_INITIALIZER(pd.memcgs),
};

uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* The service manager's readiness protocol, without libsystemd: one
 * datagram to $NOTIFY_SOCKET ('@' for the abstract namespace). */
void notify_service(const char *state)
{
    const char *path = getenv("NOTIFY_SOCKET");
    if (!path || (path[0] != '/' && path[0] != '@'))
        return;
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    size_t len = strlen(path);
    if (len >= sizeof sa.sun_path) {
        log_warnx("NOTIFY_SOCKET too long");
        return;
    }
    memcpy(sa.sun_path, path, len);
    if (path[0] == '@')
        sa.sun_path[0] = 0;
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        log_warn("notify socket");
        return;
    }
    socklen_t salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len);
    if (sendto(fd, state, strlen(state), MSG_NOSIGNAL, (struct sockaddr *)&sa, salen) < 0)
        log_warn("notify %s", path);
    close(fd);
}

/* Every client costs two descriptors (socket and memfd). */
static void raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
            log_warn("setrlimit RLIMIT_NOFILE");
    }
}

/* Fork into the background. The parent waits until the child says it is
 * serving (a byte on a pipe), so its exit status tells whether the start
 * worked. Returns the child's end of that pipe. */
static int detach(void)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0)
        fatal("pipe");
    pid_t pid = fork();
    if (pid < 0)
        fatal("fork");
    if (pid > 0) {
        close(p[1]);
        char b;
        ssize_t n;
        while ((n = read(p[0], &b, 1)) < 0 && errno == EINTR)
            ;
        _exit(n == 1 ? 0 : 1);
    }
    close(p[0]);
    if (setsid() < 0)
        fatal("setsid");
    if (chdir("/") < 0)
        fatal("chdir /");
    int null = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (null < 0)
        fatal("/dev/null");
    dup2(null, STDIN_FILENO);
    dup2(null, STDOUT_FILENO);
    dup2(null, STDERR_FILENO);
    if (null > STDERR_FILENO)
        close(null);
    return p[1];
}

static void started(int ready_fd)
{
    log_info("start version=%s pid=%d socket=%s nodes=%u numa=%s cpus=%u limit_client=%u limit_total=%u",
             PAGERD_VERSION, (int)getpid(), pd.cfg.socket, pd.nnodes,
             pd.numa ? "yes" : pd.set.fake_nodes ? "fake" : "no", pd.ncpus, pd.set.limit_client,
             pd.set.limit_total);
    config_log(&pd.set);
    pages_detect();
    notify_service("READY=1");
    if (ready_fd >= 0) {
        ssize_t w = write(ready_fd, "", 1);
        (void)w; /* a parent that is gone does not care */
        close(ready_fd);
    }
}

int main(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "--charger") == 0)
        return charger_main();
    int r = config_flags(&pd.cfg, argc, argv);
    if (r != 0)
        return r > 0 ? 0 : 2;
    loop_block_signals();
    char err[512];
    if (!config_load(&pd.cfg, &pd.set, err, sizeof err)) {
        fprintf(stderr, "hakmem-pagerd: %s\n", err);
        return 2;
    }
    log_setlevel(pd.set.log_level);
    raise_fd_limit();
    pool_topology(pd.set.fake_nodes);
    pd.cfg.socket = session_listen(pd.cfg.socket);
    charge_init();
    privs_drop(pd.set.user);
    int ready_fd = pd.cfg.foreground ? -1 : detach();
    log_init(pd.cfg.foreground);
    pd.start_ms = now_ms();
    loop_init();
    started(ready_fd);

    loop_run();

    notify_service("STOPPING=1");
    session_unlisten(pd.cfg.socket);
    session_close_all();
    loop_fini();
    session_free_all();
    log_info("stop: %llu sessions served", (unsigned long long)pd.next_session);
    return 0;
}
