#!/usr/bin/env python3
"""Write the seed corpora of the fuzz targets (tests/fuzz/corpus/NAME/):
a few small valid inputs and edge cases each, in the input format the
comment at the top of each fuzz_NAME.c describes. Run from anywhere;
files of the same name are rewritten, others (crash-* inputs of fixed
bugs) are left alone."""
import os
import struct

MAGIC = 0x4D4B4148
VERSION = 1
HELLO, WELCOME, REFUSE, DETACH, STATUS_REQ, STATUS = 1, 2, 3, 4, 5, 6
SS = 1 << 20

HERE = os.path.dirname(os.path.abspath(__file__))


def write(target, name, *parts):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(b"".join(parts))


def u8(v):
    return struct.pack("<B", v & 0xFF)


def u16(v):
    return struct.pack("<H", v & 0xFFFF)


def u32(v):
    return struct.pack("<I", v & 0xFFFFFFFF)


def u64(v):
    return struct.pack("<Q", v & 0xFFFFFFFFFFFFFFFF)


def hdr(mtype, length, version=VERSION, magic=MAGIC, flags=0):
    return struct.pack("<IHHII", magic, version, mtype, length, flags)


def hello(capacity, version=VERSION):
    return hdr(HELLO, 32, version) + struct.pack("<IIQ", capacity, 0, 0)


def layout(nnodes, capacity):
    ctrl = (8192 + nnodes * 4096 + 12288 + 4095) // 4096 * 4096
    return struct.pack("<QQQIIII", SS + capacity * SS, ctrl, SS, capacity, nnodes, 256, 1024)


def welcome(nnodes, capacity, session=1):
    return hdr(WELCOME, 72) + layout(nnodes, capacity) + struct.pack("<QII", session, 0, 0)


def refuse(code, reason):
    return hdr(REFUSE, 112) + struct.pack("<i", code) + reason.encode().ljust(92, b"\0")[:92]


def status(nodes, clients, version=b"0.1.0"):
    n = 80 + 32 * len(nodes) + 72 * len(clients)
    d = version.ljust(16, b"\0")[:16]
    d += struct.pack("<QIIIIQQQ", 12345, 42, len(nodes), len(clients), 0, 3, 16384, 4096)
    body = b"".join(struct.pack("<IIIIQQ", i, r, dt, c, p, pu) for i, (r, dt, c, p, pu) in enumerate(nodes))
    body += b"".join(struct.pack("<iIIIQIIIIQQQQ", *c) for c in clients)
    return hdr(STATUS, n) + d + body


# ---- shm_msg: nnodes, capacity, field, value, then one datagram ----
def shm_msg(name, nnodes, capacity, field, value, dgram):
    write("shm_msg", name, u32(nnodes) + u32(capacity) + u8(field) + u64(value) + dgram)


shm_msg("hello", 1, 16, 0, 0, hello(16))
shm_msg("hello-old-version", 64, 1 << 20, 3, 7, hello(16, version=9))
shm_msg("welcome", 2, 8, 1, 4096, welcome(2, 8))
shm_msg("refuse", 0, 0, 5, 255, refuse(4, "capacity 0 out of range"))
shm_msg("detach", 4, 1, 6, 1023, hdr(DETACH, 16))
shm_msg("status-req", 65, (1 << 20) + 1, 2, 0, hdr(STATUS_REQ, 16))
shm_msg("status", 1, 4, 4, 2, status([(3, 1, 1, 10, 2)], [(100, 1000, 0, 16, 1, 2, 3, 0, 2, 5, 2, 0, 5000)]))
lie = status([(0, 0, 0, 0, 0)], [])
shm_msg("status-counts-lie", 3, 3, 0, 0, lie[:44] + u32(3) + lie[48:])
shm_msg("bad-magic", 1, 1, 0, 0, hdr(HELLO, 32, magic=0x12345678) + b"\0" * 16)
shm_msg("short", 1, 1, 0, 0, hdr(DETACH, 16)[:10])

# ---- shm_ring: fill head, tail, return head, tail, then steps ----
def ring_steps(*ops):
    out = b""
    for op in ops:
        kind, *args = op
        out += u8(kind)
        if kind in (1, 3):
            out += u64(args[0])
        elif kind == 5:
            out += u8(args[0]) + u32(args[1])
        elif kind == 6:
            out += u8(args[0]) + u16(args[1]) + u64(args[2])
    return out


