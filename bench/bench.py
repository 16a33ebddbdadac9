#!/usr/bin/python3
"""hakmem benchmark harness.

Runs every workload program of build/bench/ under every allocator of
bench/allocators.json (LD_PRELOAD of the same binary), interleaved:
for each repetition, for each workload, for each allocator, one run.
Prints a summary table, and writes the runs, the summary and a chart to
bench/results/<timestamp>/.

    /usr/bin/python3 bench/bench.py --quick
    /usr/bin/python3 bench/bench.py --full --only larson_tiny,growth --reps 7
"""

import argparse
import atexit
import csv
import datetime
import importlib
import json
import math
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CPUS = os.cpu_count() or 1

# Parameters per mode. In the workload arguments, {T} is --threads (default:
# the number of CPUs), {P} = T/2 producer/consumer pairs (at least 1), {S}
# seconds per timed run, {LS} the standard Larson run's seconds (5 in the
# suites' own runs), {churn_threads} and {gib} as below.
MODES = {
    "quick": {"reps": 3, "S": 0.8, "LS": 2.0, "churn_threads": 10000, "gib": 0.5, "idle_mib": 256, "timeout": 60},
    "full": {"reps": 5, "S": 3.0, "LS": 5.0, "churn_threads": 20000, "gib": 1.0, "idle_mib": 512, "timeout": 300},
}

# Each workload: name, program, arguments, the result key it is judged by
# and whether higher is better. Units are for display only.
WORKLOADS = [
    {"name": "larson_tiny", "prog": "larson",
     "args": "--threads {T} --seconds {S} --min 8 --max 128 --slots 1000 --rounds 10"},
    {"name": "larson_mid", "prog": "larson",
     "args": "--threads {T} --seconds {S} --min 1024 --max 8192 --slots 1000 --rounds 10"},
    {"name": "larson_8_1000", "prog": "larson",
     "args": "--threads {T} --seconds {S} --min 8 --max 1000 --slots 5000 --rounds 100"},
    # Larson & Krishnan's run as the allocator suites make it: larson 5 8 1000 5000 100 4141 T.
    {"name": "larson_std", "prog": "larson",
     "args": "--standard --threads {T} --seconds {LS} --min 8 --max 1000 --slots 5000 --rounds 100 --seed 4141"},
    {"name": "mid_8k", "prog": "mid_large_mt",
     "args": "--threads {T} --seconds {S} --min 8192 --max 8192 --live 256"},
    {"name": "mid_2k_64k", "prog": "mid_large_mt",
     "args": "--threads {T} --seconds {S} --min 2048 --max 65536 --live 256"},
    {"name": "random_mixed_1t", "prog": "random_mixed",
     "args": "--threads 1 --seconds {S} --min 16 --max 32768 --live 10000"},
    {"name": "random_mixed_mt", "prog": "random_mixed",
     "args": "--threads {T} --seconds {S} --min 16 --max 32768 --live 10000"},
    {"name": "xthread", "prog": "xthread",
     "args": "--pairs {P} --seconds {S} --min 16 --max 1024 --batch 64 --depth 16"},
    {"name": "prodcons", "prog": "prodcons",
     "args": "--producers {T} --consumers {T} --seconds {S} --min 16 --max 1024 --batch 64 --depth 64"},
    {"name": "prodcons_pinned", "prog": "prodcons",
     "args": "--producers {P} --consumers {P} --seconds {S} --min 16 --max 1024 --batch 64 --depth 64 --pin"},
    {"name": "churn", "prog": "churn",
     "args": "--threads {churn_threads} --concurrent 4 --blocks 100 --min 16 --max 512",
     "metric": "threads_per_sec", "unit": "kthr/s", "scale": 1e-3},
    {"name": "growth", "prog": "growth", "args": "--gib {gib} --min 64 --max 16384",
     "metric": "grow_ms", "higher_better": False, "unit": "ms", "scale": 1.0},
    # Memory, not speed: its own tables and chart, left out of the geomeans.
    {"name": "idle", "prog": "idle",
     "args": "--threads 2 --mib {idle_mib} --min 16 --max 65536 --idle-ms 2500 --sample-ms 100 --calls 2000",
     "metric": "idle_kb", "higher_better": False, "unit": "MiB", "scale": 1 / 1024, "memory": True},
]
for _w in WORKLOADS:
    _w.setdefault("metric", "ops_per_sec")
    _w.setdefault("higher_better", True)
    _w.setdefault("unit", "Mops/s")
    _w.setdefault("scale", 1e-6)

GROWTH_KEYS = ["grow_ms", "p50_ns", "p99_ns", "p999_ns", "max_ns", "minflt", "free_ms", "rss_after_free_kb"]
IDLE_KEYS = ["peak_kb", "exited_kb", "idle_kb", "calls_kb"]
IDLE_COLS = [("peak", "peak_kb"), ("threads exited", "exited_kb"), ("after 2.5 s idle, no call", "idle_kb"),
             ("after 2,000 calls", "calls_kb")]


def speed(workloads):
    """The workloads judged by speed (throughput, or time to grow)."""
    return [w for w in workloads if not w.get("memory")]


def say(*args):
    print(*args, flush=True)


# ---------------------------------------------------------------- setup

