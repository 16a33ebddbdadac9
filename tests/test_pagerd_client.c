/* libhakclient against a real hakmem-pagerd. Each test starts a private
 * daemon and runs this program again as a client process (--child MODE)
 * with HAKMEM_PAGERD=on and the daemon's socket, so the client starts up
 * exactly as a user's program would:
 *   stress    multi-threaded stress with cross-thread frees and pattern
 *             checks; then a measured phase (steady churn plus a slow growth
 *             that needs new SuperSlabs) must make no mmap, munmap, mprotect
 *             or madvise call while the daemon serves the SuperSlabs;
 *   survive   the daemon is killed with SIGKILL mid-run: the client goes on
 *             correctly in-process, and picks up the restarted daemon;
 *   fork      fork semantics hold for blocks in the daemon's shared memory;
 *   hold      holds daemon memory until it is killed: the daemon's books
 *             must then show all of it released;
 *   stalled   the daemon is stopped (SIGSTOP) while the heap grows: each
 *             acquisition it cannot serve takes one SuperSlab of in-process
 *             memory, not the whole batch the heap asked for. */
#include <pthread.h>
#include <stdatomic.h>

#include "internal.h"
#include "hakmem.h"
#include "pagerd_client.h"

static char self_path[512];

/* ---- the client side (runs in the child process) ---- */

#define THREADS 4
#define EXCHANGE 1024

static _Atomic(uintptr_t) exchange_slots[EXCHANGE];
static _Atomic uint64_t mismatches;
static _Atomic bool stop_load;

static size_t pick_size(struct rng *r)
{
    unsigned pick = (unsigned)rng_range(r, 0, 99);
    if (pick < 70)
        return rng_range(r, 8, 1024);
    if (pick < 95)
        return rng_range(r, 1025, HAK_SMALL_MAX);
    return rng_range(r, HAK_SMALL_MAX + 1, 128 * 1024);
}

static void *block_new(size_t size)
{
    unsigned char *p = hak_malloc(size);
    if (!p)
        return NULL;
    *(uint64_t *)p = size;
    pattern_fill(p + 8, size - 8);
    return p;
}

static void block_free(void *p)
{
    size_t size = *(uint64_t *)p;
    if (size < 8 || size > HAK_MID_MAX || !pattern_check((unsigned char *)p + 8, size - 8))
        atomic_fetch_add(&mismatches, 1);
    hak_free(p);
}

/* Random replacement in 2048 slots; one free in eight is of another
 * thread's block. Runs until stop_load. */
static void *load_thread(void *arg)
{
    struct rng r = {(uint64_t)(uintptr_t)arg * 7717 + 1};
    void *slots[2048] = {0};
    while (!atomic_load(&stop_load)) {
        for (int i = 0; i < 1024; i++) {
            size_t k = rng_range(&r, 0, 2047);
            if (slots[k]) {
                if ((rng_next(&r) & 7) == 0) {
                    uintptr_t got = atomic_exchange(&exchange_slots[rng_range(&r, 0, EXCHANGE - 1)], (uintptr_t)slots[k]);
                    if (got)
                        block_free((void *)got);
                } else {
                    block_free(slots[k]);
                }
            }
            slots[k] = block_new(pick_size(&r));
            if (!slots[k])
                atomic_fetch_add(&mismatches, 1000000);
        }
    }
    for (int k = 0; k < 2048; k++)
        if (slots[k])
            block_free(slots[k]);
    return NULL;
}

static pthread_t load_threads[THREADS];

static void load_start(void)
{
    atomic_store(&stop_load, false);
    for (uintptr_t t = 0; t < THREADS; t++)
        pthread_create(&load_threads[t], NULL, load_thread, (void *)(t + 1));
}

static void load_stop(void)
{
    atomic_store(&stop_load, true);
    for (int t = 0; t < THREADS; t++)
        pthread_join(load_threads[t], NULL);
    for (int j = 0; j < EXCHANGE; j++) {
        uintptr_t got = atomic_exchange(&exchange_slots[j], 0);
        if (got)
            block_free((void *)got);
    }
}

