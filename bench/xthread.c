/* xthread: producer/consumer, every block freed by another thread.
 *
 * P pairs of threads. In each pair the producer allocates blocks (size
 * uniform in [min, max], first byte written) in batches of B and passes
 * each batch through a bounded single-producer single-consumer ring of D
 * batches; the consumer reads each block's first byte and frees it. The
 * ring is lock-free (one release store per batch on each side), so the
 * queue costs little next to B mallocs and B frees. A side that finds the
 * ring full (or empty) spins briefly, then yields the CPU.
 *
 * Result: operations per second (one malloc or one free each), over the
 * time until every consumer has freed the last batch. */
#include <getopt.h>
#include <stdatomic.h>

#include "bench_util.h"

struct run {
    size_t min, max, batch, depth;
    uint64_t seed;
    _Atomic int stop;
    pthread_barrier_t start;
};

struct pair {
    _Alignas(64) _Atomic uint64_t head; /* batches published by the producer */
    _Alignas(64) _Atomic uint64_t tail; /* batches released by the consumer */
    _Alignas(64) struct run *run;
    long index;
    void **blocks;   /* depth * batch block pointers */
    size_t *count;   /* blocks in each ring entry; 0 = end of stream */
    uint64_t produced, consumed, checksum, end_ns;
};

static inline void backoff(unsigned *spins)
{
    if (++*spins < 64)
        __builtin_ia32_pause();
    else
        sched_yield();
}

static void *producer(void *arg)
{
    struct pair *q = arg;
    struct run *r = q->run;
    const size_t lo = r->min, hi = r->max, batch = r->batch, depth = r->depth;
    uint64_t rng = rng_seed(r->seed, (uint64_t)q->index), head = 0, made = 0;
    pthread_barrier_wait(&r->start);

    for (;;) {
        int stop = atomic_load_explicit(&r->stop, memory_order_relaxed);
        unsigned spins = 0;
        while (head - atomic_load_explicit(&q->tail, memory_order_acquire) == depth)
            backoff(&spins);
        size_t e = head % depth;
        void **b = &q->blocks[e * batch];
        if (stop) {
            q->count[e] = 0;
            atomic_store_explicit(&q->head, ++head, memory_order_release);
            break;
        }
        for (size_t i = 0; i < batch; i++) {
            size_t size = rng_range(&rng, lo, hi);
            unsigned char *p = xmalloc(size);
            p[0] = (unsigned char)i;
            b[i] = p;
        }
        q->count[e] = batch;
        atomic_store_explicit(&q->head, ++head, memory_order_release);
        made += batch;
    }
    q->produced = made;
    return NULL;
}

static void *consumer(void *arg)
{
    struct pair *q = arg;
    struct run *r = q->run;
    const size_t batch = r->batch, depth = r->depth;
    uint64_t tail = 0, freed = 0, sum = 0;
    pthread_barrier_wait(&r->start);

    for (;;) {
        unsigned spins = 0;
        while (atomic_load_explicit(&q->head, memory_order_acquire) == tail)
            backoff(&spins);
        size_t e = tail % depth, n = q->count[e];
        void **b = &q->blocks[e * batch];
        for (size_t i = 0; i < n; i++) {
            sum += *(unsigned char *)b[i];
            free(b[i]);
        }
        atomic_store_explicit(&q->tail, ++tail, memory_order_release);
        freed += n;
        if (n == 0)
            break;
    }
    q->end_ns = now_ns();
    q->consumed = freed;
    q->checksum = sum;
    return NULL;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: xthread [options]\n"
            "  -p, --pairs P     producer/consumer pairs, 1-512 (default 1)\n"
            "  -s, --seconds S   run time (default 2)\n"
            "      --min B       smallest block size in bytes (default 16)\n"
            "      --max B       largest block size in bytes (default 1024)\n"
            "      --batch N     blocks per batch (default 64)\n"
            "      --depth D     batches the ring holds (default 16)\n"
            "      --seed X      random seed (default 1)\n");
    exit(2);
}

