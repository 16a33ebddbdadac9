/* What backs a client's file. On a fault, 4 KiB pages cost the client one
 * fault per 4 KiB however early the daemon zeroed them; a 2 MiB page costs
 * one fault per 2 MiB. Two kinds, both pre-faulted a pair of SuperSlabs at
 * a time:
 *   hugetlb  pages of the host's reserved pool (a hugetlbfs memfd). A pool
 *            page never goes back to the general allocator, so it stays
 *            backed (on a virtual machine: by the host) and zeroing it is
 *            all a pre-fault costs. Not charged to any memory cgroup: only
 *            for clients whose cgroup has no limit along its path.
 *   THP      shared-memory transparent huge pages, charged like 4 KiB
 *            ones (a charger pre-faults them inside the client's cgroup).
 *            fallocate gives them only where shmem THP is "always"; under
 *            "advise", the operator's usual choice, only a fault through a
 *            mapping marked MADV_HUGEPAGE allocates one. So they are
 *            pre-faulted by MADV_POPULATE_WRITE over such a mapping: ours
 *            (io_uring's madvise, charger.c) or a charger's
 *            (pages_populate_huge).
 * 4 KiB pages where neither is to be had, with the reason. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

#include "pagerd.h"

#define THP_DIR "/sys/kernel/mm/transparent_hugepage/"
#define SHMEM_ENABLED THP_DIR "shmem_enabled"
#define SHMEM_ENABLED_2M THP_DIR "hugepages-2048kB/shmem_enabled"
#define PMD_SIZE_FILE THP_DIR "hpage_pmd_size"
#define HUGETLB_DIR "/sys/kernel/mm/hugepages/hugepages-2048kB/"
/* A session starts only with this many pool pages free (its control area
 * takes one), so that a nearly dry pool goes to no new client. */
#define HUGETLB_MIN_FREE 8u

/* The bracketed word of a sysfs choice ("always [advise] never"). */
static bool read_choice(const char *path, char *out, size_t len)
{
    FILE *f = fopen(path, "re");
    if (!f)
        return false;
    char line[256];
    bool ok = fgets(line, sizeof line, f) != NULL;
    fclose(f);
    char *open = ok ? strchr(line, '[') : NULL, *close = open ? strchr(open, ']') : NULL;
    if (!close || (size_t)(close - open) > len)
        return false;
    memcpy(out, open + 1, (size_t)(close - open - 1));
    out[close - open - 1] = '\0';
    return true;
}

static bool read_u32(const char *path, uint32_t *v)
{
    FILE *f = fopen(path, "re");
    if (!f)
        return false;
    unsigned long long x;
    bool ok = fscanf(f, "%llu", &x) == 1;
    fclose(f);
    *v = x > UINT32_MAX ? UINT32_MAX : (uint32_t)x;
    return ok;
}

bool pages_hugetlb_count(uint32_t *total, uint32_t *free_pages)
{
    *total = *free_pages = 0;
    return read_u32(HUGETLB_DIR "nr_hugepages", total) && read_u32(HUGETLB_DIR "free_hugepages", free_pages);
}

/* Shmem THP of 2 MiB in any mode but never and deny. The per-size
 * setting, where the kernel has one, wins unless it inherits. */
static bool thp_offered(char *why, size_t len)
{
    char top[32], per[32];
    uint32_t pmd;
    if (!read_choice(SHMEM_ENABLED, top, sizeof top)) {
        snprintf(why, len, "no shared-memory huge pages in this kernel");
        return false;
    }
    if (read_u32(PMD_SIZE_FILE, &pmd) && pmd != HAK_SHM_HUGE_SIZE) {
        snprintf(why, len, "huge pages are %u KiB here, not 2048", pmd >> 10);
        return false;
    }
    const char *mode = top, *path = SHMEM_ENABLED;
    if (read_choice(SHMEM_ENABLED_2M, per, sizeof per) && strcmp(per, "inherit") != 0) {
        mode = per;
        path = SHMEM_ENABLED_2M;
    }
    if (strcmp(mode, "never") == 0 || strcmp(mode, "deny") == 0) {
        snprintf(why, len, "shmem THP is '%s' in %s", mode, path);
        return false;
    }
    return true;
}

/* The host's offer under the settings, at start and on every reload (the
 * pool is looked at again for every session); logged when it changes. */
