/* The OS layer: every call that maps, protects or releases memory, and
 * every socket call to the daemon, goes through here, so it can be counted
 * (tests prove the steady state makes none) and made to fail on purpose
 * (tests prove a failure at any point leaves the process working). */
#include <stdatomic.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

static _Atomic uint64_t os_calls[HAK_OS_NCALLS];
static struct {
    _Atomic uint32_t skip, fail;
} inject[HAK_OS_NCALLS];

void hak_os_inject(enum hak_os_call call, uint32_t skip, uint32_t fail)
{
    atomic_store(&inject[call].skip, skip);
    atomic_store(&inject[call].fail, fail);
}

/* Count the call; true if it is to fail (errno set). */
static bool count_or_fail(enum hak_os_call c)
{
    atomic_fetch_add_explicit(&os_calls[c], 1, HAK_RELAXED);
    if (likely(atomic_load_explicit(&inject[c].fail, HAK_RELAXED) == 0))
        return false;
    uint32_t skip = atomic_load(&inject[c].skip);
    while (skip)
        if (atomic_compare_exchange_weak(&inject[c].skip, &skip, skip - 1))
            return false;
    uint32_t fail = atomic_load(&inject[c].fail);
    while (fail)
        if (atomic_compare_exchange_weak(&inject[c].fail, &fail, fail - 1)) {
            errno = c == HAK_OS_MMAP ? ENOMEM : EIO;
            return true;
        }
    return false;
}

static void count(enum hak_os_call c)
{
    atomic_fetch_add_explicit(&os_calls[c], 1, HAK_RELAXED);
}

uint64_t hak_os_calls(enum hak_os_call call)
{
    return atomic_load_explicit(&os_calls[call], HAK_RELAXED);
}

size_t hak_os_page_size(void)
{
    static size_t page;
    if (!page) {
        long v = sysconf(_SC_PAGESIZE);
        page = v > 0 ? (size_t)v : 4096;
    }
    return page;
}

/* Reserve size bytes of address space aligned to align, inaccessible. */
void *hak_os_reserve(size_t size, size_t align)
{
    int saved = errno;
    size_t len = size + align;
    char *p = count_or_fail(HAK_OS_MMAP) ? MAP_FAILED
                                         : mmap(NULL, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) {
        errno = saved;
        return NULL;
    }
    uintptr_t start = ((uintptr_t)p + align - 1) & ~(uintptr_t)(align - 1);
    size_t head = start - (uintptr_t)p, tail = len - head - size;
    if (head) {
        count(HAK_OS_MUNMAP);
        munmap(p, head);
    }
    if (tail) {
        count(HAK_OS_MUNMAP);
        munmap((char *)start + size, tail);
    }
    errno = saved;
    return (void *)start;
}

int hak_os_commit(void *p, size_t size)
{
    int saved = errno;
    int rc = count_or_fail(HAK_OS_MPROTECT) ? -1 : mprotect(p, size, PROT_READ | PROT_WRITE);
    errno = saved;
    return rc;
}

/* Fault a committed range in with one call; best effort (before Linux
 * 5.14 the pages simply fault in as they are touched). */
void hak_os_populate(void *p, size_t size)
{
    int saved = errno;
    if (!count_or_fail(HAK_OS_MADVISE))
        madvise(p, size, MADV_POPULATE_WRITE);
    errno = saved;
}

/* Best effort: without THP in the kernel it is simply not there. */
void hak_os_huge(void *p, size_t size)
{
    int saved = errno;
    if (!count_or_fail(HAK_OS_MADVISE))
        madvise(p, size, MADV_HUGEPAGE);
    errno = saved;
}

int hak_os_decommit(void *p, size_t size)
{
    int saved = errno;
    int rc = count_or_fail(HAK_OS_MADVISE) ? -1 : madvise(p, size, MADV_DONTNEED);
    errno = saved;
    return rc;
}

/* Pages of a file mapping: punch them out of a shared file (MADV_REMOVE),
 * or drop the private copies of a private one. */
int hak_os_decommit_file(void *p, size_t size, bool shared)
{
    int saved = errno;
    int rc = count_or_fail(HAK_OS_MADVISE) ? -1 : madvise(p, size, shared ? MADV_REMOVE : MADV_DONTNEED);
    errno = saved;
    return rc;
}

void *hak_os_map(size_t size)
{
    int saved = errno;
    void *p = count_or_fail(HAK_OS_MMAP) ? MAP_FAILED
                                         : mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    errno = saved;
    return p == MAP_FAILED ? NULL : p;
}

void *hak_os_map_noreserve(size_t size)
{
    int saved = errno;
    void *p = count_or_fail(HAK_OS_MMAP)
                  ? MAP_FAILED
                  : mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    errno = saved;
    return p == MAP_FAILED ? NULL : p;
}

/* size bytes of read-write memory between two inaccessible guard pages, so
 * that a stray write running off either end of metadata faults instead of
 * corrupting its neighbour. Reserved as it is touched (MAP_NORESERVE). */
void *hak_os_map_guarded(size_t size)
{
    size_t page = hak_os_page_size();
    return hak_os_map_fenced(size, page, page, true);
}

