/* prodcons: producer-consumer through one shared queue.
 *
 * P producer threads allocate blocks (size uniform in [min, max], first
 * and last byte written) in batches of B and put each batch on a queue
 * shared by all; C consumer threads take batches, read each block and free
 * it. Unlike xthread's fixed pairs, a consumer frees blocks of every
 * producer, so each free lands in a heap of some other thread, in the
 * order the queue hands the batches out. The queue is a ring of D batches
 * under one mutex; batches are copied in and out of it, so the queue itself
 * allocates nothing while timed. A producer that finds it full (a consumer
 * that finds it empty) waits on a condition variable.
 *
 * Result: operations per second (one malloc or one free each), from the
 * start until the last batch is freed after the stop. */
#include <getopt.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "bench_util.h"

struct run {
    size_t min, max, batch, depth;
    uint64_t seed;
    int pin;               /* thread i runs on CPU i modulo the CPUs */
    _Atomic int stop;
    pthread_barrier_t start;
    pthread_mutex_t lock;
    pthread_cond_t not_full, not_empty;
    void **ring;           /* depth * batch block pointers */
    uint64_t head, tail;   /* batches put / taken (lock) */
    long producers_left;   /* lock */
};

struct worker {
    _Alignas(64) struct run *run;
    long index;
    uint64_t blocks, checksum;
};

/* With --pin, thread i (producers first) runs on CPU i modulo the CPUs: a
 * producer and a consumer on different CPUs, whatever the scheduler would
 * do, for runs that compare the allocators' costs rather than placements. */
static void pin_worker(const struct worker *w)
{
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    if (!w->run->pin || cpus < 1)
        return;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET((int)(w->index % cpus), &set);
    if (pthread_setaffinity_np(pthread_self(), sizeof set, &set) != 0)
        fprintf(stderr, "prodcons: cannot pin thread %ld\n", w->index);
}

static void *producer(void *arg)
{
    struct worker *w = arg;
    struct run *r = w->run;
    pin_worker(w);
    const size_t lo = r->min, hi = r->max, batch = r->batch;
    uint64_t rng = rng_seed(r->seed, (uint64_t)w->index), made = 0, sum = 0;
    void **b = xmalloc(sizeof *b * batch);
    pthread_barrier_wait(&r->start);

    while (!atomic_load_explicit(&r->stop, memory_order_relaxed)) {
        for (size_t i = 0; i < batch; i++) {
            size_t size = rng_range(&rng, lo, hi);
            unsigned char *p = xmalloc(size);
            p[0] = (unsigned char)i;
            p[size - 1] = (unsigned char)i;
            sum += (unsigned char)i;
            b[i] = p;
        }
        pthread_mutex_lock(&r->lock);
        while (r->head - r->tail == r->depth)
            pthread_cond_wait(&r->not_full, &r->lock);
        memcpy(&r->ring[(r->head % r->depth) * batch], b, sizeof *b * batch);
        r->head++;
        pthread_cond_signal(&r->not_empty);
        pthread_mutex_unlock(&r->lock);
        made += batch;
    }
    pthread_mutex_lock(&r->lock);
    if (--r->producers_left == 0)
        pthread_cond_broadcast(&r->not_empty);
    pthread_mutex_unlock(&r->lock);
    free(b);
    w->blocks = made;
    w->checksum = sum;
    return NULL;
}

static void *consumer(void *arg)
{
    struct worker *w = arg;
    struct run *r = w->run;
    pin_worker(w);
    const size_t batch = r->batch;
    uint64_t freed = 0, sum = 0;
    void **b = xmalloc(sizeof *b * batch);
    pthread_barrier_wait(&r->start);

    for (;;) {
        pthread_mutex_lock(&r->lock);
        while (r->head == r->tail && r->producers_left)
            pthread_cond_wait(&r->not_empty, &r->lock);
        if (r->head == r->tail) {
            pthread_mutex_unlock(&r->lock);
            break;
        }
        memcpy(b, &r->ring[(r->tail % r->depth) * batch], sizeof *b * batch);
        r->tail++;
        pthread_cond_signal(&r->not_full);
        pthread_mutex_unlock(&r->lock);
        for (size_t i = 0; i < batch; i++) {
            sum += *(unsigned char *)b[i];
            free(b[i]);
        }
        freed += batch;
    }
    free(b);
    w->blocks = freed;
    w->checksum = sum;
    return NULL;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: prodcons [options]\n"
            "  -p, --producers P  allocating threads, 1-512 (default 2)\n"
            "  -c, --consumers C  freeing threads, 1-512 (default 2)\n"
            "  -s, --seconds S    run time (default 2)\n"
            "      --min B        smallest block size in bytes (default 16)\n"
            "      --max B        largest block size in bytes (default 1024)\n"
            "      --batch N      blocks per batch (default 64)\n"
            "      --depth D      batches the queue holds (default 64)\n"
            "      --seed X       random seed (default 1)\n"
            "      --pin          thread i (producers first) on CPU i modulo the CPUs\n");
    exit(2);
}