write("shm_ring", "push-pop", u32(0) * 4,
      ring_steps((1, SS), (1, 2 * SS), (0,), (2,), (2,), (2,), (3, SS), (4,), (4,)))
write("shm_ring", "wrap", u32(0xFFFFFFFE) * 4,
      ring_steps(*[(1, i * SS) for i in range(4)], *[(2,)] * 5, (3, 7), (3, 8), (4,), (4,), (4,)))
write("shm_ring", "corrupt-indices", u32(0) + u32(257) + u32(5) + u32(0),
      ring_steps((0,), (1, SS), (2,), (3, 1), (4,), (5, 1, 0), (2,), (6, 0, 0, 99), (2,)))
write("shm_ring", "full", u32(0) + u32(256) + u32(0) + u32(1024),
      ring_steps((0,), (1, SS), (3, SS), (2,), (1, SS), (4,), (3, SS)))


# ---- pagerd_msg: settings byte, then steps (op, a, arguments) ----
def msg_step(op, a, args=b""):
    return u8(op) + u8(a) + args


def datagram(conn, data):
    return msg_step(0, conn, u8(len(data)) + data)


session = msg_step(1, 0, u32(4)) + msg_step(5, 1) + msg_step(6, 0)
write("pagerd_msg", "hello-status-detach", u8(0x05), session, msg_step(3, 1), msg_step(3, 0), msg_step(2, 0))
write("pagerd_msg", "use-and-reclaim", u8(0x8D), session, msg_step(7, 0, u8(0) + u8(3) + u8(2)), msg_step(5, 1),
      msg_step(5, 60), msg_step(6, 0), msg_step(3, 2), msg_step(5, 1))
write("pagerd_msg", "two-sessions-limit", u8(0x01), session, msg_step(1, 1, u32(8)), msg_step(6, 0), msg_step(5, 1),
      msg_step(3, 2), msg_step(6, 0), msg_step(3, 2), msg_step(4, 0, u8(104)), msg_step(5, 1))
write("pagerd_msg", "prefault-fails", u8(0x42), msg_step(1, 0, u32(2)), msg_step(5, 1), msg_step(6, 0xFF),
      msg_step(6, 0), msg_step(5, 1))
write("pagerd_msg", "bad-hellos", u8(0), datagram(0, hello(4, version=2)), msg_step(1, 1, u32(0)),
      msg_step(1, 2, u32((1 << 20) + 1)), datagram(0, hdr(HELLO, 32) + u32(4) + u32(1) + u64(0)),
      msg_step(1, 0, u32(1 << 20)))
write("pagerd_msg", "misuse", u8(0), msg_step(2, 0), msg_step(1, 1, u32(3)), msg_step(1, 1, u32(3)),
      datagram(2, hdr(WELCOME, 72) + b"\0" * 56), datagram(2, b""), datagram(0, b"\x01" * 200),
      msg_step(4, 1, u8(32)))
write("pagerd_msg", "deaf", u8(0x05), msg_step(8, 0), msg_step(1, 0, u32(4)), msg_step(1, 1, u32(4)),
      msg_step(8, 1), msg_step(3, 1), msg_step(8, 2), msg_step(1, 2, u32(0)))
write("pagerd_msg", "truncated", u8(3), datagram(0, hello(4)[:20]), datagram(1, hdr(STATUS_REQ, 16) + b"\0"),
      datagram(2, hdr(STATUS, 80) + b"\0" * 64))


# ---- pagerd_ring: settings, capacity, then steps ----
def rs(op, *args):
    return u8(op) + b"".join(args)


base = u8(0x2D) + u8(5)
write("pagerd_ring", "pop-return", base, rs(0, u8(0), u8(3)), rs(6, u8(1)), rs(1, u8(0)), rs(1, u8(1)),
      rs(6, u8(1)), rs(8), rs(6, u8(30)), rs(7, u8(0)), rs(6, u8(1)))
write("pagerd_ring", "pop-return-same-tick", base, rs(0, u8(1), u8(2)), rs(1, u8(0)), rs(6, u8(1)), rs(9, u8(2)),
      rs(0, u8(0), u8(1)))
