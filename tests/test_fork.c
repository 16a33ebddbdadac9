/* fork() from a multi-threaded process under allocation load: the child
 * allocates and frees at once (every lock it inherits is usable), blocks of
 * the parent are intact in the child, and fork's memory semantics hold: a
 * write in the child is invisible to the parent and the reverse. The same
 * with the background thread of HAKMEM_BACKGROUND busy all the time: the
 * child gets one of its own. */
#include <dirent.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/wait.h>

#include "internal.h"
#include "hakmem.h"
#include "testutil.h"

#define LOADERS 3
#define FORKS 30

static _Atomic bool stop;
static _Atomic int running;
static _Atomic(uintptr_t) shared[512];

/* Keeps slow paths busy: allocations across classes, frees of other
 * threads' blocks, threads starting and exiting. */
static void *loader(void *arg)
{
    struct rng r = {(uint64_t)(uintptr_t)arg};
    void *slots[1024] = {0};
    atomic_fetch_add(&running, 1);
    while (!atomic_load(&stop)) {
        for (int i = 0; i < 4096; i++) {
            size_t k = rng_range(&r, 0, 1023);
            hak_free(slots[k]);
            size_t size = (rng_next(&r) & 7) ? rng_range(&r, 1, 2048) : rng_range(&r, 2049, 300000);
            slots[k] = hak_malloc(size);
            if (!slots[k])
                return (void *)1;
            memset(slots[k], 1, 16);
            if ((i & 31) == 0)
                slots[k] = (void *)atomic_exchange(&shared[rng_range(&r, 0, 511)], (uintptr_t)slots[k]);
        }
    }
    for (int k = 0; k < 1024; k++)
        hak_free(slots[k]);
    return NULL;
}

static void *short_thread(void *arg)
{
    (void)arg;
    void *p = hak_malloc(100);
    hak_free(p);
    return NULL;
}

/* Child: heavy allocation at once, including by new threads, with a check
 * of every block; returns 0 on success. */
static int child_work(char *parent_block, size_t size)
{
    for (size_t i = 0; i < size; i++)
        if (parent_block[i] != (char)0x11)
            return 10;
    memset(parent_block, 0x22, size); /* the parent must not see this */
    struct rng r = {42};
    void *blocks[2000];
    size_t sizes[2000];
    for (int round = 0; round < 20; round++) {
        for (int i = 0; i < 2000; i++) {
            sizes[i] = rng_range(&r, 1, 70000);
            blocks[i] = hak_malloc(sizes[i]);
            if (!blocks[i])
                return 11;
            pattern_fill(blocks[i], sizes[i]);
        }
        for (int i = 0; i < 2000; i++) {
            if (!pattern_check(blocks[i], sizes[i]))
                return 12;
            hak_free(blocks[i]);
        }
    }
    /* Not under TSan: it cannot start a thread in the child of a
     * multi-threaded fork (it still counts the parent's threads). */
    if (!TEST_TSAN) {
        pthread_t t;
        if (pthread_create(&t, NULL, short_thread, NULL) != 0)
            return 13;
        pthread_join(t, NULL);
    }
    for (int i = 0; i < 512; i++) /* blocks of the parent's threads */
        hak_free((void *)atomic_exchange(&shared[i], 0));
    return 0;
}

/* Threads of this process (/proc/self/task). */
static int threads_now(void)
{
    DIR *d = opendir("/proc/self/task");
    int n = 0;
    if (!d)
        return -1;
    for (struct dirent *e; (e = readdir(d));)
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

static bool with_background;

static void forks_under_load(int forks)
{
    pthread_t th[LOADERS];
    for (uintptr_t t = 0; t < LOADERS; t++)
        assert_int_equal(pthread_create(&th[t], NULL, loader, (void *)(t + 5)), 0);
    /* Under ASan, fork once the loaders run: gcc 12's ASan does not hold
     * its allocator's locks over fork, and a thread still in ASan's own
     * start-up (which allocates) would leave one held in the child, whose
     * new thread would then wait for it forever. */
    while (TEST_ASAN && atomic_load(&running) < LOADERS)
        sched_yield();
    for (int f = 0; f < forks; f++) {
        size_t size = 4000;
        char *block = hak_malloc(size);
        memset(block, 0x11, size);
        int to_child[2];
        assert_int_equal(pipe(to_child), 0);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            int rc = child_work(block, size);
            /* Its slow paths started a background thread of its own. */
            if (!rc && with_background && threads_now() < 2)
                rc = 14;
            char c;
            /* Wait until the parent has written its copy, then check ours. */
            if (read(to_child[0], &c, 1) != 1)
                _exit(20);
            if (block[0] != 0x22 || block[size - 1] != 0x22)
                _exit(21);
            _exit(rc);
        }
        memset(block, 0x33, size); /* the child must not see this */
        assert_int_equal(write(to_child[1], "x", 1), 1);
        int status = 0;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        close(to_child[0]);
        close(to_child[1]);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
            fail_msg("fork %d: child status %d (exit %d, signal %d)", f, status,
                     WIFEXITED(status) ? WEXITSTATUS(status) : -1, WIFSIGNALED(status) ? WTERMSIG(status) : 0);
        for (size_t i = 0; i < size; i++)
            assert_int_equal(block[i], 0x33);
        hak_free(block);
    }
    atomic_store(&stop, true);
    for (int t = 0; t < LOADERS; t++) {
        void *rc;
        pthread_join(th[t], &rc);
        assert_null(rc);
    }
    for (int i = 0; i < 512; i++)
        hak_free((void *)atomic_exchange(&shared[i], 0));
}

static void test_fork_under_load(void **state)
{
    (void)state;
    forks_under_load(FORKS);
}

/* A decay of 1 ms keeps the background thread (and every slow path) in
 * the decay pass most of the time, so forks land in the middle of it. Not
 * under TSan, which cannot start the child's background thread. */
static void test_fork_with_the_background_thread(void **state)
{
    (void)state;
    if (TEST_TSAN) {
        print_message("not under TSan: the child could not start its background thread\n");
        return;
    }
    /* GCC 12's ASan runtime takes no lock of its own allocator at fork: the
     * child's new background thread (its start frees through that
     * allocator) can wait forever on a lock a loader thread of the parent
     * held at the fork (seen once in make asan). */
    if (TEST_ASAN) {
        print_message("not under ASan: its runtime's allocator is not fork-safe with threads\n");
        return;
    }
    uint64_t decay = hak_opt.decay_ms;
    __atomic_store_n(&hak_opt.decay_ms, 1, __ATOMIC_RELAXED); /* the background thread reads it */
    __atomic_store_n(&hak_opt.background, 1, __ATOMIC_RELAXED);
    with_background = true;
    atomic_store(&stop, false);
    atomic_store(&running, 0);
    forks_under_load(FORKS / 3);
    __atomic_store_n(&hak_opt.decay_ms, decay, __ATOMIC_RELAXED);
}

int main(void)
{
    hak_free(hak_malloc(1));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fork_under_load),
        cmocka_unit_test(test_fork_with_the_background_thread),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
