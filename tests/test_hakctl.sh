#!/bin/sh
# hakctl against a private daemon with two real clients (tests/hakctl_holder.c
# under LD_PRELOAD): the table and the JSON agree with the daemon and with
# each client's own HAKMEM_STATS count of SuperSlabs from the daemon; and
# the command line, the exit codes and the one-line errors for an absent
# daemon, a stale socket, something that is not a daemon, and bad usage.
set -u
build=$(cd "${1:-build}" && pwd)
hakctl=$build/hakctl
pagerd=$build/hakmem-pagerd
lib=$build/libhakclient.so
work=$(mktemp -d /tmp/hakctl-XXXXXX)
sock=$work/pagerd.sock
daemon_pid=
cleanup() {
    exec 3>&- 4>&- 2>/dev/null
    [ -n "$daemon_pid" ] && kill "$daemon_pid" 2>/dev/null
    wait 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
failures=0
checks=0

pass() { checks=$((checks + 1)); echo "ok   $1"; }
fail() { checks=$((checks + 1)); failures=$((failures + 1)); echo "FAIL $1"; }

# expect NAME STATUS PATTERN CMD...: exit status, and exactly one line on
# stderr that matches PATTERN (grep -E).
expect() {
    name=$1 want=$2 pattern=$3
    shift 3
    "$@" >"$work/out" 2>"$work/err"
    got=$?
    if [ "$got" -eq "$want" ] && [ "$(wc -l <"$work/err")" -eq 1 ] && grep -Eq "$pattern" "$work/err"; then
        pass "$name (exit $got: $(cat "$work/err"))"
    else
        fail "$name (exit $got, want $want)"
        cat "$work/err"
    fi
}

# wait_for CMD...: until it succeeds, for up to 10 s.
wait_for() {
    i=0
    until "$@"; do
        i=$((i + 1))
        [ "$i" -ge 1000 ] && return 1
        sleep 0.01
    done
}

# ---- the command line ----
if [ "$("$hakctl" --version)" = "hakctl $("$pagerd" --version | cut -d' ' -f2)" ]; then
    pass "--version ($("$hakctl" --version))"
else
    fail "--version: $("$hakctl" --version)"
fi
if "$hakctl" --help | grep -q "^usage: hakctl" && "$hakctl" --help | grep -q "exit status"; then
    pass "--help"
else
    fail "--help"
fi
expect "no command" 2 "no command given" "$hakctl"
expect "unknown command" 2 "unknown command 'frob'" "$hakctl" frob
expect "unknown option" 2 "unknown or incomplete option '--frob'" "$hakctl" --frob status
expect "missing option value" 2 "option '--socket'" "$hakctl" status --socket
expect "extra argument" 2 "unexpected argument 'more'" "$hakctl" status more

# ---- no daemon ----
expect "absent daemon" 1 "^hakctl: $work/none.sock: no such socket" "$hakctl" --socket "$work/none.sock" status
python3 -c 'import socket, sys; socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET).bind(sys.argv[1])' "$work/stale.sock"
expect "stale socket" 1 "^hakctl: $work/stale.sock: connection refused" "$hakctl" --socket "$work/stale.sock" status --json
# Something that listens and answers, but not with a status.
python3 - "$work/liar.sock" <<'PY' &
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
s.settimeout(10)
s.bind(sys.argv[1])
s.listen(1)
c, _ = s.accept()
c.recv(64)
c.send(b"not a status reply")
c.close()
PY
wait_for test -S "$work/liar.sock"
expect "invalid reply" 3 "^hakctl: $work/liar.sock: the reply \(18 bytes\) is not a valid status" "$hakctl" --socket "$work/liar.sock" status
wait

# ---- a daemon and two clients ----
cc -O2 -Wall -Wextra -Werror -o "$work/holder" "$(dirname "$0")/hakctl_holder.c" || exit 1
: >"$work/empty.conf"
"$pagerd" --foreground --socket "$sock" --config "$work/empty.conf" --fake-nodes 2 2>"$work/pagerd.log" &
daemon_pid=$!
wait_for "$hakctl" --socket "$sock" status >/dev/null 2>&1 || { fail "daemon start"; cat "$work/pagerd.log"; exit 1; }

# holder N COUNT: client N, blocks until its fifo closes.
holder() {
    mkfifo "$work/in$1"
    LD_PRELOAD=$lib HAKMEM_PAGERD=on HAKMEM_PAGERD_SOCKET=$sock HAKMEM_STATS=1 \
        "$work/holder" "$2" <"$work/in$1" >"$work/out$1" 2>"$work/err$1" &
    echo $! >"$work/pid$1"
}
holder 1 300
exec 3>"$work/in1"
holder 2 150
exec 4>"$work/in2"
wait_for grep -q ready "$work/out1" && wait_for grep -q ready "$work/out2" || { fail "clients ready"; exit 1; }
pid1=$(cat "$work/pid1") pid2=$(cat "$work/pid2")

# The table, the JSON and the metrics are three requests, and the daemon
# keeps moving the clients' rings (filling them, then taking back what an
# idle client does not use): a snapshot whose three disagree is taken
# again, up to 20 times, before a check fails.
snapshot() {
    "$hakctl" --socket "$sock" status >"$work/status.txt"
    text_rc=$?
    HAKMEM_PAGERD_SOCKET=$sock "$hakctl" --json status >"$work/status.json"
    json_rc=$?
    "$hakctl" --socket "$sock" metrics >"$work/metrics.txt"
    metrics_rc=$?
}
check_text() {
    [ "$text_rc" -eq 0 ] && grep -q "^hakmem-pagerd .* on $sock: pid $daemon_pid, up " "$work/status.txt" &&
        grep -q "^nodes 2 (NUMA: no), clients 2," "$work/status.txt" &&
        grep -Eq "^pages: (2 MiB|4 KiB \()" "$work/status.txt" &&
        grep -Eq "^ +$pid1 +[0-9]+ +[01] +[1-9][0-9]* " "$work/status.txt" &&
        grep -Eq "^ +$pid2 +[0-9]+ +[01] +[1-9][0-9]* " "$work/status.txt"
}
# The JSON, and the text's numbers against it.
check_json() {
    [ "$json_rc" -eq 0 ] &&
        python3 - "$work/status.json" "$work/status.txt" "$daemon_pid" "$pid1" "$pid2" "$sock" 2>"$work/json.err" <<'PY'
import json, sys
st = json.load(open(sys.argv[1]))
text = open(sys.argv[2]).read().split("\n")
daemon, pids, sock = int(sys.argv[3]), [int(p) for p in sys.argv[4:6]], sys.argv[6]
assert st["pid"] == daemon and st["socket"] == sock and st["numa"] is False, st
assert st["version"] and st["uptime_ms"] > 0
assert [n["node"] for n in st["nodes"]] == [0, 1]
assert sorted(c["pid"] for c in st["clients"]) == sorted(pids), st["clients"]
assert sum(n["clients"] for n in st["nodes"]) == 2
assert sum(n["ready"] for n in st["nodes"]) == sum(c["ring_level"] for c in st["clients"])
for c in st["clients"]:
    # nothing freed yet: every SuperSlab popped is still in its hands
    assert c["served"] > 0 and c["held"] == c["served"] and c["returned"] == 0, c
    assert c["limit_hits"] == 0 and c["node"] in (0, 1)
    row = [l.split() for l in text if l.split()[:1] == [str(c["pid"])]][0]
    want = [c["pid"], c["uid"], c["node"], c["held"], c["ring_level"], c["served"], c["returned"],
            c["reclaimed"], c["limit_hits"], c["pages"], c["session"]]
    assert [int(x) for x in row[:9]] + [row[9], int(row[10])] == want, (row, want)
    assert c["pages"] in ("4k", "2M-thp", "2M-hugetlb"), c
assert st["pages"] in ("4k", "2M-thp", "2M-hugetlb") and isinstance(st["pages_why"], str), st
assert st["ss_total"] >= sum(c["held"] + c["ring_level"] for c in st["clients"])
PY
}
# The metrics' numbers are the status's (in bytes), for every client.
check_metrics() {
    [ "$metrics_rc" -eq 0 ] && python3 - "$work/status.json" "$work/metrics.txt" 2>"$work/metrics.err" <<'PY'
import json, re, sys
st = json.load(open(sys.argv[1]))
samples = {}
for line in open(sys.argv[2]):
    m = re.match(r'^(hakmem_pagerd_\w+)(\{.*\})? (\S+)$', line.strip())
    if m:
        labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        samples.setdefault(m.group(1), []).append((labels, float(m.group(3))))
MIB = 1 << 20
def one(name, **want):
    hits = [v for l, v in samples[name] if all(l.get(k) == str(x) for k, x in want.items())]
    assert len(hits) == 1, (name, want, hits)
    return hits[0]
assert one("hakmem_pagerd_clients") == 2
assert one("hakmem_pagerd_info", version=st["version"], pages=st["pages"]) == 1
for c in st["clients"]:
    assert one("hakmem_pagerd_client_held_bytes", pid=c["pid"]) == c["held"] * MIB, c
    assert one("hakmem_pagerd_client_served_bytes_total", pid=c["pid"]) == c["served"] * MIB, c
    assert one("hakmem_pagerd_client_ring_bytes", pid=c["pid"], cgroup=c["cgroup"]) == c["ring_level"] * MIB, c
for n in st["nodes"]:
    assert one("hakmem_pagerd_node_prefaulted_bytes_total", node=n["node"]) == n["prefaulted"] * MIB
for u in st["users"]:
    assert one("hakmem_pagerd_user_sessions", uid=u["uid"]) == u["sessions"]
PY
}
tries=1
snapshot
until check_text && check_json && check_metrics || [ "$tries" -ge 20 ]; do
    sleep 0.2
    tries=$((tries + 1))
    snapshot
done
echo "--- hakctl status (snapshot $tries)"
cat "$work/status.txt"
echo "--- hakctl status --json"
cat "$work/status.json"
echo "---"
if check_text; then
    pass "status: daemon line, both clients holding SuperSlabs"
else
    fail "status (exit $text_rc)"
fi
if check_json; then
    pass "status --json: both clients, nodes, and the same numbers as the table"
else
    fail "status --json (exit $json_rc)"
    cat "$work/json.err"
fi
# promtool accepts the metrics, and --output writes the same format.
"$hakctl" --socket "$sock" metrics --output "$work/hakmem-pagerd.prom"
output_rc=$?
if [ "$metrics_rc" -eq 0 ] && promtool check metrics <"$work/metrics.txt" >"$work/promtool.out" 2>&1 &&
   [ ! -s "$work/promtool.out" ]; then
    pass "metrics: promtool check metrics accepts them ($(grep -c '^hakmem_pagerd_' "$work/metrics.txt") samples)"
else
    fail "metrics (exit $metrics_rc): $(cat "$work/promtool.out")"
    head -40 "$work/metrics.txt"
fi
if check_metrics; then
    pass "metrics: the status's numbers, in bytes, per client, node and uid"
else
    fail "metrics against the status"
    cat "$work/metrics.err"
fi
if [ "$output_rc" -eq 0 ] && [ "$(stat -c %a "$work/hakmem-pagerd.prom")" = 644 ] && [ ! -e "$work/hakmem-pagerd.prom.tmp" ] &&
   promtool check metrics <"$work/hakmem-pagerd.prom" >/dev/null 2>&1; then
    pass "metrics --output FILE: written whole, mode 0644, nothing left beside it"
else
    fail "metrics --output (exit $output_rc)"
fi
expect "--json metrics" 2 "^hakctl: --json is for status" "$hakctl" --socket "$sock" --json metrics
expect "--output into a missing directory" 5 "^hakctl: $work/none/m.prom.tmp: No such file or directory" \
    "$hakctl" --socket "$sock" metrics --output "$work/none/m.prom"

# Let them go: each one's own count of SuperSlabs from the daemon is what
# the daemon said it served.
exec 3>&- 4>&-
wait "$pid1" "$pid2"
for n in 1 2; do
    pid=$(cat "$work/pid$n")
    mine=$(sed -n 's/^hakmem: superslabs pagerd=\([0-9]*\) .*/\1/p' "$work/err$n")
    served=$(python3 -c 'import json, sys; print([c["served"] for c in json.load(open(sys.argv[1]))["clients"] if c["pid"] == int(sys.argv[2])][0])' "$work/status.json" "$pid")
    if [ -n "$mine" ] && [ "$mine" -gt 0 ] && [ "$mine" = "$served" ]; then
        pass "client $n: HAKMEM_STATS pagerd=$mine = served $served"
    else
        fail "client $n: HAKMEM_STATS pagerd=$mine, served $served"
        cat "$work/err$n"
    fi
done

if wait_for sh -c "'$hakctl' --socket '$sock' status | grep -q '^no clients'"; then
    pass "clients gone from the status once they exit"
else
    fail "clients still listed"
fi

kill "$daemon_pid"
wait "$daemon_pid"
rc=$?
daemon_pid=
[ "$rc" -eq 0 ] && pass "daemon stopped (exit 0)" || fail "daemon exit $rc"
expect "stopped daemon" 1 "^hakctl: $sock: no such socket" "$hakctl" --socket "$sock" status

echo "$checks checks, $failures failed"
[ "$failures" -eq 0 ]
