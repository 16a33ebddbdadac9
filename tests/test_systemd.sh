#!/bin/sh
# The systemd units: `systemd-analyze verify` accepts them with no message
# at all (it exits 0 on unknown keys and bad values, so any output fails),
# with ExecStart pointing at the built daemon and the man pages they name
# findable; the check itself rejects a broken unit; the socket path and the
# runtime directory agree with the daemon's default; the sandbox keeps a
# low exposure score. Then the daemon runs the way the service runs it: an
# unprivileged user, a 0755 runtime directory it owns, umask 077, readiness
# on NOTIFY_SOCKET; a client of another uid gets memory from it and a third
# uid reads the status (needs root to switch users; skipped otherwise).
set -u
top=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "${1:-build}" && pwd)
work=$(mktemp -d /tmp/haksysd-XXXXXX)
daemon_pid=
cleanup() {
    [ -n "$daemon_pid" ] && kill "$daemon_pid" 2>/dev/null
    wait 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
failures=0
checks=0

pass() { checks=$((checks + 1)); echo "ok   $1"; }
fail() { checks=$((checks + 1)); failures=$((failures + 1)); echo "FAIL $1"; }

if ! command -v systemd-analyze >/dev/null; then
    fail "systemd-analyze is missing (tests/install-deps.sh installs systemd)"
    exit 1
fi

# The man pages where `man` finds them, for the units' Documentation=.
for page in "$top"/man/*.[1-8]; do
    section=${page##*.}
    mkdir -p "$work/man/man$section"
    cp "$page" "$work/man/man$section/"
done

# units DIR SBINDIR: the units as install writes them, into DIR.
units() {
    mkdir -p "$1"
    sed "s|@sbindir@|$2|" "$top/systemd/hakmem-pagerd.service.in" >"$1/hakmem-pagerd.service"
    cp "$top/systemd/hakmem-pagerd.socket" "$1/"
}

# verify DIR: 0 only if systemd-analyze exits 0 and says nothing.
verify() {
    MANPATH=$work/man systemd-analyze verify "$1/hakmem-pagerd.socket" "$1/hakmem-pagerd.service" \
        >"$work/verify.out" 2>&1 && [ ! -s "$work/verify.out" ]
}

units "$work/good" "$build"
if verify "$work/good"; then
    pass "systemd-analyze verify: hakmem-pagerd.service and .socket"
else
    fail "systemd-analyze verify"
    cat "$work/verify.out"
fi

# The check must catch what systemd-analyze only warns about.
units "$work/typo" "$build"
sed -i 's/^ProtectHome=yes/ProtectHome=yse/; s/^RestrictRealtime=/RestrictRealTime=/' "$work/typo/hakmem-pagerd.service"
units "$work/nobin" "$work/nowhere"
units "$work/nodoc" "$build"
sed -i 's/^Documentation=man:hakmem-pagerd(8)/Documentation=man:hakmem-pagerd-nosuch(8)/' "$work/nodoc/hakmem-pagerd.socket"
for bad in typo nobin nodoc; do
    if verify "$work/$bad"; then
        fail "a broken unit ($bad) passes the check"
    else
        pass "a broken unit ($bad) fails the check: $(head -1 "$work/verify.out")"
    fi
done

# The daemon's default socket is where the units put it.
default=$(sed -n 's/^#define HAK_SHM_DEFAULT_SOCKET "\(.*\)"$/\1/p' "$top/shm/hakmem_shm.h")
listen=$(sed -n 's/^ListenSequentialPacket=//p' "$top/systemd/hakmem-pagerd.socket")
rundir=/run/$(sed -n 's/^RuntimeDirectory=//p' "$top/systemd/hakmem-pagerd.service.in")
mode=$(sed -n 's/^RuntimeDirectoryMode=//p' "$top/systemd/hakmem-pagerd.service.in")
sockmode=$(sed -n 's/^SocketMode=//p' "$top/systemd/hakmem-pagerd.socket")
if [ "$listen" = "$default" ] && [ "$(dirname "$default")" = "$rundir" ] && [ "$mode" = 0755 ] && [ "$sockmode" = 0666 ]; then
    pass "socket $default in RuntimeDirectory $rundir (mode $mode), socket mode $sockmode"
else
    fail "socket paths and modes: default $default, listen $listen, runtime $rundir $mode, socket $sockmode"
fi

if systemd-analyze security --offline=true --threshold=20 "$work/good/hakmem-pagerd.service" >"$work/security.out" 2>&1; then
    pass "security exposure: $(sed -n 's/.*Overall exposure level for [^:]*: //p' "$work/security.out")"
else
    fail "security exposure above 2.0"
    grep -E "^✗|Overall" "$work/security.out"
fi

# ---- the daemon as the service runs it ----
if [ "$(id -u)" -ne 0 ] || ! command -v setpriv >/dev/null; then
    echo "skip the unprivileged run: needs root and setpriv"
    echo "$checks checks, $failures failed"
    [ "$failures" -eq 0 ]
    exit
fi
as() { uid=$1; shift; setpriv --reuid="$uid" --regid="$uid" --clear-groups "$@"; }
chmod 755 "$work"
cp "$build/hakmem-pagerd" "$build/hakctl" "$work/"
cp "$build/libhakclient.so.0" "$work/libhakclient.so"
cc -O2 -Wall -Wextra -Werror -o "$work/holder" "$top/tests/hakctl_holder.c" || exit 1
mkdir -p "$work/run/hakmem"
chown 65534:65534 "$work/run/hakmem"
chmod "$mode" "$work/run/hakmem"
sock=$work/run/hakmem/pagerd.sock
python3 - "$work/notify" >"$work/notified" <<'PY' &
import os, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
os.chmod(sys.argv[1], 0o666)
s.settimeout(10)
print(s.recv(64).decode(), flush=True)
PY
notify_pid=$!
i=0
until [ -S "$work/notify" ] || [ "$i" -ge 500 ]; do i=$((i + 1)); sleep 0.01; done
exec_start=$(sed -n 's|^ExecStart=[^ ]*/hakmem-pagerd ||p' "$work/good/hakmem-pagerd.service")
# With the unit's one capability, ambient as AmbientCapabilities= makes it.
caps=$(sed -n 's/^AmbientCapabilities=CAP_//p' "$work/good/hakmem-pagerd.service" | tr 'A-Z' 'a-z')
(umask 077 && NOTIFY_SOCKET=$work/notify exec setpriv --reuid=65534 --regid=65534 --clear-groups \
    --inh-caps="+$caps" --ambient-caps="+$caps" \
    "$work/hakmem-pagerd" $exec_start --socket "$sock" --config /dev/null 2>"$work/pagerd.log") &
daemon_pid=$!
wait "$notify_pid"
if [ "$(cat "$work/notified")" = "READY=1" ] && [ -S "$sock" ] &&
   [ "$(stat -c %a "$sock")" = 666 ] && [ "$(stat -c %U "$sock")" = nobody ]; then
    pass "unprivileged daemon ($exec_start), umask 077: READY=1, socket 0666"
else
    fail "unprivileged start: notified '$(cat "$work/notified")', socket $(stat -c '%a %U' "$sock" 2>&1)"
    cat "$work/pagerd.log"
fi

# The client in a memory cgroup of its own, where the daemon, with no more
# than the unit gives it, places a charger.
memcg=
if [ -f /sys/fs/cgroup/memory/cgroup.procs ]; then
    memcg=/sys/fs/cgroup/memory/haksysd-$$
elif grep -qw memory /sys/fs/cgroup/cgroup.controllers 2>/dev/null; then
    memcg=/sys/fs/cgroup/haksysd-$$
fi
[ -n "$memcg" ] && ! mkdir "$memcg" 2>/dev/null && memcg=
enter="true"
[ -n "$memcg" ] && enter="echo \$\$ > $memcg/cgroup.procs"
mkfifo "$work/in"
chmod 666 "$work/in"
sh -c "$enter && exec setpriv --reuid=1000 --regid=1000 --clear-groups env LD_PRELOAD=$work/libhakclient.so \
    HAKMEM_PAGERD=on HAKMEM_PAGERD_SOCKET=$sock HAKMEM_STATS=1 $work/holder 100" \
    <"$work/in" >"$work/out" 2>"$work/err" &
holder_pid=$!
exec 3>"$work/in"
i=0
until grep -q ready "$work/out" || [ "$i" -ge 1000 ]; do i=$((i + 1)); sleep 0.01; done
if as 1001 "$work/hakctl" --socket "$sock" --json status >"$work/status.json" &&
   python3 -c 'import json, sys; c = json.load(open(sys.argv[1]))["clients"]; assert len(c) == 1 and c[0]["uid"] == 1000 and c[0]["served"] > 0, c' "$work/status.json"; then
    pass "a client of uid 1000 served, the status read by uid 1001"
else
    fail "another user's client and status"
    cat "$work/status.json" "$work/err" "$work/pagerd.log"
fi
if [ -z "$memcg" ]; then
    echo "skip the charger: no memory cgroup hierarchy to make a cgroup in"
elif python3 -c 'import json, sys; c = json.load(open(sys.argv[1]))["clients"][0]; assert c["charge"] == "helper" and c["daemon_held"] == 0, c' "$work/status.json" &&
     grep -q "charger pid=" "$work/pagerd.log"; then
    pass "the client's pages are charged to its own cgroup: a charger placed there by the unprivileged daemon"
else
    fail "no charger in the client's cgroup"
    cat "$work/status.json" "$work/pagerd.log"
fi
exec 3>&-
wait "$holder_pid"

kill "$daemon_pid"
wait "$daemon_pid"
rc=$?
daemon_pid=
if [ "$rc" -eq 0 ] && [ ! -e "$sock" ]; then
    pass "SIGTERM: exit 0, socket removed"
else
    fail "stop: exit $rc"
    cat "$work/pagerd.log"
fi

# The charger leaves its cgroup 2 s after the last client there.
if [ -n "$memcg" ]; then
    i=0
    until rmdir "$memcg" 2>/dev/null || [ "$i" -ge 500 ]; do i=$((i + 1)); sleep 0.02; done
    [ -d "$memcg" ] && fail "cgroup $memcg still has processes"
fi

echo "$checks checks, $failures failed"
[ "$failures" -eq 0 ]