def dpkg_installed(pkg):
    r = subprocess.run(["dpkg-query", "-W", "-f=${Status}", pkg], capture_output=True, text=True)
    return r.returncode == 0 and "install ok installed" in r.stdout


def dpkg_version(pkg):
    r = subprocess.run(["dpkg-query", "-W", "-f=${Version}", pkg], capture_output=True, text=True)
    return r.stdout.strip() if r.returncode == 0 else ""


_apt_updated = False


def apt_install(pkgs):
    """Install Debian packages that are missing; True when all are there."""
    global _apt_updated
    missing = [p for p in pkgs if not dpkg_installed(p)]
    if not missing:
        return True
    if not shutil.which("apt-get"):
        say(f"cannot install {' '.join(missing)}: no apt-get")
        return False
    sudo = [] if os.geteuid() == 0 else (["sudo"] if shutil.which("sudo") else None)
    if sudo is None:
        say(f"cannot install {' '.join(missing)}: not root and no sudo")
        return False
    say(f"installing with apt-get: {' '.join(missing)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    if not _apt_updated:
        subprocess.run(sudo + ["apt-get", "update", "-qq"], env=env)
        _apt_updated = True
    r = subprocess.run(sudo + ["apt-get", "install", "-y", "-qq"] + missing, env=env,
                       stdout=subprocess.DEVNULL)
    ok = r.returncode == 0 and all(dpkg_installed(p) for p in missing)
    if not ok:
        say(f"apt-get install {' '.join(missing)} failed")
    return ok


def load_allocators(path, build):
    with open(path) as f:
        allocs = json.load(f)
    subst = {"repo": REPO, "build": build}
    for a in allocs:
        a.setdefault("peer", False)
        a.setdefault("env", {})
        a.setdefault("setup", [])
        a.setdefault("teardown", [])
        a.setdefault("apt", [])
        if a.get("preload"):
            a["preload"] = a["preload"].format(**subst)
        a["env"] = {k: str(v).format(**subst) for k, v in a["env"].items()}
        a["setup"] = [c.format(**subst) for c in a["setup"]]
        a["teardown"] = [c.format(**subst) for c in a["teardown"]]
    return allocs


def check_allocator(a):
    """Make the allocator's library present (installing its package if it
    names one); return None when usable, else the reason it is skipped."""
    lib = a.get("preload")
    if not lib:
        return None
    if not os.path.exists(lib) and a["apt"]:
        apt_install(a["apt"])
    if not os.path.exists(lib):
        how = f" (package {', '.join(a['apt'])})" if a["apt"] else ""
        return f"{lib} not found{how}"
    return None


def load_matplotlib():
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        if not apt_install(["python3-matplotlib"]):
            return None
        importlib.invalidate_caches()
        try:
            import matplotlib  # noqa: F401,F811
        except ImportError:
            say(f"matplotlib installed but not importable from {sys.executable}; run with /usr/bin/python3")
            return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


# ---------------------------------------------------------------- running

def run_cmds(cmds, env, what):
    """Run an allocator's setup or teardown commands; their output is shown
    only when one fails."""
    for c in cmds:
        r = subprocess.run(c, shell=True, cwd=REPO, env=env, stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if r.returncode != 0:
            tail = r.stdout.strip().splitlines()[-1:] if r.stdout.strip() else []
            return f"{what} command failed ({r.returncode}): {c}" + (f": {tail[0][:200]}" if tail else "")
    return None


def parse_result(text):
    for line in text.splitlines():
        if line.startswith("RESULT "):
            kv = {}
            for tok in line.split()[1:]:
                if "=" in tok:
                    k, v = tok.split("=", 1)
                    kv[k] = v
            return line, kv
    return None, None


THP_FILE = "/sys/kernel/mm/transparent_hugepage/shmem_enabled"
POOL_FILE = "/proc/sys/vm/nr_hugepages"


def read_text(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def write_text(path, text):
    try:
        with open(path, "w") as f:
            f.write(text)
        return True
    except OSError:
        return False


def warm_pool(pages):
    """Touch every free page of the huge page pool once: on a virtual machine
    whose host backs memory lazily, a pool page's first use costs a host
    fault per 4 KiB; a host that reserved its pool at boot has done this."""
    try:
        fd = os.memfd_create("hakmem-bench-pool", os.MFD_HUGETLB)
    except (AttributeError, OSError):
        return
    try:
        import mmap
        size = pages << 21
        os.ftruncate(fd, size)
        m = mmap.mmap(fd, size, flags=mmap.MAP_SHARED | getattr(mmap, "MAP_NORESERVE", 0x4000))
        try:
            for off in range(0, size, 1 << 21):
                m[off] = 1
        except (OSError, ValueError):
            pass  # fewer free pages than asked: what was touched is warm
        m.close()
    except OSError:
        pass
    finally:
        os.close(fd)


def host_setup(allocs):
    """Huge pages as the installed tmpfiles.d/hakmem-pagerd.conf sets them
    up (shmem THP on request), and the pool an allocator asks for
    ("hugetlb_pages"), so that hakmem-pagerd can hand out 2 MiB pages.
    Needs root; otherwise the host stays as it is, and the bench says why.
    Returns the function that restores the host's settings."""
    thp = read_text(THP_FILE)
    pool = read_text(POOL_FILE)
    want_pool = max([a.get("hugetlb_pages", 0) for a in allocs] + [0])
    if thp is None:
        say("huge pages: this kernel has no shared-memory THP: hakmem-pagerd uses 4 KiB pages")
        return lambda: None
    mode = thp[thp.find("[") + 1:thp.find("]")] if "[" in thp else thp
    if os.geteuid() != 0:
        say(f"huge pages: not root, the host stays as it is (shmem THP '{mode}', pool {pool} pages): "
            f"hakmem-pagerd uses what that offers")
        return lambda: None
    write_text(THP_FILE, "advise")
    if want_pool:
        write_text(POOL_FILE, str(want_pool))
        warm_pool(want_pool)
        # Any allocator may map pool pages (mimalloc does, with large OS
        # pages): every run's peak counts them (bench/launch.c).
        os.environ["HAKMEM_BENCH_HUGETLB"] = "1"
    say(f"huge pages: shmem THP 'advise' (was '{mode}')"
        + (f", pool {read_text(POOL_FILE)} pages (was {pool})" if want_pool else "")
        + "; restored at the end")

    done = []

    def restore():
        if done:
            return
        done.append(1)
        write_text(THP_FILE, mode)
        if want_pool and pool is not None:
            write_text(POOL_FILE, pool)

    def on_term(signum, frame):
        raise KeyboardInterrupt

    atexit.register(restore)
    signal.signal(signal.SIGTERM, on_term)
    return restore


def cpu_busy_s():
    """CPU time (all CPUs, seconds) spent by everything on the machine, from
    /proc/stat: user, nice, system, irq, softirq and steal. The harness
    compares its change over a run with the workload's own CPU time to see
    how much other processes (or the hypervisor) took meanwhile."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    return (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / os.sysconf("SC_CLK_TCK")


def parse_kv(text):
    return dict(tok.split("=", 1) for tok in text.split() if "=" in tok)


# A run is marked disturbed when the rest of the machine used more than this
# share of all CPUs while it ran. Not lower: the kernel's own work for a
# workload (churn's thread teardown shows up as up to ~20%) is counted as
# "the rest" too, while another busy process takes 50% on two CPUs.
DISTURBED = 0.25

RUSAGE_KEYS = ["maxrss_kb", "minflt", "utime_s", "stime_s", "nvcsw", "nivcsw", "hugetlb_peak_kb"]


def peak_kb(r):
    """Peak memory of a run: its peak RSS, and the huge page pool pages it
    had mapped (which RSS leaves out; bench/launch.c samples them)."""
    return float(r["rusage"]["maxrss_kb"]) + float(r["rusage"].get("hugetlb_peak_kb") or 0)


def run_one(launch, argv, alloc, timeout):
    """One run of argv under alloc, through the launch helper (which
    reports the workload's own rusage: see bench/launch.c). Returns a dict
    with status, wall time, the child's rusage, the result line and its
    fields."""
    base = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    base.update(alloc["env"])
    res = {"status": "", "wall_s": "", "rusage": {}, "other_cpu_s": "", "disturbed": "", "result": "",
           "fields": {}}
    err = run_cmds(alloc["setup"], base, "setup")
    if err:
        res["status"] = err
        return res
    pre = [f"LD_PRELOAD={alloc['preload']}"] if alloc.get("preload") else []
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as errf, \
            tempfile.NamedTemporaryFile(prefix="rusage.", mode="r") as ruf:
        busy0 = cpu_busy_s()
        t0 = time.monotonic()
        p = subprocess.Popen([launch, ruf.name] + pre + argv, stdout=out, stderr=errf, env=base,
                             cwd=REPO, start_new_session=True)
        timed_out = threading.Event()

        def kill():
            timed_out.set()
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

        timer = threading.Timer(timeout, kill)
        timer.start()
        try:
            _, wstatus = os.waitpid(p.pid, 0)
        except KeyboardInterrupt:
            kill()
            p.wait()
            raise
        finally:
            timer.cancel()
        res["wall_s"] = f"{time.monotonic() - t0:.3f}"
        busy1 = cpu_busy_s()
        p.returncode = os.waitstatus_to_exitcode(wstatus)
        out.seek(0)
        errf.seek(0)
        stdout = out.read().decode(errors="replace")
        stderr = errf.read().decode(errors="replace")
        ru = parse_kv(ruf.read())
    line, fields = parse_result(stdout)
    res["rusage"] = {k: ru[k] for k in RUSAGE_KEYS if k in ru}
    if busy0 is not None and busy1 is not None and "utime_s" in ru:
        own = float(ru["utime_s"]) + float(ru["stime_s"])
        other = max(0.0, busy1 - busy0 - own)
        res["other_cpu_s"] = f"{other:.2f}"
        res["disturbed"] = int(other > DISTURBED * float(res["wall_s"]) * CPUS)
    if timed_out.is_set():
        status = f"timeout after {timeout} s"
    elif "signal" in ru:
        status = f"killed by {signal.Signals(int(ru['signal'])).name}"
    elif "exit" not in ru:
        status = f"launch failed (exit {p.returncode})"
    elif ru["exit"] != "0":
        status = f"exit {ru['exit']}"
    elif not line:
        status = "no RESULT line"
    else:
        status = "ok"
    if status != "ok" and stderr.strip():
        status += ": " + stderr.strip().splitlines()[-1][:200]
    terr = run_cmds(alloc["teardown"], base, "teardown")
    if terr and status == "ok":
        status = terr
    res.update(status=status, result=line or "", fields=fields or {})
    return res


# ---------------------------------------------------------------- summary

def geomean(xs):
    xs = [x for x in xs if x and x > 0]
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else None


def summarize(runs, workloads, allocs):
    """Per (workload, allocator): median/min/max of the metric and median
    peak RSS over the successful runs, and each allocator's standing
    against the best peer (throughput) and the lowest peer (RSS)."""
    summ = {}
    for w in workloads:
        for a in allocs:
            ok = [r for r in runs if r["workload"] == w["name"] and r["allocator"] == a["name"]
                  and r["status"] == "ok" and w["metric"] in r["fields"]]
            nrun = sum(1 for r in runs if r["workload"] == w["name"] and r["allocator"] == a["name"])
            s = {"n": len(ok), "runs": nrun}
            if ok:
                vals = [float(r["fields"][w["metric"]]) for r in ok]
                s.update(median=statistics.median(vals), min=min(vals), max=max(vals),
                         rss=statistics.median([peak_kb(r) for r in ok]))
                if w["prog"] == "growth":
                    s["growth"] = {k: statistics.median(float(r["fields"][k]) for r in ok)
                                   for k in GROWTH_KEYS if all(k in r["fields"] for r in ok)}
                if w["prog"] == "idle":
                    s["idle"] = {k: statistics.median(float(r["fields"][k]) for r in ok)
                                 for k in IDLE_KEYS if all(k in r["fields"] for r in ok)}
                    # The series of the run whose result is the median one.
                    mid = sorted(ok, key=lambda r: float(r["fields"][w["metric"]]))[len(ok) // 2]
                    s["series"] = [tuple(float(x) for x in pt.split(":"))
                                   for pt in mid["fields"].get("series", "").split(",") if ":" in pt]
            summ[(w["name"], a["name"])] = s
        peers = [summ[(w["name"], a["name"])] for a in allocs if a["peer"]]
        peers = [p for p in peers if "median" in p]
        best = None
        if peers:
            best = (max if w["higher_better"] else min)(p["median"] for p in peers)
            low_rss = min(p["rss"] for p in peers)
        for a in allocs:
            s = summ[(w["name"], a["name"])]
            if best and "median" in s and s["median"] > 0:
                s["rel"] = s["median"] / best if w["higher_better"] else best / s["median"]
                s["rss_rel"] = s["rss"] / low_rss if low_rss > 0 else None
    return summ


def fmt_cell(s, w):
    if "median" not in s:
        return "FAIL" if s["runs"] else "-"
    v = s["median"] * w["scale"]
    digits = 0 if v >= 100 else 1 if v >= 10 else 2
    spread = (s["max"] - s["min"]) / 2 / s["median"] * 100 if s["median"] else 0
    cell = f"{v:.{digits}f} ±{spread:.0f}%"
    if s["n"] < s["runs"]:
        cell += "*"
    return cell


def best_peer_name(w, allocs, summ):
    peers = [(summ[(w["name"], a["name"])].get("median"), a["name"]) for a in allocs if a["peer"]]
    peers = [p for p in peers if p[0] is not None]
    if not peers:
        return ""
    return (max if w["higher_better"] else min)(peers)[1]


def print_idle(allocs, summ, w, cw):
    say("")
    say(f"{w['name']}: {w['argv_text']} (RSS, MiB, medians)")
    head = f"{'allocator':<{cw}}" + "".join(f"{c[0]:>{len(c[0]) + 3}}" for c in IDLE_COLS)
    say(head)
    say("-" * len(head))
    for a in allocs:
        g = summ[(w["name"], a["name"])].get("idle", {})
        row = f"{a['name']:<{cw}}"
        for title, key in IDLE_COLS:
            v = g.get(key)
            row += f"{('-' if v is None else f'{v / 1024:.1f}'):>{len(title) + 3}}"
        say(row)


def print_tables(all_workloads, allocs, summ, mode, reps):
    workloads = speed(all_workloads)
    ours = [a for a in allocs if not a["peer"]]
    cw = max(13, max(len(a["name"]) for a in allocs) + 1)
    if not workloads:
        for w in all_workloads:
            print_idle(allocs, summ, w, cw)
        return
    rw = max([16] + [len(a["name"]) + 9 for a in ours])
    nw = max(16, max(len(w["name"]) for w in workloads) + 1)

    say("")
    say(f"Throughput: median of {reps} runs, ± half the min-max spread "
        f"(growth: time to grow, lower is better). '*': some runs failed.")
    head = f"{'workload':<{nw}}{'unit':<8}" + "".join(f"{a['name']:>{cw}}" for a in allocs)
    head += "".join(f"{a['name'] + '/best':>{rw}}" for a in ours) + "  best peer"
    say(head)
    say("-" * len(head))
    for w in workloads:
        row = f"{w['name']:<{nw}}{w['unit']:<8}"
        row += "".join(f"{fmt_cell(summ[(w['name'], a['name'])], w):>{cw}}" for a in allocs)
        for a in ours:
            rel = summ[(w["name"], a["name"])].get("rel")
            row += f"{(f'{rel:.2f}x' if rel else '-'):>{rw}}"
        say(row + "  " + best_peer_name(w, allocs, summ))
    row = f"{'geomean':<{nw}}{'':<8}" + " " * (cw * len(allocs))
    for a in ours:
        g = geomean([summ[(w["name"], a["name"])].get("rel") for w in workloads])
        row += f"{(f'{g:.2f}x' if g else '-'):>{rw}}"
    say(row)
    say("(ratio = allocator / best peer; for growth best peer time / allocator time: >1 is better)")

    say("")
    say(f"Peak RSS of the process, MiB (median of {reps} runs)")
    head = f"{'workload':<{nw}}{'':<8}" + "".join(f"{a['name']:>{cw}}" for a in allocs)
    head += "".join(f"{a['name'] + '/lowest':>{rw}}" for a in ours)
    say(head)
    say("-" * len(head))
    for w in workloads:
        row = f"{w['name']:<{nw}}{'':<8}"
        for a in allocs:
            s = summ[(w["name"], a["name"])]
            cell = f"{s['rss'] / 1024:.1f}" if "rss" in s else "-"
            row += f"{cell:>{cw}}"
        for a in ours:
            rel = summ[(w["name"], a["name"])].get("rss_rel")
            row += f"{(f'{rel:.2f}x' if rel else '-'):>{rw}}"
        say(row)
    row = f"{'geomean':<{nw}}{'':<8}" + " " * (cw * len(allocs))
    for a in ours:
        g = geomean([summ[(w["name"], a["name"])].get("rss_rel") for w in workloads])
        row += f"{(f'{g:.2f}x' if g else '-'):>{rw}}"
    say(row)
    say("(ratio = allocator / lowest peer: <1 is better)")

    for w in workloads:
        if w["prog"] != "growth":
            continue
        say("")
        say(f"{w['name']}: {w['argv_text']} (medians)")
        cols = [("grow ms", "grow_ms", 1), ("p50 ns", "p50_ns", 1), ("p99 ns", "p99_ns", 1),
                ("p99.9 ns", "p999_ns", 1), ("max us", "max_ns", 1e-3), ("minflt", "minflt", 1),
                ("free ms", "free_ms", 1), ("RSS after free MiB", "rss_after_free_kb", 1 / 1024)]
        head = f"{'allocator':<{cw}}" + "".join(f"{c[0]:>{max(10, len(c[0]) + 2)}}" for c in cols)
        say(head)
        say("-" * len(head))
        for a in allocs:
            g = summ[(w["name"], a["name"])].get("growth", {})
            row = f"{a['name']:<{cw}}"
            for title, key, scale in cols:
                v = g.get(key)
                row += f"{('-' if v is None else f'{v * scale:.0f}'):>{max(10, len(title) + 2)}}"
            say(row)
    for w in all_workloads:
        if w["prog"] == "idle":
            print_idle(allocs, summ, w, cw)


def write_summary_csv(path, workloads, allocs, summ):
    with open(path, "w", newline="") as f:
        wr = csv.writer(f)
        wr.writerow(["workload", "allocator", "peer", "metric", "higher_better", "runs_ok", "runs",
                     "median", "min", "max", "rel_to_best_peer", "peak_rss_kb_median",
                     "rss_rel_to_lowest_peer"])
        for w in workloads:
            for a in allocs:
                s = summ[(w["name"], a["name"])]
                wr.writerow([w["name"], a["name"], int(a["peer"]), w["metric"], int(w["higher_better"]),
                             s["n"], s["runs"], s.get("median", ""), s.get("min", ""), s.get("max", ""),
                             f"{s['rel']:.4f}" if s.get("rel") else "",
                             s.get("rss", ""), f"{s['rss_rel']:.4f}" if s.get("rss_rel") else ""])
        for a in allocs:
            g = geomean([summ[(w["name"], a["name"])].get("rel") for w in speed(workloads)])
            gr = geomean([summ[(w["name"], a["name"])].get("rss_rel") for w in speed(workloads)])
            wr.writerow(["geomean", a["name"], int(a["peer"]), "", "", "", "", "", "", "",
                         f"{g:.4f}" if g else "", "", f"{gr:.4f}" if gr else ""])


def write_markdown(path, all_workloads, allocs, summ, meta):
    """The summary tables as Markdown, for bench/RESULTS.md and the README."""
    workloads = speed(all_workloads)
    ours = [a for a in allocs if not a["peer"]]
    lines = [f"Run {meta['date']} ({meta['mode']}: {meta['reps']} repetitions, {meta['seconds']} s per timed run, "
             f"{meta['threads']} threads on {meta['cpus']} CPUs, commit {meta['commit']}, "
             f"kernel {meta['kernel']}): `{' '.join(['bench/bench.py'] + meta['command'][1:])}`", "",
             "Throughput, median (± half the min-max spread); growth: time to grow, lower is better. "
             "Ratio: ours / best peer (growth: best peer time / ours), > 1 is better.", ""]
    head = ["workload", "unit"] + [a["name"] for a in allocs] + [f"{a['name']}/best" for a in ours] + ["best peer"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for w in workloads:
        row = [w["name"], w["unit"]] + [fmt_cell(summ[(w["name"], a["name"])], w) for a in allocs]
        row += [f"{summ[(w['name'], a['name'])]['rel']:.2f}x" if summ[(w["name"], a["name"])].get("rel") else "-"
                for a in ours]
        lines.append("| " + " | ".join(row + [best_peer_name(w, allocs, summ)]) + " |")
    row = ["geomean", ""] + [""] * len(allocs)
    for a in ours:
        g = geomean([summ[(w["name"], a["name"])].get("rel") for w in workloads])
        row.append(f"**{g:.2f}x**" if g else "-")
    lines += ["| " + " | ".join(row + [""]) + " |", "",
              "Peak RSS of the process, MiB (median). Ratio: ours / lowest peer, < 1 is better.", ""]
    head = ["workload"] + [a["name"] for a in allocs] + [f"{a['name']}/lowest" for a in ours]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for w in workloads:
        row = [w["name"]]
        for a in allocs:
            s = summ[(w["name"], a["name"])]
            row.append(f"{s['rss'] / 1024:.1f}" if "rss" in s else "-")
        row += [f"{summ[(w['name'], a['name'])]['rss_rel']:.2f}x" if summ[(w["name"], a["name"])].get("rss_rel")
                else "-" for a in ours]
        lines.append("| " + " | ".join(row) + " |")
    row = ["geomean"] + [""] * len(allocs)
    for a in ours:
        g = geomean([summ[(w["name"], a["name"])].get("rss_rel") for w in workloads])
        row.append(f"**{g:.2f}x**" if g else "-")
    lines.append("| " + " | ".join(row) + " |")
    for w in workloads:
        if w["prog"] != "growth":
            continue
        cols = [("grow ms", "grow_ms", 1), ("p50 ns", "p50_ns", 1), ("p99 ns", "p99_ns", 1),
                ("p99.9 ns", "p999_ns", 1), ("max µs", "max_ns", 1e-3), ("minor faults", "minflt", 1),
                ("free ms", "free_ms", 1), ("RSS after free, MiB", "rss_after_free_kb", 1 / 1024)]
        lines += ["", f"{w['name']}: `{w['argv_text']}` (medians)", "",
                  "| allocator | " + " | ".join(c[0] for c in cols) + " |", "|" + "---|" * (len(cols) + 1)]
        for a in allocs:
            g = summ[(w["name"], a["name"])].get("growth", {})
            cells = ["-" if g.get(k) is None else f"{g[k] * sc:.0f}" for _, k, sc in cols]
            lines.append(f"| {a['name']} | " + " | ".join(cells) + " |")
    for w in all_workloads:
        if w["prog"] != "idle":
            continue
        lines += ["", f"{w['name']}: `{w['argv_text']}` (RSS, MiB, medians)", "",
                  "| allocator | " + " | ".join(c[0] for c in IDLE_COLS) + " |", "|" + "---|" * (len(IDLE_COLS) + 1)]
        for a in allocs:
            g = summ[(w["name"], a["name"])].get("idle", {})
            cells = ["-" if g.get(k) is None else f"{g[k] / 1024:.1f}" for _, k in IDLE_COLS]
            lines.append(f"| {a['name']} | " + " | ".join(cells) + " |")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def write_idle_chart(plt, path, w, allocs, summ, title):
    """RSS over the idle time, per allocator (the median run)."""
    fig, ax = plt.subplots(figsize=(10, 5))
    for a in allocs:
        pts = summ[(w["name"], a["name"])].get("series") or []
        if pts:
            ax.plot([p[0] for p in pts], [max(p[1], 1) / 1024 for p in pts], marker=".", label=a["name"])
    ax.set_xlabel("ms since the threads exited (no allocator call)")
    ax.set_ylabel("RSS, MiB (log)")
    ax.set_yscale("log")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_chart(plt, path, all_workloads, allocs, summ, title):
    workloads = speed(all_workloads)
    if not workloads:
        return
    names = [w["name"] for w in workloads]
    n = len(allocs)
    width = 0.8 / n
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(max(10, 1.1 * len(names) + 3), 9), sharex=True)
    for i, a in enumerate(allocs):
        xs = [k + (i - (n - 1) / 2) * width for k in range(len(names))]
        rel, lo, hi = [], [], []
        for w in workloads:
            s = summ[(w["name"], a["name"])]
            r = s.get("rel") or 0
            rel.append(r)
            if r:  # the min-max spread of the runs, on the same scale
                worst, best = (s["min"], s["max"]) if w["higher_better"] else (s["max"], s["min"])
                if w["higher_better"]:
                    low, high = r * worst / s["median"], r * best / s["median"]
                else:
                    low, high = r * s["median"] / worst, r * s["median"] / best
                lo.append(max(0.0, r - low))
                hi.append(max(0.0, high - r))
            else:
                lo.append(0)
                hi.append(0)
        rss = [summ[(w["name"], a["name"])].get("rss", 0) / 1024 for w in workloads]
        ax1.bar(xs, rel, width, label=a["name"], yerr=[lo, hi], capsize=2, error_kw={"elinewidth": 0.8})
        ax2.bar(xs, rss, width, label=a["name"])
    ax1.axhline(1.0, color="black", linewidth=0.8)
    ax1.set_ylabel("throughput / best peer (median)\n(growth: best peer time / time)\nwhiskers: min-max of the runs")
    ax1.set_title(title)
    ax1.legend(ncol=n, fontsize="small")
    ax1.grid(axis="y", alpha=0.3)
    ax2.set_ylabel("peak RSS, MiB (log)")
    ax2.set_yscale("log")
    ax2.grid(axis="y", alpha=0.3)
    ax2.set_xticks(range(len(names)))
    ax2.set_xticklabels(names, rotation=30, ha="right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ---------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description="Compare hakmem with other allocators on the workloads of bench/.")
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_const", dest="mode", const="quick",
                   help="short runs, 3 repetitions (default)")
    g.add_argument("--full", action="store_const", dest="mode", const="full",
                   help="longer runs, 5 repetitions")
    ap.add_argument("--only", help="comma-separated workloads (see --list)")
    ap.add_argument("--allocators", help="comma-separated allocators (see --list)")
    ap.add_argument("--reps", type=int, help="repetitions (overrides the mode's)")
    ap.add_argument("--seconds", type=float, help="seconds per timed run (overrides the mode's)")
    ap.add_argument("--timeout", type=float, help="seconds before a run is killed (default: 60 quick, 300 full)")
    ap.add_argument("--threads", type=int, default=CPUS, help=f"threads of the MT workloads (default: CPUs, {CPUS})")
    ap.add_argument("--config", default=os.path.join(REPO, "bench", "allocators.json"),
                    help="allocator list (default: bench/allocators.json)")
    ap.add_argument("--build", default="build", help="build directory (default: build)")
    ap.add_argument("--no-build", action="store_true", help="do not run make first")
    ap.add_argument("--out", help="results directory (default: bench/results/<timestamp>)")
    ap.add_argument("--list", action="store_true", help="list workloads and allocators, and exit")
    args = ap.parse_args()
    mode = args.mode or "quick"
    cfg = dict(MODES[mode])
    if args.reps is not None:
        if args.reps < 1:
            ap.error("--reps must be at least 1")
        cfg["reps"] = args.reps
    if args.seconds is not None:
        if args.seconds <= 0:
            ap.error("--seconds must be positive")
        cfg["S"] = args.seconds
    if args.timeout is not None:
        cfg["timeout"] = args.timeout
    if args.threads < 1:
        ap.error("--threads must be at least 1")
    build = args.build if os.path.isabs(args.build) else os.path.join(REPO, args.build)

    allocs = load_allocators(args.config, build)
    if args.list:
        say("workloads:")
        for w in WORKLOADS:
            say(f"  {w['name']:<18}{w['prog']} {w['args']}")
        say("allocators:")
        for a in allocs:
            say(f"  {a['name']:<18}{'peer' if a['peer'] else 'ours'}  {a.get('preload') or '(no preload)'}")
        return 0

    workloads = WORKLOADS
    if args.only:
        want = [x.strip() for x in args.only.split(",") if x.strip()]
        unknown = [x for x in want if x not in {w["name"] for w in WORKLOADS}]
        if unknown:
            ap.error(f"unknown workload(s): {', '.join(unknown)}; known: {', '.join(w['name'] for w in WORKLOADS)}")
        workloads = [w for w in WORKLOADS if w["name"] in want]
    if args.allocators:
        want = [x.strip() for x in args.allocators.split(",") if x.strip()]
        unknown = [x for x in want if x not in {a["name"] for a in allocs}]
        if unknown:
            ap.error(f"unknown allocator(s): {', '.join(unknown)}; known: {', '.join(a['name'] for a in allocs)}")
        allocs = [a for a in allocs if a["name"] in want]
    else:  # columns marked "default": false run only when named
        allocs = [a for a in allocs if a.get("default", True)]

    started = time.monotonic()
    if not args.no_build:
        cmd = ["make", "-C", REPO, "--no-print-directory", f"BUILD={build}", "lib", "pagerd", "bench-bin"]
        say("building: " + " ".join(cmd[:2] + ["<repo>"] + cmd[3:]))
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            sys.stdout.write(r.stdout)
            sys.stdout.write(r.stderr)
            say("build failed")
            return 1

    usable = []
    for a in allocs:
        why = check_allocator(a)
        if why:
            say(f"SKIPPING allocator {a['name']}: {why}")
        else:
            usable.append(a)
    allocs = usable
    if not allocs:
        say("no allocator left to run")
        return 1
    plt = load_matplotlib()
    if plt is None:
        say("matplotlib unavailable: no chart will be written")

    params = {"T": args.threads, "P": max(1, args.threads // 2), **cfg}
    if not os.access(os.path.join(build, "bench", "launch"), os.X_OK):
        say(f"missing {build}/bench/launch (make bench-bin)")
        return 1
    for w in workloads:
        prog = os.path.join(build, "bench", w["prog"])
        if not os.access(prog, os.X_OK):
            say(f"missing workload program {prog} (make bench-bin)")
            return 1
        w["argv"] = [prog] + w["args"].format(**params).split()
        w["argv_text"] = w["prog"] + " " + w["args"].format(**params)

    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = args.out or os.path.join(REPO, "bench", "results", stamp)
    os.makedirs(out, exist_ok=True)
    load = os.getloadavg()
    b0 = cpu_busy_s()
    time.sleep(1.0)
    b1 = cpu_busy_s()
    busy_before = (b1 - b0) / CPUS if b0 is not None and b1 is not None else None
    git = subprocess.run(["git", "-C", REPO, "describe", "--always", "--dirty"], capture_output=True, text=True)
    meta = {
        "date": stamp, "mode": mode, "reps": cfg["reps"], "seconds": cfg["S"], "threads": args.threads,
        "cpus": CPUS, "kernel": platform.release(), "commit": git.stdout.strip(),
        "loadavg_at_start": load, "cpu_busy_before_start": busy_before, "command": sys.argv,
        "allocators": [{**a, "package_versions": {p: dpkg_version(p) for p in a["apt"]}} for a in allocs],
        "workloads": [{"name": w["name"], "command": w["argv_text"]} for w in workloads],
    }
    with open(os.path.join(out, "meta.json"), "w") as f:
        json.dump(meta, f, indent=2)

    say(f"mode {mode}: {cfg['reps']} reps x {len(workloads)} workloads x {len(allocs)} allocators, "
        f"{cfg['S']} s per timed run, {args.threads} threads on {CPUS} CPUs")
    if busy_before is not None and busy_before > 0.05:
        say(f"note: the CPUs were {100 * busy_before:.0f}% busy in the second before starting; "
            f"other processes may disturb the results")

    runs = []
    fixed = ["rep", "workload", "allocator", "status", "wall_s"] + RUSAGE_KEYS + ["other_cpu_s", "disturbed",
                                                                                "metric", "value", "result"]
    launch = os.path.join(build, "bench", "launch")
    runs_path = os.path.join(out, "runs.csv")
    total = cfg["reps"] * len(workloads) * len(allocs)
    k = 0
    restore = host_setup(allocs)
    with open(runs_path, "w", newline="") as f:
        wr = csv.writer(f)
        wr.writerow(fixed)
        try:
            for rep in range(1, cfg["reps"] + 1):
                for w in workloads:
                    for a in allocs:
                        k += 1
                        r = run_one(launch, w["argv"], a, cfg["timeout"])
                        r.update(rep=rep, workload=w["name"], allocator=a["name"])
                        runs.append(r)
                        val = r["fields"].get(w["metric"], "")
                        wr.writerow([rep, w["name"], a["name"], r["status"], r["wall_s"]]
                                    + [r["rusage"].get(x, "") for x in RUSAGE_KEYS]
                                    + [r["other_cpu_s"], r["disturbed"], w["metric"], val, r["result"]])
                        f.flush()
                        if r["status"] == "ok" and val:
                            shown = f"{float(val) * w['scale']:.2f} {w['unit']}"
                            rss = f"{peak_kb(r) / 1024:.1f} MiB"
                        else:
                            shown = "FAILED: " + r["status"]
                            rss = ""
                        mark = "  (disturbed: other processes busy)" if r["disturbed"] == 1 else ""
                        say(f"[{k:>4}/{total}] rep {rep} {w['name']:<16} {a['name']:<14} {shown:<22} {rss}{mark}")
        except KeyboardInterrupt:
            say("interrupted: summarizing the runs done so far")
        finally:
            restore()

    summ = summarize(runs, workloads, allocs)
    print_tables(workloads, allocs, summ, mode, cfg["reps"])
    write_summary_csv(os.path.join(out, "summary.csv"), workloads, allocs, summ)
    write_markdown(os.path.join(out, "summary.md"), workloads, allocs, summ, meta)
    files = ["runs.csv", "summary.csv", "summary.md", "meta.json"]
    if plt is not None:
        title = f"hakmem benchmarks, {mode} ({cfg['reps']} reps, {args.threads} threads), {stamp}"
        if speed(workloads):
            write_chart(plt, os.path.join(out, "chart.png"), workloads, allocs, summ, title)
            files.append("chart.png")
        for w in workloads:
            if w["prog"] == "idle":
                write_idle_chart(plt, os.path.join(out, "idle.png"), w, allocs, summ,
                                 f"{w['name']}: RSS once the threads exited, no allocator call ({stamp})")
                files.append("idle.png")
    failed = sum(1 for r in runs if r["status"] != "ok")
    say("")
    other = sum(float(r["other_cpu_s"]) for r in runs if r["other_cpu_s"])
    wall = sum(float(r["wall_s"]) for r in runs if r["wall_s"])
    dist = [r for r in runs if r["disturbed"] == 1]
    if dist:
        say(f"note: {len(dist)} of {len(runs)} runs were disturbed (the rest of the machine used more than "
            f"{DISTURBED:.0%} of the CPUs meanwhile; 'disturbed' in runs.csv): "
            + ", ".join(f"{r['workload']}/{r['allocator']}/rep {r['rep']}" for r in dist[:8])
            + (" ..." if len(dist) > 8 else ""))
    if wall > 0 and other / (wall * CPUS) > 0.05:
        say(f"note: other processes (or the hypervisor) used {100 * other / (wall * CPUS):.0f}% of the CPU "
            f"time during the runs (other_cpu_s in runs.csv): expect wider spreads")
    if failed:
        say(f"{failed} of {len(runs)} runs failed (see status in runs.csv)")
    say(f"results: {os.path.relpath(out, os.getcwd())}/ ({', '.join(files)}); "
        f"{time.monotonic() - started:.0f} s in all")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