/* size bytes (page multiple) aligned to align (a page or more) with an
 * inaccessible range of guard bytes (a page multiple) on either side: a
 * block running off either end, or written at up to guard bytes beyond,
 * faults there. Released with hak_os_unmap(block - guard, size + 2 guard). */
void *hak_os_map_fenced(size_t size, size_t align, size_t guard, bool noreserve)
{
    size_t len = size + 2 * guard + (align > guard ? align : 0);
    int saved = errno;
    /* Inaccessible first, the block then made writable: the guards are
     * never charged to the commit limit. */
    int flags = MAP_PRIVATE | MAP_ANONYMOUS | (noreserve ? MAP_NORESERVE : 0);
    char *p = count_or_fail(HAK_OS_MMAP) ? MAP_FAILED : mmap(NULL, len, PROT_NONE, flags, -1, 0);
    if (p == MAP_FAILED) {
        errno = saved;
        return NULL;
    }
    uintptr_t block = ((uintptr_t)p + guard + align - 1) & ~(uintptr_t)(align - 1);
    char *lo = (char *)block - guard, *hi = (char *)block + size + guard;
    if (lo > p)
        munmap(p, (size_t)(lo - p));
    if (p + len > hi)
        munmap(hi, (size_t)(p + len - hi));
    count(HAK_OS_MPROTECT);
    if (mprotect((void *)block, size, PROT_READ | PROT_WRITE) != 0) {
        munmap(lo, size + 2 * guard);
        errno = saved;
        return NULL;
    }
    errno = saved;
    return (void *)block;
}

/* Pages given back, the range kept but made inaccessible: any access
 * faults. */
int hak_os_seal(void *p, size_t size)
{
    int saved = errno;
    count(HAK_OS_MADVISE);
    madvise(p, size, MADV_DONTNEED);
    int rc = count_or_fail(HAK_OS_MPROTECT) ? -1 : mprotect(p, size, PROT_NONE);
    errno = saved;
    return rc;
}

/* Bytes of [p, p + len) in memory (mincore): for a file mapping, the
 * file's pages, so those the daemon pre-faulted for us count too. Not a
 * counted call: it maps and releases nothing. */
size_t hak_os_resident(const void *p, size_t len)
{
    size_t page = hak_os_page_size();
    uintptr_t at = (uintptr_t)p & ~(page - 1), end = ((uintptr_t)p + len + page - 1) & ~(page - 1);
    unsigned char vec[4096];
    size_t pages = 0;
    int saved = errno;
    while (at < end) {
        size_t n = (end - at) / page < sizeof vec ? (end - at) / page : sizeof vec;
        if (mincore((void *)at, n * page, vec) == 0)
            for (size_t i = 0; i < n; i++)
                pages += vec[i] & 1;
        at += n * page;
    }
    errno = saved;
    return pages * page;
}

/* Move or resize a mapping without copying (mremap); NULL on failure, the
 * old mapping then intact. */
void *hak_os_remap(void *p, size_t old, size_t len)
{
    int saved = errno;
    void *q = count_or_fail(HAK_OS_MMAP) ? MAP_FAILED : mremap(p, old, len, MREMAP_MAYMOVE);
    errno = saved;
    return q == MAP_FAILED ? NULL : q;
}

int hak_os_unmap(void *p, size_t size)
{
    int saved = errno;
    count(HAK_OS_MUNMAP);
    int rc = munmap(p, size);
    errno = saved;
    return rc;
}

/* A file mapping: anywhere (at NULL) or replacing [at, at + len). */
void *hak_os_map_file(void *at, size_t len, int fd, uint64_t off, bool shared)
{
    int saved = errno;
    /* MAP_NORESERVE: shared, a hugetlbfs file would reserve pool pages for
     * the whole range; the daemon allocates only what it hands out. */
    int flags = (shared ? MAP_SHARED | MAP_NORESERVE : MAP_PRIVATE) | (at ? MAP_FIXED : 0);
    void *p = count_or_fail(HAK_OS_MMAP) ? MAP_FAILED : mmap(at, len, PROT_READ | PROT_WRITE, flags, fd, (off_t)off);
    errno = saved;
    return p == MAP_FAILED ? NULL : p;
}

/* A SOCK_SEQPACKET connection to a Unix socket, with send and receive
 * timeouts so that a stuck daemon never holds the caller. */
int hak_os_connect_unix(const char *path, int timeout_ms)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    size_t len = strlen(path);
    if (len >= sizeof sa.sun_path || count_or_fail(HAK_OS_SOCKET))
        return -1;
    memcpy(sa.sun_path, path, len + 1);
    int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

long hak_os_send(int fd, const void *buf, size_t len)
{
    return count_or_fail(HAK_OS_SOCKET) ? -1 : send(fd, buf, len, MSG_NOSIGNAL);
}

long hak_os_recvmsg(int fd, struct msghdr *mh, int flags)
{
    return count_or_fail(HAK_OS_SOCKET) ? -1 : recvmsg(fd, mh, flags);
}

uint32_t hak_now_ms(void)
{
    return (uint32_t)(hak_now_ns() / 1000000);
}

/* A third of hak_now_ns's cost here (no counter read), for the checks a
 * refill makes, which count in milliseconds. */
uint64_t hak_coarse_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t hak_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}
