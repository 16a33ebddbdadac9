/* The contract between libhakclient and hakmem-pagerd: socket messages,
 * the layout of a client's shared memory file, and its rings. Both sides
 * compile this header and the .c files beside it; nothing else is shared.
 *
 * Trust: the daemon treats everything a client writes (messages, ring
 * indices and slots, counters) as hostile and validates it before use; the
 * client validates what the daemon sends (layout, ring slots) as well, so a
 * bug on either side is caught at the boundary.
 *
 * Session outline:
 *   1. The client connects to the daemon's Unix socket (SOCK_SEQPACKET) and
 *      sends HELLO with the protocol version and the capacity it asks for.
 *   2. The daemon takes the client's pid and uid from SO_PEERCRED, creates
 *      one memfd for the client, sizes it, seals it against shrinking and
 *      growing, and replies WELCOME (the layout) with the memfd attached
 *      (SCM_RIGHTS), or REFUSE with a reason.
 *   3. The client maps the control area, and the SuperSlab area once, into
 *      its arena. The daemon keeps each node's fill ring topped up with
 *      pre-faulted SuperSlabs; client threads pop them without a lock or a
 *      system call, and push emptied ones onto the return ring.
 *   4. The socket stays open: its hang-up (exit, crash, DETACH) tells the
 *      daemon to release everything the client held. */
#ifndef HAKMEM_SHM_H
#define HAKMEM_SHM_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HAK_SHM_MAGIC 0x4d4b4148u /* "HAKM" little-endian */
#define HAK_SHM_VERSION 3u

#define HAK_SHM_SS_SHIFT 20
#define HAK_SHM_SS_SIZE ((uint64_t)1 << HAK_SHM_SS_SHIFT)
/* A huge page holds a pair of SuperSlabs: an even index and the next. */
#define HAK_SHM_HUGE_SHIFT 21
#define HAK_SHM_HUGE_SIZE ((uint64_t)1 << HAK_SHM_HUGE_SHIFT)
#define HAK_SHM_MAX_NODES 64u
#define HAK_SHM_MAX_CPUS 4096u
#define HAK_SHM_FILL_SLOTS 256u     /* per node; power of two */
#define HAK_SHM_RETURN_SLOTS 1024u  /* power of two */
#define HAK_SHM_MAX_CAPACITY (1u << 20) /* SuperSlabs per client file (1 TiB) */
#define HAK_SHM_DEFAULT_SOCKET "/run/hakmem/pagerd.sock"

/* ---- socket messages ----
 * One message per SOCK_SEQPACKET datagram. A receiver checks that the
 * datagram is exactly the size its type says, and the header, before it
 * reads the body. */
enum hak_msg_type {
    HAK_MSG_HELLO = 1,      /* client -> daemon: hak_msg_hello */
    HAK_MSG_WELCOME = 2,    /* daemon -> client: hak_msg_welcome + memfd */
    HAK_MSG_REFUSE = 3,     /* daemon -> client: hak_msg_refuse */
    HAK_MSG_DETACH = 4,     /* client -> daemon: hak_msg_hdr; forget this session */
    HAK_MSG_STATUS_REQ = 5, /* any local user -> daemon: hak_msg_hdr */
    HAK_MSG_STATUS = 6,     /* daemon -> requester: hak_msg_status + records */
    HAK_MSG_DRY = 7,        /* client -> daemon: hak_msg_hdr; a fill ring ran dry, fill now */
};

struct hak_msg_hdr {
    uint32_t magic;   /* HAK_SHM_MAGIC */
    uint16_t version; /* HAK_SHM_VERSION */
    uint16_t type;    /* enum hak_msg_type */
    uint32_t len;     /* bytes in the datagram, header included */
    uint32_t flags;   /* 0 */
};

struct hak_msg_hello {
    struct hak_msg_hdr hdr;
    uint32_t capacity; /* SuperSlabs asked for: 1..HAK_SHM_MAX_CAPACITY */
    uint32_t flags;    /* 0 */
    uint64_t reserved; /* 0 */
};

/* The layout of the client's file. Every field is a pure function of
 * (nnodes, capacity) and the constants above (hak_shm_layout_compute), so the
 * client recomputes it and rejects a welcome that disagrees. */
