/* malloc_trim: give back everything idle, now. The calling thread flushes
 * its caches, adopts abandoned SuperSlabs (collecting what other threads
 * freed into them) and returns every empty SuperSlab; then the providers and
 * the large-block cache release their idle memory without waiting for the
 * decay. Heaps parked by exited threads are emptied first. Other threads'
 * caches are theirs and stay as they are. */
#include "internal.h"
#include "hakmem.h"

static void trim_heap(struct hak_heap *h)
{
    hak_lock(&h->lock);
    for (unsigned c = 1; c < HAK_NCLASS; c++)
        hak_heap_flush(h, c, 0);
    hak_remote_drain(h);
    while (hak_ss_adopt_one(h))
        ;
    hak_ss_release_empty(h, 0);
    hak_ss_purge_units(h, true);
    hak_unlock(&h->lock);
}

HAK_API void hak_thread_flush(void)
{
    struct hak_heap *h = hak_ready() ? hak_tls.heap : NULL;
    if (!h)
        return;
    hak_remote_send(&hak_tls);
    hak_lock(&h->lock);
    for (unsigned c = 1; c < HAK_NCLASS; c++)
        hak_heap_flush(h, c, 0);
    hak_ss_settle(h);
    hak_unlock(&h->lock);
}

HAK_API int hak_trim(size_t pad)
{
    (void)pad;
    if (!hak_ready())
        return 0;
    hak_heap_unpark_all();
    struct hak_heap *h = hak_heap_thread_start();
    if (h) {
        hak_remote_send(&hak_tls);
        trim_heap(h);
    }
    size_t bytes = hak_provision_trim(true) + hak_large_trim() + hak_prof_blocks_trim();
    return bytes > 0;
}