void pages_detect(void)
{
    char why[sizeof pd.pages_why] = "", thp_why[sizeof pd.pages_why] = "";
    uint32_t set = pd.set.huge_pages, total, nfree;
    bool thp = set != HUGE_SET_OFF && set != HUGE_SET_HUGETLB && thp_offered(thp_why, sizeof thp_why);
    bool pool = pages_hugetlb_count(&total, &nfree) && total > 0;
    enum hak_pages p = HAK_PAGES_4K;
    if (set == HUGE_SET_OFF)
        snprintf(why, sizeof why, "huge_pages = off");
    else if ((set == HUGE_SET_AUTO || set == HUGE_SET_HUGETLB) && pool)
        p = HAK_PAGES_HUGETLB;
    else if (set == HUGE_SET_THP) /* why not hugetlb: the setting, when THP is to be had */
        snprintf(why, sizeof why, "%s", thp ? "huge_pages = thp" : thp_why);
    else if (set == HUGE_SET_HUGETLB)
        snprintf(why, sizeof why, "no 2 MiB pages reserved (vm.nr_hugepages = 0)");
    else
        snprintf(why, sizeof why, "no 2 MiB pages reserved (vm.nr_hugepages = 0)%s%s", thp ? "" : "; ",
                 thp ? "" : thp_why);
    if (p == HAK_PAGES_4K && thp)
        p = HAK_PAGES_THP;
    if (p == pd.pages && thp == pd.thp && strcmp(why, pd.pages_why) == 0)
        return;
    pd.pages = p;
    pd.thp = thp;
    memcpy(pd.pages_why, why, sizeof why);
    if (p == HAK_PAGES_HUGETLB)
        log_info("pages: 2 MiB from the host's pool (%u reserved, %u free) for clients in unlimited memory "
                 "cgroups; the others: %s",
                 total, nfree, thp ? "2 MiB shmem THP" : "4 KiB");
    else if (p == HAK_PAGES_THP)
        log_info("pages: 2 MiB shmem THP (hugetlb: %s)", why);
    else if (set == HUGE_SET_OFF)
        log_info("pages: 4 KiB: %s", why);
    else
        log_warnx("pages: 4 KiB: %s", why);
}

/* A client in a cgroup with a limit would escape it with pool pages. */
static bool cgroup_unlimited(const struct memcg *cg)
{
    uint64_t room, limit, usage;
    return cg->mode != CHARGE_NCG && cg_read_room(cg->where.dir, cg->where.top, cg->where.version, &room, &limit,
                                                  &usage) &&
           room == UINT64_MAX;
}

/* The kind for a new session (its cgroup known); a file of pool pages
 * holds whole 2 MiB pages, so its capacity is made even. */
enum hak_pages pages_choose(struct client *c, uint32_t *capacity)
{
    uint32_t total, nfree;
    if (pd.pages == HAK_PAGES_HUGETLB && *capacity >= 2 && pages_hugetlb_count(&total, &nfree) &&
        nfree >= HUGETLB_MIN_FREE && cgroup_unlimited(c->cg)) {
        *capacity &= ~1u;
        return HAK_PAGES_HUGETLB;
    }
    return pd.thp ? HAK_PAGES_THP : HAK_PAGES_4K;
}

/* Mappings of a hugetlbfs file cover whole huge pages. */
uint64_t pages_map_len(enum hak_pages p, uint64_t len)
{
    return p == HAK_PAGES_HUGETLB ? (len + HAK_SHM_HUGE_SIZE - 1) & ~(HAK_SHM_HUGE_SIZE - 1) : len;
}

/* Map [off, off + len) of fd at a 2 MiB-aligned address, so that huge pages
 * of the file can be mapped whole; MAP_NORESERVE, or a hugetlbfs file would
 * reserve pool pages for the whole range. NULL on failure (errno set). */
void *pages_map_aligned(int fd, uint64_t off, uint64_t len)
{
    size_t span = len + HAK_SHM_HUGE_SIZE;
    char *p = mmap(NULL, span, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    char *at = (char *)(((uintptr_t)p + HAK_SHM_HUGE_SIZE - 1) & ~(uintptr_t)(HAK_SHM_HUGE_SIZE - 1));
    if (at > p)
        munmap(p, (size_t)(at - p));
    if (p + span > at + len)
        munmap(at + len, (size_t)(p + span - (at + len)));
    if (mmap(at, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED | MAP_NORESERVE, fd, (off_t)off) == MAP_FAILED) {
        int e = errno;
        munmap(at, len);
        errno = e;
        return NULL;
    }
    return at;
}

/* A charger's pre-fault of THP: [off, off + len) mapped for the moment,
 * marked, written through. 0 or -errno. */
int pages_populate_huge(int fd, uint64_t off, uint64_t len)
{
    char *at = pages_map_aligned(fd, off, len);
    if (!at)
        return -errno;
    int res = 0;
    if (madvise(at, len, MADV_HUGEPAGE) < 0 || madvise(at, len, MADV_POPULATE_WRITE) < 0)
        res = -errno;
    munmap(at, len);
    return res;
}
