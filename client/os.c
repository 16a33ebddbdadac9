/* The OS layer: every call that maps, protects or releases memory goes
 * through here, so it can be counted (tests prove the steady state makes
 * none) and later made to fail on purpose. */
#include <stdatomic.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

static _Atomic uint64_t os_calls[HAK_OS_NCALLS];

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
    count(HAK_OS_MMAP);
    char *p = mmap(NULL, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
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
    count(HAK_OS_MPROTECT);
    int rc = mprotect(p, size, PROT_READ | PROT_WRITE);
    errno = saved;
    return rc;
}

int hak_os_decommit(void *p, size_t size)
{
    int saved = errno;
    count(HAK_OS_MADVISE);
    int rc = madvise(p, size, MADV_DONTNEED);
    errno = saved;
    return rc;
}

/* Pages of a file mapping: punch them out of a shared file (MADV_REMOVE),
 * or drop the private copies of a private one. */
int hak_os_decommit_file(void *p, size_t size, bool shared)
{
    int saved = errno;
    count(HAK_OS_MADVISE);
    int rc = madvise(p, size, shared ? MADV_REMOVE : MADV_DONTNEED);
    errno = saved;
    return rc;
}

void *hak_os_map(size_t size)
{
    int saved = errno;
    count(HAK_OS_MMAP);
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    errno = saved;
    return p == MAP_FAILED ? NULL : p;
}

void *hak_os_map_noreserve(size_t size)
{
    int saved = errno;
    count(HAK_OS_MMAP);
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    errno = saved;
    return p == MAP_FAILED ? NULL : p;
}

int hak_os_unmap(void *p, size_t size)
{
    int saved = errno;
    count(HAK_OS_MUNMAP);
    int rc = munmap(p, size);
    errno = saved;
    return rc;
}

uint64_t hak_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}
