/* The secure mode (HAKMEM_SECURE=1), for when catching misuse matters more
 * than speed:
 *   - links between free blocks are encoded with a per-process secret and
 *     the slot's address, and checked whenever they are followed, so a write
 *     into a freed block (use after free, an overflow from the block before)
 *     is caught when that block would be handed out again;
 *   - every free marks the block (its second word, keyed with another
 *     secret) and checks the mark first, so a double free is caught on
 *     every free, not only at the top of the thread's cache;
 *   - there is no thread cache: each malloc and free goes to the slab under
 *     the heap's (uncontended) lock, so no block is ever reachable through an
 *     unchecked link. The default fast paths never run: their cache stays
 *     empty with capacity 0;
 *   - canaries: a slab block carries 16 bytes before what malloc returns
 *     (the size asked for and a keyed word) and at least 8 after it (a
 *     keyed word, then a keyed byte to the block's end), checked at free:
 *     an overflow or underflow of the block is reported there, with its
 *     address and size. Aligned requests above 16 bytes are large blocks
 *     (the header would misalign them);
 *   - a freed block's bytes are filled with FILL and checked when the block
 *     is handed out again: a write (or zeroing) after free is reported.
 * Guards between SuperSlabs (provider_embedded.c) and around large blocks,
 * and the quarantine of freed large blocks (large.c), are the secure
 * mode's too; guard pages around the metadata are there in both modes
 * (arena.c). The default mode's free mark (internal.h) is drawn here too,
 * from the same random bytes. */
#include <string.h>
#include <sys/auxv.h>

#include "internal.h"

#define HDR HAK_SECURE_HDR
#define TAIL_MIN 8      /* canary bytes after the block, at least */
#define FILL 0xdf       /* a freed block's bytes */

uintptr_t hak_link_key, hak_free_mark;
static uintptr_t mark_key, canary_key;
static uint8_t tail_fill; /* a block's slack past its 8 keyed bytes */

void hak_keys_init(void)
{
    /* 16 random bytes the kernel gives every process: no system call. They
     * need not be 8-byte aligned, so they are copied, not loaded. */
    const unsigned char *r = (const unsigned char *)getauxval(AT_RANDOM);
    uint64_t a, b;
    if (r) {
        memcpy(&a, r, sizeof a);
        memcpy(&b, r + sizeof a, sizeof b);
    } else {
        a = (uint64_t)(uintptr_t)&a * 0x9E3779B97F4A7C15ull;
        b = a * 0xC2B2AE3D27D4EB4Full;
    }
    hak_free_mark = (uintptr_t)((a ^ b) * 0xD6E8FEB86659FD93ull) | (uintptr_t)1 << 63;
    if (!hak_opt.secure)
        return;
    hak_link_key = (uintptr_t)(a | 1);
    mark_key = (uintptr_t)(b | 1);
    canary_key = (uintptr_t)((a * 0x9E3779B97F4A7C15ull) ^ (b >> 7)) | 1;
    tail_fill = (uint8_t)(canary_key >> 56) | 1;
    /* The daemon's SuperSlabs lie side by side in its file: no room for
     * the guards between them (provider_embedded.c). */
    if (hak_opt.pagerd == HAK_PAGERD_ON)
        hak_warn("HAKMEM_PAGERD=on ignored: the secure mode provisions in-process, with guards");
    hak_opt.pagerd = HAK_PAGERD_OFF;
}

/* n bytes at p all equal to c? Whole words, no early exit: the loop is
 * vectorised (a freed 64 KiB block is checked in a microsecond or so). */
static bool bytes_are(const void *p, size_t n, uint8_t c)
{
    const unsigned char *b = p;
    uint64_t acc = 0, pat = 0x0101010101010101ull * c;
    while (n && ((uintptr_t)b & 7)) {
        acc |= (uint64_t)(*b++ ^ c);
        n--;
    }
    const uint64_t *w = (const uint64_t *)b;
    for (size_t i = 0; i < n / 8; i++)
        acc |= w[i] ^ pat;
    for (size_t i = n & ~(size_t)7; i < n; i++)
        acc |= (uint64_t)(b[i] ^ c);
    return acc == 0;
}

/* "what" and a block's size, for a report: "what (block of N bytes)". */
static void fatal_sized(const char *api, const void *p, const char *what, const char *of, size_t size)
{
    char why[192], num[24], *e = why + sizeof why - 1;
    hak_fmt_u64(num, size);
    hak_append(hak_append(hak_append(hak_append(why, e, what), e, of), e, num), e, " bytes)");
    hak_fatal_pointer(api, p, why);
}

