/* Shared by the fuzz targets: an input reader that yields zeros once the
 * input is used up (so every prefix of an input is an input), and
 * FZ_ASSERT for the targets' own invariants. FZ_ASSERT reports on the
 * stderr the process started with: the runs silence the target's stderr
 * (-close_fd_mask=2), since the daemon logs every client it drops. */
#ifndef FUZZ_H
#define FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct fz_in {
    const uint8_t *p;
    size_t n;
};

static inline uint8_t fz_u8(struct fz_in *in)
{
    if (in->n == 0)
        return 0;
    in->n--;
    return *in->p++;
}

static inline uint16_t fz_u16(struct fz_in *in)
{
    uint16_t lo = fz_u8(in);
    return (uint16_t)(lo | fz_u8(in) << 8);
}

static inline uint32_t fz_u32(struct fz_in *in)
{
    uint32_t lo = fz_u16(in);
    return lo | (uint32_t)fz_u16(in) << 16;
}

static inline uint64_t fz_u64(struct fz_in *in)
{
    uint64_t lo = fz_u32(in);
    return lo | (uint64_t)fz_u32(in) << 32;
}

/* Up to want bytes into dst; returns how many there were. */
static inline size_t fz_bytes(struct fz_in *in, void *dst, size_t want)
{
    size_t n = want < in->n ? want : in->n;
    memcpy(dst, in->p, n);
    in->p += n;
    in->n -= n;
    return n;
}

/* Taken before libFuzzer replaces fd 2 with /dev/null. */
static int fz_errfd = 2;

__attribute__((constructor)) static void fz_keep_stderr(void)
{
    int fd = dup(2);
    if (fd >= 0)
        fz_errfd = fd;
}

__attribute__((noreturn)) static inline void fz_fail(const char *what, const char *file, int line)
{
    dprintf(fz_errfd, "%s:%d: invariant broken: %s\n", file, line, what);
    abort();
}

#define FZ_ASSERT(e) ((e) ? (void)0 : fz_fail(#e, __FILE__, __LINE__))

#endif /* FUZZ_H */
