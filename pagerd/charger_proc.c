/* The charger process (hakmem-pagerd --charger): started by the daemon
 * and moved into a client's memory cgroup, it pre-faults the files the
 * daemon names, so that their pages are charged to that cgroup (charger.c
 * says why). It holds no privilege and no memory of its own beyond its
 * stack: its fd 3 is a socketpair to the daemon; each request brings the
 * file (SCM_RIGHTS), each is answered in order. It ends when the daemon
 * closes its end or dies. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "pagerd.h"

#define CHARGER_FD 3

/* One request: its size checked, exactly one descriptor with it. */
static int receive(struct charge_request *m, int *fd)
{
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(sizeof(int))];
    } cm;
    struct iovec iov = {.iov_base = m, .iov_len = sizeof *m};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cm.buf, .msg_controllen = sizeof cm.buf};
    ssize_t n;
    while ((n = recvmsg(CHARGER_FD, &msg, MSG_CMSG_CLOEXEC)) < 0 && errno == EINTR)
        ;
    if (n <= 0)
        return (int)n;
    *fd = -1;
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    if (c && c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS && c->cmsg_len == CMSG_LEN(sizeof(int)))
        memcpy(fd, CMSG_DATA(c), sizeof(int));
    if (n != (ssize_t)sizeof *m || *fd < 0 || (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC))) {
        if (*fd >= 0)
            close(*fd);
        errno = EPROTO;
        return -1;
    }
    return 1;
}

int charger_main(void)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
    privs_drop_all(); /* whatever we were started with: none is needed */
    for (;;) {
        struct charge_request m;
        int fd = -1, got = receive(&m, &fd);
        if (got <= 0)
            return got == 0 ? 0 : 1;
        struct charge_reply r = {.seq = m.seq, .res = 0};
        if (m.how == CHARGE_POPULATE_HUGE)
            r.res = pages_populate_huge(fd, m.off, m.len);
        else if (m.how != CHARGE_FALLOCATE)
            r.res = -EINVAL;
        else if (fallocate(fd, 0, (off_t)m.off, (off_t)m.len) < 0)
            r.res = -errno;
        close(fd);
        if (send(CHARGER_FD, &r, sizeof r, MSG_NOSIGNAL) != (ssize_t)sizeof r)
            return 1;
    }
}
