/* How the profiler gets its entry points without costing anything when it
 * is off: at start-up, with HAKMEM_PROF=1, the first instruction of
 * hak_malloc and hak_calloc (malloc and calloc are their aliases) is
 * rewritten into a jump to hak_malloc_sampled and hak_calloc_sampled.
 *
 * Why not the alternatives: a flag tested on every call is an instruction
 * and a load on the fast path for everyone; a GNU ifunc picks at load time,
 * but the C library binds malloc before a preloaded library is relocated,
 * and glibc then prints "Relink ... for IFUNC symbol" for every program.
 *
 * Start-up runs on the first allocation, before the program has threads
 * that could be running the bytes rewritten. Where the system forbids
 * writable code (a W^X policy such as systemd's MemoryDenyWriteExecute),
 * mprotect fails and the profiler stays off with a warning. */
#include <string.h>
#include <sys/mman.h>

#include "internal.h"
#include "hakmem.h"

#if defined(__x86_64__)
#define JUMP_LEN 5

static bool encode_jump(unsigned char *at, const void *to, unsigned char out[JUMP_LEN])
{
    int64_t rel = (int64_t)((uintptr_t)to - ((uintptr_t)at + JUMP_LEN));
    if (rel != (int32_t)rel)
        return false;
    int32_t r32 = (int32_t)rel;
    out[0] = 0xE9; /* jmp rel32 */
    memcpy(out + 1, &r32, sizeof r32);
    return true;
}

/* An endbr64 that begins a function stays: indirect calls land on it. */
__attribute__((no_sanitize("address", "thread"))) static unsigned char *entry_of(void *fn)
{
    const volatile unsigned char *p = fn;
    bool endbr64 = p[0] == 0xF3 && p[1] == 0x0F && p[2] == 0x1E && p[3] == 0xFA;
    return (unsigned char *)fn + (endbr64 ? 4 : 0);
}
#elif defined(__aarch64__)
#define JUMP_LEN 4

static bool encode_jump(unsigned char *at, const void *to, unsigned char out[JUMP_LEN])
{
    int64_t off = (int64_t)((uintptr_t)to - (uintptr_t)at);
    if (off % 4 || off < -(1ll << 27) || off >= (1ll << 27))
        return false;
    uint32_t insn = 0x14000000u | ((uint32_t)(off >> 2) & 0x03FFFFFFu); /* b imm26 */
    memcpy(out, &insn, sizeof insn);
    return true;
}

/* A bti c that begins a function stays: indirect calls land on it. */
__attribute__((no_sanitize("address", "thread"))) static unsigned char *entry_of(void *fn)
{
    return *(const volatile uint32_t *)fn == 0xD503245Fu ? (unsigned char *)fn + 4 : fn;
}
#endif

#ifdef JUMP_LEN
/* Code bytes are not the sanitizers' to watch (ThreadSanitizer keeps no
 * shadow for them): plain volatile stores, not memcpy, which it wraps. */
__attribute__((no_sanitize("address", "thread"))) static void write_code(unsigned char *at, const unsigned char *code)
{
    for (int i = 0; i < JUMP_LEN; i++)
        ((volatile unsigned char *)at)[i] = code[i];
}

static bool patch(void *fn, const void *to, const char **why)
{
    unsigned char *at = entry_of(fn), code[JUMP_LEN];
    if (!encode_jump(at, to, code)) {
        *why = "the sampling entry points are out of a jump's reach";
        return false;
    }
    size_t page = hak_os_page_size();
    uintptr_t first = (uintptr_t)at & ~(page - 1);
    size_t len = (((uintptr_t)at + JUMP_LEN - 1) & ~(page - 1)) - first + page;
    if (mprotect((void *)first, len, PROT_READ | PROT_WRITE | PROT_EXEC) != 0) {
        *why = "the system does not allow code to be made writable (a W^X policy?)";
        return false;
    }
    write_code(at, code);
    __builtin___clear_cache((char *)at, (char *)at + JUMP_LEN);
    mprotect((void *)first, len, PROT_READ | PROT_EXEC);
    return true;
}

bool hak_prof_patch_entries(const char **why)
{
    /* calloc first: if malloc then failed, calloc's countdown would find
     * the profiler off and stop counting. */
    return patch((void *)hak_calloc_code, (const void *)hak_calloc_sampled, why) &&
           patch((void *)hak_malloc_code, (const void *)hak_malloc_sampled, why);
}
#else
bool hak_prof_patch_entries(const char **why)
{
    *why = "not built for this processor";
    return false;
}
#endif
