/* The decay across the process: memory idle past HAKMEM_DECAY_MS goes back
 * (warm SuperSlabs to their backend, the pages of idle units in every
 * heap, cached large mappings, the heap profiler's shared cache of sampled
 * pages), from any thread's refill or flush at most
 * twice per decay, whichever heap holds it: a parked heap, or one whose
 * thread stopped allocating, is not left out.
 *
 * With HAKMEM_BACKGROUND=1 a thread of hakmem's own does the same every
 * quarter decay, so an idle program gives memory back with no allocator
 * call at all. It is started from a slow path (never from start-up, which
 * may run before threads can be made), and again in a fork child. */
#include <pthread.h>
#include <time.h>

#include "internal.h"

static _Atomic uint64_t last_ns; /* of the last pass from a slow path */
static _Atomic int background; /* 0 none, 1 running (or starting) */

size_t hak_decay_all(void)
{
    return hak_provision_trim(false) + hak_heap_decay_all() + hak_large_decay() + hak_prof_blocks_decay();
}

static uint64_t period_ns(void)
{
    uint64_t p = hak_decay_ms() * 1000000u / 4;
    return p < 10000000u ? 10000000u : p > 1000000000u ? 1000000000u : p;
}

static void *background_main(void *arg)
{
    (void)arg;
    for (;;) {
        uint64_t p = period_ns();
        struct timespec ts = {(time_t)(p / 1000000000u), (long)(p % 1000000000u)};
        nanosleep(&ts, NULL);
        hak_decay_all();
    }
    return NULL;
}

static void background_start(void)
{
    int none = 0;
    if (!atomic_compare_exchange_strong(&background, &none, 1))
        return;
    pthread_attr_t at;
    pthread_t t;
    pthread_attr_init(&at);
    pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&at, 64 * 1024);
    if (pthread_create(&t, &at, background_main, NULL) != 0)
        hak_warn("HAKMEM_BACKGROUND: cannot start the background thread; memory goes back on slow paths only");
    pthread_attr_destroy(&at);
}

/* From a slow path of h's thread, no lock held. The time read here also
 * tells other threads that h is in use (hak_heap_help_drain). */
void hak_decay_maybe(struct hak_heap *h)
{
    if (__atomic_load_n(&hak_opt.background, __ATOMIC_RELAXED) && !atomic_load_explicit(&background, HAK_RELAXED))
        background_start();
    uint64_t now = hak_coarse_ns(), last = atomic_load_explicit(&last_ns, HAK_RELAXED);
    atomic_store_explicit(&h->active_ns, now, HAK_RELAXED);
    if (now - last < hak_decay_ms() * 1000000u / 2 || !atomic_compare_exchange_strong(&last_ns, &last, now))
        return;
    hak_decay_all();
}

/* The child has no background thread: the next slow path starts one. */
void hak_decay_fork_child(void)
{
    atomic_store(&background, 0);
}
