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
 *     empty with capacity 0.
 * Guard pages around the metadata are there in both modes (arena.c). */
#include <string.h>
#include <sys/auxv.h>

#include "internal.h"

uintptr_t hak_link_key;
static uintptr_t mark_key;

void hak_secure_init(void)
{
    if (!hak_opt.secure)
        return;
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
    hak_link_key = (uintptr_t)(a | 1);
    mark_key = (uintptr_t)(b | 1);
}

static bool marked(const void *p)
{
    return ((const uintptr_t *)p)[1] == (mark_key ^ (uintptr_t)p);
}

void hak_secure_mark_free(void *p, const char *api)
{
    if (marked(p))
        hak_fatal_pointer(api, p, "double free");
    ((uintptr_t *)p)[1] = mark_key ^ (uintptr_t)p;
}

void *hak_secure_malloc(size_t size)
{
    unsigned cls = hak_size_class(size);
    struct hak_heap *h = hak_heap_thread_start();
    if (!h) /* a thread past its exit: the shared heap, without a cache */
        h = hak_heap_orphan();
    hak_decay_maybe(h);
    void *b = NULL;
    hak_lock(&h->lock);
    if (atomic_load_explicit(&h->notify_head, HAK_RELAXED))
        hak_remote_drain(h);
    for (;;) {
        struct hak_slab *s = h->partial[cls];
        if (!s) {
            if (!hak_ss_new_slab(h, cls))
                break;
            continue;
        }
        unsigned n = hak_slab_take(s, 1, 1, &b);
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
    ((uintptr_t *)b)[0] = 0; /* the encoded link would reveal the key */
    ((uintptr_t *)b)[1] = 0; /* no longer marked free */
    return b;
}

void hak_secure_free_local(void *p, unsigned cls)
{
    (void)cls;
    struct hak_heap *h = hak_tls.heap;
    hak_secure_mark_free(p, "free");
    hak_lock(&h->lock);
    /* Its SuperSlab may have been given away since free() looked. */
    hak_remote_put_back(h, p);
    hak_ss_settle(h);
    hak_unlock(&h->lock);
}