struct hak_shm_layout {
    uint64_t file_size;    /* ss_offset + capacity << 20 */
    uint64_t ctrl_size;    /* control area at offset 0, page multiple */
    uint64_t idle_offset;  /* the idle words (capacity x uint32), in the control area */
    uint64_t ss_offset;    /* SuperSlab area, 2 MiB aligned */
    uint32_t capacity;     /* SuperSlabs in the file */
    uint32_t nnodes;       /* 1..HAK_SHM_MAX_NODES */
    uint32_t fill_slots;   /* HAK_SHM_FILL_SLOTS */
    uint32_t return_slots; /* HAK_SHM_RETURN_SLOTS */
};

struct hak_msg_welcome {
    struct hak_msg_hdr hdr;
    struct hak_shm_layout layout;
    uint64_t session;  /* daemon's id for this client, for logs and status */
    uint32_t features; /* 0 */
    uint32_t reserved;
};

enum hak_refuse_code {
    HAK_REFUSE_VERSION = 1,  /* protocol version not supported */
    HAK_REFUSE_LIMIT = 2,    /* per-uid or total limit reached */
    HAK_REFUSE_RESOURCE = 3, /* the daemon could not create the file */
    HAK_REFUSE_BAD = 4,      /* malformed request */
};

struct hak_msg_refuse {
    struct hak_msg_hdr hdr;
    int32_t code;      /* enum hak_refuse_code */
    char reason[92];   /* NUL-terminated text for the client's log */
};

/* ---- status (for hakctl) ----
 * HAK_MSG_STATUS: this header, then nnodes hak_status_node records, then
 * nclients hak_status_client records, then nusers hak_status_user
 * records, in one datagram. A requester past the status rate limit gets
 * HAK_MSG_REFUSE (HAK_REFUSE_LIMIT) instead. */
struct hak_status_daemon {
    char version[16];        /* daemon version string, NUL-terminated */
    uint64_t uptime_ms;
    uint32_t pid;
    uint32_t nnodes;
    uint32_t nclients;
    uint32_t numa;           /* 1 when libnuma is in use */
    uint64_t ss_total;       /* SuperSlabs currently accounted to clients */
    uint64_t ss_limit_total; /* daemon-wide limit */
    uint64_t ss_limit_client;/* per-client limit */
    uint64_t ss_limit_uid;   /* limit over the sessions of one uid */
    uint32_t sessions_uid;   /* sessions one uid may have */
    uint32_t nusers;         /* uids with a connection */
    uint32_t status_per_sec; /* status requests one uid (and one connection) may make */
    uint32_t pages;          /* enum hak_pages: the best new files may get */
    uint32_t thp;            /* 1: shmem THP available (for clients hugetlb may not serve) */
    uint32_t hugetlb_total;  /* 2 MiB pages in the host's pool */
    uint32_t hugetlb_free;   /* of which free */
    char pages_why[128];      /* why not huge pages, or not hugetlb; NUL-terminated */
};

struct hak_status_node {
    uint32_t node;
    uint32_t ready;    /* pre-faulted SuperSlabs waiting in fill rings */
    uint32_t dirty;    /* returned SuperSlabs waiting for reuse or punch */
    uint32_t clients;  /* clients last seen on this node */
    uint64_t prefaulted; /* SuperSlabs pre-faulted on this node since start */
    uint64_t punched;    /* SuperSlabs punched back to the OS since start */
};

