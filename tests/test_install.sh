#!/bin/sh
# make install into a staging root (DESTDIR, PREFIX=/usr/local): every file
# where it belongs; a program built with `pkg-config --cflags --libs
# hakclient` (and one linked with the static library) runs on hakmem; the
# installed daemon, hakctl, units and man pages work together. Then make
# uninstall leaves no file behind.
set -u
top=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "${1:-build}" && pwd)
work=$(mktemp -d /tmp/hakinst-XXXXXX)
trap 'rm -rf "$work"' EXIT
dest=$work/root
prefix=/usr/local
root=$dest$prefix
failures=0
checks=0

pass() { checks=$((checks + 1)); echo "ok   $1"; }
fail() { checks=$((checks + 1)); failures=$((failures + 1)); echo "FAIL $1"; }

# Not the jobserver of a `make test` that runs us: this make is our own.
mk() { env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make -C "$top" --no-print-directory BUILD="$build" "$@"; }

if mk install DESTDIR="$dest" PREFIX="$prefix" >"$work/install.log" 2>&1; then
    pass "make install DESTDIR=... PREFIX=$prefix"
else
    fail "make install"
    cat "$work/install.log"
    exit 1
fi

expected="bin/hakctl
include/hakmem.h
lib/libhakclient.a
lib/libhakclient.so
lib/libhakclient.so.0
lib/libhakclient.so.0.1.0
lib/pkgconfig/hakclient.pc
lib/systemd/system/hakmem-pagerd-metrics.service
lib/systemd/system/hakmem-pagerd-metrics.timer
lib/systemd/system/hakmem-pagerd.service
lib/systemd/system/hakmem-pagerd.socket
lib/tmpfiles.d/hakmem-pagerd.conf
sbin/hakmem-pagerd
share/doc/hakmem/pagerd.conf
share/man/man1/hakctl.1
share/man/man7/hakmem.7
share/man/man8/hakmem-pagerd.8"
found=$(cd "$dest" && find . ! -type d | sed "s|^\./${prefix#/}/||" | sort)
if [ "$found" = "$expected" ]; then
    pass "the installed files, and nothing else ($(echo "$found" | wc -l))"
else
    fail "installed files differ"
    printf '%s\n' "$expected" >"$work/want"
    printf '%s\n' "$found" | diff "$work/want" - | head -20
fi
if [ "$(readlink "$root/lib/libhakclient.so")" = libhakclient.so.0 ] &&
   [ "$(readlink "$root/lib/libhakclient.so.0")" = libhakclient.so.0.1.0 ] &&
   objdump -p "$root/lib/libhakclient.so.0.1.0" | grep -q "SONAME *libhakclient.so.0$" &&
   [ -x "$root/sbin/hakmem-pagerd" ] && [ -x "$root/bin/hakctl" ] &&
   [ "$(stat -c %a "$root/lib/pkgconfig/hakclient.pc")" = 644 ]; then
    pass "soname links, SONAME, modes"
else
    fail "soname links, SONAME or modes"
fi

# ---- a program built with pkg-config ----
cat >"$work/app.c" <<'C'
#include <hakmem.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
int main(void)
{
    /* The plain malloc is hakmem's: hakmem's own calls accept its blocks
     * (a foreign pointer would abort). */
    char *p = malloc(100);
    strcpy(p, "linked");
    if (hak_usable_size(p) != malloc_usable_size(p) || hak_usable_size(p) < 100)
        return 2;
    hak_free(p);
    void *q = hak_malloc(1 << 20);
    free(q);
    printf("hakmem %d.%d.%d\n", HAKMEM_VERSION_MAJOR, HAKMEM_VERSION_MINOR, HAKMEM_VERSION_PATCH);
    return 0;
}
C
export PKG_CONFIG_PATH="$root/lib/pkgconfig" PKG_CONFIG_SYSROOT_DIR="$dest" PKG_CONFIG_LIBDIR=
flags=$(pkg-config --cflags --libs hakclient)
version=$(pkg-config --modversion hakclient)
if cc -O2 -Wall -Werror -o "$work/app" "$work/app.c" $flags 2>"$work/cc.err"; then
    pass "cc app.c \$(pkg-config --cflags --libs hakclient): $flags"
else
    fail "build with pkg-config ($flags)"
    cat "$work/cc.err"
fi
out=$(LD_LIBRARY_PATH="$root/lib" HAKMEM_STATS=1 "$work/app" 2>"$work/app.err")
rc=$?
if [ "$rc" -eq 0 ] && [ "$out" = "hakmem $version" ] && grep -q "^hakmem: superslabs pagerd=0 embedded=[1-9]" "$work/app.err" &&
   LD_LIBRARY_PATH="$root/lib" ldd "$work/app" | grep -q "libhakclient.so.0 => $root/lib/libhakclient.so.0"; then
    pass "it runs on the installed library ($out, HAKMEM_STATS summary on stderr)"
