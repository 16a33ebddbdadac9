/* Fuzz target: the daemon's handling of what clients send on the socket,
 * through session_received (pagerd/session.c) and everything it reaches:
 * the size and header checks (hak_msg_check), hello (refusals, the memfd,
 * its layout and seals, the welcome), detach, status requests
 * (status.c), misuse, hang-ups and failed receives, on up to three
 * connections at once, with the periodic pass (pool.c, reclaim.c) and the
 * completions of pre-faults and punches in between. pagerd_harness.c
 * checks every reply and the daemon's records after every step.
 *
 * Input: one settings byte (fz_reset), then steps: an op byte (op % 10), a
 * byte a (the connection a % 3 where the op has one), then arguments:
 *   0 datagram     length L, L bytes
 *   1 hello        capacity (u32)
 *   2 detach
 *   3 status request
 *   4 recv error   errno
 *   5 tick         of a ms
 *   6 completions  a: which fail (bit k: the k-th)
 *   7 client       node, pops, returns: a well-behaved client's use
 *   8 deaf         the client stops reading its replies
 *   9 cgroup room  a: MiB of room in the clients' cgroup (255: no limit) */
#include "pagerd_harness.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fz_in in = {data, size};
    fz_reset(fz_u8(&in));
    while (in.n) {
        uint8_t op = fz_u8(&in) % 10;
        uint8_t a = fz_u8(&in);
        unsigned conn = a % FZ_CONNS;
        switch (op) {
        case 0: {
            unsigned char buf[256];
            size_t len = fz_bytes(&in, buf, fz_u8(&in));
            fz_deliver(conn, buf, len);
            break;
        }
        case 1:
            fz_deliver_hello(conn, fz_u32(&in));
            break;
        case 2:
            fz_deliver_hdr(conn, HAK_MSG_DETACH);
            break;
        case 3:
            fz_deliver_hdr(conn, a & 0x80 ? HAK_MSG_DRY : HAK_MSG_STATUS_REQ);
            break;
        case 4:
            fz_deliver_error(conn, 1 + fz_u8(&in) % 130);
            break;
        case 5:
            fz_tick(a);
            break;
        case 6:
            fz_complete(a);
            break;
        case 7: {
            struct fz_conn *k = &fz_conn[conn];
            uint8_t node = fz_u8(&in), pops = fz_u8(&in) % 16, returns = fz_u8(&in) % 16;
            fz_client_pop(k, node % (k->view ? k->layout.nnodes : 1), pops);
            for (unsigned i = 0; i < returns; i++)
                fz_client_return(k, i);
            break;
        }
        case 8:
            fz_stop_reading(conn);
            break;
        case 9:
            fz_cgroup_room(a);
            break;
        }
    }
    fz_finish();
    return 0;
}
