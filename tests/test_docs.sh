#!/bin/sh
# The documentation says what the code does: the man pages render without
# a warning; every HAKMEM_* option of client/options.c is in hakmem(7) and
# in the README's table with its default; every key of pagerd/config.c is
# in hakmem-pagerd(8) and in the example systemd/pagerd.conf, and that
# example, uncommented, gives the daemon exactly its built-in defaults.
set -u
top=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "${1:-build}" && pwd)
work=$(mktemp -d /tmp/hakdocs-XXXXXX)
trap 'rm -rf "$work"' EXIT
failures=0
checks=0

pass() { checks=$((checks + 1)); echo "ok   $1"; }
fail() { checks=$((checks + 1)); failures=$((failures + 1)); echo "FAIL $1"; }

for page in "$top"/man/*.[1-8]; do
    if LC_ALL=C.UTF-8 groff -man -ww -z -Tutf8 "$page" >"$work/groff.out" 2>&1 && [ ! -s "$work/groff.out" ]; then
        pass "$(basename "$page") renders without warnings"
    else
        fail "$(basename "$page")"
        cat "$work/groff.out"
    fi
done

# ---- client options: name and default ----
# {"HAKMEM_X", OPT_NUM, &hak_opt.x, DEFAULT, MIN, MAX, ...}; a symbolic
# default is the socket path or HAK_PAGERD_<WORD>.
socket_default=$(sed -n 's/^#define HAK_SHM_DEFAULT_SOCKET "\(.*\)"$/\1/p' "$top/shm/hakmem_shm.h")
sed -n 's/^ *{"\(HAKMEM_[A-Z_]*\)", OPT_\(NUM\|WORD\), [^,]*, \([^,]*\),.*/\1 \3/p' "$top/client/options.c" >"$work/options"
# An OPT_PATH default: a string, or the socket's symbol.
sed -n 's/^ *{"\(HAKMEM_[A-Z_]*\)", OPT_PATH, .*, "\([^"]*\)"},$/\1 \2/p; t; s/^ *{"\(HAKMEM_[A-Z_]*\)", OPT_PATH,.*/\1 path/p' \
    "$top/client/options.c" >>"$work/options"
n=0
while read -r name def; do
    n=$((n + 1))
    case $def in
    path) def=$socket_default ;;
    HAK_PAGERD_*) def=$(echo "${def#HAK_PAGERD_}" | tr 'A-Z' 'a-z') ;;
    esac
    # hakmem(7): the option's paragraph says "Default <def>".
    para=$(awk -v n="$name" '/^\.TP/ {on = 0} $0 == ".B " n {on = 1} on' "$top/man/hakmem.7")
    row=$(grep "^| \`$name\` |" "$top/README.md")
    if echo "$para" | grep -q "^Default $def[.:]" && echo "$row" | grep -q "^| \`$name\` | \`*$def"; then
        pass "$name (default $def) in hakmem(7) and README"
    else
        fail "$name (default $def): hakmem(7) or the README's table disagrees"
    fi
done <"$work/options"
[ "$n" -ge 8 ] || fail "only $n options found in client/options.c"

# ---- daemon settings ----
grep -o '^ *{"[a-z_]*", "[a-z-]*"' "$top/pagerd/config.c" | sed 's/^ *{"\([a-z_]*\)".*/\1/' >"$work/keys"
missing=
while read -r key; do
    grep -q "^#$key = " "$top/systemd/pagerd.conf" || missing="$missing pagerd.conf:$key"
    grep -q "^\.BR .*$key" "$top/man/hakmem-pagerd.8" || missing="$missing hakmem-pagerd.8:$key"
done <"$work/keys"
if [ -z "$missing" ] && [ "$(wc -l <"$work/keys")" -ge 9 ]; then
    pass "every daemon key ($(wc -l <"$work/keys")) in pagerd.conf and hakmem-pagerd(8)"
else
    fail "daemon keys missing:$missing"
fi

# settings CONFIG: the daemon's "settings:" line with that file.
settings() {
    rm -f "$work/s.sock"
    : >"$work/log"
    "$build/hakmem-pagerd" --foreground --socket "$work/s.sock" --config "$1" 2>"$work/log" &
    pid=$!
    i=0
    until grep -q "settings:" "$work/log" || [ "$i" -ge 500 ]; do
        i=$((i + 1))
        sleep 0.01
    done
    kill "$pid" 2>/dev/null
    wait "$pid"
    sed -n 's/.*settings: //p' "$work/log"
}
sed -n 's/^#\([a-z_]* = \)/\1/p' "$top/systemd/pagerd.conf" >"$work/uncommented.conf"
builtin=$(settings /dev/null)
example=$(settings "$work/uncommented.conf")
if [ -n "$builtin" ] && [ "$builtin" = "$example" ] && [ "$(wc -l <"$work/uncommented.conf")" -eq "$(wc -l <"$work/keys")" ]; then
    pass "pagerd.conf uncommented = built-in defaults ($builtin)"
else
    fail "pagerd.conf defaults: '$example' vs built-in '$builtin'"
fi

echo "$checks checks, $failures failed"
[ "$failures" -eq 0 ]
