#!/bin/sh
# make valgrind: the daemon's tests with every hakmem-pagerd they start run
# under valgrind memcheck (HAK_TEST_PAGERD_WRAPPER, tests/pagerd_client.h).
# Fails if a test fails (a daemon with a memcheck error or a definite leak
# exits 99, which the tests check when they stop it) or if any daemon's
# valgrind log counts an error: that also catches a daemon whose exit
# status no test sees (the detached one).
set -u
build=${1:-build}
logs=$build/valgrind
rm -rf "$logs"
mkdir -p "$logs"
export HAK_TEST_PAGERD_WRAPPER="valgrind --error-exitcode=99 --leak-check=full --show-leak-kinds=definite --errors-for-leak-kinds=definite --log-file=$logs/pagerd.%p.log"
failed=0
for t in test_pagerd test_pagerd_activation test_pagerd_client test_pagerd_hostile test_faults; do
    echo "== $t (daemon under valgrind)"
    if ! "$build/tests/$t" "$build"; then
        echo "FAILED: $t"
        failed=$((failed + 1))
    fi
done
runs=0
bad=0
for f in "$logs"/pagerd.*.log; do
    [ -e "$f" ] || continue
    runs=$((runs + 1))
    if grep -q "ERROR SUMMARY: [1-9]" "$f"; then
        bad=$((bad + 1))
        echo "== memcheck errors in $f:"
        cat "$f"
    fi
done
echo "== valgrind: $runs daemon runs, $bad with errors; $failed test programs failed"
[ "$runs" -gt 0 ] && [ "$bad" -eq 0 ] && [ "$failed" -eq 0 ]