struct hak_status_client {
    int32_t pid;
    uint32_t uid;
    uint32_t node;        /* node whose ring the client drew from last */
    uint32_t capacity;    /* SuperSlabs in its file */
    uint64_t session;
    uint32_t held;        /* SuperSlabs in the client's hands */
    uint32_t ring_level;  /* SuperSlabs waiting in its fill rings */
    uint32_t dirty;       /* returned, waiting for reuse or punch */
    uint32_t watermark;   /* current fill target per ring */
    uint64_t served;      /* SuperSlabs the client popped */
    uint64_t returned;    /* SuperSlabs it gave back */
    uint64_t limit_hits;  /* times a refill was refused at a limit */
    uint64_t connected_ms;/* milliseconds since it connected */
    uint32_t charge;      /* enum hak_charge: whose cgroup pays for its pages */
    uint32_t daemon_held; /* of its SuperSlabs, those whose pages the daemon's cgroup pays for */
    uint64_t cg_limit;    /* its memory cgroup's limit, bytes (UINT64_MAX: none) */
    uint64_t cg_usage;    /* and usage, as last read (0 if never) */
    uint64_t cgroup_hits; /* limit hits for want of room in its cgroup */
    uint64_t reclaimed;   /* idle SuperSlabs the daemon took back (idle words) */
    uint32_t pages;       /* enum hak_pages of its file */
    uint32_t reserved;    /* 0 */
    char cgroup[64];      /* the cgroup's path, its last 63 bytes; NUL-terminated */
};

/* What backs a client's SuperSlabs. With huge pages the daemon pre-faults
 * and punches an aligned pair of SuperSlabs at a time, so that the client's
 * first touch maps 2 MiB with one fault. */
enum hak_pages {
    HAK_PAGES_4K = 1,      /* base pages */
    HAK_PAGES_THP = 2,     /* shared-memory transparent huge pages, 2 MiB */
    HAK_PAGES_HUGETLB = 3, /* 2 MiB pages of the host's reserved pool (a hugetlbfs file) */
};

/* Who pre-faults a client's pages (and so whose memory cgroup pays). */
enum hak_charge {
    HAK_CHARGE_OWN = 1,     /* the daemon; the client shares its cgroup */
    HAK_CHARGE_HELPER = 2,  /* a charger process inside the client's cgroup */
    HAK_CHARGE_DAEMON = 3,  /* the daemon, counted against the client cgroup's room */
    HAK_CHARGE_UNKNOWN = 4, /* the daemon; the client's cgroup could not be read */
};

struct hak_status_user {
    uint32_t uid;
    uint32_t conns;       /* connections open */
    uint32_t sessions;
    uint32_t charged;     /* SuperSlabs accounted to its sessions */
    uint64_t limit_hits;  /* refills refused at the per-uid limit */
    uint64_t refused;     /* connections, sessions and status requests refused */
};

struct hak_msg_status {
    struct hak_msg_hdr hdr;
    struct hak_status_daemon daemon;
    /* struct hak_status_node nodes[daemon.nnodes]; */
    /* struct hak_status_client clients[daemon.nclients]; */
};

#define HAK_STATUS_MAX_CLIENTS 1024u
#define HAK_STATUS_MAX_USERS 256u
#define HAK_STATUS_MAX_BYTES                                                                  \
    (sizeof(struct hak_msg_status) + HAK_SHM_MAX_NODES * sizeof(struct hak_status_node) + \
     HAK_STATUS_MAX_CLIENTS * sizeof(struct hak_status_client) +                           \
     HAK_STATUS_MAX_USERS * sizeof(struct hak_status_user))

/* ---- the control area (offset 0 of the file) ---- */

/* A ring index alone on its cache line, so producer and consumer do not
 * share a line. */
struct hak_shm_index {
    _Atomic uint32_t v;
    char pad[60];
};

/* A node's fill ring: the daemon pushes ready SuperSlabs, any client thread
 * pops. Slots hold byte offsets in the file; the client checks each for
 * range and 1 MiB alignment before it uses it.
 *   tail: written by the daemon only (release), after it filled the slot;
 *         read by clients (acquire).
 *   head: advanced by clients with CAS (acq_rel) after reading the slot at
 *         head; read by the daemon (acquire), which validates
 *         tail - head <= fill_slots before trusting it.
 * A slot is rewritten only when tail reaches head + fill_slots, i.e. after
 * every client that read it has moved head past it (its CAS would fail). */
struct hak_shm_fill_ring {
    struct hak_shm_index head;
    struct hak_shm_index tail;
    /* Daemon-written: SuperSlabs being pre-faulted for this ring. A hint: a
     * client that finds the ring empty while some are coming may wait for
     * them a little (a huge page is zeroed in a fraction of a millisecond;
     * its own fresh memory would cost it a fault per 4 KiB). */
    struct hak_shm_index coming;
    _Atomic uint64_t slot[HAK_SHM_FILL_SLOTS];
};