static uint64_t from_daemon(void)
{
    struct hak_provision_stats ps;
    hak_provision_stats(&ps);
    return ps.acquired[HAK_PROV_PAGERD];
}

static uint64_t fallbacks(void)
{
    struct hak_provision_stats ps;
    hak_provision_stats(&ps);
    return ps.fallbacks;
}

/* Calls that map memory: what a refill must never make. madvise is
 * counted apart: it is how idle memory goes back after the decay. */
static uint64_t map_calls(void)
{
    return hak_os_calls(HAK_OS_MMAP) + hak_os_calls(HAK_OS_MUNMAP) + hak_os_calls(HAK_OS_MPROTECT);
}

/* Grow by n blocks of 64 KiB (new SuperSlabs), at a pace the daemon's
 * refill keeps up with, checking and freeing them at the end. */
static void slow_growth(unsigned n)
{
    static void *held[4096];
    for (unsigned i = 0; i < n; i++) {
        held[i] = block_new(64 * 1024);
        if (i % 4 == 3)
            sleep_ms(1);
    }
    for (unsigned i = 0; i < n; i++)
        block_free(held[i]);
}

/* The measured window: refills served by the daemon make no mapping call.
 * A window in which the daemon fell behind (a fallback: on two busy CPUs
 * the daemon's thread may not run for a while) proves nothing either way
 * and is measured again, up to five times. */
static int child_stress(void)
{
    load_start();
    sleep_ms(300); /* warm-up: the daemon learns the pace */
    slow_growth(512);
    uint64_t calls0, adv0, daemon0, fb0, calls1, adv1, daemon1, fb1;
    int windows = 0;
    do {
        windows++;
        /* Emptied SuperSlabs wait warm in-process and are reused first: give
         * them back, so the window's growth is the daemon's to serve. */
        hak_trim(0);
        calls0 = map_calls(), adv0 = hak_os_calls(HAK_OS_MADVISE), daemon0 = from_daemon(), fb0 = fallbacks();
        sleep_ms(300);
        slow_growth(1024); /* 64 MiB more: about 64 SuperSlabs */
        calls1 = map_calls(), adv1 = hak_os_calls(HAK_OS_MADVISE), daemon1 = from_daemon(), fb1 = fallbacks();
    } while (fb1 != fb0 && windows < 5);
    load_stop();
    printf("stress: mismatches=%llu superslabs_from_daemon=%llu measured: mmap/munmap/mprotect=%llu madvise=%llu "
           "from_daemon=%llu fallbacks=%llu windows=%d\n",
           (unsigned long long)mismatches, (unsigned long long)daemon1, (unsigned long long)(calls1 - calls0),
           (unsigned long long)(adv1 - adv0), (unsigned long long)(daemon1 - daemon0), (unsigned long long)(fb1 - fb0),
           windows);
    return mismatches == 0 && daemon0 > 0 && calls1 == calls0 && daemon1 > daemon0 ? 0 : 1;
}

/* Commands from the parent arrive on stdin, one letter each. */
static char wait_command(void)
{
    char c = 0;
    return read(0, &c, 1) == 1 ? c : 0;
}

/* One cycle: 16 MiB in mid blocks, checked, freed and trimmed, so the
 * next cycle needs SuperSlabs again. */
static void cycle(void)
{
    slow_growth(256);
    hak_trim(0);
}