else
    fail "installed library in use (exit $rc, '$out')"
    cat "$work/app.err"
fi
if cc -O2 -o "$work/app-static" "$work/app.c" $(pkg-config --cflags hakclient) "$root/lib/libhakclient.a" \
       $(pkg-config --static --libs-only-l hakclient | sed 's/-lhakclient//') &&
   [ "$("$work/app-static")" = "hakmem $version" ] && ! ldd "$work/app-static" | grep -q libhakclient; then
    pass "linked with the static library"
else
    fail "static library"
fi

# ---- the installed daemon, hakctl, units, man pages ----
if [ "$("$root/bin/hakctl" --version)" = "hakctl $version" ] &&
   [ "$("$root/sbin/hakmem-pagerd" --version)" = "hakmem-pagerd $version" ]; then
    pass "hakctl and hakmem-pagerd $version"
else
    fail "versions: $("$root/bin/hakctl" --version), $("$root/sbin/hakmem-pagerd" --version), pc $version"
fi
sock=$work/pagerd.sock
"$root/sbin/hakmem-pagerd" --foreground --socket "$sock" --config "$root/share/doc/hakmem/pagerd.conf" 2>"$work/pagerd.log" &
pid=$!
i=0
until "$root/bin/hakctl" --socket "$sock" status >"$work/status" 2>/dev/null || [ "$i" -ge 500 ]; do
    i=$((i + 1))
    sleep 0.01
done
if grep -q "^hakmem-pagerd $version on $sock: pid $pid" "$work/status"; then
    pass "the installed daemon with the example settings, seen by the installed hakctl"
else
    fail "installed daemon and hakctl"
    cat "$work/pagerd.log"
fi
kill "$pid"
wait "$pid"

unitdir=$root/lib/systemd/system
if grep -qx "ExecStart=$prefix/sbin/hakmem-pagerd --foreground" "$unitdir/hakmem-pagerd.service"; then
    pass "ExecStart=$prefix/sbin/hakmem-pagerd"
else
    fail "ExecStart: $(grep ExecStart "$unitdir/hakmem-pagerd.service")"
fi
# Verified as installed, with the staging root in front of the paths.
mkdir "$work/units"
sed "s|=$prefix/|=$root/|" "$unitdir/hakmem-pagerd.service" >"$work/units/hakmem-pagerd.service"
sed "s|=$prefix/|=$root/|" "$unitdir/hakmem-pagerd-metrics.service" >"$work/units/hakmem-pagerd-metrics.service"
cp "$unitdir/hakmem-pagerd.socket" "$unitdir/hakmem-pagerd-metrics.timer" "$work/units/"
if MANPATH=$root/share/man systemd-analyze verify "$work/units/hakmem-pagerd.socket" \
       "$work/units/hakmem-pagerd.service" "$work/units/hakmem-pagerd-metrics.service" \
       "$work/units/hakmem-pagerd-metrics.timer" >"$work/verify.out" 2>&1 && [ ! -s "$work/verify.out" ]; then
    pass "installed units verify, their man pages found in the installed tree"
else
    fail "installed units"
    cat "$work/verify.out"
fi
for page in man1/hakctl.1 man7/hakmem.7 man8/hakmem-pagerd.8; do
    name=$(basename "$page")
    if MANPATH=$root/share/man man -w "${name%.*}" 2>/dev/null | grep -q "^$root/share/man/$page"; then
        pass "man ${name%.*} ($page)"
    else
        fail "man ${name%.*}"
    fi
done

# The huge-page snippet, applied by systemd-tmpfiles to a root of its own.
thp=$work/tmproot/sys/kernel/mm/transparent_hugepage
mkdir -p "$thp"
echo never >"$thp/shmem_enabled"
if systemd-tmpfiles --create --root="$work/tmproot" "$root/lib/tmpfiles.d/hakmem-pagerd.conf" 2>"$work/tmpfiles.out" &&
   [ "$(cat "$thp/shmem_enabled")" = advise ] && [ ! -s "$work/tmpfiles.out" ]; then
    pass "tmpfiles.d/hakmem-pagerd.conf sets shmem THP to advise"
else
    fail "tmpfiles.d/hakmem-pagerd.conf: $(cat "$thp/shmem_enabled") $(cat "$work/tmpfiles.out")"
fi

# ---- uninstall ----
mk uninstall DESTDIR="$dest" PREFIX="$prefix" >"$work/uninstall.log" 2>&1
left=$(find "$dest" ! -type d)
if [ -z "$left" ] && [ ! -e "$root/share/doc/hakmem" ]; then
    pass "make uninstall leaves no file"
else
    fail "left after uninstall: $left"
    cat "$work/uninstall.log"
fi

echo "$checks checks, $failures failed"
[ "$failures" -eq 0 ]
