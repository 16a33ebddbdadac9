#!/usr/bin/python3
"""Soak test: clients under mixed multi-threaded load against a page daemon
that is killed (SIGKILL) and restarted every --restart-every seconds, while
clients are killed at random and replaced.

    /usr/bin/python3 tests/soak.py --build build --minutes 10

Passes when no client ever saw a wrong byte (every client checks its blocks
and prints CORRUPTION on a mismatch), no client died other than by our
SIGKILL, the clients stopped at the end exit 0 after checking every block,
the daemon ends with no client and nothing charged, and memory stays
bounded: the largest client RSS and the daemon's RSS in the last third of
the run are at most 1.5 times (plus 16 MiB) those of the first third.
Prints one summary line per minute and a final verdict.
"""

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class Daemon:
    def __init__(self, build, sock, log):
        self.build, self.sock, self.log = build, sock, log
        self.proc = None
        self.starts = 0

    def start(self):
        if os.path.exists(self.sock):
            os.unlink(self.sock)  # left by a SIGKILLed daemon
        self.proc = subprocess.Popen(
            [os.path.join(self.build, "hakmem-pagerd"), "--foreground", "--socket", self.sock,
             "--config", "/dev/null", "--tick-ms", "2"],
            stdout=self.log, stderr=self.log)
        for _ in range(250):
            if os.path.exists(self.sock):
                break
            time.sleep(0.02)
        else:
            raise SystemExit("soak: the daemon did not create its socket")
        self.starts += 1

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def status(self):
        r = subprocess.run([os.path.join(self.build, "hakctl"), "--socket", self.sock, "--json", "status"],
                           capture_output=True, text=True, timeout=10)
        return json.loads(r.stdout) if r.returncode == 0 else None


