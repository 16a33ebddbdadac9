/* Fuzz target: the client's checks of what the daemon sends when it
 * connects (client/provider_pagerd.c): the reply to its hello with the
 * descriptors attached to it (hak_pagerd_handshake, on a socketpair whose
 * other end plays the daemon), the welcome's layout against the memfd it
 * came with (hak_pagerd_layout_ok: size, seals), the control area mapped
 * from that file (hak_pagerd_ctrl_ok, hak_pagerd_node_of), then every
 * offset the fill rings yield (hak_fill_ring_pop, hak_pagerd_ss_index), as
 * try_connect and hak_pagerd_acquire use them. Whatever the daemon sent,
 * what the client accepts must be what an honest daemon could have sent,
 * and no descriptor may be left open.
 *
 * Input: flags, the capacity asked (u32), the reply's length (u16) and
 * bytes, the file's size (u64), then changes to the control area, each a
 * kind byte, a position (u32) and a value. Flags: bits 0-2 descriptors
 * attached (0..7: the memfd, then a pipe's; 6: a pipe's alone), 3 no reply at
 * all, 4 the file not sealed, 5 the file sized as the welcome says, 6 the
 * control area left zero, 7 the rings filled by the daemon's own push. */
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/socket.h>

#include "fuzz.h"
#include "internal.h"

#define CTRL_MAX (8u << 20) /* the largest control area (idle words of 2^20 SuperSlabs) fits */

static unsigned char ctrl_buf[CTRL_MAX] __attribute__((aligned(64)));

static int lowest_free_fd(void)
{
    int fd = dup(0);
    FZ_ASSERT(fd >= 0);
    close(fd);
    return fd;
}

/* What an honest daemon writes: header, cpu map, full rings. */
static void honest_ctrl(const struct hak_shm_layout *l, bool fill)
{
    struct hak_shm_ctrl *c = (struct hak_shm_ctrl *)ctrl_buf;
    c->magic = HAK_SHM_MAGIC;
    c->version = HAK_SHM_VERSION;
    c->layout = *l;
    c->ncpus = 4;
    for (unsigned cpu = 0; cpu < 4; cpu++)
        c->cpu_node[cpu] = (uint8_t)(cpu % l->nnodes);
    for (uint32_t n = 0; fill && n < l->nnodes; n++) {
        struct hak_shm_fill_ring *r = (void *)(ctrl_buf + hak_shm_fill_ring_offset(n));
        for (uint32_t i = 0; i < 3 && i < l->capacity; i++)
            hak_fill_ring_push(r, l->ss_offset + ((uint64_t)i << HAK_SHM_SS_SHIFT));
    }
}

static void scribble(struct fz_in *in, size_t len)
{
    while (in->n && len) {
        uint8_t kind = fz_u8(in);
        size_t pos = fz_u32(in) % len;
        uint64_t v = fz_u64(in);
        if (kind % 3 == 0) {
            ctrl_buf[pos] = (uint8_t)v;
        } else if (kind % 3 == 1) {
            uint32_t w = (uint32_t)v;
            memcpy(ctrl_buf + (pos & ~(size_t)3), &w, sizeof w);
        } else if ((pos & ~(size_t)7) + 8 <= len) {
            memcpy(ctrl_buf + (pos & ~(size_t)7), &v, sizeof v);
        }
    }
}

/* The daemon's end: the reply with nfds descriptors, then no more. */
static void daemon_reply(int sock, const void *msg, size_t len, int memfd, unsigned nfds)
{
    int fds[8], p[2];
    FZ_ASSERT(pipe2(p, O_CLOEXEC) == 0);
    for (unsigned i = 0; i < nfds; i++)
        fds[i] = i == 0 && nfds != 6 ? memfd : p[0];
    if (nfds == 6)
        nfds = 1;
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(8 * sizeof(int))];
    } cm;
    memset(&cm, 0, sizeof cm);
    struct iovec iov = {(void *)msg, len};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
    if (nfds) {
        mh.msg_control = cm.buf;
        mh.msg_controllen = CMSG_SPACE(nfds * sizeof(int));
        struct cmsghdr *ch = CMSG_FIRSTHDR(&mh);
        ch->cmsg_level = SOL_SOCKET;
        ch->cmsg_type = SCM_RIGHTS;
        ch->cmsg_len = CMSG_LEN(nfds * sizeof(int));
        memcpy(CMSG_DATA(ch), fds, nfds * sizeof(int));
    }
    FZ_ASSERT(sendmsg(sock, &mh, MSG_NOSIGNAL) == (ssize_t)len);
    close(p[0]);
    close(p[1]);
}

/* The file and its control area passed every check: use them as the
 * client does, and hold what it reads to the layout. */
