#!/bin/sh
# The heap profiler in a real program: python3 under LD_PRELOAD with
# HAKMEM_PROF=1. A profile written mid-run (hak_prof_dump through ctypes)
# holds the 100 MB of bytes objects the script keeps, and google-pprof
# names Python's allocation functions; the profile written at exit is read
# too. (test_prof.c checks the figures against a program of known sites.)
set -u
build=${1:-build}
lib=$(cd "$build" && pwd)/libhakclient.so
if ! command -v google-pprof >/dev/null 2>&1; then
    echo "SKIP: google-pprof is not installed (Debian package google-perftools)"
    exit 0
fi
py=$(readlink -f /usr/bin/python3)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failures=0

check() { # NAME CONDITION...
    name=$1
    shift
    if "$@"; then echo "ok   $name"; else echo "FAIL $name"; failures=$((failures + 1)); fi
}

(cd "$work" && LD_PRELOAD="$lib" HAKMEM_PROF=1 HAKMEM_PROF_SAMPLE=65536 HAKMEM_PROF_PREFIX="$work/py" "$py" -c '
import ctypes
kept = [bytes(1000) for _ in range(100000)]
assert ctypes.CDLL(None).hak_prof_dump(b"mid.heap") == 0
') 2>"$work/err"
check "python3 runs profiled" [ $? -eq 0 ]
check "no complaint on stderr" [ ! -s "$work/err" ]
google-pprof --text "$py" "$work/mid.heap" >"$work/mid.txt" 2>/dev/null
total=$(sed -n 's/^Total: \([0-9.]*\) MB$/\1/p' "$work/mid.txt")
echo "mid-run profile: ${total:-?} MiB in use"; head -4 "$work/mid.txt" | sed 's/^/    /'
# 100,000 blocks of 1,033 bytes: 98.5 MiB, and the interpreter's own.
check "in-use total near the 98.5 MiB kept" awk -v t="${total:-0}" 'BEGIN { exit !(t > 85 && t < 125) }'
check "python's allocators named" grep -Eq ' (PyMem_[A-Za-z]*alloc|PyObject_Malloc|_PyObject_[A-Za-z]*)$' "$work/mid.txt"
set -- "$work"/py.*.heap
check "profile written at exit" [ -f "$1" ]
google-pprof --text --alloc_space "$py" "$1" >"$work/exit.txt" 2>/dev/null
check "the exit profile reads" grep -q '^Total: ' "$work/exit.txt"
[ "$failures" -eq 0 ]