int main(int argc, char **argv)
{
    long producers = 2, consumers = 2, min = 16, max = 1024, batch = 64, depth = 64, seed = 1;
    int pin = 0;
    double seconds = 2.0;
    static const struct option opts[] = {
        {"producers", required_argument, 0, 'p'}, {"consumers", required_argument, 0, 'c'},
        {"seconds", required_argument, 0, 's'},   {"min", required_argument, 0, 'm'},
        {"max", required_argument, 0, 'M'},       {"batch", required_argument, 0, 'b'},
        {"depth", required_argument, 0, 'd'},     {"seed", required_argument, 0, 'x'},
        {"pin", no_argument, 0, 'P'},             {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    int c;
    while ((c = getopt_long(argc, argv, "p:c:s:h", opts, NULL)) != -1) {
        int bad = 0;
        switch (c) {
        case 'p': bad = parse_long(optarg, 1, 512, &producers); break;
        case 'c': bad = parse_long(optarg, 1, 512, &consumers); break;
        case 's': bad = parse_double(optarg, 0.001, 86400, &seconds); break;
        case 'm': bad = parse_long(optarg, 1, 1L << 30, &min); break;
        case 'M': bad = parse_long(optarg, 1, 1L << 30, &max); break;
        case 'b': bad = parse_long(optarg, 1, 1L << 16, &batch); break;
        case 'd': bad = parse_long(optarg, 1, 1L << 16, &depth); break;
        case 'x': bad = parse_long(optarg, 0, 1L << 62, &seed); break;
        case 'P': pin = 1; break;
        default: usage();
        }
        if (bad)
            usage();
    }
    if (optind != argc || min > max)
        usage();

    struct run run = {.min = (size_t)min, .max = (size_t)max, .batch = (size_t)batch,
                      .depth = (size_t)depth, .seed = (uint64_t)seed, .pin = pin,
                      .producers_left = producers};
    long n = producers + consumers;
    pthread_barrier_init(&run.start, NULL, (unsigned)n + 1);
    pthread_mutex_init(&run.lock, NULL);
    pthread_cond_init(&run.not_full, NULL);
    pthread_cond_init(&run.not_empty, NULL);
    run.ring = xmalloc(sizeof *run.ring * (size_t)(batch * depth));
    struct worker *w = aligned_alloc(64, sizeof *w * (size_t)n);
    pthread_t *th = xmalloc(sizeof *th * (size_t)n);
    if (!w) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }
    for (long i = 0; i < n; i++) {
        memset(&w[i], 0, sizeof w[i]);
        w[i].run = &run;
        w[i].index = i;
        xthread_create(&th[i], NULL, i < producers ? producer : consumer, &w[i]);
    }
    pthread_barrier_wait(&run.start);
    uint64_t t0 = now_ns();
    sleep_ns((uint64_t)(seconds * 1e9));
    atomic_store(&run.stop, 1);
    uint64_t made = 0, freed = 0, sum_made = 0, sum_freed = 0;
    for (long i = 0; i < n; i++) {
        pthread_join(th[i], NULL);
        if (i < producers) {
            made += w[i].blocks;
            sum_made += w[i].checksum;
        } else {
            freed += w[i].blocks;
            sum_freed += w[i].checksum;
        }
    }
    uint64_t t1 = now_ns();
    if (made != freed || sum_made != sum_freed) {
        fprintf(stderr, "%llu blocks made, %llu freed; contents %s\n", (unsigned long long)made,
                (unsigned long long)freed, sum_made == sum_freed ? "intact" : "changed in the queue");
        return 1;
    }
    double elapsed = (double)(t1 - t0) * 1e-9;
    printf("RESULT workload=prodcons producers=%ld consumers=%ld min=%ld max=%ld batch=%ld depth=%ld pin=%d "
           "seconds=%.3f ops=%llu ops_per_sec=%.0f\n",
           producers, consumers, min, max, batch, depth, pin, elapsed, (unsigned long long)(made + freed),
           (double)(made + freed) / elapsed);
    free(th);
    free(w);
    free(run.ring);
    return 0;
}
