/* Socket activation: hakmem-pagerd started the way a service manager
 * starts it for hakmem-pagerd.socket (a listening socket as fd 3,
 * LISTEN_PID and LISTEN_FDS set). It serves on that socket, leaves the
 * socket file alone when it stops, serves again when restarted on the same
 * socket, ignores descriptors meant for another process, and refuses
 * anything that is not one listening SOCK_SEQPACKET socket. */
#include <sys/wait.h>

#include "pagerd_client.h"

static struct status st;

static int listening_socket(const char *path, int type, bool listening)
{
    int s = socket(AF_UNIX, type | SOCK_CLOEXEC, 0);
    assert_true(s >= 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    assert_int_equal(bind(s, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(chmod(path, 0666), 0);
    if (listening)
        assert_int_equal(listen(s, 16), 0);
    return s;
}

/* What the service manager does between fork and exec: the socket as fd 3
 * and the variables naming the child (or, with pid_is_other, some other
 * process). */
static pid_t spawn_activated(struct daemon *d, int fd, const char *nfds, bool pid_is_other)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid > 0)
        return pid;
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    int log = open(d->log, O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (log < 0 || dup2(log, 1) < 0 || dup2(log, 2) < 0)
        _exit(127);
    /* dup2 onto itself would keep close-on-exec */
    if (fd == 3 ? fcntl(3, F_SETFD, 0) < 0 : dup2(fd, 3) < 0)
        _exit(127);
    char pidtext[24];
    snprintf(pidtext, sizeof pidtext, "%d", pid_is_other ? getppid() : getpid());
    setenv("LISTEN_PID", pidtext, 1);
    setenv("LISTEN_FDS", nfds, 1);
    setenv("LISTEN_FDNAMES", "hakmem-pagerd.socket", 1);
    const char *argv[] = {pagerd_bin, "--foreground", "--socket", d->sock, "--config", "/dev/null",
                          "--tick-ms", "2", "--fake-nodes", "2", NULL};
    pagerd_exec((char *const *)argv);
    _exit(127);
}

/* Exit status once it has exited on its own (start refused). */
static int exit_status(pid_t pid)
{
    int status = 0;
    assert_true(WAIT_FOR(waitpid(pid, &status, WNOHANG) == pid, 5000));
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* SIGTERM; it must exit 0. */
static void stop(struct daemon *d)
{
    assert_int_equal(kill(d->pid, SIGTERM), 0);
    assert_int_equal(exit_status(d->pid), 0);
    daemon_track(d, false);
}

static void cleanup(struct daemon *d)
{
    char cmd[160];
    snprintf(cmd, sizeof cmd, "rm -rf %s", d->dir);
    assert_int_equal(system(cmd), 0);
}

static void test_serves_on_passed_socket(void **state)
{
    (void)state;
    struct daemon d;
    daemon_dir(&d);
    int ls = listening_socket(d.sock, SOCK_SEQPACKET, true);
    for (int start = 0; start < 2; start++) {
        d.pid = spawn_activated(&d, ls, "1", false);
        daemon_track(&d, true);
        get_status(&d, &st); /* queued until the daemon accepts */
        assert_int_equal(st.d.pid, (uint32_t)d.pid);
        struct tclient c;
        assert_true(tc_open(&c, &d, 8));
        assert_true(WAIT_FOR(tc_level(&c, 0) >= 1, 2000));
        assert_true(tc_pop(&c, 0) != 0);
        tc_close(&c);
        stop(&d);
        struct stat sb;
        assert_int_equal(stat(d.sock, &sb), 0); /* the manager's file stays */
        assert_true(S_ISSOCK(sb.st_mode));
        assert_int_equal(sb.st_mode & 0777, 0666);
    }
    assert_int_equal(log_count(&d, "passed by the service manager"), 2);
    assert_int_equal(log_count(&d, "removed stale socket"), 0);
    close(ls);
    cleanup(&d);
}

/* LISTEN_PID of another process: its descriptors are not ours, so the
 * daemon makes its own socket at --socket. */
static void test_ignores_other_pid(void **state)
{
    (void)state;
    struct daemon d;
    daemon_dir(&d);
    char other[128];
    snprintf(other, sizeof other, "%s/other.sock", d.dir);
    int ls = listening_socket(other, SOCK_SEQPACKET, true);
    d.pid = spawn_activated(&d, ls, "1", true);
    daemon_track(&d, true);
    int s = -1;
    assert_true(WAIT_FOR((s = connect_to(d.sock)) >= 0, 3000));
    close(s);
    get_status(&d, &st);
    assert_int_equal(log_count(&d, "passed by the service manager"), 0);
    stop(&d);
    assert_int_equal(access(d.sock, F_OK), -1); /* its own: removed */
    close(ls);
    cleanup(&d);
}

static void refused(int type, bool listening, const char *nfds, const char *why)
{
    struct daemon d;
    daemon_dir(&d);
    int ls = listening_socket(d.sock, type, listening);
    pid_t pid = spawn_activated(&d, ls, nfds, false);
    assert_int_equal(exit_status(pid), 1);
    const char *log = read_file_text(d.log);
    if (!strstr(log, why))
        fail_msg("expected '%s' in: %s", why, log);
    close(ls);
    cleanup(&d);
}

static void test_refuses_what_it_cannot_serve(void **state)
{
    (void)state;
    refused(SOCK_SEQPACKET, true, "2", "LISTEN_FDS=2: expected exactly one socket");
    refused(SOCK_STREAM, true, "1", "not a listening AF_UNIX SOCK_SEQPACKET socket");
    refused(SOCK_SEQPACKET, false, "1", "not a listening AF_UNIX SOCK_SEQPACKET socket");
}

int main(int argc, char **argv)
{
    pagerd_locate(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_serves_on_passed_socket, pagerd_teardown),
        cmocka_unit_test_teardown(test_ignores_other_pid, pagerd_teardown),
        cmocka_unit_test_teardown(test_refuses_what_it_cannot_serve, pagerd_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
