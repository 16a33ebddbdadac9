/* A small lock for slow paths. Needs no initialiser call, so it works before
 * pthread is ready and in a fork child; spins briefly, then yields. */
#ifndef HAK_LOCK_H
#define HAK_LOCK_H

#include <sched.h>
#include <stdatomic.h>

typedef struct {
    _Atomic int held;
} hak_lock_t;

#define HAK_LOCK_INIT {0}

#if defined(__x86_64__) || defined(__i386__)
#define hak_cpu_relax() __builtin_ia32_pause()
#elif defined(__aarch64__)
#define hak_cpu_relax() __asm__ __volatile__("yield")
#else
#define hak_cpu_relax() ((void)0)
#endif

static inline int hak_lock_try(hak_lock_t *l)
{
    return atomic_load_explicit(&l->held, memory_order_relaxed) == 0 &&
           atomic_exchange_explicit(&l->held, 1, memory_order_acquire) == 0;
}

static inline void hak_lock(hak_lock_t *l)
{
    for (unsigned spins = 0; !hak_lock_try(l); spins++) {
        if (spins < 64)
            hak_cpu_relax();
        else
            sched_yield();
    }
}

static inline void hak_unlock(hak_lock_t *l)
{
    atomic_store_explicit(&l->held, 0, memory_order_release);
}

/* Only for a fork child, where the holder no longer exists. */
static inline void hak_lock_reset(hak_lock_t *l)
{
    atomic_store_explicit(&l->held, 0, memory_order_relaxed);
}

#endif /* HAK_LOCK_H */