/* The return ring: the client pushes emptied SuperSlabs (one producer at a
 * time: the client serialises its pushes), the daemon pops. A SuperSlab the
 * daemon took back idle (HAK_IDLE_TAKEN) is pushed here too once the
 * client notices: the daemon hands it out again only after that.
 *   tail: written by the client (release) after it filled the slot.
 *   head: written by the daemon (release) after it consumed a slot.
 * Slots hold byte offsets in the file; the daemon checks each for range,
 * 1 MiB alignment and that the SuperSlab is in this client's hands (or
 * was taken back idle). Bit 0 (HAK_SHM_RETURN_NOW) asks for its pages to
 * go back at once (malloc_trim): with 4 KiB pages the client punches them
 * itself; half of a huge page it cannot, the daemon does when the other
 * half is free too. */
#define HAK_SHM_RETURN_NOW 1ull
struct hak_shm_return_ring {
    struct hak_shm_index head;
    struct hak_shm_index tail;
    _Atomic uint64_t slot[HAK_SHM_RETURN_SLOTS];
};

/* The header of the control area. The daemon writes the fixed fields once,
 * before the file is handed over; the client reads them only to check them
 * against the welcome. Counters are advisory (statistics): whoever reads the
 * other side's counters treats them as display values only. */
struct hak_shm_ctrl {
    uint32_t magic;       /* daemon, once: HAK_SHM_MAGIC */
    uint32_t version;     /* daemon, once */
    struct hak_shm_layout layout; /* daemon, once: same as the welcome */
    uint32_t ncpus;       /* daemon, once: entries of cpu_node in use */
    uint32_t pages;       /* daemon, once: enum hak_pages */
    _Atomic uint64_t heartbeat; /* daemon: bumped every tick; client reads */
    _Atomic uint32_t now_ms;    /* daemon: its CLOCK_MONOTONIC in ms, every tick: the
                                   clock of the idle words' deadlines */
    char pad1[60];
    /* Client-written statistics (daemon: display only). */
    _Atomic uint64_t c_pops;      /* SuperSlabs popped */
    _Atomic uint64_t c_fallbacks; /* acquisitions served by embedded instead */
    _Atomic uint64_t c_returns;   /* SuperSlabs pushed to the return ring */
    _Atomic uint64_t c_idle;      /* idle words published: a hint that one may be due */
    char pad2[32];
    /* cpu -> node map; daemon, once. Client checks each value < nnodes. */
    uint8_t cpu_node[HAK_SHM_MAX_CPUS];
};

/* ---- idle SuperSlabs ----
 * One word per SuperSlab of the file (layout.idle_offset), so that the
 * daemon can take back what a client keeps warm but no longer uses, with
 * no call from the client (an idle program, or one whose threads exited):
 *   HAK_IDLE_BUSY   in use, or not the client's: the daemon leaves it;
 *   HAK_IDLE_RING   in a fill ring, not popped yet;
 *   a deadline      (any other value) the client holds it empty and warm;
 *                   from this time on (CLOCK_MONOTONIC in ms, wrapping)
 *                   the daemon may take it;
 *   HAK_IDLE_TAKEN  the daemon took it: its pages are punched, the client
 *                   holds it no more.
 * The client writes a deadline (release order) when it puts an emptied
 * SuperSlab aside, and takes it back into use with CAS(deadline -> BUSY);
 * the daemon takes one with CAS(deadline -> TAKEN), only once the deadline
 * has passed and only for a SuperSlab in the client's hands by its own
 * records. Exactly one of the two CASes wins. Likewise for what waits in
 * a fill ring: the daemon writes RING before it pushes a SuperSlab; a
 * client that pops one makes it its own with CAS(RING -> BUSY), and the
 * daemon may take back, with CAS(RING -> TAKEN), what waits in the rings
 * of a client that stopped popping. A client whose CAS failed stops using
 * that SuperSlab and pushes it onto the return ring; only then does the
 * daemon hand it out again. The deadlines are on the daemon's clock
 * (ctrl->now_ms), so that a client in another time namespace agrees.
 * Hostile both ways: a client that scribbles the words can lose only its
 * own SuperSlabs' contents; the daemon never reads a word for a SuperSlab
 * the client does not hold, nor acts on one that is not a due deadline;
 * the client treats TAKEN on a SuperSlab it never published as the
 * daemon's claim and stops using it. */