static int child_survive(void)
{
    load_start();
    while (from_daemon() == 0)
        cycle();
    printf("ready from_daemon=%llu\n", (unsigned long long)from_daemon());
    fflush(stdout);
    if (wait_command() != 'k') /* the daemon is killed now */
        return 2;
    for (int i = 0; i < 20; i++)
        cycle(); /* in-process provisioning takes over */
    uint64_t before = from_daemon();
    printf("survived from_daemon=%llu fallbacks=%llu mismatches=%llu\n", (unsigned long long)before,
           (unsigned long long)fallbacks(), (unsigned long long)mismatches);
    fflush(stdout);
    if (wait_command() != 'r') /* a new daemon listens */
        return 2;
    uint64_t end = mono_ms() + 10000;
    while (from_daemon() == before && mono_ms() < end)
        cycle();
    load_stop();
    printf("reconnected=%d from_daemon=%llu mismatches=%llu\n", from_daemon() > before,
           (unsigned long long)from_daemon(), (unsigned long long)mismatches);
    return mismatches == 0 && from_daemon() > before ? 0 : 1;
}

/* A block of size bytes in a SuperSlab from the daemon: allocate until a
 * new slab comes from its memory (the others are freed again). */
static char *daemon_block(size_t size)
{
    static void *tried[20000];
    int n = 0;
    char *found = NULL;
    while (!found && n < 20000) {
        char *p = hak_malloc(size);
        if (hak_cold(hak_ss_of(p))->provider == HAK_PROV_PAGERD)
            found = p;
        else
            tried[n++] = p;
    }
    while (n)
        hak_free(tried[--n]);
    return found;
}

static int child_fork(void)
{
    load_start();
    while (from_daemon() == 0)
        cycle();
    for (int f = 0; f < 10; f++) {
        size_t size = 4000;
        char *block = daemon_block(size);
        if (!block)
            return 6;
        memset(block, 0x11, size);
        int to_child[2];
        if (pipe(to_child) != 0)
            return 3;
        pid_t pid = fork();
        if (pid == 0) {
            for (size_t i = 0; i < size; i++)
                if (block[i] != 0x11)
                    _exit(10);
            memset(block, 0x22, size);
            void *p[1000];
            for (int i = 0; i < 1000; i++)
                p[i] = block_new(100 + (size_t)i * 37);
            for (int i = 0; i < 1000; i++)
                block_free(p[i]);
            char c;
            if (read(to_child[0], &c, 1) != 1)
                _exit(11);
            _exit(block[0] == 0x22 && block[size - 1] == 0x22 && mismatches == 0 ? 0 : 12);
        }
        memset(block, 0x33, size);
        if (write(to_child[1], "x", 1) != 1)
            return 3;
        int status = 0;
        waitpid(pid, &status, 0);
        close(to_child[0]);
        close(to_child[1]);
        for (size_t i = 0; i < size; i++)
            if (block[i] != 0x33)
                return 4;
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            printf("fork %d: child status %#x\n", f, status);
            return 5;
        }
        hak_free(block);
    }
    load_stop();
    printf("fork: 10 forks with daemon memory, mismatches=%llu\n", (unsigned long long)mismatches);
    return mismatches == 0 ? 0 : 1;
}

static __attribute__((noreturn)) int child_hold(void)
{
    static void *held[1024];
    /* 32 popped in the round that keeps its blocks: SuperSlabs of an
     * earlier round went back to the daemon, so a running total would
     * overstate what is held. */
    for (;;) {
        uint64_t before = from_daemon();
        for (int i = 0; i < 1024; i++) {
            held[i] = hak_malloc(64 * 1024);
            memset(held[i], 1, 64 * 1024);
        }
        if (from_daemon() - before >= 32)
            break;
        for (int i = 0; i < 1024; i++)
            hak_free(held[i]);
        hak_trim(0);
    }
    printf("holding from_daemon=%llu own_kb=%ld\n", (unsigned long long)from_daemon(), own_kib());
    fflush(stdout);
    for (;;)
        pause();
}

static uint64_t from_process(void)
{
    struct hak_provision_stats ps;
    hak_provision_stats(&ps);
    return ps.acquired[HAK_PROV_EMBEDDED];
}

/* Growth only (nothing freed, so nothing is reused warm): 64 KiB blocks,
 * 16 to a SuperSlab; a heap of 64 SuperSlabs asks for batches of 8. */
