/* Statistics: per-class counters kept in the slow paths plus one counter
 * per local free, summed over every heap when asked. Allocations are
 * derived (blocks into caches - blocks out of caches + local frees - blocks
 * cached now), so the malloc fast path counts nothing. Reads of other
 * threads' counters are racy by design: a snapshot, not a ledger. */
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "internal.h"
#include "hakmem.h"


void hak_stats_collect(struct hak_class_totals *out)
{
    memset(out, 0, sizeof(*out) * HAK_NCLASS);
    hak_heap_pool_lock(); /* keeps every TLS front we read mapped */
    for (struct hak_heap *h = hak_heap_first(); h; h = h->all_next) {
        struct hak_tls *t = h->tls;
        for (unsigned c = 1; c < HAK_NCLASS; c++) {
            uint64_t local = h->st[c].frees, cached = 0;
            if (t && (h->in_use || h->parked)) {
                local += t->c[c].frees;
                cached = t->c[c].count;
            }
            out[c].refills += h->st[c].refills;
            out[c].allocs += h->st[c].refilled - h->st[c].flushed + local - cached;
            out[c].frees += local;
        }
    }
    hak_heap_pool_unlock();
    for (unsigned c = 1; c < HAK_NCLASS; c++)
        out[c].frees += hak_remote_frees(c);
}

size_t hak_resident_bytes(void)
{
    return hak_provision_resident() + hak_heap_resident() + hak_large_resident();
}

static void out(const char *s)
{
    hak_write_str(2, s);
}

HAK_API void hak_stats_print(void)
{
    struct hak_class_totals tot[HAK_NCLASS];
    char line[160];
    if (!hak_ready()) {
        out("hakmem: no allocation made\n");
        return;
    }
    hak_stats_collect(tot);
    out("hakmem: class     size       allocs        frees   live-bytes    refills\n");
    for (unsigned c = 1; c < HAK_NCLASS; c++) {
        if (!tot[c].allocs && !tot[c].frees)
            continue;
        int64_t live = (int64_t)(tot[c].allocs - tot[c].frees);
        snprintf(line, sizeof line, "hakmem: %5u %8u %12llu %12llu %12lld %10llu\n", c,
                 hak_classes[c].size, (unsigned long long)tot[c].allocs,
                 (unsigned long long)tot[c].frees, (long long)live * hak_classes[c].size,
                 (unsigned long long)tot[c].refills);
        out(line);
    }
    uint64_t large_live, large_cached, large_blocks;
    hak_large_stats(&large_live, &large_cached, &large_blocks);
    snprintf(line, sizeof line, "hakmem: large blocks=%llu live-bytes=%llu cached-bytes=%llu\n",
             (unsigned long long)large_blocks, (unsigned long long)large_live,
             (unsigned long long)large_cached);
    out(line);
    struct hak_provision_stats ps;
    hak_provision_stats(&ps);
    snprintf(line, sizeof line, "hakmem: superslabs acquired=%llu released=%llu warm=%llu abandoned=%u\n",
             (unsigned long long)(ps.acquired[0] + ps.acquired[1]),
             (unsigned long long)(ps.released[0] + ps.released[1]), (unsigned long long)ps.warm,
             hak_ss_abandoned_count());
    out(line);
    snprintf(line, sizeof line,
             "hakmem: returned units=%llu KiB superslabs: to the os=%llu to the daemon=%llu taken by the "
             "daemon=%llu\n",
             (unsigned long long)(ps.unit_bytes >> 10), (unsigned long long)ps.purged,
             (unsigned long long)ps.returned, (unsigned long long)ps.reclaimed);
    out(line);
    snprintf(line, sizeof line, "hakmem: superslabs pagerd=%llu embedded=%llu fallbacks=%llu\n",
             (unsigned long long)ps.acquired[HAK_PROV_PAGERD],
             (unsigned long long)ps.acquired[HAK_PROV_EMBEDDED], (unsigned long long)ps.fallbacks);
    out(line);
    snprintf(line, sizeof line, "hakmem: os calls mmap=%llu munmap=%llu mprotect=%llu madvise=%llu\n",
             (unsigned long long)hak_os_calls(HAK_OS_MMAP), (unsigned long long)hak_os_calls(HAK_OS_MUNMAP),
             (unsigned long long)hak_os_calls(HAK_OS_MPROTECT),
             (unsigned long long)hak_os_calls(HAK_OS_MADVISE));
    out(line);
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) == 0) {
        snprintf(line, sizeof line, "hakmem: peak RSS %ld KiB\n", ru.ru_maxrss);
        out(line);
    }
}

__attribute__((destructor)) static void stats_at_exit(void)
{
    if (hak_opt.stats)
        hak_stats_print();
}