#define HAK_IDLE_BUSY 0u
#define HAK_IDLE_TAKEN 1u
#define HAK_IDLE_RING 2u

static inline uint32_t hak_idle_deadline(uint32_t ms)
{
    return ms > HAK_IDLE_RING ? ms : HAK_IDLE_RING + 1; /* never one of the marks */
}
static inline bool hak_idle_due(uint32_t word, uint32_t now_ms)
{
    return word > HAK_IDLE_RING && (int32_t)(now_ms - word) >= 0;
}

/* ---- shm/layout.c ---- */
bool hak_shm_layout_compute(uint32_t nnodes, uint32_t capacity, struct hak_shm_layout *out);
bool hak_shm_layout_equal(const struct hak_shm_layout *a, const struct hak_shm_layout *b);
uint64_t hak_shm_fill_ring_offset(uint32_t node);
uint64_t hak_shm_return_ring_offset(uint32_t nnodes);
/* The rings in a mapping of the control area at ctrl. */
struct hak_shm_fill_ring *hak_shm_fill_ring(void *ctrl, uint32_t node);
struct hak_shm_return_ring *hak_shm_return_ring(void *ctrl, const struct hak_shm_layout *l);
_Atomic uint32_t *hak_shm_idle_words(void *ctrl, const struct hak_shm_layout *l);
/* SuperSlab idx's offset in the file, and back: an offset the other side
 * wrote is a SuperSlab's only if it is in the SuperSlab area and 1 MiB
 * aligned. */
uint64_t hak_shm_ss_offset(const struct hak_shm_layout *l, uint32_t idx);
enum hak_shm_off { HAK_SHM_OFF_OK = 0, HAK_SHM_OFF_RANGE, HAK_SHM_OFF_MISALIGNED };
enum hak_shm_off hak_shm_ss_index(const struct hak_shm_layout *l, uint64_t off, uint32_t *idx);

/* ---- shm/msg.c ---- */
void hak_msg_init(struct hak_msg_hdr *h, enum hak_msg_type type, uint32_t len);
/* Check a received datagram of n bytes: header sane, our version, type
 * known, and n exactly the size of that type. Returns the type, or 0 if
 * invalid. */
unsigned hak_msg_check(const void *buf, size_t n);
/* The type and version of a datagram whose header is sane (magic, length)
 * whatever its version, to answer one of another version; false if not. */
bool hak_msg_peek(const void *buf, size_t n, unsigned *type, unsigned *version);
/* "2M-hugetlb", "2M-thp", "4k", or "?" for a value of enum hak_pages. */
const char *hak_pages_name(unsigned pages);
/* "own", "helper", "daemon", "unknown", or "?" for a value of enum hak_charge. */
const char *hak_charge_name(unsigned charge);

/* ---- shm/ring.c ---- */
/* Daemon side: SuperSlabs waiting in the ring. Returns false if the client
 * corrupted the indices. */
bool hak_fill_ring_level(struct hak_shm_fill_ring *r, uint32_t *level);
/* Daemon side: returns false if full or corrupt (check the level first). */
bool hak_fill_ring_push(struct hak_shm_fill_ring *r, uint64_t offset);
/* Client side, any number of threads. Returns 1 with *offset (unvalidated),
 * 0 if empty, -1 if the daemon's tail is insane. */
int hak_fill_ring_pop(struct hak_shm_fill_ring *r, uint64_t *offset);
/* Client side, one pusher at a time. Returns false if full. */
bool hak_return_ring_push(struct hak_shm_return_ring *r, uint64_t offset);
/* Daemon side. Returns 1 with *offset, 0 if empty, -1 if the indices are
 * corrupt. The offset itself is unvalidated. */
int hak_return_ring_pop(struct hak_shm_return_ring *r, uint64_t *offset);

#endif /* HAKMEM_SHM_H */