int main(int argc, char **argv)
{
    long pairs = 1, min = 16, max = 1024, batch = 64, depth = 16, seed = 1;
    double seconds = 2.0;
    static const struct option opts[] = {
        {"pairs", required_argument, 0, 'p'}, {"seconds", required_argument, 0, 's'},
        {"min", required_argument, 0, 'm'},   {"max", required_argument, 0, 'M'},
        {"batch", required_argument, 0, 'b'}, {"depth", required_argument, 0, 'd'},
        {"seed", required_argument, 0, 'x'},  {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    int c;
    while ((c = getopt_long(argc, argv, "p:s:h", opts, NULL)) != -1) {
        int bad = 0;
        switch (c) {
        case 'p': bad = parse_long(optarg, 1, 512, &pairs); break;
        case 's': bad = parse_double(optarg, 0.001, 86400, &seconds); break;
        case 'm': bad = parse_long(optarg, 1, 1L << 30, &min); break;
        case 'M': bad = parse_long(optarg, 1, 1L << 30, &max); break;
        case 'b': bad = parse_long(optarg, 1, 1L << 16, &batch); break;
        case 'd': bad = parse_long(optarg, 1, 1L << 16, &depth); break;
        case 'x': bad = parse_long(optarg, 0, 1L << 62, &seed); break;
        default: usage();
        }
        if (bad)
            usage();
    }
    if (optind != argc || min > max)
        usage();

    struct run run = {.min = (size_t)min, .max = (size_t)max, .batch = (size_t)batch,
                      .depth = (size_t)depth, .seed = (uint64_t)seed};
    pthread_barrier_init(&run.start, NULL, 2 * (unsigned)pairs + 1);
    struct pair *q = aligned_alloc(64, sizeof *q * (size_t)pairs);
    pthread_t *th = xmalloc(sizeof *th * 2 * (size_t)pairs);
    if (!q) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }
    for (long i = 0; i < pairs; i++) {
        memset(&q[i], 0, sizeof q[i]);
        q[i].run = &run;
        q[i].index = i;
        q[i].blocks = xmalloc(sizeof *q[i].blocks * (size_t)(batch * depth));
        q[i].count = xmalloc(sizeof *q[i].count * (size_t)depth);
        xthread_create(&th[2 * i], NULL, producer, &q[i]);
        xthread_create(&th[2 * i + 1], NULL, consumer, &q[i]);
    }
    pthread_barrier_wait(&run.start);
    uint64_t t0 = now_ns();
    sleep_ns((uint64_t)(seconds * 1e9));
    atomic_store(&run.stop, 1);
    uint64_t ops = 0, t1 = t0;
    for (long i = 0; i < pairs; i++) {
        pthread_join(th[2 * i], NULL);
        pthread_join(th[2 * i + 1], NULL);
        if (q[i].produced != q[i].consumed) {
            fprintf(stderr, "pair %ld: %llu blocks produced, %llu consumed\n", i,
                    (unsigned long long)q[i].produced, (unsigned long long)q[i].consumed);
            return 1;
        }
        uint64_t per_batch = 0;
        for (long k = 0; k < batch; k++)
            per_batch += (uint64_t)(k & 255);
        if (q[i].checksum != q[i].produced / (uint64_t)batch * per_batch) {
            fprintf(stderr, "pair %ld: block contents changed between producer and consumer\n", i);
            return 1;
        }
        ops += q[i].produced + q[i].consumed;
        if (q[i].end_ns > t1)
            t1 = q[i].end_ns;
        free(q[i].blocks);
        free(q[i].count);
    }
    double elapsed = (double)(t1 - t0) * 1e-9;
    printf("RESULT workload=xthread pairs=%ld min=%ld max=%ld batch=%ld depth=%ld seconds=%.3f ops=%llu "
           "ops_per_sec=%.0f\n",
           pairs, min, max, batch, depth, elapsed, (unsigned long long)ops,
           (double)ops / elapsed);
    free(th);
    free(q);
    return 0;
}
