#!/usr/bin/python3
"""Heap misuse under every allocator: what each one notices.

Runs build/bench/misuse (one misuse, then more allocation) for every case
and block size under the allocators of bench/allocators.json that need no
daemon (glibc, the peers, hakmem and hakmem-secure by default), and prints
per allocator how many runs it reported (a message and a signal), stopped
without a word (a signal), or let pass (exit 0).

    /usr/bin/python3 bench/misuse.py [--build DIR] [--allocators a,b,...] [--sizes 8,4096]
"""

import argparse
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (allocators.json and the peers' packages)

DEFAULT = "glibc,mimalloc,jemalloc,tcmalloc,hakmem,hakmem-secure"


def outcome(prog, case, size, a):
    env = dict(os.environ)
    env.update(a["env"])
    if a.get("preload"):
        env["LD_PRELOAD"] = a["preload"]
    r = subprocess.run([prog, case, str(size)], env=env, stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60)
    if r.returncode >= 0:
        return "missed"
    return "reported" if r.stderr.strip() else "stopped"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default=os.path.join(bench.REPO, "build"))
    ap.add_argument("--allocators", default=DEFAULT)
    ap.add_argument("--sizes", default="8,64,4096,262144")
    ap.add_argument("-v", "--verbose", action="store_true", help="every run's outcome")
    args = ap.parse_args()
    build = os.path.abspath(args.build)
    prog = os.path.join(build, "bench", "misuse")
    if not os.path.exists(prog):
        sys.exit(f"{prog} missing: make bench-bin")
    cases = subprocess.run([prog, "--list"], capture_output=True, text=True, check=True).stdout.split()
    sizes = [int(s) for s in args.sizes.split(",")]
    allocs = {a["name"]: a for a in bench.load_allocators(os.path.join(bench.REPO, "bench", "allocators.json"), build)}
    print(f"{len(cases)} misuses x {len(sizes)} sizes ({args.sizes} bytes): reported / stopped silently / missed")
    for name in args.allocators.split(","):
        a = allocs.get(name)
        if a is None or a["setup"]:
            print(f"{name:16} skipped (unknown, or needs a daemon)")
            continue
        why = bench.check_allocator(a)
        if why:
            print(f"{name:16} skipped: {why}")
            continue
        counts = {"reported": 0, "stopped": 0, "missed": 0}
        for case in cases:
            for size in sizes:
                o = outcome(prog, case, size, a)
                counts[o] += 1
                if args.verbose:
                    print(f"  {name} {case} {size}: {o}")
        print(f"{name:16} {counts['reported']:3} / {counts['stopped']:3} / {counts['missed']:3}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
