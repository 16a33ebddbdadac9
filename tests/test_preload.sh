#!/bin/sh
# Real programs under LD_PRELOAD=libhakclient.so give the same output and
# exit status as without it: python3 (dicts, lists, strings), gcc compiling
# and linking a multi-file program, a C++ program using new/delete, git in a
# temporary repository, and a shell pipeline. Also checks HAKMEM_STATS and
# the warning for a bad option value.
set -u
build=${1:-build}
lib=$(cd "$build" && pwd)/libhakclient.so
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failures=0
checks=0

pass() { checks=$((checks + 1)); echo "ok   $1"; }
fail() { checks=$((checks + 1)); failures=$((failures + 1)); echo "FAIL $1"; }

# same NAME CMD...: run CMD without and with hakmem, compare stdout and status.
same() {
    name=$1
    shift
    (cd "$work" && "$@") >"$work/plain.out" 2>"$work/plain.err"
    plain=$?
    (cd "$work" && LD_PRELOAD="$lib" "$@") >"$work/hak.out" 2>"$work/hak.err"
    hak=$?
    if [ "$plain" -eq "$hak" ] && cmp -s "$work/plain.out" "$work/hak.out" && ! grep -q "^hakmem:" "$work/hak.err"; then
        pass "$name (exit $hak, $(wc -c <"$work/hak.out") bytes of output)"
    else
        fail "$name (exit $plain vs $hak)"
        diff "$work/plain.out" "$work/hak.out" | head -5
        head -5 "$work/hak.err"
    fi
}

cat >"$work/heavy.py" <<'PY'
import collections, json, random
random.seed(7)
d = {}
for i in range(200000):
    k = "key-%d-%s" % (i, "x" * (i % 37))
    d[k] = [i, str(i) * (i % 5), {"n": i, "s": k[::-1]}]
words = [("".join(random.choice("abcdefghij") for _ in range(random.randint(1, 12)))) for _ in range(100000)]
c = collections.Counter(words)
s = json.dumps(sorted(c.most_common(50)))
parts = []
for i in range(50000):
    parts.append(s[i % len(s):][:64].upper())
del d[next(iter(d))]
print(len(d), len(c), sum(len(p) for p in parts), len(s))
print(sum(v[0] for v in d.values()))
PY
same "python3 dicts/lists/strings" python3 heavy.py

mkdir -p "$work/prog"
cat >"$work/prog/util.h" <<'C'
int fib(int n);
const char *greet(void);
C
cat >"$work/prog/fib.c" <<'C'
#include "util.h"
int fib(int n) { return n < 2 ? n : fib(n - 1) + fib(n - 2); }
C
cat >"$work/prog/greet.c" <<'C'
#include "util.h"
const char *greet(void) { return "hello from a linked program"; }
C
cat >"$work/prog/main.c" <<'C'
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "util.h"
int main(void) {
    char *s = malloc(64);
    strcpy(s, greet());
    printf("%s: fib(25) = %d\n", s, fib(25));
    free(s);
    return 3;
}
C
same "gcc compile and link (3 files)" sh -c 'gcc -O2 -c prog/fib.c -o fib.o && gcc -O2 -c prog/greet.c -o greet.o && gcc -O2 prog/main.c fib.o greet.o -o prog.bin && ./prog.bin; echo "status $?"; rm -f fib.o greet.o prog.bin'

cat >"$work/newdelete.cc" <<'CC'
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <vector>
int main() {
    std::map<std::string, std::vector<int>> m;
    for (int i = 0; i < 100000; i++)
        m["k" + std::to_string(i % 1000)].push_back(i);
    auto big = std::make_unique<char[]>(1 << 22);
    big[(1 << 22) - 1] = 'x';
    int *arr = new int[1000];
    arr[999] = 7;
    long sum = arr[999] + big[(1 << 22) - 1];
    delete[] arr;
    for (auto &kv : m) sum += kv.second.size();
    std::cout << m.size() << " " << sum << std::endl;
}
CC
if command -v g++ >/dev/null; then
    g++ -O2 -o "$work/newdelete" "$work/newdelete.cc"
    same "C++ new/delete" ./newdelete
fi

same "git init, add, commit, log" sh -c '
    export GIT_AUTHOR_NAME=t GIT_AUTHOR_EMAIL=t@example.org GIT_COMMITTER_NAME=t GIT_COMMITTER_EMAIL=t@example.org
    export GIT_AUTHOR_DATE="2020-01-01T00:00:00Z" GIT_COMMITTER_DATE="2020-01-01T00:00:00Z" HOME=$PWD
    rm -rf repo && git init -q -b main repo && cd repo &&
    for i in 1 2 3; do seq 1 $((i * 1000)) > f$i.txt; git add f$i.txt; git commit -q -m "commit $i"; done &&
    git log --stat && git rev-parse HEAD'

same "shell pipeline (sort, uniq, awk)" sh -c 'seq 1 200000 | awk "{print \$1 % 997, \$1 % 13}" | sort | uniq -c | sort -rn | awk "{s += \$1 * \$2} END {print NR, s}"'

# HAKMEM_STATS=1 prints the summary at exit, and shows hakmem was in use.
LD_PRELOAD="$lib" HAKMEM_STATS=1 python3 -c 'print(len([str(i) for i in range(10000)]))' >/dev/null 2>"$work/stats.err"
if grep -q "^hakmem: superslabs pagerd=0 embedded=[1-9]" "$work/stats.err" && grep -q "^hakmem: peak RSS" "$work/stats.err" &&
   grep -Eq "^hakmem: +[0-9]+ +[0-9]+ +[0-9]+ +[0-9]+ +-?[0-9]+ +[0-9]+$" "$work/stats.err"; then
    pass "HAKMEM_STATS=1 summary"
else
    fail "HAKMEM_STATS=1 summary"
    cat "$work/stats.err"
fi

# HAKMEM_CRASH_REPORT=1: a crash gets one line before the default action
# (a program's own SIGSEGV handler is left alone: python's faulthandler is
# off by default).
LD_PRELOAD="$lib" HAKMEM_CRASH_REPORT=1 python3 -c 'import ctypes; ctypes.string_at(8)' >/dev/null 2>"$work/crash.err"
rc=$?
if [ "$rc" -eq 139 ] && grep -q "^hakmem: SIGSEGV at 0x8: not in the heap$" "$work/crash.err"; then
    pass "HAKMEM_CRASH_REPORT=1: one line, then the default action"
else
    fail "HAKMEM_CRASH_REPORT=1: one line, then the default action (exit $rc)"
    cat "$work/crash.err"
fi
LD_PRELOAD="$lib" python3 -c 'import ctypes; ctypes.string_at(8)' >/dev/null 2>"$work/crash.err"
rc=$?
if [ "$rc" -eq 139 ] && ! grep -q "hakmem" "$work/crash.err"; then
    pass "no crash report unless asked"
else
    fail "no crash report unless asked (exit $rc)"
    cat "$work/crash.err"
fi

# A bad value: one warning line naming the variable, then the default.
LD_PRELOAD="$lib" HAKMEM_DECAY_MS=soon sh -c 'echo ok' >"$work/opt.out" 2>"$work/opt.err"
if [ "$(cat "$work/opt.out")" = ok ] && [ "$(grep -c "HAKMEM_DECAY_MS='soon'" "$work/opt.err")" -eq 1 ] &&
   [ "$(wc -l <"$work/opt.err")" -eq 1 ]; then
    pass "bad option value warns once"
else
    fail "bad option value warns once"
    cat "$work/opt.err"
fi

echo "$checks checks, $failures failed"
[ "$failures" -eq 0 ]