static void use_session(const struct hak_shm_layout *l, int memfd)
{
    struct hak_shm_ctrl *ctrl = hak_os_map_file(NULL, l->ctrl_size, memfd, 0, true);
    FZ_ASSERT(ctrl != NULL);
    uint32_t ncpus = 0;
    if (hak_pagerd_ctrl_ok(ctrl, l, &ncpus)) {
        FZ_ASSERT(ncpus >= 1 && ncpus <= HAK_SHM_MAX_CPUS);
        for (int cpu = -1; cpu <= (int)ncpus && cpu < (int)HAK_SHM_MAX_CPUS; cpu++)
            FZ_ASSERT(hak_pagerd_node_of(ctrl, ncpus, l->nnodes, cpu) < l->nnodes);
        for (uint32_t n = 0; n < l->nnodes; n++) {
            struct hak_shm_fill_ring *r = (void *)((char *)ctrl + hak_shm_fill_ring_offset(n));
            uint64_t off;
            uint32_t idx, pops = 0;
            int rc;
            while ((rc = hak_fill_ring_pop(r, &off)) == 1) {
                /* One thread pops: never more than the ring holds. */
                FZ_ASSERT(++pops <= HAK_SHM_FILL_SLOTS);
                if (hak_shm_ss_index(l, off, &idx) == HAK_SHM_OFF_OK)
                    FZ_ASSERT(idx < l->capacity && off == l->ss_offset + ((uint64_t)idx << HAK_SHM_SS_SHIFT));
            }
            FZ_ASSERT(rc == 0 || rc == -1);
        }
    }
    munmap(ctrl, l->ctrl_size);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fz_in in = {data, size};
    int mark = lowest_free_fd();
    uint8_t flags = fz_u8(&in);
    uint32_t asked = 1 + fz_u32(&in) % HAK_SHM_MAX_CAPACITY;
    unsigned char msg[512];
    size_t len = fz_bytes(&in, msg, fz_u16(&in) % sizeof msg);
    struct hak_msg_welcome sent;
    memset(&sent, 0, sizeof sent);
    memcpy(&sent, msg, len < sizeof sent ? len : sizeof sent);
    uint64_t fsize = fz_u64(&in) % ((uint64_t)HAK_SHM_MAX_CAPACITY << HAK_SHM_SS_SHIFT << 1);

    /* The daemon's file, as the welcome describes it or not. */
    int memfd = memfd_create("fuzz", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    FZ_ASSERT(memfd >= 0);
    struct hak_shm_layout want;
    bool sane = hak_shm_layout_compute(sent.layout.nnodes, sent.layout.capacity, &want);
    if (flags & 0x20 && sane)
        fsize = want.file_size;
    FZ_ASSERT(ftruncate(memfd, (off_t)fsize) == 0);
    size_t clen = sane ? want.ctrl_size : 0;
    if (clen > fsize)
        clen = (size_t)fsize;
    memset(ctrl_buf, 0, clen);
    if (!(flags & 0x40) && sane)
        honest_ctrl(&sent.layout, flags & 0x80);
    scribble(&in, clen);
    FZ_ASSERT(pwrite(memfd, ctrl_buf, clen, 0) == (ssize_t)clen);
    if (!(flags & 0x10))
        FZ_ASSERT(fcntl(memfd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) == 0);

    int sv[2];
    FZ_ASSERT(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) == 0);
    unsigned nfds = flags & 7;
    if (!(flags & 0x08))
        daemon_reply(sv[1], msg, len, memfd, nfds);
    shutdown(sv[1], SHUT_WR);

    struct hak_msg_welcome w;
    int fd = hak_pagerd_handshake(sv[0], asked, &w);

    /* The hello: well-formed, asking for what it was told to. */
    struct hak_msg_hello hello;
    FZ_ASSERT(recv(sv[1], &hello, sizeof hello, MSG_DONTWAIT) == (ssize_t)sizeof hello);
    FZ_ASSERT(hak_msg_check(&hello, sizeof hello) == HAK_MSG_HELLO && hello.capacity == asked);

    if (fd >= 0) {
        /* A welcome, whole, with exactly one descriptor. */
        FZ_ASSERT(!(flags & 0x08) && (nfds == 1 || nfds == 6) && len == sizeof sent);
        FZ_ASSERT(hak_msg_check(msg, len) == HAK_MSG_WELCOME && memcmp(&w, &sent, sizeof w) == 0);
        if (hak_pagerd_layout_ok(&w, asked, fd)) {
            FZ_ASSERT(nfds == 1);
            const struct hak_shm_layout *l = &w.layout;
            FZ_ASSERT(sane && hak_shm_layout_equal(l, &want) && l->capacity <= asked);
            FZ_ASSERT(fsize >= l->file_size && !(flags & 0x10));
            use_session(l, fd);
        }
        close(fd);
    }
    close(sv[0]);
    close(sv[1]);
    close(memfd);
    FZ_ASSERT(lowest_free_fd() == mark);
    return 0;
}
