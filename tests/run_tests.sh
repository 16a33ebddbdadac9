#!/bin/sh
# Run every test binary of a build directory; fail if any fails.
# Under a sanitizer (HAK_TEST_SANITIZER, set by make asan / make tsan) only
# the cmocka tests: the scripts test the shared library and the installed
# files, which a sanitizer build does not make.
build=${1:-build}
failed=0
total=0
scripts=tests/test_*.sh
[ -n "${HAK_TEST_SANITIZER:-}" ] && scripts=
for t in "$build"/tests/test_* $scripts; do
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
