/* Process start-up and fork handling.
 *
 * Start-up runs on the first call that needs it, from any thread. Phase 1
 * (options, classes, arena) calls nothing that allocates; it ends by marking
 * the library ready. Phase 2 (thread-exit key, fork handlers) may allocate:
 * glibc's pthread_atfork does, and its malloc call is served normally. */
#include <pthread.h>
#include <sched.h>

#include "internal.h"

_Atomic int hak_init_state;
static __thread bool in_phase1 __attribute__((tls_model("initial-exec")));

static void fork_prepare(void)
{
    hak_prof_fork_prepare();
    hak_large_fork_prepare();
    hak_heap_fork_prepare();
    hak_provision_fork_prepare();
    hak_lock(&hak_arena.lock);
}

static void fork_parent(void)
{
    hak_unlock(&hak_arena.lock);
    hak_provision_fork_parent();
    hak_heap_fork_parent();
    hak_large_fork_parent();
    hak_prof_fork_parent();
}

static void fork_child(void)
{
    hak_lock_reset(&hak_arena.lock);
    hak_provision_fork_child();
    hak_large_fork_child();
    hak_prof_fork_child();
    hak_heap_fork_child(); /* last: it gives SuperSlabs back to the provider */
    hak_decay_fork_child();
}

bool hak_init_slow(void)
{
    int state = atomic_load(&hak_init_state);
    if (state == 2)
        return true;
    if (in_phase1)
        return false; /* something in phase 1 allocated: refuse, never recurse */
    if (state == 0 && atomic_compare_exchange_strong(&hak_init_state, &state, 1)) {
        in_phase1 = true;
        hak_options_init();
        hak_classes_init();
        hak_keys_init();
        hak_crash_init();
        hak_prof_init();
        if (hak_arena_init((size_t)hak_opt.arena_gib << 30) != 0)
            hak_warn("cannot reserve address space for the heap; allocations will fail");
        in_phase1 = false;
        atomic_store(&hak_init_state, 2);
        hak_heap_key_init();
        pthread_atfork(fork_prepare, fork_parent, fork_child);
        return true;
    }
    while ((state = atomic_load(&hak_init_state)) == 1)
        sched_yield();
    return state == 2;
}