write("pagerd_ring", "return-out-of-range", base, rs(2, u8(1), u8(200)), rs(6, u8(1)))
write("pagerd_ring", "return-misaligned", base, rs(0, u8(0), u8(1)), rs(2, u8(2), u8(0), u32(4096)), rs(6, u8(1)))
write("pagerd_ring", "return-twice", base, rs(0, u8(0), u8(1)), rs(2, u8(3), u8(0)), rs(2, u8(3), u8(0)),
      rs(6, u8(1)))
write("pagerd_ring", "return-not-popped", base, rs(2, u8(1), u8(0)), rs(6, u8(1)))
write("pagerd_ring", "head-backwards", base, rs(0, u8(0), u8(1)), rs(6, u8(1)), rs(5, u8(0), u8(0xFF)),
      rs(6, u8(1)))
write("pagerd_ring", "tail-overwritten", u8(0x01) + u8(3), rs(5, u8(2), u8(1)), rs(6, u8(1)))
write("pagerd_ring", "return-head-written", u8(0x01) + u8(3), rs(5, u8(4), u8(3)), rs(6, u8(1)))
write("pagerd_ring", "return-tail-far", u8(0x01) + u8(3), rs(5, u8(5), u8(0x7F)), rs(6, u8(1)))
write("pagerd_ring", "scribble-header", base, rs(3, u16(12), u32(0xFFFFFFFF)), rs(4, u16(0), u64(0)), rs(8),
      rs(6, u8(1)))


# ---- client_layout: flags, asked, length, reply, file size, changes ----
def cl(flags, asked, reply, fsize=0, changes=b""):
    return u8(flags) + u32(asked - 1) + u16(len(reply)) + reply + u64(fsize) + changes


def change(kind, pos, value):
    return u8(kind) + u32(pos) + u64(value)


HONEST = 0x01 | 0x20 | 0x80
ring0 = 8192  # fill ring of node 0
write("client_layout", "welcome", cl(HONEST, 16, welcome(1, 4)))
write("client_layout", "welcome-two-nodes", cl(HONEST, 8, welcome(2, 8)))
write("client_layout", "welcome-more-than-asked", cl(HONEST, 4, welcome(1, 8)))
write("client_layout", "welcome-unsealed", cl(HONEST | 0x10, 16, welcome(1, 4)))
write("client_layout", "welcome-small-file", cl(0x01 | 0x80, 16, welcome(1, 4), fsize=2 * SS))
write("client_layout", "welcome-two-fds", cl(0x02 | 0x20 | 0x80, 16, welcome(1, 4)))
write("client_layout", "welcome-pipe", cl(0x06 | 0x20, 16, welcome(1, 4)))
write("client_layout", "welcome-no-fd", cl(0x20, 16, welcome(1, 4)))
write("client_layout", "refuse", cl(0x01, 16, refuse(2, "limit")))
write("client_layout", "no-reply", cl(0x08, 16, b""))
write("client_layout", "truncated", cl(HONEST, 16, welcome(1, 4) + b"\0" * 300))
write("client_layout", "ctrl-bad-ncpus", cl(HONEST, 16, welcome(1, 4), changes=change(1, 48, 0)))
write("client_layout", "ctrl-bad-node", cl(HONEST, 16, welcome(2, 4), changes=change(0, 192, 200)))
write("client_layout", "ring-bad-slots",
      cl(HONEST, 16, welcome(1, 4), changes=change(2, ring0 + 128, 5 * SS) + change(2, ring0 + 136, SS + 4096)))
write("client_layout", "ring-tail-corrupt", cl(HONEST, 16, welcome(1, 4), changes=change(1, ring0 + 64, 1000)))

# ---- hakctl_status: the reply ----
client = (4684, 1000, 0, 16, 1, 79, 25, 0, 8, 79, 0, 0, 134000)
write("hakctl_status", "status", status([(47, 0, 2, 159, 0)], [client, client]))
write("hakctl_status", "status-empty", status([], []))
write("hakctl_status", "status-version-unterminated", status([(1, 2, 3, 4, 5)], [], version=b"x" * 16))
write("hakctl_status", "status-old-version", hdr(STATUS, 80, version=7) + status([], [])[16:])
write("hakctl_status", "status-short", status([(1, 2, 3, 4, 5)], [client])[:-1])
write("hakctl_status", "refuse", refuse(4, "no"))