static int child_stalled(void)
{
    static void *held[2048];
    unsigned n = 0;
    while (from_daemon() < 64 && n < 1024)
        held[n++] = block_new(64 * 1024);
    printf("ready from_daemon=%llu\n", (unsigned long long)from_daemon());
    fflush(stdout);
    if (wait_command() != 's') /* the daemon is stopped now */
        return 2;
    uint64_t own0 = from_process(), fb0 = fallbacks();
    for (unsigned i = 0; i < 1024; i++)
        held[n++] = block_new(64 * 1024);
    uint64_t own = from_process() - own0, fb = fallbacks() - fb0;
    for (unsigned i = 0; i < n; i++)
        block_free(held[i]);
    printf("stalled in_process=%llu fallbacks=%llu mismatches=%llu\n", (unsigned long long)own,
           (unsigned long long)fb, (unsigned long long)mismatches);
    return mismatches == 0 && own > 0 && own <= fb ? 0 : 1;
}

/* ---- the test side ---- */

struct child {
    pid_t pid;
    int to; /* its stdin */
    FILE *from; /* its stdout */
};

static void child_start(struct child *c, const char *mode, const struct daemon *d)
{
    int in[2], out[2];
    assert_int_equal(pipe(in), 0);
    assert_int_equal(pipe(out), 0);
    c->pid = fork();
    assert_true(c->pid >= 0);
    if (c->pid == 0) {
        dup2(in[0], 0);
        dup2(out[1], 1);
        close(in[1]);
        close(out[0]);
        setenv("HAKMEM_PAGERD", "on", 1);
        setenv("HAKMEM_PAGERD_SOCKET", d->sock, 1);
        setenv("HAKMEM_PAGERD_CAPACITY_MB", "4096", 1);
        execl(self_path, self_path, "--child", mode, (char *)NULL);
        _exit(127);
    }
    close(in[0]);
    close(out[1]);
    c->to = in[1];
    c->from = fdopen(out[0], "r");
}

static void child_line(struct child *c, char *line, size_t n, const char *want)
{
    if (!fgets(line, (int)n, c->from))
        fail_msg("client process ended before \"%s\"", want);
    if (!strstr(line, want))
        fail_msg("client said \"%s\", expected \"%s\"", line, want);
    print_message("client: %s", line);
}