static uintptr_t head_canary(const void *user, size_t size)
{
    return canary_key ^ (uintptr_t)user ^ (size * 0xC2B2AE3D27D4EB4Full);
}

/* The 8 bytes right after the block: keyed by its address. */
static uint64_t tail_canary(const void *user)
{
    return canary_key * 0xff51afd7ed558ccdull ^ (uintptr_t)user;
}

static void *wrap(void *b, size_t size, size_t block)
{
    uintptr_t *h = b;
    char *user = (char *)b + HDR;
    h[0] = size;
    h[1] = head_canary(user, size);
    uint64_t t = tail_canary(user);
    memcpy(user + size, &t, sizeof t);
    memset(user + size + sizeof t, tail_fill, block - HDR - size - sizeof t);
    return user;
}

/* The canaries of an allocated block b of a slab of class block size;
 * aborts with the size asked for if one is damaged. */
static void check_canaries(const void *b, size_t block, const char *api)
{
    const uintptr_t *h = b;
    const char *user = (const char *)b + HDR;
    size_t size = h[0];
    if (size > block - HDR - TAIL_MIN || h[1] != head_canary(user, size))
        hak_fatal_pointer(api, user, "heap underflow: the 16 bytes before the block were overwritten");
    uint64_t t;
    memcpy(&t, user + size, sizeof t);
    if (t != tail_canary(user) || !bytes_are(user + size + sizeof t, block - HDR - size - sizeof t, tail_fill))
        fatal_sized(api, user, "heap overflow: bytes past the block's end were overwritten", " (block of ", size);
}

size_t hak_secure_usable(const void *b, unsigned cls, const char *api)
{
    check_canaries(b, hak_classes[cls].size, api);
    return ((const uintptr_t *)b)[0];
}

static bool marked(const void *p)
{
    return ((const uintptr_t *)p)[1] == (mark_key ^ (uintptr_t)p);
}

/* Block b of class cls is being freed: a double free, damaged canaries
 * are reported; then its bytes are filled and it is marked free. */
void hak_secure_retire(void *b, unsigned cls, const char *api)
{
    if (marked(b))
        hak_fatal_pointer(api, (char *)b + HDR, "double free");
    size_t block = hak_classes[cls].size;
    check_canaries(b, block, api);
    memset((char *)b + HDR, FILL, block - HDR);
    ((uintptr_t *)b)[1] = mark_key ^ (uintptr_t)b;
}

/* A freed block coming back: its bytes as free() left them. */
static void check_fill(const void *b, size_t block)
{
    const unsigned char *c = (const unsigned char *)b + HDR;
    if (!bytes_are(c, block - HDR, FILL))
        fatal_sized("malloc", c, "write after free: a freed block was written to", " (block of up to ",
                    block - HDR - TAIL_MIN);
}

void *hak_secure_malloc(size_t size)
{
    if (size > HAK_MID_MAX - HDR - TAIL_MIN)
        return hak_large_alloc(size, 16, false);
    unsigned cls = hak_size_class(size + HDR + TAIL_MIN);
    struct hak_heap *h = hak_heap_thread_start();
    if (!h) /* a thread past its exit: the shared heap, without a cache */
        h = hak_heap_orphan();
    hak_decay_maybe(h);
    void *b = NULL;
    bool fresh = false;
    hak_lock(&h->lock);
    if (hak_remote_waiting(h))
        hak_remote_drain(h);
    for (;;) {
        struct hak_slab *s = h->partial[cls];
        if (!s) {
            if (!hak_ss_new_slab(h, cls))
                break;
            continue;
        }
        uint32_t carved = s->carved;
        unsigned n = hak_slab_take(s, 1, 1, &b);
        fresh = s->carved != carved; /* carved now, never handed out */
        if (!s->free && s->carved == hak_classes[cls].capacity) {
            hak_slab_list_remove(h, s);
            hak_slab_list_push(h, s, HAK_LIST_FULL);
        }
        if (n)
            break;
    }
    hak_ss_settle(h);
    hak_unlock(&h->lock);
    if (!b) {
        errno = ENOMEM;
        return NULL;
    }
    size_t block = hak_classes[cls].size;
    if (!fresh)
        check_fill(b, block);
    return wrap(b, size, block); /* over the link and the mark */
}

void hak_secure_free_local(void *b, unsigned cls)
{
    struct hak_heap *h = hak_tls.heap;
    hak_secure_retire(b, cls, "free");
    hak_lock(&h->lock);
    /* Its SuperSlab may have been given away since free() looked. */
    hak_remote_put_back(h, b);
    hak_ss_settle(h);
    hak_unlock(&h->lock);
}
