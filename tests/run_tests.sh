#!/bin/sh
# Run every test binary of a build directory; fail if any fails.
build=${1:-build}
failed=0
total=0
for t in "$build"/tests/test_* tests/test_*.sh; do
    [ -x "$t" ] || continue
    total=$((total + 1))
    echo "== $(basename "$t")"
    if ! "$t" "$build"; then
        echo "FAILED: $(basename "$t")"
        failed=$((failed + 1))
    fi
done
echo "== $total test programs, $failed failed"
[ "$failed" -eq 0 ]