static int child_wait(struct child *c)
{
    int status = 0;
    waitpid(c->pid, &status, 0);
    close(c->to);
    fclose(c->from);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static void test_client_stress_against_daemon(void **state)
{
    (void)state;
    struct daemon d;
    daemon_start(&d, "--tick-ms", "1", "--fake-nodes", "2");
    struct child c;
    char line[512];
    child_start(&c, "stress", &d);
    child_line(&c, line, sizeof line, "stress: mismatches=0");
    assert_non_null(strstr(line, "mmap/munmap/mprotect=0 "));
    assert_int_equal(child_wait(&c), 0);
    daemon_stop(&d);
}

static void test_daemon_killed_and_restarted(void **state)
{
    (void)state;
    struct daemon d, d2;
    daemon_start(&d, "--tick-ms", "1");
    struct child c;
    char line[512];
    child_start(&c, "survive", &d);
    child_line(&c, line, sizeof line, "ready");
    kill(d.pid, SIGKILL);
    waitpid(d.pid, NULL, 0);
    daemon_track(&d, false);
    assert_int_equal(write(c.to, "k", 1), 1);
    child_line(&c, line, sizeof line, "survived");
    assert_non_null(strstr(line, "mismatches=0"));
    /* A new daemon where the client looks: the old socket file is stale;
     * a link to the new one takes its place. */
    daemon_start(&d2, "--tick-ms", "1");
    assert_int_equal(unlink(d.sock), 0);
    assert_int_equal(symlink(d2.sock, d.sock), 0);
    assert_int_equal(write(c.to, "r", 1), 1);
    child_line(&c, line, sizeof line, "reconnected=1");
    assert_int_equal(child_wait(&c), 0);
    daemon_stop(&d2);
    char cmd[160];
    snprintf(cmd, sizeof cmd, "rm -rf %s", d.dir);
    assert_int_equal(system(cmd), 0);
}

static void test_fork_with_daemon_memory(void **state)
{
    (void)state;
    struct daemon d;
    daemon_start(&d, "--tick-ms", "1");
    struct child c;
    char line[512];
    child_start(&c, "fork", &d);
    child_line(&c, line, sizeof line, "fork: 10 forks");
    assert_int_equal(child_wait(&c), 0);
    daemon_stop(&d);
}

static void test_killed_client_releases_everything(void **state)
{
    (void)state;
    struct daemon d;
    daemon_start(&d, "--tick-ms", "1");
    struct child c;
    char line[512];
    child_start(&c, "hold", &d);
    child_line(&c, line, sizeof line, "holding");
    /* The 64 MiB it wrote, most in the daemon's file, count as its own. */
    const char *own = strstr(line, "own_kb=");
    assert_non_null(own);
    assert_true(atol(own + 7) >= 64 * 1024);
    struct status st;
    get_status(&d, &st);
    bool found = false;
    for (uint32_t i = 0; i < st.d.nclients; i++)
        if (st.clients[i].pid == c.pid) {
            found = true;
            assert_true(st.clients[i].held >= 32);
            print_message("before kill: client pid %d holds %u SuperSlabs, daemon total %llu\n", c.pid,
                          st.clients[i].held, (unsigned long long)st.d.ss_total);
        }
    assert_true(found);
    kill(c.pid, SIGKILL);
    child_wait(&c);
    assert_true(WAIT_FOR((get_status(&d, &st), st.d.nclients == 0 && st.d.ss_total == 0), 3000));
    print_message("after kill: clients %u, SuperSlabs accounted %llu\n", st.d.nclients,
                  (unsigned long long)st.d.ss_total);
    assert_int_equal(log_count(&d, "dropped"), 0);
    daemon_stop(&d);
}

static void test_stalled_daemon_costs_one_superslab_at_a_time(void **state)
{
    (void)state;
    struct daemon d;
    daemon_start(&d, "--tick-ms", "1");
    struct child c;
    char line[512];
    child_start(&c, "stalled", &d);
    child_line(&c, line, sizeof line, "ready");
    assert_int_equal(kill(d.pid, SIGSTOP), 0);
    assert_int_equal(write(c.to, "s", 1), 1);
    /* A failure leaves the daemon stopped: the teardown's SIGKILL ends it. */
    child_line(&c, line, sizeof line, "stalled ");
    kill(d.pid, SIGCONT);
    assert_non_null(strstr(line, "mismatches=0"));
    assert_int_equal(child_wait(&c), 0);
    daemon_stop(&d);
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--child") == 0) {
        if (strcmp(argv[2], "stress") == 0)
            return child_stress();
        if (strcmp(argv[2], "survive") == 0)
            return child_survive();
        if (strcmp(argv[2], "fork") == 0)
            return child_fork();
        if (strcmp(argv[2], "hold") == 0)
            return child_hold();
        if (strcmp(argv[2], "stalled") == 0)
            return child_stalled();
        return 2;
    }
    ssize_t n = readlink("/proc/self/exe", self_path, sizeof self_path - 1);
    assert_true(n > 0);
    self_path[n] = 0;
    pagerd_locate(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_client_stress_against_daemon, pagerd_teardown),
        cmocka_unit_test_teardown(test_daemon_killed_and_restarted, pagerd_teardown),
        cmocka_unit_test_teardown(test_fork_with_daemon_memory, pagerd_teardown),
        cmocka_unit_test_teardown(test_killed_client_releases_everything, pagerd_teardown),
        cmocka_unit_test_teardown(test_stalled_daemon_costs_one_superslab_at_a_time, pagerd_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
