#!/bin/sh
# The fuzz targets (fuzz.mk), briefly: each runs its seed corpus, crash
# inputs of fixed bugs included, then FUZZ_TEST_SECONDS (5) of new inputs.
# A crash, a sanitizer report or a broken invariant fails the test.
set -u
cd "$(dirname "$0")/.." || exit 1
make --no-print-directory -s fuzz-build || exit 1
exec tests/fuzz/run.sh build-fuzz "${FUZZ_TEST_SECONDS:-5}"