class Client:
    def __init__(self, build, sock, threads, failures):
        env = dict(os.environ, LD_PRELOAD=os.path.join(build, "libhakclient.so"), HAKMEM_PAGERD="on",
                   HAKMEM_PAGERD_SOCKET=sock)
        self.proc = subprocess.Popen([os.path.join(build, "soak_client"), "--threads", str(threads)],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        self.killed = False
        self.last = ""
        self.failures = failures
        self.reader = threading.Thread(target=self.read, daemon=True)
        self.reader.start()

    def read(self):
        for line in self.proc.stdout:
            line = line.strip()
            if "CORRUPTION" in line or line.startswith("hakmem:") and "abort" in line:
                self.failures.append(f"client {self.proc.pid}: {line}")
            if line.startswith("soak-client"):
                self.last = line
            elif line and not line.startswith("hakmem: pagerd:"):
                self.failures.append(f"client {self.proc.pid} said: {line}")

    def ops(self):
        for part in self.last.split():
            if part.startswith("ops="):
                return int(part[4:])
        return 0


def third_max(samples, t0, t1, which):
    span = (t1 - t0) / 3
    lo = [v for t, v in samples if t < t0 + span]
    hi = [v for t, v in samples if t >= t1 - span]
    return (max(lo) if lo else 0), (max(hi) if hi else 0)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default="build")
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--clients", type=int, default=3)
    ap.add_argument("--threads", type=int, default=3, help="worker threads per client")
    ap.add_argument("--restart-every", type=float, default=30, help="seconds between daemon kills")
    ap.add_argument("--client-life", type=float, default=20, help="mean seconds before a client is killed")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    build = os.path.join(REPO, args.build) if not os.path.isabs(args.build) else args.build
    for f in ("hakmem-pagerd", "hakctl", "libhakclient.so", "soak_client"):
        if not os.path.exists(os.path.join(build, f)):
            raise SystemExit(f"soak: {build}/{f} is missing (make soak builds it)")
    rnd = random.Random(args.seed)
    tmp = tempfile.mkdtemp(prefix="hakmem-soak-")
    sock = os.path.join(tmp, "pagerd.sock")
    log = open(os.path.join(tmp, "pagerd.log"), "w")
    failures = []
    daemon = Daemon(build, sock, log)
    daemon.start()
    clients = [Client(build, sock, args.threads, failures) for _ in range(args.clients)]
    deadlines = [time.monotonic() + rnd.expovariate(1 / args.client_life) for _ in clients]
    t0 = time.monotonic()
    t_end = t0 + args.minutes * 60
    next_restart = t0 + args.restart_every
    next_report = t0 + 60
    client_rss, daemon_rss = [], []
    killed_clients = started = 0
    ops_of_dead = 0
    try:
        while time.monotonic() < t_end and not failures:
            time.sleep(0.5)
            now = time.monotonic()
            if now >= next_restart:
                daemon.kill()
                time.sleep(rnd.uniform(0.2, 2.0))  # clients run without a daemon meanwhile
                daemon.start()
                next_restart = now + args.restart_every
            for i, c in enumerate(clients):
                rc = c.proc.poll()
                if rc is not None and not c.killed:
                    failures.append(f"client {c.proc.pid} ended by itself (status {rc}): {c.last}")
                if now >= deadlines[i]:
                    c.killed = True
                    c.proc.send_signal(signal.SIGKILL)
                    c.proc.wait()
                    ops_of_dead += c.ops()
                    killed_clients += 1
                    clients[i] = Client(build, sock, args.threads, failures)
                    started += 1
                    deadlines[i] = now + rnd.expovariate(1 / args.client_life)
            if daemon.proc.poll() is not None:
                failures.append(f"the daemon died by itself (status {daemon.proc.returncode})")
            client_rss.append((now, max(rss_kib(c.proc.pid) for c in clients)))
            daemon_rss.append((now, rss_kib(daemon.proc.pid)))
            if now >= next_report:
                st = daemon.status()
                charged = st["ss_total"] if st else "?"
                print(f"soak: {int((now - t0) / 60)} min: daemon starts {daemon.starts}, clients killed {killed_clients}, "
                      f"ops {ops_of_dead + sum(c.ops() for c in clients)}, client RSS max {client_rss[-1][1]} KiB, "
                      f"daemon RSS {daemon_rss[-1][1]} KiB, charged {charged}", flush=True)
                next_report = now + 60
        # Stop: every client checks and frees all its blocks, then exits 0.
        for c in clients:
            c.proc.send_signal(signal.SIGTERM)
        for c in clients:
            try:
                rc = c.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                c.proc.kill()
                rc = "timeout"
            c.reader.join(timeout=5)
            if rc != 0:
                failures.append(f"client {c.proc.pid} at the end: status {rc}: {c.last}")
            ops_of_dead += c.ops()
        st = None
        for _ in range(100):  # the daemon notices the hang-ups within a tick
            st = daemon.status()
            if st and not st.get("clients"):
                break
            time.sleep(0.05)
        if not st:
            failures.append("no status from the daemon at the end")
        elif st.get("clients") or st.get("ss_total", 0):
            failures.append(f"daemon still accounts clients or SuperSlabs at the end: "
                            f"{len(st.get('clients', []))} clients, {st.get('ss_total')} charged")
        daemon.proc.send_signal(signal.SIGTERM)
        if daemon.proc.wait(timeout=10) != 0:
            failures.append(f"daemon exit status {daemon.proc.returncode} on SIGTERM")
    finally:
        for c in clients:
            if c.proc.poll() is None:
                c.proc.kill()
        if daemon.proc.poll() is None:
            daemon.proc.kill()
        log.close()
    t1 = time.monotonic()
    c_first, c_last = third_max(client_rss, t0, t1, "client")
    d_first, d_last = third_max(daemon_rss, t0, t1, "daemon")
    if c_last > 1.5 * c_first + 16384:
        failures.append(f"client RSS grew: {c_first} KiB in the first third, {c_last} KiB in the last")
    if d_last > 1.5 * d_first + 16384:
        failures.append(f"daemon RSS grew: {d_first} KiB in the first third, {d_last} KiB in the last")
    print(f"soak: {args.minutes:g} min, {args.clients} clients x {args.threads} threads: {ops_of_dead} operations, "
          f"daemon killed and restarted {daemon.starts - 1} times, {killed_clients} clients killed, "
          f"largest client RSS {c_first} KiB (first third) / {c_last} KiB (last third), "
          f"daemon RSS {d_first} / {d_last} KiB, corruption: {'yes' if any('CORRUPTION' in f for f in failures) else 'none'}")
    if failures:
        print("soak: FAILED")
        for f in failures[:20]:
            print("  " + f)
        print(f"  (daemon log: {tmp}/pagerd.log)")
        sys.exit(1)
    shutil.rmtree(tmp, ignore_errors=True)
    print("soak: passed")


if __name__ == "__main__":
    main()
